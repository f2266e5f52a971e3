"""Memory given back after a burst (tunsec.memtrim): CalmTrim on a fake clock trims once per burst,
only after ``quiet`` seconds without activity and only after ``burst`` units of it; glibc's
malloc_trim really returns freed heap pages; the IKE service reports each datagram it takes."""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from tunsec import memtrim
from tunsec.memtrim import CalmTrim


class FakeClock:
    """time() and call_at() of an event loop; advance() runs what comes due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self._seq), callback))

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.timers and self.timers[0][0] <= end:
            when, _, callback = heapq.heappop(self.timers)
            self.now = max(self.now, when)
            callback()
        self.now = end


def calm(burst: int = 10, quiet: float = 2.0, works: bool = True) -> tuple[FakeClock, CalmTrim, list[float]]:
    clock = FakeClock()
    done: list[float] = []

    def trim() -> bool:
        done.append(clock.now)
        return works
    return clock, CalmTrim(clock, trim, quiet=quiet, burst=burst), done


def busy(clock: FakeClock, c: CalmTrim, n: int, every: float = 0.01) -> None:
    for _ in range(n):
        c.note()
        clock.advance(every)


def test_one_trim_when_calm_after_a_burst_and_none_before() -> None:
    clock, c, done = calm()
    busy(clock, c, 10, every=0.1)        # the last note at 0.9
    clock.advance(0.9 + 2.0 - 0.01 - clock.now)
    assert done == [] and c.trims == 0, "not calm yet: 2 s have not passed since the last request"
    clock.advance(0.02)
    assert done == [pytest.approx(2.9)] and c.trims == 1
    clock.advance(60)
    assert len(done) == 1 and not clock.timers, "one trim per burst, and no timer left behind"


def test_activity_after_the_burst_postpones_the_trim_until_calm() -> None:
    clock, c, done = calm()
    busy(clock, c, 10)
    for _ in range(5):                   # a request every 1.5 s: never 2 s of quiet
        clock.advance(1.5)
        c.note()
    last = clock.now
    clock.advance(1.99)
    assert done == []
    clock.advance(0.02)
    assert done == [pytest.approx(last + 2.0)] and c.trims == 1
    assert len(clock.timers) == 0


def test_sparse_activity_never_trims() -> None:
    """A scrape or a DPD now and then, each after a quiet spell: stretches below the burst do not add up."""
    clock, c, done = calm(burst=10)
    for _ in range(50):
        busy(clock, c, 9)
        clock.advance(2.5)
    assert done == [] and not clock.timers


def test_each_burst_trims_once() -> None:
    clock, c, done = calm(burst=10)
    busy(clock, c, 30)
    clock.advance(3)
    busy(clock, c, 12)
    clock.advance(3)
    assert c.trims == 2 and len(done) == 2


def test_a_trim_that_cannot_be_done_is_not_counted() -> None:
    clock, c, done = calm(works=False)
    busy(clock, c, 20)
    clock.advance(3)
    assert len(done) == 1 and c.trims == 0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memtrim._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_malloc_trim_gives_freed_heap_pages_back() -> None:
    """32 MiB of the C heap touched and freed below a chunk still in use (so free() cannot shrink the
    heap from its top): RSS keeps it until malloc_trim hands the free pages back."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024   # below glibc's mmap threshold: from the heap
    chunks = [libc.malloc(size) for _ in range(512)]
    pin = libc.malloc(size)
    assert all(chunks) and pin
    for p in chunks:
        ctypes.memset(p, 1, size)
    for p in chunks:
        libc.free(p)
    held = _rss_kib()
    assert memtrim.malloc_trim()
    after = _rss_kib()
    libc.free(pin)
    assert held - after > 16 * 1024, f"RSS {held} KiB before the trim, {after} KiB after"


def test_the_ike_service_reports_every_datagram_it_takes() -> None:
    """Each IKE datagram into the engine (port 500 and port 4500's via the worker) is activity: three
    sites' set-ups (IKE_SA_INIT and IKE_AUTH each) make a burst of 6, calm 2 s later."""
    from test_ikeservice_peers import Gateway

    clock, c, done = calm(burst=6)

    async def run() -> int:
        gw = Gateway(3)
        await gw.start()
        gw.service.on_activity = c.note
        for i in range(3):
            gw.connect(i)
        await gw.settle()
        return sum(1 for i in range(3) if gw.site_sa(i) is not None)

    assert asyncio.run(run()) == 3
    assert done == []
    clock.advance(2.0)
    assert c.trims == 1


def test_a_unit_of_work_may_weigh_more_than_one() -> None:
    """One DUMP of many SAs is a burst by itself."""
    clock, c, _ = calm(burst=64)
    c.note(100)
    clock.advance(2.0)
    assert c.trims == 1
    c.note(63)
    clock.advance(5.0)
    assert c.trims == 1


@pytest.mark.skipif(memtrim._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_the_worker_trims_after_a_burst_of_requests_and_dump_counts_it() -> None:
    """The worker's pipe requests are its activity, and a DUMP one unit per SA it lists; its DUMP carries
    the trims as the gauge malloc_trims."""
    from typing import cast

    from tunsec.dataplane import pipe
    from tunsec.dataplane.fastpath import Dataplane
    from tunsec.dataplane.worker import Worker

    clock = FakeClock()
    w = Worker(Dataplane(), lambda b: None, {}, cast(asyncio.AbstractEventLoop, clock))
    ids = itertools.count(1)

    def trims() -> int:
        replies = [cast(pipe.Reply, pipe.decode(d)) for d in w.handle_datagram(pipe.encode(pipe.Dump(next(ids))))]
        return dict(pipe.join_dump_replies(replies).gauges)["malloc_trims"]

    for _ in range(memtrim.BURST - 1):
        w.handle_datagram(pipe.encode(pipe.SpdFlush(next(ids))))
        clock.advance(0.01)
    assert trims() == 0   # the burst's last request (an empty SAD: one unit)
    clock.advance(memtrim.QUIET - 0.001)
    assert trims() == 0, "not calm yet"
    clock.advance(memtrim.QUIET + 0.01)
    assert not clock.timers and trims() == 1
    clock.advance(memtrim.QUIET)
    assert trims() == 1 and not clock.timers, "a DUMP of a few SAs now and then is no burst"
    for _ in range(memtrim.BURST):   # SAs added slowly, each request after a quiet spell: no burst
        w.handle_datagram(pipe.encode(pipe.GetSpi(next(ids), 0x1000, 0xFFFFFF, larval_seconds=0)))
        clock.advance(memtrim.QUIET)
    assert trims() == 1 and len(w.dp.sas()) == memtrim.BURST
    clock.advance(memtrim.QUIET)
    assert trims() == 2, "the DUMP of all of them was"
