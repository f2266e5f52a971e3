"""The control process stays flat: thousands of rekeys and status requests leave no objects behind.

Two daemons (real Daemon and IkeService objects from a parsed config, real
engines) talk through an in-memory wire on a fake clock; each has a fake
worker that keeps an SAD and SPD the way the real one answers the pipe (its
answers go through the pipe codec, a DUMP as the worker splits it). After
a warm-up, the live objects of every type are counted (``gc``), over a
thousand Child SA installs (and hundreds of IKE SA rekeys) and thousands of
`status` requests run, and no type may have grown by more than a fifth of the
number of rekeys: anything kept per rekey or per request would have grown by
at least that. The fake SAD must also hold exactly the Child
SAs both sides report, so nothing is left installed either.

Memory that no object holds, CPython's free lists, does not show in ``gc``;
`status` requests are also counted with tracemalloc (see
test_status_requests_hold_no_memory).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import itertools
import logging
import random
import secrets
import sys
import tracemalloc
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tunsec.conf.config import parse_config
from tunsec.daemon import Daemon
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.fastpath import SA_COUNTERS, Drop
from tunsec.dataplane.pipe import Direction, Endpoint, Errno, Reply, SaInfo
from tunsec.services import ike as ikeservice

pytestmark = pytest.mark.slow   # both tests take tens of CPU-seconds: started early under xdist


def ike_modules() -> list[types.ModuleType]:
    """The modules of the IKE service package (tunsec.services.ike) that read the clock."""
    return [m for n, m in list(sys.modules.items()) if n.startswith("tunsec.services.ike.") and hasattr(m, "time")]


A, B = "192.0.2.1", "192.0.2.2"
CHILD_REKEY, IKE_REKEY = 20, 50         # seconds on the fake clock
STATUS_EVERY = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@dataclass
class Wire:
    """Datagrams in flight with a random delay, so that exchanges of the two sides cross."""

    clock: FakeClock
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    # (arrival time, sequence, destination IP, data, source IP, via port 4500)
    queue: list[tuple[float, int, str, bytes, str, bool]] = field(default_factory=list)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def send(self, dst: str, data: bytes, src: str, natt: bool) -> None:
        arrival = self.clock.now + self.rng.uniform(0.001, 0.3)
        heapq.heappush(self.queue, (arrival, next(self.seq), dst, data, src, natt))

    @property
    def next_arrival(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def deliver(self) -> None:
        while self.queue and self.queue[0][0] <= self.clock.now:
            _, _, dst, data, src, natt = heapq.heappop(self.queue)
            ike = self.daemons[dst].ike
            assert ike is not None
            if natt:
                remote, local = Endpoint(ip_address(src), 4500), Endpoint(ip_address(dst), 4500)
                ike.receive_natt(pipe.Ike(data=data, remote=remote, local=local))
            else:
                ike.endpoint.receive(data, (src, 500), self.clock.now)
                ike._pump()


class FakeSocket:
    """The daemon's port 500 socket."""

    def __init__(self, wire: Wire, me: str) -> None:
        self.wire, self.me = wire, me

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.send(addr[0], data, self.me, False)
        return len(data)


# the worker's drop counters, one per reason: a DUMP answer carries all of them
DROPS = tuple((d.name.lower(), 0) for d in Drop if d is not Drop.NONE)


