#!/usr/bin/env python3
"""What the IKE service's list of the host's addresses costs the control process at N addresses
(review revperf R1), before h/fixaddr and now, in a network namespace of its own (root; the script
runs itself under ``unshare --net``: nothing of the host's is touched).

    python3 bench/host_addresses_cost.py [--addresses 1000 5000] [--repeat 3]

N IPv4 addresses are put on the namespace's lo (``ip -batch``), the watch's socket reading their
notices.  Before: each burst of changes listed every address again, pyroute2's RTM_GETADDR dump
parsed in Python (host_addresses.dump then): its CPU time per burst.  Now: a burst costs its own
changes, parsed from the watch's notices (addrwatch.address_changes) and applied
(HostAddresses.apply): the CPU per change of the N notices read; and the full dump now made only at
start and when the watch missed changes (addrwatch.dump_addresses, raw netlink, the same parser).
CPU is process_time, the best of --repeat; all of it holds the GIL.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from tunsec.dataplane.netlink import IPRoute  # noqa: E402
from tunsec.ike.endpoint import IkeEndpoint  # noqa: E402
from tunsec.services.addrwatch import RTMGRP_IPV4_IFADDR, address_changes, dump_addresses  # noqa: E402
from tunsec.services.ike.host_addresses import HostAddresses  # noqa: E402

DEV = "lo"   # (no dummy interfaces everywhere; the namespace's own lo)


def old_dump() -> frozenset[Any]:
    """host_addresses.dump before h/fixaddr: pyroute2's dump, each message's address parsed."""
    from ipaddress import ip_address
    with IPRoute() as ipr:
        out = set()
        for msg in ipr.get_addr():
            if msg.get("family") in (socket.AF_INET, socket.AF_INET6):
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if text:
                    out.add(ip_address(text))
        return frozenset(out)


def best(fn: Callable[[], object], repeat: int) -> float:
    """CPU seconds of one ``fn()``, the best of ``repeat``."""
    return min(timeit.repeat(fn, timer=time.process_time, number=1, repeat=repeat))


def batch(verb: str, n: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ip") as f:
        f.writelines(f"addr {verb} 10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}/32 dev {DEV}\n" for i in range(n))
        f.flush()
        subprocess.run(["ip", "-batch", f.name], check=True)


def notices(n: int) -> list[bytes]:
    """The watch socket's datagrams for N addresses added (a large buffer: none missed)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)   # SO_RCVBUFFORCE (root): the whole burst kept
    sock.bind((0, RTMGRP_IPV4_IFADDR))
    batch("add", n)
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            break
    sock.close()
    return out


def measure(n: int, repeat: int) -> None:
    try:
        datagrams = notices(n)
        assert len(old_dump()) >= n and len(dump_addresses()) >= n
        before = best(old_dump, repeat)
        full = best(dump_addresses, repeat)
        endpoint = IkeEndpoint([])
        hosts = HostAddresses(endpoint)

        def apply_all() -> None:
            for data in datagrams:
                hosts.apply(address_changes(data)[0])
        per = best(apply_all, repeat) / len(datagrams)
        assert len(endpoint.host_addresses) == n   # the engine's view: every address applied
        print(f"N={n}: before, per burst: {before * 1e3:.0f} ms (pyroute2 dump); now, per change: "
              f"{per * 1e6:.1f} us ({len(datagrams)} notices), a full dump (start, missed changes): "
              f"{full * 1e3:.1f} ms", flush=True)
    finally:
        batch("del", n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addresses", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.environ.get("FIXADDR_BENCH_NETNS") != "1":
        env = dict(os.environ, FIXADDR_BENCH_NETNS="1")
        sys.exit(subprocess.run(["unshare", "--net", sys.executable, *sys.argv], env=env).returncode)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for n in args.addresses:
        measure(n, args.repeat)


if __name__ == "__main__":
    main()
