#!/usr/bin/env python3
"""The control process's memory per road-warrior client, without namespaces or charon (~10 s).

    python3 bench/ctlmem.py [--clients 1000] [--trace FRAMES] [--top 30]

The gateway of ``bench/scale.py`` (the same swanctl.conf: a pool, ``remote_ts = dynamic``, one
wildcard PSK) runs in this process as a real :class:`~tunsec.daemon.Daemon` and IkeService on
the real clock and event loop, with the fake worker of tests/test_ike_memory.py (its answers go
through the pipe codec; the SaSpecs it is sent are not kept: that is the worker's memory). N
bare client engines (:class:`~tunsec.ike.endpoint.IkeEndpoint`, ``vips = 0.0.0.0``) run in a
forked child process and all initiate at once, as the charon of bench/scale.py does; datagrams
cross a socketpair. Twenty clients come up first (caches, interned strings). Reported per
client: the gateway's RSS growth over the burst (what bench/scale.py's "main process" figure
measures, without the pipe and the real worker), its CPU time, and the live objects by type;
with ``--trace``, tracemalloc's bytes kept and peak during the burst, by file, line and
traceback (the gateway's alone: the clients are in the other process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import ipaddress
import logging
import os
import select
import socket
import struct
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.test_ike_memory import FakeSocket, FakeWorker  # noqa: E402
from tunsec.bench.scale_conf import CHILD, GATEWAY_ID, PROPOSALS, client_id, gateway_swanctl  # noqa: E402
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

GW = "192.0.2.1"
PSK = "a shared secret of some length"
INNER = "10.1.0.0/24"


def client_ip(k: int) -> str:
    return str(ipaddress.ip_address("100.64.0.0") + k)


FRAME = struct.Struct("!4s4sHH")   # a datagram on the socketpair: destination, source, ports, then the data


def frame(dst: str, src: str, sport: int, dport: int, data: bytes) -> bytes:
    return b"D" + FRAME.pack(ipaddress.ip_address(dst).packed, ipaddress.ip_address(src).packed, sport, dport) + data


def unframe(msg: bytes) -> tuple[str, str, int, int, bytes]:
    dst, src, sport, dport = FRAME.unpack_from(msg, 1)
    return (str(ipaddress.ip_address(dst)), str(ipaddress.ip_address(src)), sport, dport, msg[1 + FRAME.size:])


class GatewayWire:
    """The gateway's side of the socketpair: what its socket and fake worker send goes to the clients."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, dst: str, data: bytes, src: str, natt: bool) -> None:
        port = 4500 if natt else 500
        self.sock.send(frame(dst, src, port, port, data))


class Sad(dict):  # type: ignore[type-arg]
    """The fake worker's SAD without the SaSpecs (the real worker's memory, not the control process's)."""

    def __setitem__(self, key: object, value: object) -> None:
        super().__setitem__(key, None)


