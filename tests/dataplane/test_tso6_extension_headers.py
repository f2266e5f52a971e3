"""Review revipv6 F3: a TSO6 read from the TUN whose IPv6 header is followed by an extension header
(Destination Options here) is refused whole, a `malformed` drop of up to 64 KiB.

offload.c ip_hdr takes an IPv6 packet's L4 protocol from its Next Header and its header length as
40 ("no IPv6 extension headers on GSO packets"), so ts_vnet_segment refuses a GSO_TCPV6 read whose
Next Header is 60.  The kernel does give such reads to a TUN with TUN_F_TSO6: a LAN host's TCP with a
Destination Options or Routing header, GRO-merged on the way in (ipv6_gro_receive pulls the extension
headers) and forwarded into the TUN, or a local socket with IPV6_DSTOPTS/IPV6_RTHDR set.  The virtio
header names where TCP starts (csum_start, hdr_len), which the segmenter does not use for IPv6.

The fix (offload.c ipv6_l4): the segmenter walks Hop-by-Hop, Destination Options and Routing headers
(bounded by the read) to the L4 header, and copies them into each segment.  A Fragment header and a
Routing header with segments left (the TCP checksum's pseudo-header would take its final
destination) stay refused."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.packet import Packet
from test_offload import GSO_TCPV6, NEEDS_CSUM, _pseudo_sum, vnet

from tunsec.dataplane.fastpath import vnet_segment

EXT = 8   # an empty Destination Options header (PadN to 8 bytes)


def _super_tcp(ext: Packet, payload: bytes) -> bytes:
    """A TSO6 super-packet as the TUN gives it: IPv6, `ext`, TCP (pseudo-header sum)."""
    pkt = bytearray(bytes(IPv6(src="fd00:1::1", dst="fd00:2::1") / ext
                          / TCP(sport=40000, dport=5201, seq=1000, ack=77, flags="PA") / payload))
    l4 = 40 + len(ext)
    assert pkt[6] != 6 and pkt[l4 - len(ext.lastlayer())] == 6   # Next Header: `ext`, ..., then TCP
    pkt[l4 + 16 : l4 + 18] = _pseudo_sum(bytes(pkt), 6, 6, len(pkt) - l4).to_bytes(2, "big")
    return bytes(pkt)


def _super_tcp_with_dest_opts(payload: bytes) -> bytes:
    return _super_tcp(IPv6ExtHdrDestOpt(), payload)


def _read(ext: Packet, payload: bytes, mss: int = 1000) -> bytes:
    l4 = 40 + len(ext)
    return vnet(NEEDS_CSUM, GSO_TCPV6, l4 + 20, mss, l4, 16) + _super_tcp(ext, payload)


def test_tso6_read_with_a_destination_options_header_is_segmented() -> None:
    payload, mss = os.urandom(3000), 1000
    read = vnet(NEEDS_CSUM, GSO_TCPV6, 40 + EXT + 20, mss, 40 + EXT, 16) + _super_tcp_with_dest_opts(payload)
    segs = vnet_segment(read)
    # on main: None (the whole read dropped as malformed)
    assert segs is not None, "a TSO6 read with an IPv6 extension header was refused whole"
    assert len(segs) == 3
    for i, s in enumerate(segs):
        ip6 = IPv6(s)
        assert ip6.plen == len(s) - 40
        assert IPv6ExtHdrDestOpt in ip6
        assert ip6[TCP].seq == 1000 + i * mss
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segs) == payload


def test_tso6_read_with_hop_by_hop_and_a_spent_routing_header_is_segmented() -> None:
    payload = os.urandom(2500)
    ext = IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["fd00:3::1"], segleft=0)
    segs = vnet_segment(_read(ext, payload))
    assert segs is not None and len(segs) == 3
    for s in segs:
        ip6 = IPv6(s)
        sent = ip6[TCP].chksum
        del ip6[TCP].chksum   # scapy's own sum (its pseudo-header: the IPv6 destination, no segment left)
        assert IPv6ExtHdrRouting in ip6 and IPv6(bytes(ip6))[TCP].chksum == sent
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segs) == payload


@pytest.mark.parametrize("ext", [IPv6ExtHdrFragment(offset=0, m=0, id=7),
                                 IPv6ExtHdrRouting(addresses=["fd00:3::1"], segleft=1)],
                         ids=["fragment", "routing-segments-left"])
def test_tso6_read_with_a_fragment_or_a_live_routing_header_stays_refused(ext: Packet) -> None:
    assert vnet_segment(_read(ext, os.urandom(2500))) is None