class FakeWorker:
    """Answers the pipe like the worker: GETSPI makes a larval SA, UPDATE/ADD/DELETE keep an SAD.

    Answers go through the pipe codec as the real ones do (encoded, split into
    datagrams, decoded), so what the control process keeps of them shows."""

    def __init__(self, wire: Wire, me: str) -> None:
        self.wire, self.me = wire, me
        self.ids = itertools.count(1)
        self.larval: set[int] = set()
        self.sad: dict[tuple[int, Direction], pipe.SaSpec] = {}
        self.spd: dict[int, pipe.Policy] = {}
        self.pid = 4242
        self.installs = 0  # Child SAs installed (one ADD each)
        self.proc = None
        self.malformed = 0   # as WorkerClient: datagrams from the worker that did not decode (status reads it)
        self.late = 0        # as WorkerClient: answers nobody waited for any more (status reads it)
        self.dump_overflows = 0   # as WorkerClient: DUMP answers past its cap (status reads it)
        self.stderr_dropped = 0

    async def request(self, build: Callable[[int], Any], max_bytes: int | None = None) -> list[Reply]:
        built = build(next(self.ids))
        # a Child SA's install comes encoded (pipe.direct): as the worker, read it
        msg: Any = pipe.decode(built) if isinstance(built, bytes) else built
        await asyncio.sleep(0)  # answers come later, as over the pipe
        spi = None
        errno = Errno.OK
        match msg:
            case pipe.GetSpi():
                spi = msg.lo + secrets.randbelow(msg.hi - msg.lo)
                self.larval.add(spi)
            case pipe.Update():
                if msg.sa.spi in self.larval:
                    self.larval.discard(msg.sa.spi)
                    self.sad[(msg.sa.spi, Direction.IN)] = msg.sa
                else:
                    errno = Errno.ENOENT
            case pipe.Add():
                self.sad[(msg.sa.spi, Direction.OUT)] = msg.sa
                self.installs += 1
            case pipe.Delete():
                if (msg.spi, msg.direction) in self.sad:
                    del self.sad[(msg.spi, msg.direction)]
                elif msg.direction is Direction.IN and msg.spi in self.larval:
                    self.larval.discard(msg.spi)
                else:
                    errno = Errno.ENOENT
            case pipe.SpdAdd():
                self.spd[msg.policy.id] = msg.policy
            case pipe.SpdDelete():
                errno = Errno.OK if self.spd.pop(msg.id, None) is not None else Errno.ENOENT
            case pipe.SendIke():
                self.wire.send(str(msg.remote.addr), msg.data, self.me, True)
            case pipe.Dump():
                return [pipe.decode(m) for m in pipe.encode_dump_replies(msg.req_id, self._dump(), [], DROPS)]
        if errno is not Errno.OK:
            raise WorkerError(type(msg).__name__, errno)
        reply = pipe.decode(pipe.encode(Reply(msg.req_id, msg.TYPE, errno, spi=spi)))
        assert isinstance(reply, Reply)
        return [reply]

    def request_soon(self, build: Callable[[int], Any],
                     then: Callable[[list[Reply]], None] | None = None,
                     failed: Callable[[WorkerError], None] | None = None,
                     late: object = None) -> asyncio.Future[list[Reply]]:
        fut = asyncio.ensure_future(self.request(build))

        def ended(f: asyncio.Future[list[Reply]]) -> None:   # as WorkerClient's: then or failed
            if f.cancelled():
                return
            if (err := f.exception()) is None:
                if then is not None:
                    then(f.result())
            elif failed is not None and isinstance(err, WorkerError):
                failed(err)
        fut.add_done_callback(ended)
        return fut

    def _dump(self) -> list[SaInfo]:
        out = [SaInfo(spi, Direction.IN, "larval", None, False, 0, 0, None, None, 0, False, False, 1,
                      dict.fromkeys(SA_COUNTERS, 0))
               for spi in self.larval]
        for (spi, direction), sa in self.sad.items():
            out.append(SaInfo(spi, direction, "mature", sa.alg, sa.esn, sa.reqid, sa.replay_window, sa.local,
                              sa.remote, 7, False, False, 1, dict.fromkeys(SA_COUNTERS, 100)))
        return out


def conf_text(me: str, peer: str, initiator: bool) -> str:
    ids = ("moon.example", "sun.example") if initiator else ("sun.example", "moon.example")
    nets = ("10.1.0.0/24", "10.2.0.0/24") if initiator else ("10.2.0.0/24", "10.1.0.0/24")
    return f"""tunsec {{
  tun = tunsec-test
}}
connections {{
  tun {{
    local_addrs = {me}
    remote_addrs = {peer}
    proposals = aes128gcm16-prfsha256-curve25519
    rekey_time = {IKE_REKEY}s
    local {{
      auth = psk
      id = {ids[0]}
    }}
    remote {{
      auth = psk
      id = {ids[1]}
    }}
    children {{
      net {{
        local_ts = {nets[0]}
        remote_ts = {nets[1]}
        esp_proposals = aes128gcm16
        rekey_time = {CHILD_REKEY}s
      }}
    }}
  }}
}}
secrets {{
  ike-a {{
    id-a = moon.example
    id-b = sun.example
    secret = "a shared secret of some length"
  }}
}}
"""