def run_clients(sock: socket.socket) -> None:
    """The child process: N client engines per burst command, on the real clock."""
    clients: dict[str, IkeEndpoint] = {}
    next_k = 1
    waiting: set[str] = set()

    def out(ip: str) -> None:
        for d in clients[ip].datagrams_to_send(time.monotonic()):
            sock.send(frame(d.addr[0], ip, d.local_port, d.addr[1], d.data))

    while True:
        now = time.monotonic()
        timers = [t for t in (clients[ip].get_timer() for ip in waiting) if t is not None]
        ready, _, _ = select.select([sock], [], [], max(0.0, min(timers) - now) if timers else None)
        now = time.monotonic()
        if not ready:
            for ip in list(waiting):
                clients[ip].handle_timer(now)
                out(ip)
            continue
        msg = sock.recv(70000)
        if not msg or msg[:1] == b"Q":
            return
        if msg[:1] == b"B":
            n = int(msg[1:])
            for k in range(next_k, next_k + n):
                ip = client_ip(k)
                clients[ip] = IkeEndpoint([client_config(k)])
                clients[ip].initiate(f"rw{k}", CHILD, now)
                waiting.add(ip)
                out(ip)
            next_k += n
            continue
        dst, src, sport, dport, data = unframe(msg)
        ep = clients[dst]
        ep.receive(data, (src, sport), now, local_addr=(dst, dport))
        out(dst)
        while (item := ep.next_event()) is not None:
            if isinstance(item[1], ChildSaUp) and dst in waiting:
                waiting.discard(dst)
                if not waiting:
                    sock.send(b"U")


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
    """The gateway (this process), the clients in a child process."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.wire = GatewayWire(sock)
        host = SimpleNamespace(outer4=GW, inner_net4=INNER)
        text = gateway_swanctl(host, PSK)  # type: ignore[arg-type]
        self.daemon = Daemon(parse_config(text, "/nonexistent/swanctl.conf"))
        self.worker = FakeWorker(self.wire, GW)  # type: ignore[arg-type]
        self.worker.sad = Sad()
        self.worker.spd = Sad()
        self.daemon.worker = self.worker  # type: ignore[assignment]
        ike = self.daemon.ike
        assert ike is not None
        self.ike = ike
        ike.sockets.by_key = {(4, GW, 500): FakeSocket(self.wire, GW)}  # type: ignore[dict-item]
        self.done: asyncio.Future[None] | None = None

    def readable(self) -> None:
        for _ in range(64):
            try:
                msg = self.sock.recv(70000)
            except BlockingIOError:
                return
            if msg[:1] == b"U":
                if self.done is not None and not self.done.done():
                    self.done.set_result(None)
                continue
            _dst, src, sport, dport, data = unframe(msg)
            if dport == 4500:
                self.ike.receive_natt(pipe.Ike(data=data, remote=Endpoint(ipaddress.ip_address(src), sport),
                                               local=Endpoint(ipaddress.ip_address(GW), 4500)))
            else:
                self.ike.receive(data, (src, sport), (GW, 500))
                self.ike._pump()

    async def burst(self, n: int) -> float:
        """n clients initiate at once; wait until each has its Child SA and the gateway is quiet.
        The seconds it took."""
        t0 = time.monotonic()
        self.done = asyncio.get_running_loop().create_future()
        self.sock.send(b"B%d" % n)
        limit = 60 + n / 10
        try:
            await asyncio.wait_for(self.done, limit)
        except TimeoutError:
            raise SystemExit(f"ctlmem: a burst of {n} clients not all up after {limit:.0f} s (the gateway has "
                             f"{len(self.ike.children)} Child SAs; its warnings above say why)") from None
        took = time.monotonic() - t0
        for _ in range(50):   # the last installs' answers, the tasks they spawned
            await asyncio.sleep(0.01)
            if not self.ike._tasks:
                break
        return took


def short(path: str) -> str:
    return path.replace(str(ROOT) + "/", "")


def types_now() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(sock: socket.socket, clients: int, trace: int, top: int) -> None:
    bench = Bench(sock)
    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), bench.readable)
    await bench.ike.refill_spis()
    await bench.burst(20)
    gc.collect()
    types0 = types_now()
    if trace:
        tracemalloc.start(trace)
        snap0 = tracemalloc.take_snapshot()
        traced0 = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    rss0 = rss_kib()
    cpu0 = time.process_time()
    took = await bench.burst(clients)
    cpu = time.process_time() - cpu0
    gc.collect()
    rss1 = rss_kib()
    n = clients
    established = sum(1 for s in bench.ike.endpoint.sas if not s.is_closed)
    print(f"{clients} clients up in {took:.2f} s; gateway IKE SAs {established}, Child SAs {len(bench.ike.children)}")
    print(f"gateway RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB: {(rss1 - rss0) / n:.2f} KiB per client; "
          f"CPU {cpu * 1000 / n:.2f} ms per client")
    types1 = types_now()
    if trace:
        traced1, peak = tracemalloc.get_traced_memory()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print(f"traced bytes kept per client: {(traced1 - traced0) / n:.0f}, peak during the burst "
              f"{(peak - traced0) / n:.0f}")
        report(snap0, snap1, n, trace, top)
    print("\n-- live objects (per client) --")
    grown = sorted(((types1[t] - types0[t], t) for t in types1), reverse=True)
    for diff, t in grown[:top]:
        if diff / n >= 0.5:
            print(f"{diff / n:6.1f}  {t}")


def report(snap0: tracemalloc.Snapshot, snap1: tracemalloc.Snapshot, n: int, frames: int, top: int) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--trace", type=int, default=0, metavar="FRAMES",
                    help="also tracemalloc with this many frames (slower; RSS then includes its own traces)")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    logging.getLogger("tunsec").propagate = False   # the daemon logs; nothing prints or keeps it
    logging.getLogger("tunsec").handlers = [logging.StreamHandler()]
    logging.getLogger("tunsec").setLevel(logging.WARNING)
    gw, cl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (gw, cl):
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            s.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
    pid = os.fork()
    if pid == 0:
        gw.close()
        code = 1
        try:
            run_clients(cl)
            code = 0
        finally:
            os._exit(code)   # never the parent's code below (its finally would wait for itself)
    cl.close()
    gw.setblocking(False)
    try:
        asyncio.run(run(gw, args.clients, args.trace, args.top))
    finally:
        # also when the gateway failed (a burst timed out, print hit a closed pipe): a child not
        # told to quit waits in select for ever, and so would waitpid
        gw.setblocking(True)
        with contextlib.suppress(OSError):
            gw.send(b"Q")
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
