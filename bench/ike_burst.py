#!/usr/bin/env python3
"""A road-warrior burst in one process: the gateway's CPU per client without namespaces or charon.

    python3 bench/ike_burst.py [--clients 1000] [--profile out.prof] [--repeat 3]

The gateway is what ``tunsec up`` runs for bench/scale.py's configuration (the same swanctl.conf
text): an IkeService with a real WorkerClient, whose pipe (a SOCK_SEQPACKET socketpair) leads to
the worker's request handling and C fast path (Worker, PipeReader, Dataplane) in the same event
loop, with INFO logging to /dev/null.  The clients are tunsec's own IKE engine (one IkeEndpoint
holding N connections with distinct identities and ``vips = 0.0.0.0``, all from one address, as
the charon in bench/scale.py), wired to the gateway in memory: IKE_SA_INIT to port 500 goes to
the service, IKE_AUTH to port 4500 enters the worker as the non-ESP-marked datagram it is and
reaches the service as a pipe IKE event; answers leave through the socket or SEND_IKE.

The gateway's pool of ready key pairs (``ke_pool`` in tunsec { }, tunsec.ike.dh_pool) is filled in
IkeService.start, as ``tunsec up`` does before it answers anyone: the burst meets an idle gateway
whose pool is full, as a reconnect storm after a restart or an outage would.  The clients, another
host in reality, generate their own key pairs: the gateway's pool is out of their reach (``_client``).
The pool's generation (the fill at start, and the refills the gateway makes when it is calm: here
while it waits for the in-process clients to work through its answers) is set aside as the clients'
and the worker's calls are (``_refill``): it is not part of setting up a client, and in a real storm
it runs in the gateway's idle time.  The run reports it: key pairs refilled during the burst and
their CPU.
The garbage collector is set as the daemon sets it once started (tunsec.gctune.settle: start-up's
objects frozen, higher thresholds), outside the count (its full collection walks the clients' side
too); with the defaults the burst paid ~50k instructions per client of collections the daemon does
not make.
All N clients start at once; the run ends when every IKE SA and Child SA is up on both sides.
Reported: process CPU time of the whole run, of the clients alone (their calls are timed), and
the difference, the gateway's, per client, and of that the worker's (its calls are timed too).
``--profile``: a cProfile of the control process only (the profiler is off during the clients' and
the worker's calls), for ``python3 -m pstats``.  For instruction counts of the control process
alone, run it under callgrind with ``--toggle-collect=functools_reduce --toggle-collect=_operator_call``
(see ``aside``), once with ``--clients 1`` and once with ``--clients 100``: the difference / 99 is
its cost per client.
This measures Python CPU per client set-up on the gateway (IKE codec, engine, service, pipe
codec, worker dispatch, logging, asyncio); bench/scale.py measures the real thing against
strongSwan.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import dataclasses
import functools
import ipaddress
import logging
import math
import operator
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec import gctune, logs
from tunsec.bench import scale_conf, timeline
from tunsec.conf.config import parse_config
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Endpoint
from tunsec.dataplane.worker import PipeReader, Worker
from tunsec.ike import dh
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.dh_pool import KePoolStats, KeyPairPool
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService

GW, CLIENT = "192.0.2.1", "198.51.100.1"
# IKE_AUTHs into the worker per pass: all N at once (the clients here never retransmit) overran the
# worker's share of IKE per source address, and a run stuck at 160 clients; a real burst's datagrams
# arrive over the loop's turns, between which the worker's queues drain
WORKER_BATCH = 64
# Instruction counts of the control process alone: callgrind --toggle-collect=functools_reduce
# --toggle-collect=_operator_call counts inside ``counted`` (a run) except inside ``aside`` (every
# call into the clients or the worker goes through it), by toggling on each C function's entry and exit.
aside = operator.call


def counted(fn: Callable[[], Any]) -> Any:
    return functools.reduce(lambda _, f: f(), [fn], None)
Wire = collections.deque[tuple[tuple[str, int], tuple[str, int], bytes]]


class _Wake:
    """Wakes the driving loop when the gateway puts a datagram on the wire: while it waits for the
    worker's answers the loop sleeps instead of spinning (which the gateway's CPU would include)."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None

    def __call__(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = loop.call_later(timeout, self)
        try:
            await self.waiter
        finally:
            timer.cancel()
            self.waiter = None


class _UdpOut:
    """The worker's UDP socket: SEND_IKE datagrams (with the non-ESP marker) onto the wire."""

    family = socket.AF_INET

    def __init__(self, wire: Wire, wake: _Wake) -> None:
        self.wire = wire
        self.wake = wake

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        assert data.startswith(NON_ESP_MARKER)
        self.wire.append(((GW, 4500), addr, data[len(NON_ESP_MARKER):]))
        self.wake()
        return len(data)

    def sendmsg(self, buffers: list[bytes], ancdata: Any, flags: int, addr: tuple[str, int]) -> int:
        """A SEND_IKE with the source address to use (pktinfo.sendto): the wire does not need it."""
        return self.sendto(b"".join(buffers), addr)


class _Udp500:
    """The control process's port-500 socket."""

    def __init__(self, wire: Wire, wake: _Wake) -> None:
        self.wire = wire
        self.wake = wake

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.wire.append(((GW, 500), addr, data))
        self.wake()
        return len(data)


class Burst:
    def __init__(self, n: int, profile: cProfile.Profile | None) -> None:
        self.n = n
        self.profile = profile
        self.client_cpu = 0.0
        self.worker_cpu = 0.0
        self.refill_cpu = 0.0   # the gateway's key pair pool: its refills during the burst (_refill)
        self.fill_cpu = 0.0     # and its fill at start
        self.ke_refilled = 0    # key pairs it generated during the burst
        self.spi_waits = 0      # IKE_AUTHs the gateway held for want of an inbound SPI (ike_held.spi_waits)
        self.held_max_half_open = 0   # the most of half-open SAs' held at once, and what found no room
        self.held_dropped = 0
        self.wire: Wire = collections.deque()
        self.wake = _Wake()
        psk = "burst" * 8
        gw = SimpleNamespace(outer4=GW, inner_net4="10.1.0.0/24")
        me = SimpleNamespace(outer4=CLIENT)
        self.gw_conf = parse_config(scale_conf.gateway_swanctl(gw, psk))  # type: ignore[arg-type]
        self.client_conf = parse_config(scale_conf.client_swanctl(me, gw, psk, n))  # type: ignore[arg-type]
        self.client_up = 0
        self.ke_pool = KePoolStats()
        self.ke_ready = 0
        self.ke_refilled_in_burst = 0
        self.refill_cpu_in_burst = 0.0
        self.service: IkeService | None = None

    def _client(self, fn: Callable[[], Any]) -> Any:
        """A call into the clients: its CPU is theirs, and the gateway's profile pauses."""
        return self._aside(functools.partial(_without_pool, fn), "client_cpu")

    def _worker(self, fn: Callable[[], Any]) -> Any:
        """A call into the worker: its CPU is the gateway's but not the control process's."""
        return self._aside(fn, "worker_cpu")

    def _refill(self, fill: Callable[[float, float], int], now: float, budget: float = math.inf) -> int:
        """The gateway's KeyPairPool.refill: generating key pairs ahead is not a client's set-up."""
        made: int = self._aside(functools.partial(fill, now, budget), "refill_cpu")
        self.ke_refilled += made
        return made

    def _aside(self, fn: Callable[[], Any], account: str) -> Any:
        if self.profile is not None:
            self.profile.disable()
        try:
            return aside(self._timed, fn, account)
        finally:
            if self.profile is not None:
                self.profile.enable()

    def _timed(self, fn: Callable[[], Any], account: str) -> Any:
        t0 = time.process_time()
        try:
            return fn()
        finally:
            setattr(self, account, getattr(self, account) + time.process_time() - t0)

    async def run(self) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        # the worker's side of the pipe, as worker.serve sets it up (without TUN, threads, privileges)
        dp = Dataplane()
        reader: PipeReader
        worker = Worker(dp, lambda data: reader.writer.send(data, is_event=True),
                        {4: _UdpOut(self.wire, self.wake)}, loop)  # type: ignore[dict-item]
        reader = PipeReader(theirs, loop, worker.handle_datagram, lambda: None)
        reader.on_readable = functools.partial(self._worker, reader.readable)
        reader.start()

        # the control process's side
        service: IkeService | None = None

        def on_event(msg: pipe.Message) -> None:
            assert service is not None
            service.on_event(msg)

        client = WorkerClient(on_event)
        client._sock = ours
        loop.add_reader(ours.fileno(), client._readable)
        n = self.n
        service = IkeService(self.gw_conf.connections, lambda: client, {4: GW}, IdSpace(),
                             DosLimits(2 * n + 10, 4 * n + 10, cookie_threshold_ip=2 * n + 10,
                                       block_threshold=4 * n + 10), pools=self.gw_conf.pools,
                             ke_pool=self.gw_conf.tunsec.ke_pool)
        dh.POOL.stats = KePoolStats()   # this run's
        dh.POOL.refill = functools.partial(self._refill, dh.POOL.refill)  # type: ignore[method-assign]
        await service.start()
        self.fill_cpu, self.refill_cpu, self.ke_refilled = self.refill_cpu, 0.0, 0   # the fill is before the burst
        service.sockets.by_key = {(4, GW, 500): _Udp500(self.wire, self.wake)}  # type: ignore[dict-item]

        clients = aside(IkeEndpoint, [c.ike for c in self.client_conf.connections])
        # as the daemon once start-up is done (collect, freeze what exists, raise the thresholds); not
        # counted: the collection walks the clients' N configurations and engine, not the gateway's work
        aside(gctune.settle)
        cpu0 = time.process_time()
        if self.profile is not None:
            self.profile.enable()
        for c in self.client_conf.connections:
            self._client(functools.partial(clients.initiate, c.name, "net", time.monotonic()))
        stalled = 0.0
        while self.client_up < n or aside(service_children, service) < n:
            moved = self._client(lambda: self._client_step(clients))
            to_worker = 0
            while self.wire:
                moved = True
                src, dst, data = self.wire[0]
                if dst[0] == GW and dst[1] == 4500 and to_worker == WORKER_BATCH:
                    break   # the rest after the loop's turn: the worker's queues hold a share per address
                self.wire.popleft()
                if dst[0] == GW:
                    if dst[1] == 4500:   # into the worker's UDP socket, up the pipe as an IKE event
                        to_worker += 1
                        # the event is built inside the worker's call: the worker's work, not the control process's
                        self._worker(functools.partial(_emit_ike, worker, data, src))
                    else:
                        service.receive(data, src, dst)
                        service._pump()
                else:
                    self._client(functools.partial(clients.receive, data, src, time.monotonic(), local_addr=dst))
            if moved:
                # the pass stands for the many loop callbacks of a real burst's turn: what it asked
                # of the worker leaves now, as at a turn's end (WorkerClient._send), not after the
                # next pass
                client.flush()
                await asyncio.sleep(0)   # the pipe's answers come in through the loop
                stalled = 0.0
                continue
            t = time.monotonic()
            await self.wake.wait(0.01)
            stalled += time.monotonic() - t
            if stalled > 20:
                raise RuntimeError(f"stuck: {self.client_up} clients up, {service_children(service)} at the gateway")
        if self.profile is not None:
            self.profile.disable()
        total = time.process_time() - cpu0
        self.spi_waits = service.spi_pool.spi_waits
        self.held_max_half_open = service.spi_pool.waiting_max_half_open
        self.held_dropped = service.spi_pool.held_dropped
        self.ke_pool = dataclasses.replace(dh.POOL.stats)
        self.ke_ready = sum(dh.POOL.sizes().values())
        self.ke_refilled_in_burst, self.refill_cpu_in_burst = self.ke_refilled, self.refill_cpu
        self.service = service
        return total, self.client_cpu

    def _client_step(self, clients: IkeEndpoint) -> bool:
        moved = False
        for d in clients.datagrams_to_send(time.monotonic()):
            self.wire.append(((CLIENT, d.local_port), d.addr, d.data))
            moved = True
        while (ev := clients.next_event()) is not None:
            if isinstance(ev[1], ChildSaUp):
                self.client_up += 1
        return moved


_CLIENTS_POOL = KeyPairPool(dh.generate_key_exchange)   # configured for no group: an empty pool


def _without_pool(fn: Callable[[], Any]) -> Any:
    """``fn`` (the clients') with init_key_exchange out of the gateway's pool."""
    gateway_pool, dh.POOL = dh.POOL, _CLIENTS_POOL
    try:
        return fn()
    finally:
        dh.POOL = gateway_pool


def _emit_ike(worker: Worker, data: bytes, src: tuple[str, int]) -> None:
    """A datagram from ``src`` into the worker's UDP socket: up the pipe as an IKE event."""
    worker._emit(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src[0]), src[1])))