class Pair:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = FakeClock()
        for mod in ike_modules():   # each module of the IKE service reads the clock itself
            monkeypatch.setattr(mod, "time", self.clock)
        self.wire = Wire(self.clock)
        self.workers: dict[str, FakeWorker] = {}
        for me, peer, initiator in ((A, B, True), (B, A, False)):
            path = tmp / f"{me}.conf"
            daemon = Daemon(parse_config(conf_text(me, peer, initiator), str(path)))
            worker = FakeWorker(self.wire, me)
            daemon.worker = worker  # type: ignore[assignment]
            assert daemon.ike is not None
            daemon.ike.sockets.by_key = {(4, me, 500): FakeSocket(self.wire, me)}  # type: ignore[dict-item]
            self.wire.daemons[me] = daemon
            self.workers[me] = worker
        self.statuses = 0
        self.next_status = self.clock.now

    def ike(self, ip: str) -> ikeservice.IkeService:
        ike = self.wire.daemons[ip].ike
        assert ike is not None
        return ike

    async def settle(self) -> None:
        """Let the spawned tasks (installs, deletes, SPI refills) finish."""
        for _ in range(1000):
            await asyncio.sleep(0)
            if not any(self.ike(ip)._tasks or self.ike(ip).sockets.natt_sends for ip in (A, B)):
                return
        raise AssertionError("tasks did not settle")

    async def status(self) -> None:
        for ip in (A, B):
            answer = await self.wire.daemons[ip]._command(b'{"cmd": "status"}')
            assert answer["ok"]
        self.statuses += 1

    async def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            await self.settle()
            timers = [t for t in (self.ike(ip).endpoint.get_timer() for ip in (A, B)) if t is not None]
            arrival = self.wire.next_arrival
            due = min([*timers, self.next_status, end, *([arrival] if arrival is not None else [])])
            self.clock.now = max(self.clock.now, due)
            self.wire.deliver()
            await self.settle()
            if self.clock.now >= self.next_status:
                self.next_status += STATUS_EVERY
                await self.status()
            for ip in (A, B):  # what the armed timer would do (_pump cancels and re-arms it)
                self.ike(ip).endpoint.handle_timer(self.clock.now)
                self.ike(ip)._pump()
        await self.settle()

    def quiet(self) -> bool:
        """No rekey under way: one IKE SA and one Child SA on each side, and no exchange in flight.

        One Child SA on each side alone also held with a Child SA rekey just sent: its request (or
        answer) on the wire, the initiator's new inbound SPI taken from the pool (and the pool
        topped up again behind it), a larval SA in the worker that the rekey's UPDATE installs a
        moment later; counted then, it made 33 larval SAs of a full pool of 32 (at ~1 in 120 of the
        points that condition passed; in CI once)."""
        return not self.wire.queue and all(self._side_quiet(ip) for ip in (A, B))

    def _side_quiet(self, ip: str) -> bool:
        """One live IKE SA with no request of ours outstanding, one Child SA, and no inbound SPI
        taken for a negotiation: the engine holds only that Child SA's."""
        ike = self.ike(ip)
        sas = [s for s in ike.endpoint.sas if not s.is_closed]
        if len(sas) != 1 or len(ike.children) != 1:
            return False
        (sa,), (child,) = sas, ike.children.values()
        return sa._pending is None and sa.inbound_spis() == [child.spi_in]

    async def quiesce(self) -> None:
        """Step the fake clock past a rekey the (randomly jittered) timers may have left under way
        at the end of a run (see quiet), so that the counts compare like with like."""
        for _ in range(120):
            if self.quiet():
                return
            await self.run(1)
        raise AssertionError(f"a rekey was still under way after 120 s: {self.describe()}")

    def describe(self) -> str:
        """Each side's IKE SAs (state, children) and the service's Child SAs, for a failure message."""
        def side(ip: str) -> str:
            sas = [(s.local_spi.hex(), s.state.name, [c.name for c in s.children], f"pending={s._pending is not None}",
                    [f"{spi:08x}" for spi in s.inbound_spis()]) for s in self.ike(ip).endpoint.sas]
            children = [(st.child, f"{st.spi_in:08x}", f"{st.spi_out:08x}") for st in self.ike(ip).children.values()]
            larval = self.workers[ip].larval - set(self.ike(ip).spi_pool.spis)
            return f"{ip}: IKE {sas} children {children} larval not pooled {sorted(f'{spi:08x}' for spi in larval)}"
        return "; ".join(side(ip) for ip in (A, B)) + f"; {len(self.wire.queue)} datagrams on the wire"

    async def fire_service_timers(self) -> None:
        """The services' own timers (a rekeyed SA's lingering inbound SA, a standby outbound SA) run on
        asyncio's clock, which stands still while the fake one races ahead: run them now, as they would
        have by this fake time, so that what they hold for a few seconds is not counted as kept."""
        for ip in (A, B):
            svc = self.ike(ip)
            for handle, fn in list(svc._timers.items()):
                handle.cancel()
                del svc._timers[handle]
                fn()
        await self.settle()

    def close(self) -> None:
        for ip in (A, B):
            timer = self.ike(ip)._timer
            if timer is not None:
                timer.cancel()


