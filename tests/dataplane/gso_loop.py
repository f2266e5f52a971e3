"""What the GSO tests' namespace scripts share (test_gso_pmtu.py, test_gso_split_source.py,
test_gso_source_gone.py, test_gso_source_remembered.py, test_review_revcsmall_source_back.py): each
runs the fast path's loop thread over a real TUN with one outbound SA to a peer and a burst of
full-size datagrams waiting in the TUN, in a namespace of its own.

The script side (imported inside the namespace: the test passes this directory as argv[1]) sets up
the loop and reads what left; the test side runs the script and reads its OFFLOADS line."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from esp_ref import new_key

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
from tunsec.dataplane.tun import Tun
from tunsec.dataplane.worker import Worker
from tunsec.services.addr_feed import AddressFeed


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def tun_up(name: str, *link: str) -> Tun:
    """The TUN ``name`` (no offloads), MTU 1400 (and ``link``'s settings), up, 10.9.0.1/24 on it."""
    tun = Tun.open(name, offload=False)
    ip("link", "set", name, "mtu", "1400", *link, "up")
    ip("addr", "add", "10.9.0.1/24", "dev", name)
    return tun


def v6_sockets() -> tuple[socket.socket, socket.socket, Endpoint]:
    """The gateway's IPv6 ESP socket on [::]:4500 (non-blocking) and a peer's on [::1] (10 s timeout),
    with the peer's endpoint."""
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::", 4500))
    udp.setblocking(False)
    peer_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer_sock.bind(("::1", 0))
    peer_sock.settimeout(10)
    return udp, peer_sock, Endpoint(ipaddress.ip_address("::1"), peer_sock.getsockname()[1])


def start_loop(tun: Tun, local: Endpoint, peer: Endpoint, *, udp4: int = -1, udp6: int = -1,
               n: int = 20, spi: int = 0x1001) -> tuple[Dataplane, threading.Thread]:
    """One outbound SA from local to peer for 0.0.0.0/0 -> 10.9.0.0/24, the worker's offloads (printed:
    OFFLOADS), n full-size datagrams waiting in the TUN, then the loop thread: its first batches read
    them all."""
    os_tun = tun.fileno()
    os.set_blocking(os_tun, False)
    dp = Dataplane()
    dp.set_tunnel_mtu(1400)
    anywhere = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("10.9.0.0/24"))
    dp.add(SaSpec(spi=spi, direction=Direction.OUT, alg=Alg.AES128GCM16, key=new_key(), esn=False,
                  replay_window=0, reqid=1, local=local, remote=peer,
                  soft=Lifetime(), hard=Lifetime(), selectors=(anywhere,), seq_start=0))
    dp.spd_add(Policy(id=1, priority=10, action=Action.PROTECT, reqid=1, selector=anywhere))
    dp.set_fds(os_tun, udp4, udp6)
    print("OFFLOADS", dp.set_offloads(False))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(n):
            s.sendto(b"x" * 1300, ("10.9.0.5", 9))
    loop = threading.Thread(target=dp.run, daemon=True)
    loop.start()
    return dp, loop


def esp_left(cap: socket.socket, peer: str, seconds: float = 3.0) -> Iterator[bytes]:
    """The IPv4 packets towards peer an AF_PACKET socket sees within seconds that are whole UDP datagrams
    or their first fragments (one per ESP packet that left)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = cap.recv(65535)
        except TimeoutError:
            continue
        ip4 = frame[14:]
        frag_off = struct.unpack("!H", ip4[6:8])[0] & 0x1fff
        if ip4[9] == 17 and socket.inet_ntoa(ip4[16:20]) == peer and frag_off == 0:
            yield ip4


class Told:
    """The worker's end of ADDR_ADDED in this process: each notice as the pipe carries it, into the
    worker's own handling (worker.Worker.handle_datagram: no answer) and so the fast path; the
    addresses told ("any" for none), in order."""

    def __init__(self, dp: Dataplane, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = Worker(dp, lambda _data: None, {}, loop)
        self.addrs: list[str] = []
        self.notices = 0
        self._cond = threading.Condition()

    def notify(self, msg: pipe.AddrAdded) -> bool:
        data = pipe.encode(msg)
        assert self.worker.handle_datagram(data) == []   # a notice: no answer
        got = pipe.decode(data)
        assert isinstance(got, pipe.AddrAdded)
        with self._cond:
            self.addrs += [str(a) for a in got.addrs] or ["any"]
            self.notices += 1
            self._cond.notify_all()
        return True

    def wait_for(self, addr: str, timeout: float = 10.0) -> None:
        """Until ``addr`` was told."""
        with self._cond:
            assert self._cond.wait_for(lambda: addr in self.addrs, timeout), self.addrs

    def wait(self, notices: int, timeout: float = 10.0) -> None:
        """Until this many notices were told (the kernel sends IPv6's from a work queue, after `ip` returned)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.notices >= notices, timeout), self.addrs


def control_watch(dp: Dataplane) -> tuple[Told, Callable[[], None]]:
    """The control process's watch of the host's addresses (services/addr_feed.py, its AddressWatch on
    an event loop of its own) telling dp each address added; returns the record of what it told and the
    watch's stop."""
    loop = asyncio.new_event_loop()
    told = Told(dp, loop)
    feed = AddressFeed(lambda: told)  # type: ignore[arg-type,return-value]
    ready = threading.Event()

    def started() -> None:
        feed.start()   # on the running loop: its reader is added to it
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(feed.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    return told, stop


def stop_loop(dp: Dataplane, loop: threading.Thread) -> None:
    dp.stop()
    loop.join(5)


def run_script(prefix: str, script: str, tmp_path: Path, *args: str, wrap: tuple[str, ...] = ()) -> str:
    """script run in a namespace of its own (named after prefix), under the command wrap if any (strace);
    its stdout.  Skipped where there are no namespaces or the kernel has no UDP GSO (a failure in CI:
    tests/conftest.py).  (Its imports are the test side's: the script side runs with this directory alone
    on its path.)"""
    import pytest
    from conftest import netns_unavailable

    from tunsec.bench.netns import scratch_netns

    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns(prefix) as ns:
        path = tmp_path / f"{prefix}.py"
        path.write_text(script)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["ip", "netns", "exec", ns, *wrap, sys.executable, str(path), here, *args],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert out.returncode == 0, out.stderr[-3000:]
    offloads = next(line for line in out.stdout.splitlines() if line.startswith("OFFLOADS"))
    if "udp-gso" not in offloads:
        pytest.skip("this kernel has no UDP GSO: the loop sends one datagram per message")
    return out.stdout