def service_children(service: IkeService) -> int:
    """Child SAs whose install the worker has answered."""
    return sum(1 for c in service.children.values() if c.install is None and c.out_installed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1, help="runs (each a fresh gateway); the best is reported")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the gateway (last run) here")
    ap.add_argument("--timeline", type=Path, help="record the gateway's per-client steps here "
                    "(tunsec.bench.timeline, as bench/scale.py --timeline; costs the gateway CPU) "
                    "and print their summary")
    args = ap.parse_args()
    # the daemon's default level; BURST_LOG=debug (say) to see the gateway's log on stderr
    level = os.environ.get("BURST_LOG")
    logs.configure(level or "info", stream=sys.stderr if level else open(os.devnull, "w"))  # noqa: SIM115
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    timeline_out = None
    if args.timeline is not None:
        timeline_out = open(args.timeline, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the runs)
        timeline.install(timeline_out)
    best = None
    for _ in range(args.repeat):
        prof = cProfile.Profile() if args.profile else None
        burst = Burst(args.clients, prof)
        try:
            import uvloop
            total, clients = counted(functools.partial(uvloop.run, burst.run()))
        except ImportError:
            total, clients = counted(functools.partial(asyncio.run, burst.run()))
        if burst.service is not None:   # uncounted: the next run's gateway fills a pool of its own
            burst.service.ke_refill.stop()
        del dh.POOL.refill   # the method again
        gw = total - clients - burst.refill_cpu_in_burst
        print(f"N = {args.clients}: CPU {total:.3f} s, clients {clients:.3f} s, "
              f"gateway {gw:.3f} s = {1000 * gw / args.clients:.2f} ms per client "
              f"(of which the worker's pipe side {1000 * burst.worker_cpu / args.clients:.2f}); "
              f"IKE_AUTHs that waited for an inbound SPI {burst.spi_waits} (at most {burst.held_max_half_open} "
              f"at once; {burst.held_dropped} datagrams found no room); "
              f"key pairs from the pool {burst.ke_pool.hits}, generated {burst.ke_pool.misses} "
              f"+ {burst.ke_pool.unpooled} unpooled, {burst.ke_refilled_in_burst} refilled during the burst, "
              f"{burst.ke_ready} ready at its end; "
              f"pool CPU: fill at start {1000 * burst.fill_cpu:.1f} ms, refills during the burst "
              f"{1000 * burst.refill_cpu_in_burst:.1f} ms (not in the gateway's)", flush=True)
        best = gw if best is None else min(best, gw)
        if prof is not None:
            prof.dump_stats(args.profile)
    assert best is not None
    if timeline_out is not None:
        timeline_out.close()
        print(timeline.summarize(timeline.load(args.timeline)))
    print(f"best: gateway {1000 * best / args.clients:.2f} ms per client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
