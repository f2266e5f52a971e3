"""A wrapper that keeps key material out of reprs, logs and exceptions."""

from __future__ import annotations

import hmac
from typing import final


@final
class Secret:
    """Opaque bytes: ``repr``/``str`` never show the value, equality is constant-time.

    Call :meth:`reveal` at the one place that needs the bytes (a cipher, the pipe).
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        return self._value

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
