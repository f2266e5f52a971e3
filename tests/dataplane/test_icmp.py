"""Packets too big for the tunnel: ICMP "fragmentation needed" (RFC 792/1191)
and ICMPv6 "packet too big" (RFC 4443) written back towards the sender,
parsed and checksum-verified by scapy."""

from __future__ import annotations

import pytest
from esp_ref import esp_open, inner, new_key, sender
from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.packet import Packet

from tunsec.dataplane.fastpath import Dataplane, Drop

MTU = 1400


def _v4(size: int, df: bool) -> bytes:
    """An IPv4 UDP packet of `size` bytes in all, from A's side to B's."""
    pkt = inner(4, b"\xab" * (size - 28), df=df)
    assert len(pkt) == size
    return pkt


def _v6(size: int) -> bytes:
    pkt = inner(6, b"\xcd" * (size - 48))
    assert len(pkt) == size
    return pkt


def _dp() -> tuple[Dataplane, bytes]:
    key = new_key()
    dp = sender(key)
    dp.set_tunnel_mtu(MTU)
    return dp, key


def _checksums_verify(raw_bytes: bytes, layer: type[Packet], base: type[Packet]) -> None:
    """scapy recomputes every checksum it finds deleted; they must equal what the C path wrote."""
    pkt = base(raw_bytes)
    rebuilt = pkt.copy()
    if base is IP:
        del rebuilt[IP].chksum
        del rebuilt[layer].chksum
    else:
        del rebuilt[layer].cksum
    rebuilt = base(bytes(rebuilt))
    if base is IP:
        assert pkt[IP].chksum == rebuilt[IP].chksum
        assert pkt[layer].chksum == rebuilt[layer].chksum
    else:
        assert pkt[layer].cksum == rebuilt[layer].cksum
    assert bytes(rebuilt) == raw_bytes


def test_v4_df_too_big_gets_frag_needed() -> None:
    dp, _ = _dp()
    big = _v4(1500, df=True)
    esp, peer, drop, answer = dp.outbound(big)
    assert (esp, peer, drop) == (b"", None, Drop.TOO_BIG)
    assert answer, "an ICMP answer for the TUN"
    ip = IP(answer)
    assert ip.version == 4 and ip.proto == 1 and ip.len == len(answer) <= 576
    assert (ip.src, ip.dst) == ("10.2.0.1", "10.1.0.1"), "addressed back to the sender"
    icmp = ip[ICMP]
    assert (icmp.type, icmp.code) == (3, 4)
    assert icmp.nexthopmtu == MTU
    _checksums_verify(answer, ICMP, IP)
    # it quotes the start of the offending packet (at least the IP header and 8 bytes)
    quoted = bytes(icmp.payload)
    assert len(quoted) >= 28 and big.startswith(quoted)
    err = icmp[IPerror]
    assert (err.src, err.dst, err.len) == ("10.1.0.1", "10.2.0.1", 1500)
    assert dp.drops()["too_big"] == 1


def test_v4_sizes_around_the_mtu() -> None:
    dp, key = _dp()
    fits = _v4(MTU, df=True)
    esp, _, drop, answer = dp.outbound(fits)
    assert drop is Drop.NONE and answer == b""
    assert esp_open(key, esp).payload == fits
    esp, _, drop, answer = dp.outbound(_v4(MTU + 1, df=True))
    assert (esp, drop) == (b"", Drop.TOO_BIG)
    assert IP(answer)[ICMP].nexthopmtu == MTU


def test_v4_without_df_is_encapsulated() -> None:
    dp, key = _dp()
    big = _v4(1500, df=False)
    esp, _, drop, answer = dp.outbound(big)
    assert drop is Drop.NONE and answer == b""
    o = esp_open(key, esp)
    assert o.payload == big and o.next_header == 4
    assert dp.drops()["too_big"] == 0


def test_v6_too_big_gets_packet_too_big() -> None:
    dp, _ = _dp()
    big = _v6(1500)
    esp, peer, drop, answer = dp.outbound(big)
    assert (esp, peer, drop) == (b"", None, Drop.TOO_BIG)
    ip6 = IPv6(answer)
    assert ip6.version == 6 and ip6.nh == 58
    assert ip6.plen + 40 == len(answer) <= 1280, "fits the IPv6 minimum MTU"
    assert (ip6.src, ip6.dst) == ("fd00:b::1", "fd00:a::1")
    ptb = ip6[ICMPv6PacketTooBig]
    assert (ptb.type, ptb.code, ptb.mtu) == (2, 0, MTU)
    _checksums_verify(answer, ICMPv6PacketTooBig, IPv6)
    quoted = bytes(ptb.payload)
    assert len(quoted) == len(answer) - 48 and big.startswith(quoted)
    assert dp.drops()["too_big"] == 1


def test_v6_at_the_mtu_is_encapsulated() -> None:
    dp, key = _dp()
    fits = _v6(MTU)
    esp, _, drop, answer = dp.outbound(fits)
    assert drop is Drop.NONE and answer == b""
    assert esp_open(key, esp).payload == fits
    assert dp.outbound(_v6(MTU + 1))[2] is Drop.TOO_BIG


@pytest.mark.parametrize("size", [1500, 9000])
def test_no_mtu_set_means_no_icmp(size: int) -> None:
    key = new_key()
    dp = sender(key)
    for pkt in (_v4(size, df=True), _v6(size)):
        esp, _, drop, answer = dp.outbound(pkt)
        assert drop is Drop.NONE and answer == b""
        assert esp_open(key, esp).payload == pkt


def test_small_quote_for_small_packets() -> None:
    """A packet just over a tiny MTU is quoted whole."""
    key = new_key()
    dp = sender(key)
    dp.set_tunnel_mtu(100)
    pkt = _v4(120, df=True)
    _, _, drop, answer = dp.outbound(pkt)
    assert drop is Drop.TOO_BIG
    icmp = IP(answer)[ICMP]
    assert bytes(icmp.payload) == pkt and icmp.nexthopmtu == 100
    assert IP(answer)[UDPerror].dport == 5678
    _checksums_verify(answer, ICMP, IP)
