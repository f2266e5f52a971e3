"""IKE SA handles: which handle an IKE SA holds, and which IKE SAs hold a handle.

A handle names an IKE SA's lineage (its Child SAs carry it): after a rekey the successor takes the
old SA's handle, and the old one keeps it while it may still answer a DELETE.  Which SA a handle
means now is asked per Child SA install, move and ``tunsec status`` line; a pass over every IKE SA
for each of those made them cost O(clients) each, and a status of N clients O(N²) on the event
loop.  The reverse index answers from the handle's own few SAs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, MutableMapping
from typing import TypeVar, overload

from tunsec.ike.sa import IkeSa, State

_D = TypeVar("_D")


class Handles(MutableMapping[IkeSa, int]):
    """IKE SA -> handle (a dict, which it replaces), with each handle's SAs (a handle's few: a
    lineage keeps at most sa_successor.MAX_UNDELETED rekeyed SAs)."""

    def __init__(self) -> None:
        self._handle: dict[IkeSa, int] = {}
        self._sas: dict[int, set[IkeSa]] = {}
        # when each SA got its first handle: the dict's order, which live() has always followed
        self._since: dict[IkeSa, int] = {}
        self._count = itertools.count()

    def __getitem__(self, sa: IkeSa) -> int:
        return self._handle[sa]

    @overload
    def get(self, sa: IkeSa, /) -> int | None: ...

    @overload
    def get(self, sa: IkeSa, default: int | _D, /) -> int | _D: ...

    def get(self, sa: IkeSa, default: object = None, /) -> object:
        """The dict's get: Mapping's asks __getitem__ and catches its KeyError (an SA without a handle
        yet, a client's first Child SA: an exception raised and caught, ~5k instructions)."""
        return self._handle.get(sa, default)

    def __setitem__(self, sa: IkeSa, handle: int) -> None:
        old = self._handle.get(sa)
        if old is None:
            self._since[sa] = next(self._count)
        elif old != handle:
            self._drop(sa, old)
        self._handle[sa] = handle
        self._sas.setdefault(handle, set()).add(sa)

    def __delitem__(self, sa: IkeSa) -> None:
        self._drop(sa, self._handle.pop(sa))
        del self._since[sa]

    def __iter__(self) -> Iterator[IkeSa]:
        return iter(self._handle)

    def __len__(self) -> int:
        return len(self._handle)

    def _drop(self, sa: IkeSa, handle: int) -> None:
        held = self._sas[handle]
        held.discard(sa)
        if not held:
            del self._sas[handle]

    def sas_of(self, handle: int) -> list[IkeSa]:
        return sorted(self._sas.get(handle, ()), key=self._since.__getitem__)

    def live(self, handle: int) -> IkeSa | None:
        """The live IKE SA behind a handle: after a rekey the old SA (which still answers a DELETE for
        the children it shares with its successor) and the successor hold the same handle."""
        sas = self.sas_of(handle)
        for sa in sas:   # (a loop: an unfinished generator is closed with a GeneratorExit raised in it)
            if sa.state not in (State.REKEYED, State.CLOSED):
                return sa
        return sas[0] if sas else None
