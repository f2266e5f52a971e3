"""Review revesp2 (h/fixesp's source-route check): a Routing header behind an IPv6 AH header.

spd.c `parse_v6` walks a packet's own extension headers (hop-by-hop, routing, destination,
fragment) to find a Routing header with Segments Left > 0 (csrc/srcroute.h), but for a packet's own
flow it stops at AH (next header 51): the walk past AH is done for ICMP quotes only.  The host
behind the TUN does not stop there: Linux's ip6_input hands the packet to ah6_input, and after the
AH is verified (xfrm_input) it resubmits the next header, the Routing header, to ipv6_rthdr_rcv,
which routes on to the next segment (seg6_enabled, or type 0 with accept_source_route).  A peer
that also holds a transport-mode AH SA with a host behind the gateway (nested IPsec: end-to-end AH
inside the tunnel) thus still gets a packet past its Child SA's selectors; h/fixesp's own cases
(`test_source_route.py::LIVE`) put no AH before the Routing header.

The fast path cannot verify the AH (it holds no key of the host's), but it can see the Routing
header behind it: AH's length field is in the clear.  These tests fail on main (the packet is
delivered / sealed) and pass once the own-packet walk steps over AH as the quote walk does."""

from __future__ import annotations

import pytest
from esp_ref import new_key, opened, sender
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrSegmentRouting
from scapy.layers.ipsec import AH
from scapy.packet import Packet

from tunsec.dataplane.fastpath import Drop

OUTSIDE6 = "2001:db8::99"   # in no selector of esp_ref's SEL6 (fd00:a::/64 -> fd00:b::/64)


def _ah(nh: int) -> Packet:
    # 12 + 12-byte ICV = 24 bytes: (24 / 4) - 2 = 4 (RFC 4302 §2.2)
    return AH(nh=nh, payloadlen=4, spi=0x2222, seq=1, icv=bytes(12))


def _srh_behind_ah() -> bytes:
    srh = IPv6ExtHdrSegmentRouting(addresses=[OUTSIDE6, "fd00:b::9"], segleft=1, lastentry=1, nh=17)
    pkt = IPv6(src="fd00:a::5", dst="fd00:b::9", nh=51) / _ah(43) / srh / UDP(sport=4000, dport=53) / b"x"
    raw = bytes(pkt)
    assert raw[40] == 43 and raw[40 + 24] == 17 and raw[40 + 24 + 3] == 1   # AH -> SRH (segments left 1) -> UDP
    return raw


def test_a_routing_header_behind_ah_from_the_peer_is_dropped() -> None:
    out, drop, drops, _ = opened(_srh_behind_ah())
    assert (out, drop) == (b"", Drop.SOURCE_ROUTE), "delivered: the host routes it on to " + OUTSIDE6
    assert drops["source_route"] == 1


def test_a_local_hosts_routing_header_behind_ah_is_not_sealed() -> None:
    dp = sender(new_key(), 0x1001)
    esp, _, drop, _ = dp.outbound(_srh_behind_ah())
    assert (esp, drop) == (b"", Drop.SOURCE_ROUTE)


@pytest.mark.parametrize("segleft", [0, 1])
def test_guard_a_routing_header_after_a_first_fragment_header(segleft: int) -> None:
    """Not a finding, a guard: a Routing header in the fragmentable part of a first fragment
    (after the Fragment header) is walked, as the host walks it after reassembly."""
    srh = IPv6ExtHdrSegmentRouting(addresses=[OUTSIDE6, "fd00:b::9"], segleft=segleft, lastentry=1)
    pkt = IPv6(src="fd00:a::5", dst="fd00:b::9") / IPv6ExtHdrFragment(m=1) / srh / UDP(sport=4000, dport=53) / b"x"
    _, drop, _, _ = opened(bytes(pkt))
    assert drop is (Drop.SOURCE_ROUTE if segleft else Drop.NONE)
