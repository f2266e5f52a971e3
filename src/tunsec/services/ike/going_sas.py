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
their DELETEs, and all go at a worker restart (restart.worker_restarted).
"""

from __future__ import annotations

import asyncio
import logging
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
    """See the module's docstring: SA name -> its IKE SA's handle, and per IKE SA its names in the
    order they went, each with the timer that ends it (None until its DELETE is answered)."""

    __slots__ = ("_owner", "_per_ike")

    def __init__(self) -> None:
        self._owner: dict[_Key, int] = {}
        self._per_ike: dict[int, dict[_Key, asyncio.TimerHandle | None]] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, spi: int, direction: Direction, remote: Endpoint | None) -> int | None:
        """The IKE SA handle whose let-go Child SA had this SA, if any."""
        return self._owner.get(_key(spi, direction, remote))

    def clear(self) -> None:
        """None is ours any more (a worker restart: the new worker has none of them; the timers went)."""
        self._owner.clear()
        self._per_ike.clear()


def book(svc: IkeService, state: ChildState) -> None:
    """``state`` leaves the child index: its two SAs stay ours until GRACE after their DELETEs."""
    going = svc.going
    conn = svc.connections.get(state.conn)
    cap = 2 * (conn.ike.max_child_sas if conn is not None else DEFAULT_MAX_CHILD_SAS)
    mine = going._per_ike.setdefault(state.ike, {})
    for key in (_key(state.spi_in, Direction.IN, None), _key(state.spi_out, Direction.OUT, state.remote)):
        _forget(svc, key)   # a name booked before (an SPI used again) starts over
        mine = going._per_ike.setdefault(state.ike, mine)
        going._owner[key] = state.ike
        mine[key] = None
    while len(mine) > cap:
        _forget(svc, next(iter(mine)))


def deleted(svc: IkeService, spi: int, direction: Direction, remote: Endpoint | None) -> None:
    """The DELETE of this SA was answered (or not sent: an older worker's): it stays ours GRACE more."""
    key = _key(spi, direction, remote)
    ike = svc.going._owner.get(key)
    if ike is None:
        return
    mine = svc.going._per_ike[ike]
    if mine.get(key) is None:
        mine[key] = svc._later(GRACE, lambda: _forget(svc, key))


def _forget(svc: IkeService, key: _Key) -> None:
    going = svc.going
    ike = going._owner.pop(key, None)
    if ike is None:
        return
    mine = going._per_ike[ike]
    svc._unlater(mine.pop(key, None))   # (one that fired is no longer among the timers: nothing to do)
    if not mine:
        del going._per_ike[ike]   # no empty dict kept per IKE SA


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
