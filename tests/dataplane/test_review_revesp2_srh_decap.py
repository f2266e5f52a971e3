"""Review revesp2 F1 at the unit level (the real kernel's proof: test_review_revesp2_srh_decap_tun.py).

A segment routing header (type 4) with Segments Left 0 whose next header is IPv6 (41) or IPv4 (4)
is not spent: Linux's ipv6_srh_rcv, where seg6_enabled, decapsulates the packet behind it and
re-injects it, routed by its own header.  h/fixesp passes it as spent both ways, so the inner
packet's addresses (here 2001:db8::99 / 192.0.2.99, outside esp_ref's SEL6 / SEL4) meet no
selector.  Fails on main; the guard (a spent SRH before UDP) passes before and after."""

from __future__ import annotations

import pytest
from esp_ref import new_key, opened, sender
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
from scapy.packet import Packet

from tunsec.dataplane.fastpath import Drop

GW6 = "fd00:b::1"


def _spent_srh(inner: Packet, nh: int) -> bytes:
    srh = IPv6ExtHdrSegmentRouting(addresses=[GW6], segleft=0, lastentry=0, nh=nh)
    raw = bytes(IPv6(src="fd00:a::5", dst=GW6) / srh / inner)
    assert raw[6] == 43 and raw[40] == nh and raw[43] == 0   # SRH, next header nh, Segments Left 0
    return raw


CARRIED = {
    "ipv6-in-srh": _spent_srh(IPv6(src="fd00:a::5", dst="2001:db8::99") / UDP(sport=4000, dport=9101) / b"x", 41),
    "ipv4-in-srh": _spent_srh(IP(src="10.1.0.5", dst="192.0.2.99") / UDP(sport=4000, dport=9101) / b"x", 4),
}


@pytest.mark.parametrize("pkt", CARRIED.values(), ids=CARRIED.keys())
def test_a_spent_srh_carrying_a_packet_from_the_peer_is_dropped(pkt: bytes) -> None:
    out, drop, _, _ = opened(pkt)
    assert (out, drop) == (b"", Drop.SOURCE_ROUTE), "delivered: a seg6 host decapsulates and routes the inner packet"


@pytest.mark.parametrize("pkt", CARRIED.values(), ids=CARRIED.keys())
def test_a_local_hosts_spent_srh_carrying_a_packet_is_not_sealed(pkt: bytes) -> None:
    esp, _, drop, _ = sender(new_key(), 0x1001).outbound(pkt)
    assert (esp, drop) == (b"", Drop.SOURCE_ROUTE)


def test_guard_a_spent_srh_before_udp_still_passes() -> None:
    pkt = _spent_srh(UDP(sport=4000, dport=53) / b"x", 17)
    assert opened(pkt)[:2] == (pkt, Drop.NONE)
