"""``immutable``: a dataclass that mypy checks as frozen and that is a plain one at run time.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, three times
as slow as a plain one's assignments (CPython 3.11), and a gateway makes some hundred of these
objects per client set-up (IKE payloads, proposals, keys).  mypy, which CI runs, still rejects
any assignment to a field (``dataclass_transform(frozen_default=True)``); ``__eq__`` and
``__hash__`` are the frozen ones (``unsafe_hash=True`` makes the same hash of the fields).
Nothing may assign a field after construction: these objects are shared (a gateway's cached
SA payload serves every client).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform, overload

_C = TypeVar("_C")


@overload
def immutable(cls: type[_C], /) -> type[_C]: ...


@overload
def immutable(*, slots: bool = False) -> Callable[[type[_C]], type[_C]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def immutable(cls: type[_C] | None = None, /, *, slots: bool = False) -> type[_C] | Callable[[type[_C]], type[_C]]:
    def make(c: type[_C]) -> type[_C]:
        # a class that defines its own __hash__ keeps it (it must hash as the fields' tuple does:
        # proposals.ProposalSpec keeps that hash once made)
        return dataclass(unsafe_hash="__hash__" not in c.__dict__, slots=slots)(c)

    return make if cls is None else make(cls)
