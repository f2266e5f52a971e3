"""Inbound Child SA SPIs: the pool the engine takes from synchronously (topped up from the worker's
GETSPI) and what waits while it is empty: incoming IKE of existing IKE SAs and local actions that
may take an SPI (held, then run in order when the refill brings SPIs)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from tunsec.dataplane import pipe
from tunsec.dataplane.client import REQUEST_TIMEOUT, Sent, WorkerClient, WorkerError, answered, outcome, send_soon
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import SpiUnavailable
from tunsec.loglimit import LogLimiter, suffix
from tunsec.services.ike.barrier import Barrier
from tunsec.services.ike.giveup import GiveUp, Turn

log = logging.getLogger("tunsec.ike")

SPI_POOL = 32   # inbound SPIs asked for ahead (larval SAs in the worker); refilled in one round trip
# ... plus one per half-open IKE SA (each is an IKE_AUTH, and a Child SA, to come), up to this many: a
# burst of clients' IKE_AUTHs then finds its SPIs asked for in one round trip, not one per SPI_POOL of
# them with every IKE_AUTH (and every answer, see Barrier) waiting behind each; bounded, as a flood's
# half-open SAs hold theirs until they time out (the surplus then goes back: follow_half_open).  1024
# (the default half_open_limit) measured no better in bench/scale.py at N = 1000: real clients' IKE_AUTHs
# found SPIs ready with 256 in 3 of 4 runs, and the time was bimodal (2.6 or 3.5 s) with either
SPI_POOL_BURST = 256
# incoming IKE datagrams held while the SPI pool is empty (beyond: dropped, the peer retransmits): a burst
# of clients' IKE_AUTHs is read from the socket in one go, so room for many, but bounded in bytes too.
# HELD_RESERVE of it (and HELD_BYTES_RESERVE) is out of half-open IKE SAs' reach (a responder's, not
# authenticated yet: anyone opens one with an IKE_SA_INIT and sends what it likes under its SPIs); it stays
# for the others (authenticated peers', and those this side initiated, whose number is ours), so an
# attacker's half-open SAs cannot drop established peers' rekeys and CREATE_CHILD_SAs until a refill ends.
# Half-open SAs keep the 1024 (4 MiB) all had before: 1000 clients at once (bench/ike_burst.py) held 904
# IKE_AUTHs at once, one per half-open SA (of at most half_open_limit, default 1000), and a reserve cut
# out of those 1024 dropped 136 of them.  256 for the others: a peer sends one request at a time, so
# that many IKE SAs' rekeys (or fragments) within one refill's round trip while an attacker fills the rest
HELD_RESERVE = 256
HELD_BYTES_RESERVE = 1 << 20
HELD_MAX = 1024 + HELD_RESERVE
HELD_BYTES_MAX = (4 << 20) + HELD_BYTES_RESERVE
# ... and per IKE SA: a peer sends one request at a time (RFC 7296 §2.3), in a few fragments (RFC 7383),
# so one IKE SA's datagrams (a half-open one's peer is not authenticated) cannot take the others' room;
# 64 half-open IKE SAs fill their share (HELD_MAX - HELD_RESERVE datagrams or HELD_BYTES_MAX -
# HELD_BYTES_RESERVE bytes)
HELD_PER_SA = 16
HELD_BYTES_PER_SA = 64 << 10
# The range GETSPI asks in (2^28 SPIs), cut in GENERATIONS parts: the worker of generation g (the
# first, or the one after the g-th restart) is asked for SPIs in part g mod GENERATIONS only, so an
# SPI says which worker issued it (SpiPool.issued) and no SPI of the previous GENERATIONS - 1
# workers is ever one of the current worker's: a Child SA negotiated across a restart with an SPI
# of the old worker is known as such (services/ike/restart.py), and a DELETE of an old worker's SPI
# never reaches another peer's new SA in the new worker.  2^24 SPIs each: far more than a SAD holds.
# A part comes round again after GENERATIONS restarts: what the engine still holds in it then (a Child SA
# whose rekeys the peer refused all along, one negotiated since) is retired at the restart (retire): never
# issued(), and a number the new worker hands out again that is one of those is not used
SPI_BASE = 0xC0000000
# After the worker refused GETSPI (its SAD full), a datagram that finds the pool empty asks again at
# most this often: every datagram under any IKE SA's SPIs did (a half-open SA's peer's junk too, which
# the engine then drops), a batch of up to SPI_POOL + SPI_POOL_BURST GETSPIs and the SPI barrier
# each (review revinit F2).  A real need (take) still asks each time.
REFUSED_RETRY = 1.0
GENERATIONS = 16
_GEN_SHIFT = 24
_GEN_MASK = 0xFF000000


def _request_timeout() -> float:
    return REQUEST_TIMEOUT   # read when the timer is armed (tests shorten it)


def _is_ike_auth_request(data: bytes) -> bool:
    """An IKE_AUTH request (RFC 7296 §3.1: exchange type 35, the Response flag clear)."""
    return len(data) >= 20 and data[18] == 35 and not data[19] & 0x20


@dataclasses.dataclass
class _Held:
    """Incoming datagrams held (in all, of half-open IKE SAs, or of one IKE SA) and their bytes."""
    datagrams: int = 0
    size: int = 0

    def fits(self, size: int, most: int, most_bytes: int) -> bool:
        """One more of ``size`` bytes stays within ``most`` datagrams and ``most_bytes`` bytes."""
        return self.datagrams < most and self.size + size <= most_bytes

    def add(self, size: int, n: int = 1) -> None:
        self.datagrams += n
        self.size += n * size


@dataclasses.dataclass(eq=False)
class _Batch:
    """GETSPIs sent together: to which worker (SpiPool._generation), how many not answered yet, what
    gives up on them (SpiPool._give_up), and (made for refill) what says they are done."""
    generation: int
    pending: int
    sent: list[Sent] = dataclasses.field(default_factory=list)
    turn: Turn | None = None
    done: asyncio.Future[None] | None = None


class SpiPool:
    """The inbound SPIs the engine takes (take), and what waits while there are none (receive, with_spi)."""

    def __init__(self, worker: Callable[[], WorkerClient],
                 spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]], barrier: Barrier,
                 deliver: Callable[[bytes, tuple[str, int], tuple[str, int] | None, bool], None],
                 pump: Callable[[], None], *, owner: Callable[[bytes], IkeSa | None],
                 half_open: Callable[[], int] = lambda: 0) -> None:
        self.worker = worker       # GETSPI goes there
        self._owner = owner        # the IKE SA a datagram is for (IkeEndpoint.sa_for), None if no IKE SA has it
        self._half_open = half_open   # the engine's half-open IKE SAs: SPIs soon taken (see target)
        self._spawn = spawn        # the refill: a task of the service's (shutdown waits for it)
        self.barrier = barrier     # up while the pool is empty and a refill in flight (_spi_barrier)
        self._deliver = deliver    # a datagram into the engine (and whether it came unmarked: ike/unmarked.py)
        self._pump = pump          # after held actions ran: events, datagrams, timer
        self.spis: collections.deque[int] = collections.deque()
        self._asking = 0           # GETSPIs sent and not answered yet (to this worker: _generation)
        self._generation = 0       # bumped by clear (a new worker); its SPIs' range (SPI_BASE, GENERATIONS)
        # SPIs of the current range that an older worker issued and the engine held at the restart (retire)
        self._retired: frozenset[int] = frozenset()
        self.retired_refused = 0   # GETSPI answers not used: the number is a retired one (see retire)
        self._batches: set[_Batch] = set()   # GETSPIs in flight (refill waits for them)
        self._spi_wait = False     # the pool is empty and a refill in flight: the barrier is up (_spi_barrier)
        self._held: collections.deque[Callable[[], None]] = collections.deque()   # what waits for an SPI
        self._held_all = _Held()   # of those, incoming datagrams (at most HELD_MAX, HELD_BYTES_MAX)
        self._held_half_open = _Held()   # of those, half-open IKE SAs' (at most HELD_MAX - HELD_RESERVE, ...)
        self._held_by_sa: dict[bytes, _Held] = {}   # IKE SA (our SPI) -> its held (at most HELD_PER_SA, ...)
        self.held_total = 0        # incoming IKE datagrams that waited for an SPI (status: ike_held)
        self.spi_waits = 0         # of those, IKE_AUTH requests (status: ike_held.spi_waits; see follow_half_open)
        self.waiting_max_half_open = 0   # the most half-open IKE SAs' datagrams that waited at once
        self.held_dropped = 0      # incoming IKE datagrams dropped: the most that may wait already did
        self.held_dropped_half_open = 0   # of those, half-open IKE SAs' (their share was full)
        # lines a flood can cause while inbound SPIs are short; the kinds apart, so that a flood under
        # half-open SAs' SPIs does not silence the lines of established peers' drops
        self._held_log = {True: LogLimiter(), False: LogLimiter()}
        self._getspi_log = LogLimiter()
        self._return_log = LogLimiter()
        self._refused = False      # the last GETSPIs were refused: follow_half_open does not retry each pump
        self._refused_at = -math.inf   # when (clock): a datagram asks again REFUSED_RETRY after it
        self.clock = time.monotonic
        self._seen_half_open = 0   # the half-open count at the last follow_half_open
        self.returned = 0          # pooled SPIs handed back to the worker (half-open SAs that went away)
        self.late_returned = 0     # SPIs of GETSPIs given up on and answered later, handed back (_late_spi)
        self._late_spis: list[int] = []   # of those, to DELETE at the end of this loop turn
        self._give_up = GiveUp(_request_timeout)   # cancels what is unanswered after REQUEST_TIMEOUT

    @property
    def starved(self) -> bool:
        """Empty with a refill in flight: what may take an SPI waits (the barrier is up)."""
        return self._spi_wait

    @property
    def held_waiting(self) -> int:
        """Incoming datagrams waiting for an SPI now."""
        return self._held_all.datagrams

    @property
    def target(self) -> int:
        """How many SPIs a refill tops the pool up to: SPI_POOL and one per half-open IKE SA."""
        return SPI_POOL + min(self._half_open(), SPI_POOL_BURST)

    def follow_half_open(self) -> None:
        """After the engine handled input (the service's pump): the pool follows the half-open count.

        An IKE_SA_INIT just answered means an IKE_AUTH, and an SPI taken, one round trip of the
        peer's later: ask for that SPI now, so GETSPI overlaps the client's next flight.  Asked
        for only when the IKE_AUTH came, a burst found the pool empty and ~70% of its IKE_AUTHs
        waited for a refill.  Half-open SAs that went away (timed out, failed; a spoofed
        IKE_SA_INIT flood's) leave SPIs above the target: they go back to the worker, so what is
        reserved stays bounded by target (SPI_POOL + SPI_POOL_BURST) and shrinks back after a flood.
        After the worker refused GETSPI, only a grown count asks again here (else every pump would,
        and the barrier of the refill in flight would hold the timer for ever); take asks again
        whenever it finds the pool empty, as before."""
        half_open, seen = self._half_open(), self._seen_half_open
        self._seen_half_open = half_open
        if half_open > seen:
            self._refused = False
        target = SPI_POOL + min(half_open, SPI_POOL_BURST)   # self.target, the count read once
        if not self._refused and len(self.spis) + self._asking < target:
            self._start_refill()
        elif not self._asking and (excess := len(self.spis) - target) > 0:
            # the newest first: the oldest are handed out next (take pops from the left)
            spis = [self.spis.pop() for _ in range(excess)]
            self.returned += excess
            self._spawn(self._return_spis(spis, self._generation))

    async def _return_spis(self, spis: list[int], generation: int) -> None:
        """DELETE larval SPIs worker ``generation`` issued that are not used; a failure only leaves them reserved."""
        if generation != self._generation:   # a restart since: the old worker's went with it
            return
        w = self.worker()
        answers = await answered([send_soon(w, "Delete", functools.partial(pipe.Delete, spi=spi,
                                                                          direction=pipe.Direction.IN))
                                  for spi in spis])
        if (failed := next((a for a in answers if isinstance(a, WorkerError)), None)) is not None \
                and (held := self._return_log.admit()) is not None:
                log.warning("DELETE of unused inbound SPIs failed: %s%s", failed, suffix(held))

    def clear(self, held: Iterable[int] = ()) -> None:
        """A new worker: the old one's SPIs mean nothing to it.  ``held``: every inbound SPI the engine
        holds (its Child SAs, installed or being negotiated), which retire sorts."""
        self.spis.clear()
        self._generation += 1
        self._asking = 0
        self.retire(held)
        self._spi_barrier()

    def retire(self, held: Iterable[int]) -> None:
        """Of the SPIs the engine holds at a restart (all issued by older workers), those in the new
        worker's range (GENERATIONS restarts old, or more): never issued() by this worker, nor taken
        from its GETSPI answers should it hand out the same number.  Everything else that names an
        older worker's SPI (a removal queued before the restart) names that worker's generation too
        (installs._delete_sa), so an SPI is current only if this worker issued it."""
        lo, hi = self._range()
        self._retired = frozenset(spi for spi in held if lo <= spi <= hi)
        if self._retired:
            log.info("%d inbound SPIs of Child SAs negotiated %d or more worker restarts ago are retired from "
                     "the new worker's range", len(self._retired), GENERATIONS)

    @property
    def generation(self) -> int:
        """The current worker's: 0 for the first, bumped by each restart (clear)."""
        return self._generation

    def _range(self) -> tuple[int, int]:
        """The SPIs the current worker is asked for (see GENERATIONS)."""
        lo = SPI_BASE | (self._generation % GENERATIONS) << _GEN_SHIFT
        return lo, lo | ~_GEN_MASK & 0xFFFFFFFF

    def issued(self, spi: int) -> bool:
        """Whether ``spi`` is one the current worker issued (or would): an inbound SPI of an older
        worker is none of this one's SAs, or another peer's SA that drew the same number."""
        return spi & _GEN_MASK == self._range()[0] and spi not in self._retired

    def take(self) -> int:
        if not self.spis:
            # ask again (the last GETSPI may have been refused): what failed for want of an SPI (a
            # timer's rekey) is tried again later, and should find one then
            self._start_refill()
            raise SpiUnavailable("no inbound SPI from the worker yet")
        spi = self.spis.popleft()
        if not self.spis:   # else the pump tops up (follow_half_open): with the half-open SA taking
            self._start_refill()   # this one gone from the count, not one SPI more asked and returned
        return spi

    def _start_refill(self) -> None:
        """Top the pool up: GETSPIs for what is neither pooled nor already asked for leave now (not
        from a task a loop turn later: before the IKE_SA_INIT answer that made them wanted), their
        answers are collected in the background.  Pooled plus asked for never exceeds target."""
        if (want := self.target - len(self.spis) - self._asking) > 0:
            w = self.worker()
            # larval_seconds=0: no larval timeout for these.  A pooled SPI is ours; a handed one is
            # installed (ChildSaUp) or handed back (SpiUnused -> DELETE) by the engine, so none is
            # expired under a negotiation, and an idle pool does not churn (it used to expire and
            # log each SPI every 30 s)
            batch = _Batch(self._generation, want)
            got = functools.partial(self._got_spi, batch)
            late = functools.partial(self._late_spi, self._generation)
            lo, hi = self._range()
            batch.sent = [send_soon(w, "GetSpi", lambda r: pipe.GetSpi(r, lo, hi, larval_seconds=0),
                                    got, late) for _ in range(want)]
            self._asking += want
            # no task per batch (a burst sends one per client): the answers come in through ``got``;
            # the last request's end (answered, failed, or cancelled by _give_up) ends the batch, as
            # the worker answers in order and a worker gone fails them all (see _collect)
            batch.turn = self._give_up.watch(batch)
            batch.sent[-1][1].add_done_callback(functools.partial(self._collect, batch))
            self._batches.add(batch)
        self._spi_barrier()    # the pool may have just run empty under GETSPIs in flight

    async def refill(self) -> None:
        """Top the pool up; returns when what was asked for is answered (or the worker refused)."""
        self._start_refill()
        if self._batches:
            await asyncio.wait([self._finished(b) for b in self._batches])

    def _finished(self, batch: _Batch) -> asyncio.Future[None]:
        if batch.done is None:
            batch.done = asyncio.get_running_loop().create_future()
        return batch.done

    def _spi_barrier(self) -> None:
        """The install barrier (see Barrier.flush) is also up while the pool is empty and a
        refill is in flight: incoming IKE that may need an inbound SPI waits (see receive), and
        so do timers (a rekey takes one), rather than fail the Child SA with TEMPORARY_FAILURE.
        With no refill in flight (the worker refused GETSPI) nothing waits: the failure is real."""
        wait = self._asking > 0 and not self.spis
        if wait != self._spi_wait:
            self._spi_wait = wait
            if wait:
                self.barrier.install_started()
            else:
                self.barrier.install_done()
                if self._held:   # SPIs are in: what waits for one runs now, not after every pending install
                    asyncio.get_running_loop().call_soon(self.run_held)

    def _got_spi(self, batch: _Batch, replies: list[pipe.Reply]) -> None:
        """A GETSPI answer, as it is read: into the pool at once, before the IKE datagrams read in
        the same turn (a burst's IKE_AUTHs), not a turn later when the batch's waiter runs."""
        if batch.generation != self._generation:
            return    # asked of a worker since replaced (clear): its SPIs mean nothing to the new one
        batch.pending -= 1
        self._asking -= 1
        if replies[0].errno is pipe.Errno.OK and (spi := replies[0].spi) is not None:
            if self.issued(spi):
                self.spis.append(spi)
            elif spi in self._retired:   # the new worker's larval SA, but the engine holds that number already
                self.retired_refused += 1
                self._spawn(self._return_spis([spi], self._generation))   # not kept larval
            elif (held := self._getspi_log.admit()) is not None:   # the worker's bug: not ours to use or DELETE
                log.warning("GETSPI answered %08x, outside the range asked for: not used%s", spi, suffix(held))
        self._spi_barrier()

    def _late_spi(self, generation: int, replies: list[pipe.Reply]) -> None:
        """The answer to a GETSPI given up on (GiveUp) came after all: the worker made that larval SA,
        with no larval timeout, and no one holds its SPI: DELETEd, counted (review revworker2 F3:
        else each slow episode left up to SPI_POOL + SPI_POOL_BURST SAs in the worker for good).
        Not pooled instead: the refill that gave it up has asked again since."""
        if generation != self._generation or replies[0].errno is not pipe.Errno.OK:
            return
        spi = replies[0].spi
        if spi is None or spi & _GEN_MASK != self._range()[0]:   # outside the range asked: not ours
            return
        self.late_returned += 1
        if not self._late_spis:   # one DELETE batch per loop turn, not a task per late answer
            asyncio.get_running_loop().call_soon(self._return_late)
        self._late_spis.append(spi)

    def _return_late(self) -> None:
        spis, self._late_spis = self._late_spis, []
        self._spawn(self._return_spis(spis, self._generation))

    def _collect(self, batch: _Batch, _last: object = None) -> None:
        """The end of GETSPIs sent together (their SPIs went in as read, see _got_spi): one round trip
        per batch, not one per SPI (the pipe's GETSPI asks for one SPI; a burst's are pipelined).
        What is not answered then failed (the worker went, a timeout; the first failure is logged)."""
        self._batches.discard(batch)
        if batch.turn is not None:   # what is unanswered REQUEST_TIMEOUT after the send was cancelled
            batch.turn.end(batch)    # (GiveUp), which forgets the request: a late answer is counted and dropped
        if batch.done is not None and not batch.done.done():
            batch.done.set_result(None)
        if batch.generation != self._generation:
            return
        self._asking -= batch.pending     # unanswered (the worker went, a timeout): no longer asked for
        batch.pending = 0
        ends = [outcome(what, fut) for what, fut in batch.sent if fut.done()]   # each failure retrieved
        if (failed := next((e for e in ends if isinstance(e, WorkerError)), None)) is not None:
            self._refused, self._refused_at = True, self.clock()
            # rate-limited: with the SAD full, any datagram of an IKE SA (a peer's junk too) retries
            if (held := self._getspi_log.admit()) is not None:
                log.warning("GETSPI failed: %s%s", failed, suffix(held))
        else:
            self._refused = False
        self._spi_barrier()

    def larval_expired(self, spi: int) -> None:
        if spi in self.spis:
            self.spis.remove(spi)
            self._start_refill()

    def receive(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None = None,
                unmarked: bool = False) -> None:
        """One IKE datagram into the engine (deliver; the caller pumps), unless it must wait for an SPI.

        The engine takes inbound SPIs synchronously from the pool.  A datagram of an existing IKE
        SA (IKE_AUTH, CREATE_CHILD_SA, an IKE_SA_INIT response) may need one; while the pool is
        empty it is held until the refill brings one, behind the same barrier that holds outgoing
        datagrams during installs: at most HELD_MAX in all, HELD_PER_SA of one IKE SA, and of
        half-open IKE SAs together HELD_MAX - HELD_RESERVE (bytes alike: HELD_BYTES_*), so neither
        one peer nor anyone's half-open SAs can take the room of established IKE SAs.  Held ones
        keep their order.  What no IKE SA of ours owns (IKE_SA_INIT requests, bad headers,
        unknown SPIs: anyone's junk) needs no SPI and goes into the engine at once, which
        answers or counts it: nothing is kept for it."""
        if self.spis and not self._spi_wait and not self._held:
            # SPIs pooled and nothing waiting (a burst's usual case): whoever the datagram is for, it
            # goes in now, as _must_wait_for_spi would say; no lookup of its IKE SA first
            self._deliver(data, remote, local, unmarked)
            return
        sa = self._owner(data)
        if sa is None or not self._must_wait_for_spi():
            self._deliver(data, remote, local, unmarked)
            return
        ike, half_open, size = sa.local_spi, sa.is_half_open, len(data)
        by_sa = self._held_by_sa.get(ike) or _Held()
        if not self._may_wait(by_sa, half_open, size):
            self._drop_held(remote, half_open, by_sa)
            return
        self._count(ike, half_open, size, 1)
        self.held_total += 1
        self.spi_waits += _is_ike_auth_request(data)
        if half_open:
            self.waiting_max_half_open = max(self.waiting_max_half_open, self._held_half_open.datagrams)
        self._hold(functools.partial(self._receive_held_datagram, ike, half_open, data, remote, local, unmarked))

    def _may_wait(self, by_sa: _Held, half_open: bool, size: int) -> bool:
        """Whether a datagram of ``size`` bytes fits what its IKE SA (holding ``by_sa``), its kind and
        all may hold (the limits read here: tests lower them)."""
        if half_open and not self._held_half_open.fits(size, HELD_MAX - HELD_RESERVE,
                                                       HELD_BYTES_MAX - HELD_BYTES_RESERVE):
            return False
        return by_sa.fits(size, HELD_PER_SA, HELD_BYTES_PER_SA) and self._held_all.fits(size, HELD_MAX, HELD_BYTES_MAX)

    def _drop_held(self, remote: tuple[str, int], half_open: bool, by_sa: _Held) -> None:
        """A datagram that may not wait (the peer retransmits): counted, and logged (rate-limited)."""
        self.held_dropped += 1
        self.held_dropped_half_open += half_open
        if (logged := self._held_log[half_open].admit()) is not None:
            log.warning("IKE datagram of %s IKE SA from %s dropped: %d (%d bytes; %d of half-open IKE SAs, %d "
                        "of its IKE SA) already wait for inbound SPIs from the worker%s",
                        "a half-open" if half_open else "an established", remote[0], self._held_all.datagrams,
                        self._held_all.size, self._held_half_open.datagrams, by_sa.datagrams, suffix(logged))

    def _count(self, ike: bytes, half_open: bool, size: int, n: int) -> None:
        """``n`` datagrams of ``size`` bytes of IKE SA ``ike`` held (-1: one went on)."""
        self._held_all.add(size, n)
        if half_open:
            self._held_half_open.add(size, n)
        by_sa = self._held_by_sa.setdefault(ike, _Held())
        by_sa.add(size, n)
        if not by_sa.datagrams:
            del self._held_by_sa[ike]   # the table stays as small as what waits

    def _receive_held_datagram(self, ike: bytes, half_open: bool, data: bytes, remote: tuple[str, int],
                               local: tuple[str, int] | None, unmarked: bool) -> None:
        self._count(ike, half_open, len(data), -1)
        self._deliver(data, remote, local, unmarked)

    def with_spi(self, action: Callable[[], None]) -> None:
        """Run a local action that may take an inbound SPI (a rekey, a CREATE_CHILD_SA) now, or
        after the refill if the pool is empty; the caller pumps."""
        if self._must_wait_for_spi():
            self._hold(action)
        else:
            action()

    def _must_wait_for_spi(self) -> bool:
        """The pool is empty (a refill is started, unless the worker refused the last one within
        REFUSED_RETRY) or others already wait: wait behind them."""
        if not self.spis and (not self._refused or self.clock() - self._refused_at >= REFUSED_RETRY):
            self._start_refill()
        return self._spi_wait or bool(self._held)

    def _hold(self, action: Callable[[], None]) -> None:
        self._held.append(action)
        if self.barrier.up:   # starts the wait for the barrier if none is pending (else _spi_barrier's
            self.barrier.flush()   # call_soon runs it): not a send before the events are handled

    def run_held(self) -> None:
        """The barrier is down: what waited for an SPI runs, in order, until the pool is empty
        again; then what is queued leaves and the timer (held back meanwhile) is re-armed."""
        # not "until no install is pending": that let one held IKE_AUTH through per Child SA install,
        # and a burst of clients overflowed HELD_MAX; what is sent still waits for the installs
        while self._held and not self._spi_wait:
            action = self._held.popleft()
            try:
                action()
            except Exception as err:   # its caller has moved on; the rest must still run
                log.warning("IKE action that waited for an inbound SPI failed: %s", err)
        self._pump()   # installs it started, datagrams, timer; waits again if some still wait
