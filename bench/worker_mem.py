"""The dataplane worker's memory per road-warrior client, without IKE.

    python3 bench/worker_mem.py --clients 1000 [--window 4096] [--no-traffic]
    python3 bench/worker_mem.py --clients 1000 --inproc     # C / Python split (tracemalloc)

A real worker process (``python -m tunsec.dataplane.worker``) in a fresh network
namespace with a real TUN and UDP socket gets, over the real pipe, what the IKE
service installs for each client of a gateway: GETSPI, UPDATE of the inbound SA
(AES-128-GCM, ``--window``, the default lifetimes' timers), ADD of the outbound
SA, one SPDADD (PROTECT, 10.1.0.0/24 <-> the client's virtual IP).  Then, unless
``--no-traffic``, one packet per client each way through the worker's packet
loop (a datagram to each virtual IP out of the TUN, one ESP packet per inbound
SA into UDP 4500), as bench/scale.py's ping does: the loop thread keys its own
cipher contexts on an SA's first packet.  Printed: the worker's VmRSS before
and after, per client, and the packet counters that prove the traffic passed.

``--inproc`` installs through the worker's own request handler (worker.Worker)
in this process instead, with tracemalloc on: the Python heap per client
(traced) next to the whole RSS growth (Python + C) per client.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import gc
import ipaddress
import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN

from tunsec.bench.netns import in_netns, netns_socket
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector, batch

LOCAL = Endpoint(ipaddress.ip_address("127.0.0.1"), 4500)
PEER = Endpoint(ipaddress.ip_address("127.0.0.2"), 4500)
INSIDE = ipaddress.ip_network("10.1.0.0/24")
POOL = ipaddress.IPv4Network("10.3.0.0/16")
GATEWAY = ipaddress.IPv4Address("10.1.0.1")
# strongSwan's (and tunsec's) default child lifetimes: each SA gets a soft and a hard timer
SOFT, HARD = Lifetime(seconds=3600), Lifetime(seconds=3960)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def smaps(pid: int) -> dict[str, int]:
    """Rss (KiB) of each mapping, by its start address and name."""
    out: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            name = parts[0].split("-")[0] + " " + (parts[5] if len(parts) > 5 else "[anon]")
        elif line.startswith("Rss:"):
            out[name] = int(line.split()[1])
    return out


def smaps_growth(a: dict[str, int], b: dict[str, int]) -> str:
    d = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)
    return ", ".join(f"{k}: +{v} KiB" for v, k in d[:4] if v > 0)


def malloc_in_use_kib() -> float:
    """glibc's mallinfo2().uordblks of this process: the C heap (and Python's objects over 512 bytes)."""
    fields = ["arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"]

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in fields]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return float(libc.mallinfo2().uordblks + libc.mallinfo2().hblkhd) / 1024


def vip(k: int) -> ipaddress.IPv4Address:
    return POOL[k + 2]


def specs(k: int, spi_in: int, window: int) -> tuple[SaSpec, SaSpec, Policy]:
    v = ipaddress.ip_network(f"{vip(k)}/32")
    common = dict(alg=Alg.AES128GCM16, esn=False, reqid=k + 1, local=LOCAL, remote=PEER, soft=SOFT, hard=HARD)
    inbound = SaSpec(spi=spi_in, direction=Direction.IN, key=os.urandom(20), replay_window=window,
                     selectors=(Selector.from_networks(v, INSIDE),), **common)  # type: ignore[arg-type]
    outbound = SaSpec(spi=0x10000000 + k, direction=Direction.OUT, key=os.urandom(20), replay_window=0,
                      selectors=(Selector.from_networks(INSIDE, v),), **common)  # type: ignore[arg-type]
    pol = Policy(id=k + 1, priority=100, action=Action.PROTECT, reqid=k + 1, selector=Selector.from_networks(INSIDE, v))
    return inbound, outbound, pol


def _csum(b: bytes) -> int:
    s: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src.packed, dst.packed)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + udp


def esp(sa: SaSpec, seq: int, inner: bytes) -> bytes:
    """RFC 4106 ESP (no ESN) of an inner IPv4 packet under sa's key."""
    pad = (4 - (len(inner) + 2) % 4) % 4
    pt = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    head = struct.pack("!II", sa.spi, seq)
    iv = struct.pack("!Q", seq)
    return head + iv + AESGCM(sa.key[:-4]).encrypt(sa.key[-4:] + iv, pt, head)


