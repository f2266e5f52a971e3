"""Inbound Child SA SPIs: the pool the engine takes from synchronously (topped up from the worker's
GETSPI) and what waits while it is empty: incoming IKE of existing IKE SAs and local actions that
may take an SPI (held, then run in order when the refill brings SPIs)."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, answered, send_soon
from tunsec.ike.state import SpiUnavailable
from tunsec.loglimit import LogLimiter, suffix
from tunsec.services.ike.barrier import Barrier

log = logging.getLogger("tunsec.ike")

SPI_POOL = 32   # inbound SPIs asked for ahead (larval SAs in the worker); refilled in one round trip
# ... plus one per half-open IKE SA (each is an IKE_AUTH, and a Child SA, to come), up to this many: a
# burst of clients' IKE_AUTHs then finds its SPIs asked for in one round trip, not one per SPI_POOL of
# them with every IKE_AUTH (and every answer, see Barrier) waiting behind each; bounded, as the pool is
# never trimmed (half-open SAs without a cookie are few, see DosLimits)
SPI_POOL_BURST = 256
# incoming IKE datagrams held while the SPI pool is empty (beyond: dropped, the peer retransmits): a burst
# of clients' IKE_AUTHs is read from the socket in one go, so room for many, but bounded in bytes too
HELD_MAX = 1024
HELD_BYTES_MAX = 4 << 20


def _may_need_spi(data: bytes) -> bool:
    """Whether a datagram belongs to an existing IKE SA (its responder SPI is set), so handling
    it may take an inbound Child SA SPI; IKE_SA_INIT requests (and junk too short) do not."""
    return len(data) >= 16 and any(data[8:16])


class SpiPool:
    """The inbound SPIs the engine takes (take), and what waits while there are none (receive, with_spi)."""

    def __init__(self, worker: Callable[[], WorkerClient],
                 spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]], barrier: Barrier,
                 deliver: Callable[[bytes, tuple[str, int], tuple[str, int] | None], None],
                 pump: Callable[[], None], half_open: Callable[[], int] = lambda: 0) -> None:
        self.worker = worker       # GETSPI goes there
        self._half_open = half_open   # the engine's half-open IKE SAs: SPIs soon taken (see target)
        self._spawn = spawn        # the refill: a task of the service's (shutdown waits for it)
        self.barrier = barrier     # up while the pool is empty and a refill in flight (_spi_barrier)
        self._deliver = deliver    # a datagram into the engine
        self._pump = pump          # after held actions ran: events, datagrams, timer
        self.spis: collections.deque[int] = collections.deque()
        self._refill: asyncio.Task[None] | None = None
        self._spi_wait = False     # the pool is empty and a refill in flight: the barrier is up (_spi_barrier)
        self._held: collections.deque[Callable[[], None]] = collections.deque()   # what waits for an SPI
        self._held_datagrams = 0   # how many of those are incoming datagrams (at most HELD_MAX)
        self._held_bytes = 0       # and their size (at most HELD_BYTES_MAX)
        self.held_total = 0        # incoming IKE datagrams that waited for an SPI (status: ike_held)
        self.held_dropped = 0      # incoming IKE datagrams dropped because HELD_MAX were already held
        self._held_log = LogLimiter()     # lines a flood can cause while inbound SPIs are short
        self._getspi_log = LogLimiter()

    @property
    def starved(self) -> bool:
        """Empty with a refill in flight: what may take an SPI waits (the barrier is up)."""
        return self._spi_wait

    @property
    def held_waiting(self) -> int:
        """Incoming datagrams waiting for an SPI now."""
        return self._held_datagrams

    @property
    def target(self) -> int:
        """How many SPIs a refill tops the pool up to: SPI_POOL and one per half-open IKE SA."""
        return SPI_POOL + min(self._half_open(), SPI_POOL_BURST)

    def clear(self) -> None:
        """A new worker: the old one's SPIs mean nothing to it."""
        self.spis.clear()
        self._spi_barrier()

    def take(self) -> int:
        if not self.spis:
            # ask again (the last GETSPI may have been refused): what failed for want of an SPI (a
            # timer's rekey) is tried again later, and should find one then
            self._start_refill()
            raise SpiUnavailable("no inbound SPI from the worker yet")
        spi = self.spis.popleft()
        self._start_refill()
        return spi

    def _start_refill(self) -> asyncio.Task[None]:
        """Top the pool up in the background (one refill at a time)."""
        if self._refill is None:
            self._refill = self._spawn(self._refill_spis())
        self._spi_barrier()    # the pool may have just run empty under a refill in flight
        return self._refill

    async def refill(self) -> None:
        """Top the pool up; returns when it is full (or the worker refused)."""
        await asyncio.shield(self._start_refill())

    def _spi_barrier(self) -> None:
        """The install barrier (see Barrier.flush) is also up while the pool is empty and a
        refill is in flight: incoming IKE that may need an inbound SPI waits (see receive), and
        so do timers (a rekey takes one), rather than fail the Child SA with TEMPORARY_FAILURE.
        With no refill in flight (the worker refused GETSPI) nothing waits: the failure is real."""
        wait = self._refill is not None and not self.spis
        if wait != self._spi_wait:
            self._spi_wait = wait
            if wait:
                self.barrier.install_started()
            else:
                self.barrier.install_done()
                if self._held:   # SPIs are in: what waits for one runs now, not after every pending install
                    asyncio.get_running_loop().call_soon(self.run_held)

    async def _refill_spis(self) -> None:
        try:
            # asked for all at once: one round trip per refill, not one per SPI (a burst of clients
            # empties the pool again and again)
            while (want := self.target - len(self.spis)) > 0:
                # larval_seconds=0: no larval timeout for these.  A pooled SPI is ours; a
                # handed one is installed (ChildSaUp) or handed back (SpiUnused -> DELETE)
                # by the engine, so none is expired under a negotiation, and an idle
                # pool does not churn (it used to expire and log each SPI every 30 s)
                # (one waiter for all, no task per GETSPI: see answered)
                w = self.worker()
                answers = await answered([send_soon(
                    w, "GetSpi", lambda r: pipe.GetSpi(r, 0xC0000000, 0xCFFFFFFF, larval_seconds=0))
                    for _ in range(want)])
                for replies in answers:     # keep every SPI the worker gave before reporting a failure
                    if not isinstance(replies, WorkerError) and replies[0].spi is not None:
                        self.spis.append(replies[0].spi)
                self._spi_barrier()
                if failed := next((a for a in answers if isinstance(a, WorkerError)), None):
                    raise failed
        except WorkerError as err:
            # rate-limited: with the SAD full, any datagram of an IKE SA (a peer's junk too) retries
            if (held := self._getspi_log.admit()) is not None:
                log.warning("GETSPI failed: %s%s", err, suffix(held))
        finally:
            self._refill = None
            self._spi_barrier()

    def larval_expired(self, spi: int) -> None:
        if spi in self.spis:
            self.spis.remove(spi)
            self._start_refill()

    def receive(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None = None) -> None:
        """One IKE datagram into the engine (deliver; the caller pumps), unless it must wait for an SPI.

        The engine takes inbound SPIs synchronously from the pool.  A datagram of an existing IKE
        SA (IKE_AUTH, CREATE_CHILD_SA, an IKE_SA_INIT response) may need one; while the pool is
        empty it is held (at most HELD_MAX) until the refill brings one, behind the same barrier
        that holds outgoing datagrams during installs.  Held ones keep their order; IKE_SA_INIT
        requests need no SPI and never wait."""
        if not (_may_need_spi(data) and self._must_wait_for_spi()):
            self._deliver(data, remote, local)
        elif self._held_datagrams >= HELD_MAX or self._held_bytes + len(data) > HELD_BYTES_MAX:
            self.held_dropped += 1
            if (held := self._held_log.admit()) is not None:
                log.warning("IKE datagram from %s dropped: %d (%d bytes) already wait for inbound SPIs from the "
                            "worker%s", remote[0], self._held_datagrams, self._held_bytes, suffix(held))
        else:
            self._held_datagrams += 1
            self.held_total += 1
            self._held_bytes += len(data)
            self._hold(functools.partial(self._receive_held_datagram, data, remote, local))

    def _receive_held_datagram(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None) -> None:
        self._held_datagrams -= 1
        self._held_bytes -= len(data)
        self._deliver(data, remote, local)

    def with_spi(self, action: Callable[[], None]) -> None:
        """Run a local action that may take an inbound SPI (a rekey, a CREATE_CHILD_SA) now, or
        after the refill if the pool is empty; the caller pumps."""
        if self._must_wait_for_spi():
            self._hold(action)
        else:
            action()

    def _must_wait_for_spi(self) -> bool:
        """The pool is empty (a refill is started) or others already wait: wait behind them."""
        if not self.spis:
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
