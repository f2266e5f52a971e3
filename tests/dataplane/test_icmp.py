"""Packets too big for the tunnel: ICMP "fragmentation needed" (RFC 792/1191)
and ICMPv6 "packet too big" (RFC 4443) written back towards the sender,
parsed and checksum-verified by scapy."""

from __future__ import annotations

import ipaddress

import pytest
from esp_ref import esp_open, inner, new_key, sender
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6
from scapy.packet import Packet, Raw

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Action, Policy, Selector

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


# --- what no ICMP error may answer, and the rate limit ---------------------------

ANY4 = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"))
ANY6 = Selector.from_networks(ipaddress.ip_network("::/0"), ipaddress.ip_network("::/0"))


def _dp_any() -> Dataplane:
    """MTU set, and PROTECT for any source, so odd sources reach the MTU check."""
    dp, _ = _dp()
    dp.spd_add(Policy(id=3, priority=20, action=Action.PROTECT, reqid=1, selector=ANY4))
    dp.spd_add(Policy(id=4, priority=20, action=Action.PROTECT, reqid=1, selector=ANY6))
    return dp


def _big(layers: Packet) -> bytes:
    pkt = bytes(layers / Raw(b"\x5a" * 1500))
    assert len(pkt) > MTU
    return pkt


NOT_ANSWERED = {
    "ICMP destination unreachable": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / ICMP(type=3, code=1),
    "ICMP time exceeded": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / ICMP(type=11),
    "ICMP frag needed": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / ICMP(type=3, code=4),
    "ICMP parameter problem": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / ICMP(type=12),
    "multicast source": IP(src="224.0.0.5", dst="10.2.0.1", flags="DF") / UDP(),
    "broadcast source": IP(src="255.255.255.255", dst="10.2.0.1", flags="DF") / UDP(),
    "loopback source": IP(src="127.0.0.1", dst="10.2.0.1", flags="DF") / UDP(),
    "unspecified source": IP(src="0.0.0.0", dst="10.2.0.1", flags="DF") / UDP(),
    "multicast destination": IP(src="10.1.0.1", dst="239.1.2.3", flags="DF") / UDP(),
    "later fragment": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF", frag=100, proto=1),
    "ICMPv6 destination unreachable": IPv6(src="fd00:a::1", dst="fd00:b::1") / ICMPv6DestUnreach(),
    "ICMPv6 packet too big": IPv6(src="fd00:a::1", dst="fd00:b::1") / ICMPv6PacketTooBig(mtu=1280),
    "ICMPv6 time exceeded": IPv6(src="fd00:a::1", dst="fd00:b::1") / ICMPv6TimeExceeded(),
    "IPv6 multicast source": IPv6(src="ff02::1", dst="fd00:b::1") / UDP(),
    "IPv6 unspecified source": IPv6(src="::", dst="fd00:b::1") / UDP(),
    "IPv6 loopback source": IPv6(src="::1", dst="fd00:b::1") / UDP(),
}
ANSWERED = {
    "ICMP echo request": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / ICMP(type=8),
    "UDP": IP(src="10.1.0.1", dst="10.2.0.1", flags="DF") / UDP(),
    "ICMPv6 echo request": IPv6(src="fd00:a::1", dst="fd00:b::1") / ICMPv6EchoRequest(),
    "IPv6 to a multicast group": IPv6(src="fd00:a::1", dst="ff0e::1") / UDP(),   # RFC 4443 §2.4 e.2
}


@pytest.mark.parametrize("name", sorted(NOT_ANSWERED))
def test_no_icmp_answer_for(name: str) -> None:
    dp = _dp_any()
    esp, _, drop, answer = dp.outbound(_big(NOT_ANSWERED[name]))
    assert (esp, drop, answer) == (b"", Drop.TOO_BIG, b"")
    assert dp.drops()["too_big"] == 1 and dp.drops()["icmp_suppressed"] == 1


@pytest.mark.parametrize("name", sorted(ANSWERED))
def test_icmp_answer_for(name: str) -> None:
    dp = _dp_any()
    sent = _big(ANSWERED[name])
    esp, _, drop, answer = dp.outbound(sent)
    assert (esp, drop) == (b"", Drop.TOO_BIG) and answer
    quoted = bytes(IP(answer)[ICMP].payload) if sent[0] >> 4 == 4 else bytes(IPv6(answer)[ICMPv6PacketTooBig].payload)
    assert sent.startswith(quoted)
    assert dp.drops()["icmp_suppressed"] == 0


def test_icmp_answers_are_rate_limited() -> None:
    """A flood of oversized packets from one sender gets a burst of answers (its
    share: 10), then few: its bucket refills at 10 a second, far slower than 2000
    calls take; every answer withheld is counted."""
    dp, _ = _dp()
    big = _v4(1500, df=True)
    n = 2000
    answers = [dp.outbound(big)[3] for _ in range(n)]
    sent = sum(1 for a in answers if a)
    assert answers[0] and IP(answers[0])[ICMP].type == 3
    assert 10 <= sent < n
    drops = dp.drops()
    assert drops["too_big"] == n and drops["icmp_suppressed"] == n - sent
