"""Review revcfg F3: every IPv6 host of a LAN shares one sender's ICMP "too big" answers.

h/fixpeerdos (review revpeerdos F2) gave each sender its own share (csrc/icmp_limit.c, burst 10, then
10 a second) before the shared budget, and keys it by ts_source_hash, which counts an IPv6 source by
its dos.ipv6_source_prefix (default /64) -- the INVALID_SPI limiter's key for unauthenticated outer
senders.  But the senders of these answers are the hosts whose inner packets enter the tunnel: the
protected site's LAN, which is one /64 for all its IPv6 hosts.  So one LAN host (any compromised
device) sending oversized DF packets takes every answer of all its neighbours, whose PMTU discovery
into the tunnel stalls -- the revpeerdos F2 black hole, still there for IPv6 LANs.

The limiter's clock is stopped with ts_test_set_clock: no time passes during the test.
"""

from __future__ import annotations

import ipaddress

from esp_ref import new_key, sender
from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.packet import Raw
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Action, Policy, Selector

MTU = 1400
T0 = 1 << 62
ANY6 = Selector.from_networks(ipaddress.ip_network("::/0"), ipaddress.ip_network("::/0"))


def _big6(src: str) -> bytes:
    return bytes(IPv6(src=src, dst="fd02::1") / UDP(sport=1, dport=2) / Raw(b"\x5a" * 1500))


def test_one_lan_host_flooding_leaves_its_neighbours_too_big_answered() -> None:
    dp = sender(new_key())
    dp.set_tunnel_mtu(MTU)
    dp.spd_add(Policy(id=3, priority=20, action=Action.PROTECT, reqid=1, selector=ANY6))
    lib.ts_test_set_clock(dp._dp, T0)
    flood = [dp.outbound(_big6("fd01:0:0:1::66")) for _ in range(40)]   # one LAN host's DF flood
    assert all(drop is Drop.TOO_BIG for _, _, drop, _ in flood)
    _, _, drop, answer = dp.outbound(_big6("fd01:0:0:1::7"))   # a neighbour on the same LAN /64
    assert drop is Drop.TOO_BIG
    assert answer, "a LAN neighbour's too-big packet went unanswered: one host took the whole /64's share"
    assert IPv6(answer)[ICMPv6PacketTooBig].mtu == MTU
