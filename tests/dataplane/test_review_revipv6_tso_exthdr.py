"""Review revipv6 F3: a TSO6 read from the TUN whose IPv6 header is followed by an extension header
(Destination Options here) is refused whole, a `malformed` drop of up to 64 KiB.

offload.c ip_hdr takes an IPv6 packet's L4 protocol from its Next Header and its header length as
40 ("no IPv6 extension headers on GSO packets"), so ts_vnet_segment refuses a GSO_TCPV6 read whose
Next Header is 60.  The kernel does give such reads to a TUN with TUN_F_TSO6: a LAN host's TCP with a
Destination Options or Routing header, GRO-merged on the way in (ipv6_gro_receive pulls the extension
headers) and forwarded into the TUN, or a local socket with IPV6_DSTOPTS/IPV6_RTHDR set.  The virtio
header names where TCP starts (csum_start, hdr_len), which the segmenter does not use for IPv6."""

from __future__ import annotations

import os

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from test_offload import GSO_TCPV6, NEEDS_CSUM, _pseudo_sum, vnet

from tunsec.dataplane.fastpath import vnet_segment

EXT = 8   # an empty Destination Options header (PadN to 8 bytes)


def _super_tcp_with_dest_opts(payload: bytes) -> bytes:
    """A TSO6 super-packet as the TUN gives it: IPv6, Destination Options, TCP (pseudo-header sum)."""
    pkt = bytearray(bytes(IPv6(src="fd00:1::1", dst="fd00:2::1") / IPv6ExtHdrDestOpt()
                          / TCP(sport=40000, dport=5201, seq=1000, ack=77, flags="PA") / payload))
    l4 = 40 + EXT
    assert pkt[6] == 60 and pkt[40] == 6   # Next Header: Destination Options, then TCP
    pkt[l4 + 16 : l4 + 18] = _pseudo_sum(bytes(pkt), 6, 6, len(pkt) - l4).to_bytes(2, "big")
    return bytes(pkt)


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
