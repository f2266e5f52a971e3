"""Initiations that have not reached the engine yet, by connection: ``tunsec terminate`` stops them.

The service initiates a connection again after a delay (keyingtries: ikesas._retry; a refused
virtual IP: vip_refused; close_action or dpd_action = start; an IKE SA that expired), and every
initiation, the operator's and a trap's ACQUIRE too, may then wait for an inbound SPI from the
worker (SpiPool.with_spi).  terminate deleted the connection's IKE SAs only: a try in either wait
started a new IKE SA after it (with keyingtries = 0, for ever).  So each try is kept here from its
scheduling until the engine has it, and terminate stops those of its connection (logged, and said
in its answer); an initiate after the terminate is a try of its own and goes ahead."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunsec.services.ike.reestablish import LostPeer
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


@dataclasses.dataclass(eq=False)
class Try:
    """One initiation of ``child`` (None: the connection's default) not in the engine yet."""
    conn: str
    child: str | None
    why: str                                 # who asked for it (keyingtries, an ACQUIRE, ...)
    timer: asyncio.TimerHandle | None = None   # its delay, before it waits for an SPI
    stopped: bool = False
    # bound to one peer (reestablish.py): the IKE SA handle the child goes back into, or the lost
    # IKE SA's peer; neither: the connection's IKE SA, whichever (commands._initiate)
    ike: int | None = None
    peer: LostPeer | None = None

    @property
    def bound(self) -> bool:
        return self.ike is not None or self.peer is not None

    def describe(self) -> str:
        what = f"child {self.child}" if self.child else "the connection"
        return f"{self.why} of {what} ({'scheduled' if self.timer is not None else 'waiting for an inbound SPI'})"


class Tries:
    """The tries not in the engine yet, by connection."""

    def __init__(self) -> None:
        self._of: dict[str, dict[Try, None]] = {}

    def add(self, t: Try) -> None:
        self._of.setdefault(t.conn, {})[t] = None

    def reached(self, t: Try) -> bool:
        """``t`` leaves the list (it reaches the engine now, or is dropped): False if it was stopped."""
        tries = self._of.get(t.conn)
        if tries is not None:
            tries.pop(t, None)
            if not tries:
                del self._of[t.conn]
        return not t.stopped

    def stop(self, conn: str, child: str | None = None) -> list[Try]:
        """The connection's tries (with ``child``: those of that child): none of them reaches the engine."""
        if child is None:
            tries = list(self._of.pop(conn, {}))
        else:
            tries = [t for t in self._of.get(conn, {}) if t.child == child]
            for t in tries:
                self.reached(t)
        for t in tries:
            t.stopped = True
            if t.timer is not None:
                t.timer.cancel()
        return tries

    def __len__(self) -> int:
        return sum(len(t) for t in self._of.values())


@dataclasses.dataclass
class Terminated:
    """What ``tunsec terminate`` did: IKE SAs (or with --child, Child SAs: ``what``) it deleted, and
    the tries it stopped (described)."""
    deleted: int
    stopped: list[str]
    what: str = "IKE SA(s)"

    def __bool__(self) -> bool:
        return bool(self.deleted or self.stopped)

    def message(self) -> str:
        parts = [f"deleting {self.deleted} {self.what}"] if self.deleted or not self.stopped else []
        if self.stopped:
            parts.append(stopped_line(self.stopped))
        return "; ".join(parts)


def stopped_line(stopped: list[str]) -> str:
    n = len(stopped)
    return f"stopped {n} {'try' if n == 1 else 'tries'} not sent yet: {', '.join(stopped)}"


def later(self: IkeService, delay: float, conn: str, child: str | None, why: str, *, ike: int | None = None,
          peer: LostPeer | None = None) -> Try:
    """Initiate ``child`` of ``conn`` in ``delay`` seconds, unless terminate comes first.  A plain loop
    timer: a worker restart meanwhile must not cancel it (IkeService._later).  ``ike``, ``peer``: bound
    to that IKE SA or that lost SA's peer (reestablish.py)."""
    t = Try(conn, child, why, ike=ike, peer=peer)
    t.timer = asyncio.get_event_loop().call_later(delay, _due, self, t)
    self.tries.add(t)
    return t


def _due(self: IkeService, t: Try) -> None:
    t.timer = None
    if self.closing or t.stopped:
        self.tries.reached(t)
        return
    try:
        self.initiate(t.conn, t.child, t)
    except (KeyError, ValueError) as err:   # a reload removed the connection meanwhile
        self.tries.reached(t)
        log.error("%s: cannot initiate: %s", t.conn, err)


def with_spi(self: IkeService, t: Try, then: Callable[[str, str | None], None]) -> None:
    """``then(conn, child)`` once an inbound SPI is at hand, unless terminate stopped ``t`` meanwhile."""
    self.tries.add(t)
    self.spi_pool.with_spi(functools.partial(_spi_at_hand, self, t, then))


def _spi_at_hand(self: IkeService, t: Try, then: Callable[[str, str | None], None]) -> None:
    if self.tries.reached(t):
        then(t.conn, t.child)
