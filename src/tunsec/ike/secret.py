"""A wrapper that keeps key material out of reprs, logs and exceptions."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Hashable
from typing import final


@final
class Secret:
    """Opaque bytes: ``repr``/``str`` never show the value, equality is constant-time.

    Call :meth:`reveal` at the one place that needs the bytes (a cipher, the pipe).
    """

    __slots__ = ("_derived", "_value")

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)
        self._derived: dict[Hashable, bytes] | None = None

    def reveal(self) -> bytes:
        return self._value

    def derived(self, tag: Hashable, derive: Callable[[bytes], bytes]) -> bytes:
        """``derive(value)``, computed once per ``tag`` and held by this object alone (a PSK's
        prf(PSK, "Key Pad for IKEv2") is the same for every peer using it): never shown, and gone
        with the secret when a reload replaces it.  The tags are the caller's few fixed ones."""
        if self._derived is None:
            self._derived = {}
        out = self._derived.get(tag)
        if out is None:
            out = self._derived[tag] = derive(self._value)
        return out

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"Secret(<{len(self._value)} bytes>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        # Hash by length only: hashing the value could leak it through timing.
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> str:  # pragma: no cover - refuse pickling
        raise TypeError("Secret cannot be pickled")
