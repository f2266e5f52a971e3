"""TUN offloads in the C path: TSO/USO super-packets cut into segments, and
decrypted TCP segments coalesced into one TUN write (GRO).  scapy checks
every header and checksum independently."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from tunsec.dataplane.fastpath import VNET_HDR_LEN, gro_coalesce, vnet_segment

NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 1, 0, 1, 4, 5


def vnet(flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def _pseudo_sum(pkt: bytes, family: int, proto: int, l4len: int) -> int:
    """The partial checksum the kernel leaves for NEEDS_CSUM: folded, not complemented."""
    src = pkt[12:20] if family == 4 else pkt[8:40]
    data = src + bytes([0, proto]) + l4len.to_bytes(2, "big")
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def super_tcp(payload: bytes, family: int = 4, flags: str = "PA") -> bytes:
    """A TSO super-packet as the TUN gives it: L4 checksum = pseudo-header sum."""
    l3 = (
        IP(src="10.1.0.1", dst="10.2.0.1", id=100, flags="DF")
        if family == 4
        else IPv6(src="fd00:1::1", dst="fd00:2::1")
    )
    pkt = bytearray(
        bytes(
            l3
            / TCP(
                sport=40000,
                dport=5201,
                seq=1000,
                ack=77,
                flags=flags,
                options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))],
            )
            / payload
        )
    )
    iphl = 20 if family == 4 else 40
    pkt[iphl + 16 : iphl + 18] = _pseudo_sum(bytes(pkt), family, 6, len(pkt) - iphl).to_bytes(2, "big")
    return bytes(pkt)


def test_tso4_segments_have_right_headers_and_checksums() -> None:
    payload, mss = os.urandom(5000), 1400
    sp = super_tcp(payload)
    segs = vnet_segment(vnet(NEEDS_CSUM, GSO_TCPV4, 52, mss, 20, 16) + sp)
    assert segs is not None and len(segs) == 4
    data = b""
    for i, s in enumerate(segs):
        ip = IP(s)
        assert ip.len == len(s) and ip.id == 100 + i
        tcp = ip[TCP]
        assert tcp.seq == 1000 + i * mss
        assert ("P" in tcp.flags) == (i == 3)  # PSH only on the last
        chk_ip, chk_tcp = ip.chksum, tcp.chksum
        del ip.chksum, tcp.chksum
        rebuilt = IP(bytes(ip))
        assert rebuilt.chksum == chk_ip and rebuilt[TCP].chksum == chk_tcp
        data += bytes(tcp.payload)
    assert data == payload


def test_tso6_segments() -> None:
    payload, mss = os.urandom(3000), 1000
    segs = vnet_segment(vnet(NEEDS_CSUM, GSO_TCPV6, 72, mss, 40, 16) + super_tcp(payload, family=6))
    assert segs is not None and len(segs) == 3
    for i, s in enumerate(segs):
        ip6 = IPv6(s)
        assert ip6.plen == len(s) - 40
        tcp = ip6[TCP]
        assert tcp.seq == 1000 + i * mss
        chk = tcp.chksum
        del tcp.chksum
        assert IPv6(bytes(ip6))[TCP].chksum == chk
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segs) == payload


def test_uso_segments() -> None:
    payload, size = os.urandom(2500), 1200
    pkt = bytearray(bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2) / payload))
    pkt[26:28] = _pseudo_sum(bytes(pkt), 4, 17, len(pkt) - 20).to_bytes(2, "big")
    segs = vnet_segment(vnet(NEEDS_CSUM, GSO_UDP_L4, 28, size, 20, 6) + bytes(pkt))
    assert segs is not None and [len(s) for s in segs] == [1228, 1228, 128]
    for s in segs:
        udp = IP(s)[UDP]
        assert udp.len == len(s) - 20
        chk = udp.chksum
        del udp.chksum
        assert IP(bytes(IP(s)))[UDP].chksum == chk or IP(s)[UDP].chksum == chk
        full = IP(s)
        del full[UDP].chksum
        assert IP(bytes(full))[UDP].chksum == chk
    assert b"".join(bytes(IP(s)[UDP].payload) for s in segs) == payload


def test_plain_packet_with_partial_checksum_is_completed() -> None:
    sp = super_tcp(b"hello world")
    (seg,) = vnet_segment(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16) + sp) or []
    ip = IP(seg)
    chk = ip[TCP].chksum
    del ip[TCP].chksum
    assert IP(bytes(ip))[TCP].chksum == chk


def test_refuses_malformed_reads() -> None:
    assert vnet_segment(b"\0" * 5) is None  # shorter than the header
    assert vnet_segment(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 2000, 16) + super_tcp(b"x")) is None
    assert vnet_segment(vnet(0, GSO_TCPV4, 0, 0, 20, 16) + super_tcp(b"x" * 100)) is None  # mss 0
    assert vnet_segment(vnet(0, 0x33, 0, 100, 0, 0) + super_tcp(b"x" * 100)) is None  # unknown GSO


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_reads_never_crash(data: bytes) -> None:
    segs = vnet_segment(data)
    assert segs is None or all(len(s) <= len(data) for s in segs)


def _segments(payload: bytes, mss: int, seq: int = 1000, family: int = 4) -> list[bytes]:
    segs = vnet_segment(
        vnet(NEEDS_CSUM, GSO_TCPV4 if family == 4 else GSO_TCPV6, 0, mss, 20 if family == 4 else 40, 16)
        + super_tcp(payload, family)
    )
    assert segs is not None
    return segs


def test_gro_coalesces_a_run_into_one_super_packet() -> None:
    payload = os.urandom(1400 * 5)
    writes = gro_coalesce(_segments(payload, 1400))
    assert len(writes) == 1
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = struct.unpack("<BBHHHH", writes[0][:VNET_HDR_LEN])
    assert (flags, gso_type, gso_size, csum_start, csum_off) == (NEEDS_CSUM, GSO_TCPV4, 1400, 20, 16)
    ip = IP(writes[0][VNET_HDR_LEN:])
    assert bytes(ip[TCP].payload) == payload and ip.len == len(writes[0]) - VNET_HDR_LEN
    assert hdr_len == 20 + len(ip[TCP]) - len(payload)
    assert "P" in ip[TCP].flags
    chk = ip.chksum
    del ip.chksum
    assert IP(bytes(ip)).chksum == chk


def test_gro_keeps_flows_and_gaps_apart() -> None:
    a = _segments(os.urandom(4200), 1400)
    writes = gro_coalesce([a[0], a[2]])  # the middle segment is missing
    assert len(writes) == 2
    for w in writes:
        assert w[1] == GSO_NONE  # lone segments go out untouched
    udp = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP() / b"x")
    writes = gro_coalesce([udp, *a])
    assert len(writes) == 2 and writes[0][VNET_HDR_LEN:] == udp


def test_gro_ipv6() -> None:
    payload = os.urandom(1000 * 4)
    writes = gro_coalesce(_segments(payload, 1000, family=6))
    assert len(writes) == 1 and writes[0][1] == GSO_TCPV6
    assert bytes(IPv6(writes[0][VNET_HDR_LEN:])[TCP].payload) == payload


def test_gro_keeps_segments_with_different_windows_apart() -> None:
    """A merged segment carries its first one's window: a window update on a later data segment
    would be lost for the run (review revfast F4).  Linux's tcp_gro_receive refuses such a merge;
    so does the fast path.  Equal windows still merge."""
    def seg(seq: int, payload: bytes, window: int) -> bytes:
        return bytes(IP(src="10.1.0.1", dst="10.2.0.1")
                     / TCP(sport=40000, dport=443, flags="A", seq=seq, ack=1, window=window) / payload)

    a, b, c = os.urandom(1400), os.urandom(1400), os.urandom(1400)
    writes = gro_coalesce([seg(1000, a, 100), seg(2400, b, 65000), seg(3800, c, 65000)])
    got = [(IP(w[VNET_HDR_LEN:])[TCP].window, bytes(IP(w[VNET_HDR_LEN:])[TCP].payload)) for w in writes]
    assert got == [(100, a), (65000, b + c)]


def _corrupt_payload(seg: bytes, family: int = 4) -> bytes:
    """seg with one payload byte flipped and its TCP checksum left as it was."""
    b = bytearray(seg)
    b[-10] ^= 0x40
    return bytes(b)


def _tcp_checksum_ok(pkt: bytes, family: int) -> bool:
    ip = IP(pkt) if family == 4 else IPv6(pkt)
    got = ip[TCP].chksum
    del ip[TCP].chksum
    rebuilt = IP(bytes(ip)) if family == 4 else IPv6(bytes(ip))
    return bool(rebuilt[TCP].chksum == got)


def test_gro_never_vouches_for_a_segment_whose_checksum_fails() -> None:
    """A coalesced write says NEEDS_CSUM: the kernel then trusts the payload and
    fills the checksum in.  A corrupted segment must not be folded into one; it
    goes out alone, as it came, with its wrong checksum for the stack to drop."""
    for family in (4, 6):
        segs = _segments(os.urandom(1000 * 4), 1000, family=family)
        assert all(_tcp_checksum_ok(s, family) for s in segs)
        bad = _corrupt_payload(segs[2], family)
        assert not _tcp_checksum_ok(bad, family)
        writes = gro_coalesce([segs[0], segs[1], bad, segs[3]])
        alone = [w for w in writes if w[VNET_HDR_LEN:] == bad]
        assert len(alone) == 1, "the corrupted segment is written by itself"
        assert alone[0][:VNET_HDR_LEN] == bytes(VNET_HDR_LEN), "no checksum offload claimed for it"
        for w in writes:
            if w[0] & NEEDS_CSUM:
                merged = IP(w[VNET_HDR_LEN:]) if family == 4 else IPv6(w[VNET_HDR_LEN:])
                assert bytes(bad[-10:]) not in bytes(merged[TCP].payload)
        # the good ones before it still coalesce
        assert writes[0][1] == (GSO_TCPV4 if family == 4 else GSO_TCPV6)
        # corrupted first segment: it never opens a run either
        writes = gro_coalesce([_corrupt_payload(segs[0], family), segs[1]])
        assert [w[1] for w in writes] == [GSO_NONE, GSO_NONE]


@settings(max_examples=100, deadline=None)
@given(
    mss=st.integers(min_value=1, max_value=1440),
    family=st.sampled_from([4, 6]),
    flip=st.integers(min_value=0, max_value=1 << 20),
    bit=st.integers(min_value=0, max_value=7),
)
def test_checksums_agree_with_scapy_for_every_length_and_a_flipped_bit_anywhere(
    mss: int, family: int, flip: int, bit: int
) -> None:
    """The checksum routine sums 32 bytes per step with a scalar tail: every
    segment length (and so every tail length) gives scapy's checksum when cut,
    and one flipped bit anywhere in a segment (body or tail) is caught by GRO."""
    segs = _segments(os.urandom(mss * 3), mss, family=family)
    assert len(segs) == 3 and all(_tcp_checksum_ok(s, family) for s in segs)
    assert len(gro_coalesce(segs)) == 1
    iphl = 20 if family == 4 else 40
    bad = bytearray(segs[1])
    at = iphl + 20 + 12 + flip % mss   # past IP, TCP and its 12 option bytes: payload
    bad[at] ^= 1 << bit
    writes = gro_coalesce([segs[0], bytes(bad), segs[2]])
    assert [w[VNET_HDR_LEN:] for w in writes if w[VNET_HDR_LEN:] == bytes(bad)] == [bytes(bad)]
