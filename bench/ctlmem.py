#!/usr/bin/env python3
"""What the control process keeps per road-warrior client, in memory, in seconds (no namespaces).

    python3 bench/ctlmem.py [--clients 300] [--frames 8] [--top 25]

The gateway of ``bench/scale.py`` (the same swanctl.conf: a pool, ``remote_ts = dynamic``,
one wildcard PSK) as a real :class:`~tunsec.daemon.Daemon` and IkeService, with the fake worker
of tests/test_ike_memory.py (it keeps an SAD; its answers go through the pipe codec), on a fake
clock. N bare client engines (:class:`~tunsec.ike.endpoint.IkeEndpoint`, ``vips = 0.0.0.0``)
all initiate at once, as the charon of bench/scale.py does. Once every client has its Child SA,
the clients are dropped and what the gateway still holds is compared with a tracemalloc snapshot
taken before the burst: traced bytes per IKE SA (by line, by file and by live object type).
Twenty clients come up before the first snapshot, so caches and interned strings filled once
do not count. The traced peak of the burst includes the clients' own engines.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import ipaddress
import logging
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.test_ike_memory import FakeClock, FakeSocket, FakeWorker  # noqa: E402
from tunsec.bench.scale import CHILD, GATEWAY_ID, PROPOSALS, client_id, gateway_swanctl  # noqa: E402
from tunsec.conf.config import parse_config  # noqa: E402
from tunsec.daemon import Daemon  # noqa: E402
from tunsec.dataplane import pipe  # noqa: E402
from tunsec.dataplane.pipe import Endpoint  # noqa: E402
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config  # noqa: E402
from tunsec.ike.endpoint import IkeEndpoint  # noqa: E402
from tunsec.ike.events import ChildSaUp  # noqa: E402
from tunsec.ike.identity import Identity  # noqa: E402
from tunsec.ike.proposals import parse_proposals  # noqa: E402
from tunsec.ike.secret import Secret  # noqa: E402
from tunsec.services import ike as ikeservice  # noqa: E402

GW = "192.0.2.1"
PSK = "a shared secret of some length"
INNER = "10.1.0.0/24"


def client_ip(k: int) -> str:
    return str(ipaddress.ip_address("100.64.0.0") + k)


class Wire:
    """Datagrams between the gateway (its socket and fake worker) and the client engines, in order."""

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[str, bytes, str, int, int]] = collections.deque()
        self.clients: dict[str, IkeEndpoint] = {}
        self.gateway: Any = None

    def send(self, dst: str, data: bytes, src: str, natt: bool) -> None:   # from the gateway
        self.queue.append((dst, data, src, 4500 if natt else 500, 4500 if natt else 500))

    def client_out(self, ip: str, now: float) -> None:
        for d in self.clients[ip].datagrams_to_send(now):
            self.queue.append((d.addr[0], d.data, ip, d.local_port, d.addr[1]))

    def deliver(self, now: float) -> bool:
        busy = bool(self.queue)
        while self.queue:
            dst, data, src, sport, dport = self.queue.popleft()
            if dst == GW:
                if dport == 4500:
                    self.gateway.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src), sport),
                                                       local=Endpoint(ipaddress.ip_address(GW), 4500)))
                else:
                    self.gateway.receive(data, (src, sport), (GW, 500))
                    self.gateway._pump()
            elif dst in self.clients:
                self.clients[dst].receive(data, (src, sport), now, local_addr=(dst, dport))
                self.client_out(dst, now)
        return busy


def client_config(k: int) -> IkeConfig:
    return IkeConfig(
        f"rw{k}",
        LocalAuth("psk", Identity.parse(client_id(k))),
        RemoteAuth("psk", Identity.parse(GATEWAY_ID)),
        parse_proposals(PROPOSALS),
        (child_config(CHILD, "dynamic", INNER, "aes128gcm16"),),
        psk=Secret(PSK.encode()),
        local_addr=client_ip(k),
        remote_addr=GW,
        vips=(ipaddress.ip_address("0.0.0.0"),),
    )


class Bench:
    def __init__(self) -> None:
        self.clock = FakeClock()
        ikeservice.time = self.clock  # type: ignore[attr-defined]
        self.wire = Wire()
        host = SimpleNamespace(outer4=GW, inner_net4=INNER)
        text = gateway_swanctl(host, PSK)  # type: ignore[arg-type]
        self.daemon = Daemon(parse_config(text, "/nonexistent/swanctl.conf"))
        self.worker = FakeWorker(self.wire, GW)  # type: ignore[arg-type]
        self.daemon.worker = self.worker  # type: ignore[assignment]
        ike = self.daemon.ike
        assert ike is not None
        self.ike = ike
        ike.sockets = {(4, GW, 500): FakeSocket(self.wire, GW)}  # type: ignore[dict-item]
        self.wire.gateway = ike
        self.next_k = 1

    def forget_worker_copies(self) -> None:
        """The fake worker keeps what it was sent (SaSpecs, policies): the real worker's memory, not ours."""
        self.worker.sad = dict.fromkeys(self.worker.sad)  # type: ignore[arg-type]
        self.worker.spd = dict.fromkeys(self.worker.spd)  # type: ignore[arg-type]

    async def settle(self) -> None:
        for _ in range(100000):
            await asyncio.sleep(0)
            if not self.ike._tasks:
                return
        raise AssertionError("tasks did not settle")

    async def burst(self, n: int) -> list[int]:
        """n clients initiate at once; run until each has its Child SA (or gives up)."""
        ks = list(range(self.next_k, self.next_k + n))
        self.next_k += n
        up: set[int] = set()
        for k in ks:
            ep = IkeEndpoint([client_config(k)])
            self.wire.clients[client_ip(k)] = ep
            ep.initiate(f"rw{k}", CHILD, self.clock.now)
            self.wire.client_out(client_ip(k), self.clock.now)
        for _ in range(10000):
            await self.settle()
            busy = self.wire.deliver(self.clock.now)
            await self.settle()
            for k in ks:
                ep = self.wire.clients[client_ip(k)]
                while (item := ep.next_event()) is not None:
                    if isinstance(item[1], ChildSaUp):
                        up.add(k)
            if len(up) == n:
                break
            if not busy and not self.wire.queue:
                timers = [t for t in (self.ike.endpoint.get_timer(),
                                      *(self.wire.clients[client_ip(k)].get_timer() for k in ks)) if t is not None]
                if not timers:
                    break
                self.clock.now = max(self.clock.now + 0.01, min(timers))
                self.ike.endpoint.handle_timer(self.clock.now)
                self.ike._pump()
                for k in ks:
                    self.wire.clients[client_ip(k)].handle_timer(self.clock.now)
                    self.wire.client_out(client_ip(k), self.clock.now)
        await self.settle()
        for k in ks:   # the clients are not the gateway: gone before the snapshot
            del self.wire.clients[client_ip(k)]
        return sorted(up)


