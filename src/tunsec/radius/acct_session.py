"""One RADIUS accounting session (an IKE SA, :mod:`tunsec.radius.accounting`): what its records
name it by, the order they go out in, and its usage: ``carried`` (its Child SAs gone, or lost with
a worker) plus the highest counters seen of each Child SA the running worker holds (``seen``); and
a Child SA reported gone (``Going``) until the worker answered the DELETEs of both its SAs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunsec.dataplane.pipe import Direction, Endpoint

from .causes import Cause
from .messages import Station
from .usage import ChildRef, SaIndex, Usage


@dataclass
class Session:
    sid: str
    user: str
    station: Station
    vips: tuple[str, ...]
    started: float
    classes: tuple[bytes, ...]
    carried: Usage = field(default_factory=Usage)  # Child SAs gone (or lost with a worker): their last counters
    # the running worker's Child SAs (by ChildRef.key): the highest counters a DUMP (an EXPIRE, a
    # DELETE's answer) showed of each
    seen: dict[tuple[int, int], Usage] = field(default_factory=dict)
    going: list[Going] = field(default_factory=list)  # Child SAs reported gone, their DELETEs still to answer
    last: asyncio.Task[None] | None = None  # the session's latest record: the next waits for it
    timer: asyncio.TimerHandle | None = None  # the next Interim-Update
    interval: float | None = None  # the Access-Accept's Acct-Interim-Interval (bounded), over the config's
    base: Usage = field(default_factory=Usage)  # what the Child SAs had carried before the Start (midway)
    # the Acct-Terminate-Cause accounting itself gave it: its IKE SA closed for a lost record
    ended_for: Cause | None = None

    def absorb(self, refs: Sequence[ChildRef], index: SaIndex) -> None:
        """What a DUMP shows of the session's Child SAs ``refs`` (installed now: a Child SA reported
        gone is carried once its DELETEs are answered, and must not come back into ``seen``) and of
        the SAs not deleted yet of those being deleted (a rekeyed one's lingering inbound SA)."""
        for ref in refs:
            self.seen.setdefault(ref.key, Usage()).raise_to(index.usage(ref))
        for going in self.going:
            self.seen.setdefault(going.ref.key, Usage()).raise_to(going.still_there(index.usage(going.ref)))

    def carry(self, key: tuple[int, int]) -> Usage | None:
        """The Child SA is gone: its last counters stay in the total (and are answered)."""
        if (usage := self.seen.pop(key, None)) is not None:
            self.carried.add(usage)
        return usage

    def carry_all(self) -> None:
        for key in list(self.seen):
            self.carry(key)

    def total(self) -> Usage:
        """Since the Start: all the Child SAs carried, less ``base``."""
        total = Usage()
        total.add(self.carried)
        for usage in self.seen.values():
            total.add(usage)
        b = self.base
        return Usage(total.octets_in - b.octets_in, total.octets_out - b.octets_out,
                     total.packets_in - b.packets_in, total.packets_out - b.packets_out)


@dataclass(eq=False)
class Going:
    """A Child SA reported gone (Accounting.child_down) until the worker answered both its SAs'
    DELETEs (Accounting.deleted), known by its SAs' names meanwhile: an EXPIRE of one of them still
    finds its session.  ``left``: its SAs not deleted yet; ``done``: set once it is carried."""

    session: Session
    ref: ChildRef
    done: asyncio.Future[None]
    left: set[Direction] = field(default_factory=lambda: {Direction.IN, Direction.OUT})

    def still_there(self, u: Usage) -> Usage:
        """``u`` (a reading of its SAs) without the SAs deleted already: a DUMP answered after
        one's DELETE does not show it (0 is no reading), or shows an SA that took its SPI since."""
        if Direction.IN not in self.left:
            u.octets_in = u.packets_in = 0
        if Direction.OUT not in self.left:
            u.octets_out = u.packets_out = 0
        return u


SaId = tuple[Direction, int, Endpoint | None]   # an SA as the worker names it (outbound: with its peer)


def sa_ids(ref: ChildRef) -> tuple[SaId, SaId]:
    return (Direction.IN, ref.spi_in, None), (Direction.OUT, ref.spi_out, ref.remote)
