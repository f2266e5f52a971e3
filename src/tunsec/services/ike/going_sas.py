"""The SAs of Child SAs the IKE service has let go (rekeyed, deleted), until they are surely gone from
the worker: their EXPIREs are ours, not a stranger's (review revrekey6 F2).

A rekey ends with the old Child SA out of the child index at once (installs._child_gone), its
outbound SA DELETEd from the worker and its inbound SA lingering INBOUND_LINGER seconds.  A packet
that takes either SA past its soft limit just before makes an honest worker raise an EXPIRE that the
control process reads after that: the child index no longer gives the Child SA, and without this the
daemon counted the EXPIRE among ``unowned_events`` (meant for a lying worker) with a WARNING.

So each SA of a Child SA that leaves the index is booked here (``book``) until GRACE seconds after
its DELETE was answered (``deleted``: the worker's event queue may still hold an EXPIRE raised before
it), and an EXPIRE naming one is claimed quietly (``claim``: counted as ``expires_after_rekey``, a
DEBUG line; no rekey, no delete: the Child SA's successor has its own limits).  A hard EXPIRE of a
lingering inbound SA is the worker removing it: its linger ends now (its DELETE finds ENOENT, as
when its timer ends it after a hard limit).  An EXPIRE of an SA also is claimed when the child
index still has its Child SA but the engine has dropped it (its ChildSaDown not handled yet).

Bounded: an IKE SA's entries are at most 2 x max_child_sas (its connection's), the oldest going
first; entries come only from installed Child SAs (never from a datagram), go GRACE seconds after
their DELETEs (pruned at the next call), and all go at a worker restart (restart.worker_restarted).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

__all__ = ["GRACE", "GoingSas", "book", "claim", "deleted"]

log = logging.getLogger("tunsec.ike")

GRACE = 5.0   # seconds an SA stays ours after its DELETE was answered (as INBOUND_LINGER)

_Key = tuple[Direction, int, Endpoint | None]   # an inbound SA by its SPI (remote None), an outbound by (SPI, peer)


def _key(spi: int, direction: Direction, remote: Endpoint | None) -> _Key:
    return (direction, spi, None if direction is Direction.IN else remote)


class GoingSas:
    """See the module's docstring: SA name -> its IKE SA's handle; per IKE SA its names in the order
    they went, each with the time it stops being ours (None until its DELETE is answered); and those
    times in the order they were set (one GRACE after now each time: in order), pruned from the front
    at each call, so that an IKE SA long gone keeps nothing.  No timer per SA (a rekey storm's
    thousands), none among the service's (IkeService._timers: lingers, standby ends)."""

    __slots__ = ("_ends", "_owner", "_per_ike", "clock")

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._owner: dict[_Key, int] = {}
        self._per_ike: dict[int, dict[_Key, float | None]] = {}
        self._ends: deque[tuple[float, _Key]] = deque()   # (when, name): at most the DELETEs of GRACE seconds
        self.clock = clock   # None: time.monotonic, looked up at each call (as the service's modules do: tests
        #                      that put a fake clock in their place, tests/test_ike_memory.py, move this one too)

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.monotonic()

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, spi: int, direction: Direction, remote: Endpoint | None) -> int | None:
        """The IKE SA handle whose let-go Child SA had this SA, if any (and it is not past its grace)."""
        self._prune()
        return self._owner.get(_key(spi, direction, remote))

    def clear(self) -> None:
        """None is ours any more (a worker restart: the new worker has none of them)."""
        self._owner.clear()
        self._per_ike.clear()
        self._ends.clear()

    def book(self, ike: int, keys: tuple[_Key, ...], cap: int) -> None:
        self._prune()
        for key in keys:
            self._forget(key)   # a name booked before (an SPI used again) starts over
            self._owner[key] = ike
            self._per_ike.setdefault(ike, {})[key] = None
        mine = self._per_ike[ike]
        while len(mine) > cap:
            self._forget(next(iter(mine)))

    def deleted(self, key: _Key) -> None:
        self._prune()
        ike = self._owner.get(key)
        if ike is not None and self._per_ike[ike][key] is None:
            when = self.now() + GRACE
            self._per_ike[ike][key] = when
            self._ends.append((when, key))

    def _prune(self) -> None:
        now = self.now()
        while self._ends and self._ends[0][0] <= now:
            when, key = self._ends.popleft()
            ike = self._owner.get(key)
            if ike is not None and self._per_ike[ike].get(key) == when:   # (not booked again since)
                self._forget(key)

    def _forget(self, key: _Key) -> None:
        ike = self._owner.pop(key, None)
        if ike is None:
            return
        mine = self._per_ike[ike]
        del mine[key]
        if not mine:
            del self._per_ike[ike]   # no empty dict kept per IKE SA


def book(svc: IkeService, state: ChildState) -> None:
    """``state`` leaves the child index: its two SAs stay ours until GRACE after their DELETEs."""
    conn = svc.connections.get(state.conn)
    cap = 2 * (conn.ike.max_child_sas if conn is not None else DEFAULT_MAX_CHILD_SAS)
    svc.going.book(state.ike, (_key(state.spi_in, Direction.IN, None),
                               _key(state.spi_out, Direction.OUT, state.remote)), cap)


def deleted(svc: IkeService, spi: int, direction: Direction, remote: Endpoint | None) -> None:
    """The DELETE of this SA was answered (or not sent: an older worker's, or none of ours): it stays
    ours GRACE more (the worker's event queue may hold an EXPIRE raised before it)."""
    svc.going.deleted(_key(spi, direction, remote))


def claim(svc: IkeService, msg: pipe.Expire) -> bool:
    """True: the EXPIRE names an SA of a Child SA the service let go (or is letting go): counted, not
    acted on.  Called for an EXPIRE no held Child SA took (installs.expired returned False)."""
    ike = svc.going.owner(msg.spi, msg.direction, msg.remote)
    if ike is None and not _leaving(svc, msg):
        return False
    svc.expires_after_rekey += 1
    log.debug("SA %s %08x of a CHILD_SA let go reached its %s %s limit: nothing to do",
              msg.direction.name.lower(), msg.spi, "hard" if msg.hard else "soft", msg.reason.name.lower())
    if ike is not None and msg.hard and msg.direction is Direction.IN:
        _end_linger(svc, ike, msg.spi)
    return True


def _leaving(svc: IkeService, msg: pipe.Expire) -> bool:
    """The child index still has a Child SA with this SA, but the engine dropped it (its ChildSaDown
    comes in this same pump: it is booked here then)."""
    index = svc.child_index
    if msg.direction is Direction.IN:
        return next(index.inbound(msg.spi), None) is not None
    return next(index.outbound(msg.spi, msg.remote), None) is not None or index.moving(msg.spi, msg.remote) is not None


def _end_linger(svc: IkeService, ike: int, spi: int) -> None:
    """A lingering inbound SA the worker removed at its hard limit lingers no more: its slot among its IKE
    SA's lingering ones is free now, not at its timer (the DELETE its end sends finds ENOENT)."""
    lineage = svc._lingering.get(ike, {}).get(spi)
    if lineage is None or lineage.lingering is None or (entry := lineage.lingering.get(spi)) is None:
        return
    svc._unlater(entry[1])
    svc._spawn(svc._changes.queue(svc._linger_ended(lineage, spi)))