async def initiated(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Pair:
    """A pair with both SPI pools full and A's IKE SA (with its Child SA) initiated."""
    pair = Pair(tmp, monkeypatch)
    for ip in (A, B):
        await pair.ike(ip).refill_spis()
    pair.ike(A).initiate("tun", "net")
    return pair


def live_objects() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


# how much a container may differ between two quiet points (one IKE SA, one Child SA on each side): the
# engine's timer heap keeps stale entries up to twice the live timers plus 64 (IkeEndpoint._schedule);
# anything kept per IKE SA (~250 IKE rekeys a side here) or per Child SA (~550) shows
CONTAINER_SLACK = 80


def container_sizes(ike: ikeservice.IkeService) -> dict[str, int]:
    """The length of every dict, set, list and deque the IKE service and its parts (engine endpoint,
    barrier, SPI pool, sockets, virtual IPs) hold.  What gc.get_objects() counts misses a dict that
    grows with keys and values it does not track (SPIs, handles, times: bytes, ints, floats, tuples
    of them once a collection untracked those), which is what a per-SA index never pruned would be."""
    parts = {"service": ike, "endpoint": ike.endpoint, "barrier": ike.barrier, "spi_pool": ike.spi_pool,
             "sockets": ike.sockets, "vips": ike.vips}
    return {f"{part}.{name}": len(value) for part, obj in parts.items() for name, value in vars(obj).items()
            if isinstance(value, dict | set | list | collections.deque)}


def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log as the daemon does, but keep nothing (pytest's log capture keeps every record)."""
    monkeypatch.setattr(logging.getLogger("tunsec"), "propagate", False)
    monkeypatch.setattr(logging.getLogger("tunsec"), "handlers", [logging.NullHandler()])


def test_status_requests_hold_no_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` through the daemon and the pipe codec holds nothing afterwards, not even in CPython's
    free lists, which gc.get_objects() does not show: a tuple(<generator>) of an unusual length in
    the DUMP path (the 19 drop counters) left one tuple per request in the free list of its length,
    2000 of them (~0.5 MiB) per length, and the RSS of a polled daemon grew for hours.  The count
    starts with empty free lists (a full collection clears them) and runs with the collector off, so
    nothing is cleared behind its back; ~48 bytes kept per request would show."""
    quiet_logging(monkeypatch)
    requests = 500   # per daemon

    async def scenario() -> int:
        pair = await initiated(tmp_path, monkeypatch)
        await pair.run(3 * CHILD_REKEY)   # up, and rekeyed: the SAD holds larval, lingering and new SAs
        for _ in range(50):
            await pair.status()           # anything built once (caches) is built now
        tracing = tracemalloc.is_tracing()
        gc.collect()
        gc.disable()
        if not tracing:
            tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(requests):
                await pair.status()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            gc.enable()
            if not tracing:
                tracemalloc.stop()
        pair.close()
        return grown

    grown = asyncio.run(scenario())
    # ~18 KiB are kept once (interned strings, caches of the first traced run); a 7-tuple (96 bytes)
    # left per request is 96 KiB, the 19-tuples of the drop counters 480 KiB
    assert grown < 2 * requests * 48, f"{2 * requests} status requests kept {grown} bytes"


def test_quiet_waits_for_a_child_rekey_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment of the CI run's "33 <= 32", made on purpose: a Child SA rekey just sent holds a new inbound
    SPI (a larval SA, the pool topped up behind it) while each side still has one IKE SA and one Child SA.
    quiet() must not hold then (it did: one IKE SA and one Child SA were all it asked), and holds again once
    the rekey's UPDATE has installed that SPI: then the worker's larval SAs are the pool's, no more."""
    quiet_logging(monkeypatch)

    async def scenario() -> None:
        pair = await initiated(tmp_path, monkeypatch)
        await pair.run(CHILD_REKEY / 4)   # up, well before the first rekey (jitter makes it earlier, not this early)
        await pair.quiesce()
        ike, worker = pair.ike(A), pair.workers[A]
        assert worker.larval == set(ike.spi_pool.spis) and len(worker.larval) == ikeservice.SPI_POOL
        (sa,) = [s for s in ike.endpoint.sas if not s.is_closed]
        (child,) = ike.children.values()
        sa.rekey_child(child.unique_id)   # what the soft lifetime's timer does
        ike._pump()
        await pair.settle()
        taken = worker.larval - set(ike.spi_pool.spis)
        assert len(taken) == 1 and len(worker.larval) == ikeservice.SPI_POOL + 1   # the rekey's SPI, a full pool
        assert all(len(pair.ike(ip).children) == 1 for ip in (A, B))
        assert not pair.quiet(), pair.describe()
        await pair.quiesce()
        (new,) = ike.children.values()
        assert {new.spi_in} == taken, pair.describe()   # installed, not left larval
        assert worker.larval == set(ike.spi_pool.spis) and len(worker.larval) == ikeservice.SPI_POOL
        pair.close()

    asyncio.run(scenario())


# "a rekey was still under way after 120 s" (quiesce()) had two causes seen: two Child SAs left up for
# good, a Child SA rekey collision's DELETE of the redundant SA that waited behind an IKE SA rekey
# (fixed, see tests/ike/test_rekey_collision.py); and no Child SA left on either side under an
# established IKE SA (1 run in ~9 after that fix): a Child SA rekey answered while an IKE SA rekey was
# out, its answer overtaken by the DELETE of the old IKE SA (fixed by RFC 7296 §2.25's TEMPORARY_FAILURE,
# see test_a_child_rekey_answered_across_an_ike_rekey_is_not_lost). Neither depended on machine load: the
# run is on a fake clock in one process (gc counts are per process), so it shares the machine like any test.
# "33 <= 32" larval SAs (CI, once) was the test's: quiet() held with a Child SA rekey's CREATE_CHILD_SA
# in flight, whose new inbound SPI the UPDATE installs a moment later (docs/changes/2026-12-05-fixflake.md).
def test_rekeys_and_status_requests_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet_logging(monkeypatch)

    async def scenario() -> None:
        pair = await initiated(tmp_path, monkeypatch)
        await pair.run(30 * CHILD_REKEY)  # warm-up: every path has run, caches are filled
        await pair.quiesce()
        await pair.fire_service_timers()
        before, statuses = live_objects(), pair.statuses
        sizes = {ip: container_sizes(pair.ike(ip)) for ip in (A, B)}
        installs = sum(w.installs for w in pair.workers.values())
        await pair.run(600 * CHILD_REKEY)
        await pair.quiesce()
        await pair.fire_service_timers()
        after = live_objects()
        rekeys = sum(w.installs for w in pair.workers.values()) - installs
        assert pair.statuses - statuses >= 2000 and rekeys >= 1000
        # anything kept once per five rekeys shows; asyncio keeps up to ~100 cancelled timers
        grown = {k: after[k] - before[k] for k in after if after[k] - before[k] > rekeys // 5}
        assert not grown, f"live objects grew over {rekeys} rekeys, {pair.statuses - statuses} status requests: {grown}"
        for ip in (A, B):   # the same rule for the service's own containers
            now = container_sizes(pair.ike(ip))
            assert now.keys() == sizes[ip].keys()
            grew = {k: (sizes[ip][k], n) for k, n in now.items() if n - sizes[ip][k] > CONTAINER_SLACK}
            assert not grew, f"{ip}: containers grew over {rekeys} rekeys (before, after): {grew}"
        for ip in (A, B):
            ike, worker = pair.ike(ip), pair.workers[ip]
            children = list(ike.children.values())
            assert len(children) == 1
            installed = {(c.spi_in, Direction.IN) for c in children} | {(c.spi_out, Direction.OUT) for c in children}
            assert set(worker.sad) == installed, "the worker holds SAs no Child SA owns"
            # every larval SA is the pool's (none taken and neither installed nor handed back), the pool no fuller
            # than it is kept
            assert worker.larval == set(ike.spi_pool.spis), pair.describe()
            assert len(worker.larval) <= ikeservice.SPI_POOL
            (sa,) = [s for s in ike.endpoint.sas if not s.is_closed]
            assert ike.ike_up.keys() == {sa.local_spi}
            assert not pair.wire.daemons[ip].manual.seq  # no manual SAs: no sequence number reservations
        pair.close()

    asyncio.run(scenario())