@contextmanager
def netns_worker(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], socket.socket, socket.socket]]:
    ns = f"twm-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with in_netns(ns):
            tun = TunTapDevice(name="twm0", flags=IFF_TUN | IFF_NO_PI)
        os.set_blocking(tun.fileno(), False)
        for cmd in (["addr", "add", f"{INSIDE[1]}/24", "dev", "twm0"], ["link", "set", "twm0", "up"],
                    ["route", "add", str(POOL), "dev", "twm0"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        udp = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((str(LOCAL.addr), LOCAL.port))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.settimeout(30)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunsec.dataplane.worker", "--pipe-fd", str(theirs.fileno()),
             "--tun-fd", str(tun.fileno()), "--udp4-fd", str(udp.fileno()), "--log-level", "warning"],
            pass_fds=(theirs.fileno(), tun.fileno(), udp.fileno()), stderr=(tmp / "worker.log").open("wb"))
        theirs.close()
        tun.close()
        udp.close()
        yield ns, proc, ours, netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
        ours.close()
        proc.wait(timeout=10)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)


class Chan:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.next_id = 1
        self.waiting: list[bytes] = []   # the rest of a batch read (recv)

    def recv(self) -> pipe.Message:
        """The next message from the worker: answers may come as one batch (pipe.batch)."""
        if not self.waiting:
            data = self.sock.recv(65536)
            self.waiting.extend(batch.split(data)[0] if batch.is_batch(data) else [data])
        return pipe.decode(self.waiting.pop(0))

    def ask_many(self, builds: list[Callable[[int], pipe.Message]]) -> list[pipe.Reply]:
        """Send a batch (as the service pipelines a Child SA's install), then read every answer."""
        ids: dict[int, None] = {}
        for b in builds:
            ids[self.next_id] = None
            self.sock.send(pipe.encode(b(self.next_id)))
            self.next_id += 1
        out = []
        while ids:
            msg = self.recv()
            if isinstance(msg, pipe.Reply) and msg.req_id in ids and not msg.more:
                del ids[msg.req_id]
                if msg.errno is not pipe.Errno.OK:
                    raise RuntimeError(f"request {msg.req_id}: {msg.errno.name}")
                out.append(msg)
        return out

    def dump(self) -> pipe.Reply:
        req = self.next_id
        self.next_id += 1
        self.sock.send(pipe.encode(pipe.Dump(req)))
        parts = []
        while True:
            msg = self.recv()
            if isinstance(msg, pipe.Reply) and msg.req_id == req:
                parts.append(msg)
                if not msg.more:
                    return pipe.join_dump_replies(parts)


def run_process(n: int, window: int, traffic: bool) -> None:
    tmp = Path(f"/tmp/worker_mem-{os.getpid()}")
    tmp.mkdir(exist_ok=True)
    with netns_worker(tmp) as (ns, proc, sock, peer):
        chan = Chan(sock)
        chan.ask_many([lambda r: pipe.Flush(r)])
        time.sleep(0.5)
        before, maps0 = rss_kib(proc.pid), smaps(proc.pid)
        installed: list[SaSpec] = []
        for start in range(0, n, 100):
            ks = range(start, min(n, start + 100))
            spis = [r.spi or 0 for r in chan.ask_many([lambda r: pipe.GetSpi(r, 0x100, 0xFFFFFFFF)] * len(ks))]
            batch = [specs(k, spi, window) for k, spi in zip(ks, spis, strict=True)]
            reqs: list[Callable[[int], pipe.Message]] = []
            for inb, outb, pol in batch:
                reqs += [functools.partial(pipe.Update, sa=inb), functools.partial(pipe.Add, sa=outb),
                         functools.partial(pipe.SpdAdd, policy=pol)]
                installed.append(inb)
            chan.ask_many(reqs)
        installed_kib, maps1 = rss_kib(proc.pid), smaps(proc.pid)
        if traffic:
            peer.bind((str(PEER.addr), PEER.port))
            peer.settimeout(0.2)
            with in_netns(ns):
                out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for k, inb in enumerate(installed):
                out.sendto(b"x", (str(vip(k)), 9))
                peer.sendto(esp(inb, 1, ipv4_udp(vip(k), GATEWAY, b"y")), (str(LOCAL.addr), LOCAL.port))
                if k % 50 == 49:
                    time.sleep(0.01)   # the socket buffers hold a burst; the loop drains them
            time.sleep(1.0)
            out.close()
        d = chan.dump()
        sent = sum(s.counters["packets"] for s in d.sas if s.direction is Direction.OUT)
        got = sum(s.counters["packets"] for s in d.sas if s.direction is Direction.IN)
        time.sleep(0.5)
        after, maps2 = rss_kib(proc.pid), smaps(proc.pid)
        print(f"worker RSS before {before} KiB, installed {installed_kib} KiB, after traffic {after} KiB")
        print(f"  grown by the installs: {smaps_growth(maps0, maps1)}")
        print(f"  grown by the traffic: {smaps_growth(maps1, maps2)}")
        print(f"{n} clients, window {window}: {(installed_kib - before) / n:.2f} KiB per client installed, "
              f"{(after - before) / n:.2f} KiB per client after one packet each way "
              f"({sent} out, {got} in; {len(d.sas)} SAs, {len(d.policies)} policies)")


