"""Review revesp2 F1 through a real kernel: a "spent" segment routing header (Segments Left 0)
whose next header is IPv6 (41) or IPv4 (4) makes the host decapsulate the packet behind it and
route that one on by its own addresses, which no selector saw.

h/fixesp drops a Routing header with Segments Left > 0 (csrc/srcroute.h: the host would route on to
the next segment when `seg6_enabled`) and passes one with Segments Left 0 as spent.  But Linux's
ipv6_srh_rcv (net/ipv6/exthdrs.c), on the very host that honours segment routing (seg6_enabled,
fixesp's own precondition), does more with Segments Left 0: when the SRH's next header is
NEXTHDR_IPV6 or NEXTHDR_IPV4 it pulls the outer header and SRH off and re-injects the inner packet
(netif_rx on the same interface): the SRv6 "decapsulate at the last segment" step, with no tunnel
device (so not revesp R1's IP-in-IP/GRE, which needs one).  The inner packet then goes wherever its
own header says, from whatever source it names.

In a namespace of the test's own: a TUN, the peer's network fd00:a::/64 routed into it, the
gateway's own fd00:b::1 (inside the Child SA's local side fd00:b::/64) and a management address
fd00:99::99 (outside it) where a UDP service listens; seg6_enabled on (all and the TUN).  The peer
seals (esp_ref, independent of csrc/) fd00:a::5 -> fd00:b::1 / SRH(Segments Left 0, next header 41)
/ fd00:a::5 -> fd00:99::99 / UDP; the fast path's inbound check (ts_inbound_locked through cffi)
lets it through and the test writes it into the TUN, as the loop would.  The kernel decapsulates
and delivers the inner datagram to fd00:99::99.  Control: the same datagram sent directly is
refused by the check (`policy`).  Fails on main; passes once such a packet is dropped."""

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
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
    from tunsec.dataplane.pipe import Selector
    from tunsec.dataplane.tun import Tun

    TUN, GW, MGMT = "revesp2s0", "fd00:b::1", "fd00:99::99"
    def ip(*a):
        subprocess.run(["ip", *a], check=True)
    tun = Tun.open(TUN, offload=False)
    for conf in ("all", TUN):
        with open(f"/proc/sys/net/ipv6/conf/{conf}/seg6_enabled", "w") as f:
            f.write("1")
    ip("link", "set", "lo", "up")
    ip("link", "set", TUN, "up")
    ip("-6", "route", "add", "fd00:a::/64", "dev", TUN)        # the peer's network
    for addr in (GW + "/128", MGMT + "/128"):                    # the gateway's own
        ip("-6", "addr", "add", addr, "dev", "lo", "nodad")
    # an address is tentative until the kernel's DAD work has run, even on lo with nodad: bind()
    # refuses it (EADDRNOTAVAIL) and it takes no packet until then; wait for that, not for a time
    for _ in range(1000):
        show = subprocess.run(["ip", "-6", "addr", "show", "dev", "lo", "tentative"], capture_output=True, text=True)
        if not show.stdout.strip():
            break
        select.select([], [], [], 0.01)
    service = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    service.bind((MGMT, 9101))
    key = new_key()
    sel = Selector.from_networks(ipaddress.ip_network("fd00:a::/64"), ipaddress.ip_network("fd00:b::/64"))
    dp, spi = receiver(key, selectors=(sel,))
    seq = 0
    def deliver(inner):
        global seq
        seq += 1
        out, drop = dp.inbound(esp_seal(key, spi, seq, bytes(inner), 41))
        if out:
            os.write(tun.fileno(), out)
        return drop.name
    def datagram(tag):
        return IPv6(src="fd00:a::5", dst=MGMT) / UDP(sport=40000, dport=9101) / tag
    direct = deliver(datagram(b"direct"))
    srh = IPv6ExtHdrSegmentRouting(addresses=[GW], segleft=0, lastentry=0, nh=41)
    decap = deliver(IPv6(src="fd00:a::5", dst=GW) / srh / datagram(b"decap"))
    got = []
    while select.select([service], [], [], 3.0)[0]:          # observation window, not a threshold
        data, src = service.recvfrom(2048)
        got.append(f"{data.decode()}@{src[0]}")
    print("DIRECT", direct, "DECAP", decap, "GOT", *got)
''')


def test_a_spent_srh_carrying_a_packet_does_not_take_a_peer_past_its_selectors(tmp_path: Path) -> None:
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    if not os.path.exists("/proc/sys/net/ipv6/conf/all/seg6_enabled"):
        pytest.skip("kernel without IPv6 segment routing")
    with scratch_netns("revesp2") as ns:
        script = tmp_path / "srh.py"
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
