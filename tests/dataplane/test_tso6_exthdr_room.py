"""Review revipv6b F1: a full-size TSO6 read whose extension headers are within TS_GSO_V6_EXT_MAX
(512) is refused whole (a `malformed` drop of up to 64 KiB) when its MSS is an ordinary one.

offload.c ipv6_l4 (h/fixipv6) takes up to 512 bytes of Hop-by-Hop / Destination Options / Routing
headers and segment() copies them into every segment, so one read needs nseg * (40 + ext + TCP) +
payload bytes of output.  The output room was sized when a segment's headers were 120 bytes at most:
loop.c SEGCAP is 65536 + MAX_SEGS * 128 (and fastpath.vnet_segment, the same for the tests), so
`nseg * hdr + payload > outcap` in segment() refuses a 64 KiB read once its headers exceed ~half its
MSS: with a 504-byte Destination Options header at a TUN MTU of 1500 (MSS 936, 70 segments) the read
needs ~104 KB of the 98 KB there is.  The sender's TCP retransmits its TSO reads and they are dropped
again: the flow stalls, counted as malformed, though the walk accepted the chain."""

from __future__ import annotations

import os

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, PadN
from test_tso6_extension_headers import _read

from tunsec.dataplane.fastpath import lib, vnet_segment


def _dest_opts(total: int) -> IPv6ExtHdrDestOpt:
    """A Destination Options header of `total` bytes (a multiple of 8), PadN options (255 data bytes
    at most each) after its 2-byte head."""
    left, opts = total - 2, []
    while left:
        n = min(left, 257) if left - min(left, 257) != 1 else 256   # no 1-byte tail (PadN takes 2+)
        opts.append(PadN(optdata=b"\x00" * (n - 2)))
        left -= n
    return IPv6ExtHdrDestOpt(options=opts)


def test_a_full_tso6_read_with_extension_headers_within_the_cap_is_segmented() -> None:
    ext = _dest_opts(504)
    assert len(ext) == 504 <= lib.TS_GSO_V6_EXT_MAX
    mss = 1500 - 40 - len(ext) - 20        # what the sender's TCP takes at a TUN MTU of 1500
    payload = os.urandom(65535 - 40 - len(ext) - 20)
    segs = vnet_segment(_read(ext, payload, mss))
    # on main: None -- 70 segments x 564 bytes of headers + the payload exceed the output room
    assert segs is not None, "a 64 KiB TSO6 read with 504 bytes of extension headers was dropped whole"
    assert len(segs) == -(-len(payload) // mss)
    assert all(IPv6ExtHdrDestOpt in IPv6(s) and len(s) <= 1500 for s in segs)
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segs) == payload


def test_the_smaller_chain_that_fits_is_segmented() -> None:
    """The contrast: the same read with an 8-byte header is cut (the room, not the walk, refuses)."""
    ext = _dest_opts(8)
    mss = 1500 - 40 - len(ext) - 20
    payload = os.urandom(65535 - 40 - len(ext) - 20)
    segs = vnet_segment(_read(ext, payload, mss))
    assert segs is not None and len(segs) == -(-len(payload) // mss)
