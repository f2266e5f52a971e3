"""Source routes the first check missed (review revesp2 F1, F2; csrc/srcroute.h).

F1: a Routing header with no segments left is spent, unless an IP header follows it straight (next
header 41 or 4): a segment routing host (SRH; RPL for 41) decapsulates and routes the inner packet
by its own header.  Any Routing header type counts.  F2: a packet's own extension header walk steps
over AH to find a Routing header behind it (the host resubmits that header once the AH is
verified); the flow's protocol stays 51, as XFRM's policy lookup sees it, and an AH that does not
fit the packet, or a chain cut behind it, is malformed as any cut chain.  The review's proofs are in
test_review_revesp2_*.py; these are the further cases, both ways, and the guards a cruder fix would
break.  Scapy builds the packets; esp_ref (independent of csrc/) seals them."""

from __future__ import annotations

import ipaddress

import pytest
from esp_ref import esp_seal, new_key, opened, receiver, sender
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting
from scapy.layers.ipsec import AH, ESP
from scapy.packet import Packet, Raw

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Selector

OUTSIDE6 = "2001:db8::99"   # in no selector of esp_ref's SEL6 (fd00:a::/64 -> fd00:b::/64)


def _ah(nh: int) -> Packet:
    return AH(nh=nh, payloadlen=4, spi=0x2222, seq=1, icv=bytes(12))   # 24 bytes: (24 / 4) - 2


def _v6(*ext: Packet, inner: Packet | None = None) -> Packet:
    pkt: Packet = IPv6(src="fd00:a::5", dst="fd00:b::9")
    for e in ext:
        pkt = pkt / e
    return pkt / (inner if inner is not None else UDP(sport=4000, dport=53) / b"x")


def _inner6() -> Packet:
    return IPv6(src="fd00:a::5", dst=OUTSIDE6) / UDP(sport=4000, dport=9101) / b"x"


def _srh(segleft: int, nh: int = 17) -> Packet:
    return IPv6ExtHdrSegmentRouting(addresses=[OUTSIDE6, "fd00:b::9"], segleft=segleft, lastentry=1, nh=nh)


ROUTED = {
    # F1: a spent header with a packet straight behind it, of any type
    "rpl-spent-before-ipv6": _v6(IPv6ExtHdrRouting(type=3, segleft=0, addresses=["fd00:b::9"], nh=41),
                                 inner=_inner6()),
    "type0-spent-before-ipv4": _v6(IPv6ExtHdrRouting(segleft=0, addresses=["fd00:b::9"], nh=4),
                                   inner=IP(src="10.1.0.5", dst="192.0.2.99") / UDP(sport=4000, dport=9101)),
    "spent-srh-before-ipv6-behind-hbh": _v6(IPv6ExtHdrHopByHop(), _srh(0, 41), inner=_inner6()),
    # F2: behind AH
    "srh-behind-ah-and-dst-opts": _v6(_ah(60), IPv6ExtHdrDestOpt(nh=43), _srh(1)),
    "srh-behind-two-ah": _v6(_ah(51), _ah(43), _srh(1)),
    "spent-srh-before-ipv6-behind-ah": _v6(_ah(43), _srh(0, 41), inner=_inner6()),
}

PASSING = {
    "ah-before-udp": _v6(_ah(17)),
    "spent-srh-before-udp-behind-ah": _v6(_ah(43), _srh(0)),
    "ipv6-in-ipv6-without-a-routing-header": _v6(inner=_inner6()),   # IP-in-IP: revesp R1, a tunnel device's
    "dst-opts-before-ipv6": _v6(IPv6ExtHdrDestOpt(nh=41), inner=_inner6()),
    # nested ESP: the Routing header inside it is encrypted, not seen (srcroute.h)
    "srh-inside-esp-behind-ah": _v6(_ah(50), inner=ESP(spi=0x3333, seq=1, data=bytes(_srh(1) / UDP()))),
}


@pytest.mark.parametrize("pkt", ROUTED.values(), ids=ROUTED.keys())
def test_a_route_behind_ah_or_a_packet_behind_a_spent_route_is_dropped_both_ways(pkt: Packet) -> None:
    out, drop, drops, policy_drops = opened(bytes(pkt))
    assert (out, drop) == (b"", Drop.SOURCE_ROUTE) and drops["source_route"] == 1 and policy_drops == 1
    esp, _, drop, _ = sender(new_key()).outbound(bytes(pkt))
    assert (esp, drop) == (b"", Drop.SOURCE_ROUTE)


@pytest.mark.parametrize("pkt", PASSING.values(), ids=PASSING.keys())
def test_ah_spent_routes_and_plain_ip_in_ip_still_pass(pkt: Packet) -> None:
    out, drop, drops, _ = opened(bytes(pkt))
    assert (out, drop) == (bytes(pkt), Drop.NONE) and sum(drops.values()) == 0
    esp, _, drop, _ = sender(new_key()).outbound(bytes(pkt))
    assert drop is Drop.NONE and esp


@pytest.mark.parametrize(("proto", "want"), [(51, Drop.NONE), (17, Drop.POLICY)])
def test_the_flow_of_a_packet_behind_ah_stays_protocol_51(proto: int, want: Drop) -> None:
    """The walk goes past AH for a Routing header only: the selectors still see protocol 51 (a
    selector for UDP does not take the UDP datagram behind the AH)."""
    sel = Selector.from_networks(ipaddress.ip_network("fd00:a::/64"), ipaddress.ip_network("fd00:b::/64"), proto)
    key = new_key()
    dp, spi = receiver(key, selectors=(sel,))
    pkt = bytes(_v6(_ah(43), _srh(0)))
    out, drop = dp.inbound(esp_seal(key, spi, 1, pkt, 41))
    assert drop is want and out == (pkt if want is Drop.NONE else b"")


def _ah_patched(length: int, tail: bytes = b"") -> bytes:
    """IPv6 / AH with this length field (RFC 4302: (length + 2) * 4 bytes) / tail, the payload
    length the true one (scapy would fix the AH's)."""
    raw = bytearray(bytes(IPv6(src="fd00:a::5", dst="fd00:b::9", nh=51) / Raw(bytes(_ah(43))[:24] + tail)))
    raw[41] = length
    return bytes(raw)


CUT = {
    "ah-past-the-payload": _ah_patched(5),
    "ah-of-four-bytes": bytes(IPv6(src="fd00:a::5", dst="fd00:b::9", nh=51) / Raw(b"\x2b\x00\x00\x00")),
    "routing-header-cut-behind-ah": _ah_patched(4, bytes(_srh(1))[:6]),
}


@pytest.mark.parametrize("pkt", CUT.values(), ids=CUT.keys())
def test_an_ah_or_a_chain_behind_it_cut_short_is_malformed_both_ways(pkt: bytes) -> None:
    """The host drops these too; before the walk went past AH they passed as protocol 51."""
    out, drop, drops, _ = opened(pkt)
    assert (out, drop) == (b"", Drop.MALFORMED) and drops["malformed"] == 1
    assert sender(new_key()).outbound(pkt)[2] is Drop.MALFORMED