def short(path: str) -> str:
    return path.replace(str(ROOT) + "/", "")


def types_now() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


async def run(clients: int, frames: int, top: int) -> None:
    bench = Bench()
    await bench.ike.refill_spis()
    warm = await bench.burst(20)
    assert len(warm) == 20, f"warm-up: only {len(warm)} of 20 clients came up"
    bench.forget_worker_copies()
    types0 = types_now()
    tracemalloc.start(frames)
    snap0 = tracemalloc.take_snapshot()
    tracemalloc.reset_peak()
    traced0 = tracemalloc.get_traced_memory()[0]
    up = await bench.burst(clients)
    peak = tracemalloc.get_traced_memory()[1] - traced0
    bench.forget_worker_copies()
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    traced1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    types1 = types_now()
    established = sum(1 for s in bench.ike.endpoint.sas if not s.is_closed)
    print(f"clients up: {len(up)} of {clients}; gateway IKE SAs {established}, Child SAs {len(bench.ike.children)}")
    n = max(1, len(up))
    print(f"traced bytes kept per client: {(traced1 - traced0) / n:.0f}  (peak during the burst, clients "
          f"included: {peak / n:.0f})")
    filt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    snap0, snap1 = snap0.filter_traces(filt), snap1.filter_traces(filt)
    print("\n-- by file (bytes per client, count per client) --")
    for st in snap1.compare_to(snap0, "filename")[:12]:
        print(f"{st.size_diff / n:8.0f} {st.count_diff / n:6.1f}  {short(st.traceback[0].filename)}")
    print("\n-- by line (bytes per client, count per client) --")
    for st in snap1.compare_to(snap0, "lineno")[:top]:
        fr = st.traceback[0]
        print(f"{st.size_diff / n:8.0f} {st.count_diff / n:6.1f}  {short(fr.filename)}:{fr.lineno}")
    if frames > 1:
        print("\n-- by traceback (bytes per client, count per client) --")
        for st in snap1.compare_to(snap0, "traceback")[:top]:
            print(f"{st.size_diff / n:8.0f} {st.count_diff / n:6.1f}")
            for fr in st.traceback[:frames]:
                print(f"           {short(fr.filename)}:{fr.lineno}")
    print("\n-- live objects (per client) --")
    grown = sorted(((types1[t] - types0[t], t) for t in types1), reverse=True)
    for diff, t in grown[:top]:
        if diff / n >= 0.5:
            print(f"{diff / n:6.1f}  {t}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    logging.getLogger("tunsec").propagate = False   # the daemon logs; nothing prints or keeps it
    logging.getLogger("tunsec").handlers = [logging.NullHandler()]
    asyncio.run(run(args.clients, args.frames, args.top))


if __name__ == "__main__":
    main()