def run_churn(cycles: int, n: int, window: int) -> None:
    """Rekey-like churn through the real worker: each cycle installs n clients' SAs, sends one
    packet each way on each, one IKE datagram (an event with data, up the pipe), and deletes
    the SAs; the policies stay, as a rekey leaves them.  The worker's RSS after each cycle."""
    tmp = Path(f"/tmp/worker_mem-{os.getpid()}")
    tmp.mkdir(exist_ok=True)
    with netns_worker(tmp) as (ns, proc, sock, peer):
        chan = Chan(sock)
        peer.bind((str(PEER.addr), PEER.port))
        with in_netns(ns):
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        chan.ask_many([functools.partial(pipe.SpdAdd, policy=specs(k, 0x100, window)[2]) for k in range(n)])
        rss = []
        for _ in range(cycles):
            spis = [r.spi or 0 for r in chan.ask_many([lambda r: pipe.GetSpi(r, 0x100, 0xFFFFFFFF)] * n)]
            batch = [specs(k, spi, window) for k, spi in enumerate(spis)]
            reqs: list[Callable[[int], pipe.Message]] = []
            for inb, outb, _ in batch:
                reqs += [functools.partial(pipe.Update, sa=inb), functools.partial(pipe.Add, sa=outb)]
            chan.ask_many(reqs)
            for k, (inb, _, _) in enumerate(batch):
                out.sendto(b"x", (str(vip(k)), 9))
                peer.sendto(esp(inb, 1, ipv4_udp(vip(k), GATEWAY, b"y")), (str(LOCAL.addr), LOCAL.port))
            # marker + an IKE header whose length field is its own (the fast path passes up no less)
            ike = os.urandom(24) + struct.pack("!I", 300) + os.urandom(272)
            peer.sendto(bytes(4) + ike, (str(LOCAL.addr), LOCAL.port))
            time.sleep(0.2)
            reqs = []
            for inb, outb, _ in batch:
                reqs += [functools.partial(pipe.Delete, spi=inb.spi, direction=Direction.IN),
                         functools.partial(pipe.Delete, spi=outb.spi, direction=Direction.OUT, remote=PEER)]
            chan.ask_many(reqs)
            rss.append(rss_kib(proc.pid))
        out.close()
        d = chan.dump()
        print(f"{cycles} cycles of {n} clients: worker RSS every {max(1, cycles // 10)} cycles:",
              " ".join(str(v) for v in rss[::max(1, cycles // 10)]), f"(end {rss[-1]}; {len(d.sas)} SAs left)")


def run_inproc(n: int, window: int) -> None:
    """The worker's request handler in this process, Python heap traced."""
    from tunsec.dataplane.fastpath import Dataplane
    from tunsec.dataplane.worker import Worker

    loop = asyncio.new_event_loop()
    dp = Dataplane()
    w = Worker(dp, lambda _b: None, {}, loop)
    ids = iter(range(1, 1 << 30))

    def ask(msg: pipe.Message) -> pipe.Reply:
        (ans,) = w.handle_datagram(pipe.encode(msg))
        r = pipe.decode(ans)
        assert isinstance(r, pipe.Reply) and r.errno is pipe.Errno.OK, r
        return r

    # warm: one client in and out, so that import-time and first-use allocations are not counted
    gc.collect()
    tracemalloc.start()
    before, t0, m0 = rss_kib(os.getpid()), tracemalloc.get_traced_memory()[0], malloc_in_use_kib()
    for k in range(n):
        spi = ask(pipe.GetSpi(next(ids), 0x100, 0xFFFFFFFF)).spi
        assert spi is not None
        inb, outb, pol = specs(k, spi, window)
        ask(pipe.Update(next(ids), inb))
        ask(pipe.Add(next(ids), outb))
        ask(pipe.SpdAdd(next(ids), pol))
    gc.collect()
    after, t1, m1 = rss_kib(os.getpid()), tracemalloc.get_traced_memory()[0], malloc_in_use_kib()
    py = (t1 - t0) / 1024 / n
    print(f"{n} clients, window {window}, in process: {(after - before) / n:.2f} KiB RSS per client, "
          f"of which Python heap (traced) {py:.2f} KiB; malloc in use {(m1 - m0) / n:.2f} KiB per client")
    snap = tracemalloc.take_snapshot()
    for stat in snap.statistics("lineno")[:8]:
        print("  ", stat)
    w.timers.cancel_all()
    dp.flush()
    loop.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--window", type=int, default=4096, help="inbound replay window (tunsec's default 4096)")
    ap.add_argument("--no-traffic", action="store_true", help="install only, no packet through the loop")
    ap.add_argument("--inproc", action="store_true", help="in this process, Python heap traced")
    ap.add_argument("--churn", type=int, default=0, metavar="CYCLES",
                    help="install, use and delete --clients clients' SAs CYCLES times; RSS after each")
    args = ap.parse_args()
    if args.churn:
        run_churn(args.churn, args.clients, args.window)
    elif args.inproc:
        run_inproc(args.clients, args.window)
    else:
        run_process(args.clients, args.window, not args.no_traffic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
