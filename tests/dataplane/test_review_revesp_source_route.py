"""Review revesp F1: an inner packet that names, in a source-route option or a routing header, a
next destination outside the SA's selectors passes the inbound policy check.

The check (csrc/dp.c check_inner) matches the IP header's destination only.  Where a host behind
the gateway honours the route (IPv4 LSRR/SSRR with accept_source_route, an IPv6 segment routing
header with seg6_enabled), it forwards the packet, with the peer's inner source, to an address the
peer's Child SA does not cover.  Scapy builds the inner packets; esp_ref seals them (an ESP
implementation independent of csrc/)."""

from __future__ import annotations

import pytest
from esp_ref import esp_seal, new_key, receiver
from scapy.layers.inet import IP, UDP, IPOption_LSRR, IPOption_RR, IPOption_SSRR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
from scapy.packet import Packet

from tunsec.dataplane.fastpath import Drop

OUTSIDE4 = "192.0.2.99"   # in no selector of the SA (10.1.0.0/24 -> 10.2.0.0/24)
OUTSIDE6 = "2001:db8::99"  # likewise (fd00:a::/64 -> fd00:b::/64)


def _through(pkt: Packet) -> tuple[bytes, Drop, int]:
    """pkt sealed by the peer and opened on our side: what comes out, why not, the drops counted."""
    raw = bytes(pkt)
    key = new_key()
    dp, spi = receiver(key)
    out, drop = dp.inbound(esp_seal(key, spi, 1, raw, 4 if raw[0] >> 4 == 4 else 41))
    return out, drop, sum(dp.drops().values())


def _refused(out: bytes, drop: Drop, counted: int) -> bool:
    """Not delivered, and counted once (as `policy` or a reason of its own: the fix's choice)."""
    return out == b"" and drop != Drop.NONE and counted == 1


@pytest.mark.parametrize("option", [IPOption_LSRR, IPOption_SSRR], ids=["lsrr", "ssrr"])
def test_an_ipv4_source_route_beyond_the_selectors_is_dropped(option: type) -> None:
    pkt = IP(src="10.1.0.5", dst="10.2.0.9", options=[option(routers=[OUTSIDE4])]) / UDP() / b"x"
    assert _refused(*_through(pkt))


def test_an_ipv6_segment_list_beyond_the_selectors_is_dropped() -> None:
    srh = IPv6ExtHdrSegmentRouting(addresses=[OUTSIDE6, "fd00:b::9"], segleft=1, lastentry=1)
    pkt = IPv6(src="fd00:a::5", dst="fd00:b::9") / srh / UDP() / b"x"
    assert _refused(*_through(pkt))


def test_packets_inside_the_selectors_still_pass() -> None:
    """Guard, what the fix must keep: plain packets, an IPv4 option that routes nothing (record
    route), a spent source route, and an IPv6 routing header with no segments left."""
    srh_spent = IPv6ExtHdrSegmentRouting(addresses=["fd00:b::9", OUTSIDE6], segleft=0, lastentry=1)
    for pkt in (
        IP(src="10.1.0.5", dst="10.2.0.9") / UDP() / b"x",
        IP(src="10.1.0.5", dst="10.2.0.9", options=[IPOption_RR(routers=["0.0.0.0"])]) / UDP() / b"x",
        IP(src="10.1.0.5", dst="10.2.0.9", options=[IPOption_LSRR(routers=[OUTSIDE4], pointer=8)]) / UDP() / b"x",
        IPv6(src="fd00:a::5", dst="fd00:b::9") / UDP() / b"x",
        IPv6(src="fd00:a::5", dst="fd00:b::9") / srh_spent / UDP() / b"x",
    ):
        out, drop, _ = _through(pkt)
        assert drop == Drop.NONE and out == bytes(pkt), pkt.summary()
