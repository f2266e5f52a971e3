"""Review revesp F1 through a real kernel: a peer's inner packet with an IPv4 loose source route
reaches, with the peer's own inner source, an address of the gateway outside the SA's selectors.

In a namespace of the test's own: a TUN, the peer's network (10.1.0.0/24) routed into it, the
gateway's LAN address 10.2.0.1 (inside the Child SA's local side, 10.2.0.0/24) and a management
address 192.0.2.99 (outside it) where a UDP service listens (a metrics endpoint, an SSH daemon:
anything the LAN-side selectors were meant to keep the peer from).  The host accepts source routes
(`net.ipv4.conf.all.accept_source_route = 1`: the admin's or a distribution's choice; a new
interface takes `default`, which is 1).  The peer seals (esp_ref, independent of csrc/) a UDP
datagram from 10.1.0.5 to 10.2.0.1 whose LSRR names 192.0.2.99; the fast path's inbound check
(the same ts_inbound_locked the loop threads call, through cffi) lets it through and the test
writes what comes out into the TUN, as the loop would.  The kernel follows the route and delivers
the datagram to 192.0.2.99.  The control: the same datagram sent to 192.0.2.99 directly is refused
by the check, so the selectors do exclude it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import scratch_netns

SCRIPT = textwrap.dedent(r'''
    import ipaddress, os, select, socket, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from esp_ref import esp_seal, new_key, receiver
    from scapy.layers.inet import IP, UDP, IPOption_LSRR
    from tunsec.dataplane.pipe import Selector
    from tunsec.dataplane.tun import Tun

    TUN, MGMT = "revesp0", "192.0.2.99"
    def ip(*a):
        subprocess.run(["ip", *a], check=True)
    with open("/proc/sys/net/ipv4/conf/all/accept_source_route", "w") as f:
        f.write("1")
    tun = Tun.open(TUN, offload=False)
    ip("link", "set", TUN, "up")
    ip("route", "add", "10.1.0.0/24", "dev", TUN)             # the peer's network
    for addr in ("10.2.0.1/32", MGMT + "/32"):                 # the gateway's own (lo: no dummy module needed)
        ip("addr", "add", addr, "dev", "lo")
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind((MGMT, 9101))
    key = new_key()
    sel = Selector.from_networks(ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("10.2.0.0/24"))
    dp, spi = receiver(key, selectors=(sel,))
    seq = 0
    def deliver(inner):
        global seq
        seq += 1
        out, drop = dp.inbound(esp_seal(key, spi, seq, bytes(inner), 4))
        if out:
            os.write(tun.fileno(), out)
        return drop.name
    udp = UDP(sport=40000, dport=9101, chksum=0)
    direct = deliver(IP(src="10.1.0.5", dst=MGMT) / udp / b"direct")
    routed = deliver(IP(src="10.1.0.5", dst="10.2.0.1", options=[IPOption_LSRR(routers=[MGMT])]) / udp / b"routed")
    got = []
    while select.select([service], [], [], 3.0)[0]:          # observation window, not a threshold
        data, src = service.recvfrom(2048)
        got.append(f"{data.decode()}@{src[0]}")
    print("DIRECT", direct, "ROUTED", routed, "GOT", *got)
''')


def test_a_source_route_does_not_take_a_peer_past_its_selectors(tmp_path: Path) -> None:
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns("revesp") as ns:
        script = tmp_path / "srr.py"
        script.write_text(SCRIPT)
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(script), here],
                             capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert out.returncode == 0, out.stderr[-3000:]
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("DIRECT"))
        words = line.split()
        assert words[1] == "POLICY", line     # control: the address is outside the selectors
        # the service outside the selectors must hear nothing from the peer
        assert words[words.index("GOT") + 1:] == [], line
