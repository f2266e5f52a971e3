"""ICMP errors that arrive on an SA are checked by the packet they quote (RFC 4301 §6.2).

Peer A holds 10.1.0.0/24 and talks to our side, 10.2.0.0/24 (esp_ref's SEL4); 10.3.0.0/24 is
another peer's.  Inside its own ESP, A's host 10.1.0.5 tells our host 10.2.0.10 that a UDP packet
10.2.0.10:40000 -> 10.3.0.7:53 could not be delivered: a connected socket would take it as
ECONNREFUSED, and "fragmentation needed" would lower the path MTU toward the other peer.  The C
self-test (csrc/test/test_icmp_quote.c) has the cases; this is the path through cffi, the packets
built by scapy."""

from __future__ import annotations

import ipaddress

import pytest
from esp_ref import esp_seal, new_key, opened, receiver
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Packet, Raw

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Selector

OTHER_PEERS_DNS = "10.3.0.7"
AS_DNS = "10.1.0.7"


def _unreachable(quoted_dst: str, code: int = 3, mtu: int = 0) -> bytes:
    """An ICMP destination unreachable from A's host to ours about our UDP packet to quoted_dst:53."""
    quoted = IPerror(src="10.2.0.10", dst=quoted_dst) / UDPerror(sport=40000, dport=53)
    return bytes(IP(src="10.1.0.5", dst="10.2.0.10") / ICMP(type=3, code=code, nexthopmtu=mtu) / quoted)


def _too_big6(quoted_dst: str) -> bytes:
    quoted = IPerror6(src="fd00:b::10", dst=quoted_dst) / UDP(sport=40000, dport=53)
    return bytes(IPv6(src="fd00:a::5", dst="fd00:b::10") / ICMPv6PacketTooBig(mtu=1280) / quoted)


def _through(pkt: Packet | bytes) -> tuple[bytes, Drop, dict[str, int], int]:
    """pkt sealed by A and opened on our side: what comes out, why not, the drops, the SA's policy_drops."""
    return opened(bytes(pkt))


@pytest.mark.parametrize("code,mtu", [(3, 0), (4, 552)], ids=["port-unreachable", "frag-needed-552"])
def test_an_error_about_another_peers_flow_is_dropped_and_counted(code: int, mtu: int) -> None:
    out, drop, drops, policy_drops = _through(_unreachable(OTHER_PEERS_DNS, code, mtu))
    assert (out, drop) == (b"", Drop.ICMP_QUOTE)
    assert drops["icmp_quote"] == 1 and drops["policy"] == 0 and sum(drops.values()) == 1
    assert policy_drops == 1


@pytest.mark.parametrize("code,mtu", [(3, 0), (4, 552)], ids=["port-unreachable", "frag-needed-552"])
def test_an_error_about_the_peers_own_flow_passes_unchanged(code: int, mtu: int) -> None:
    pkt = _unreachable(AS_DNS, code, mtu)
    out, drop, drops, policy_drops = _through(pkt)
    assert (out, drop) == (pkt, Drop.NONE)
    assert sum(drops.values()) == 0 and policy_drops == 0
    assert IP(out)[UDPerror].dport == 53


def test_icmpv6_packet_too_big_is_checked_and_echo_is_not() -> None:
    assert _through(_too_big6("fd00:c::7"))[1] == Drop.ICMP_QUOTE
    ok = _too_big6("fd00:a::7")
    assert _through(ok)[:2] == (ok, Drop.NONE)
    echo = bytes(IPv6(src="fd00:a::5", dst="fd00:b::10") / ICMPv6EchoRequest(data=b"ping"))
    assert _through(echo)[:2] == (echo, Drop.NONE)


def test_a_quote_without_a_whole_ip_header_is_dropped() -> None:
    quoted = bytes(IPerror(src="10.2.0.10", dst=AS_DNS) / UDPerror(sport=40000, dport=53))
    cut = IP(src="10.1.0.5", dst="10.2.0.10") / ICMP(type=3, code=3) / Raw(quoted[:19])
    assert _through(cut)[1] == Drop.ICMP_QUOTE
    header_only = IP(src="10.1.0.5", dst="10.2.0.10") / ICMP(type=3, code=3) / Raw(quoted[:20])
    assert _through(header_only)[1] == Drop.NONE   # SEL4 allows any port: the addresses decide
    plain = bytes(IP(src="10.1.0.5", dst="10.2.0.10") / UDP(sport=53, dport=40000) / b"answer")
    assert _through(plain)[:2] == (plain, Drop.NONE)


def _chained6(headers: int, hop_by_hop: bool, error: Packet, quoted_dst: str) -> bytes:
    """An ICMPv6 error from A's host to ours behind `headers` extension headers (Hop-by-Hop first
    if asked, Destination Options after), about our UDP packet to quoted_dst:53."""
    quoted = IPerror6(src="fd00:b::10", dst=quoted_dst) / UDP(sport=40000, dport=53)
    plain = bytes(IPv6(src="fd00:a::5", dst="fd00:b::10") / error / quoted)
    # scapy stacks 200 headers in seconds: one of each is built, the chain spliced in (the
    # ICMPv6 checksum stays right: its pseudo-header counts the ICMPv6 message alone)
    dst_opt, hbh = bytes(IPv6ExtHdrDestOpt(nh=60)), bytes(IPv6ExtHdrHopByHop(nh=60))
    chain = [hbh if hop_by_hop and i == 0 else dst_opt for i in range(headers)]
    chain[-1] = bytes([58]) + chain[-1][1:]
    pkt = IPv6(plain[:40])
    pkt.nh, pkt.plen = (0 if hop_by_hop else 60), len(plain) - 40 + 8 * headers
    return bytes(pkt) + b"".join(chain) + plain[40:]


@pytest.mark.parametrize("hop_by_hop", [False, True], ids=["dstopts", "hbh-first"])
@pytest.mark.parametrize("headers", [8, 9, 16, 200])
def test_an_error_behind_a_long_extension_header_chain_is_checked(headers: int, hop_by_hop: bool) -> None:
    # Linux walks the whole chain to the ICMPv6 header: a Packet Too Big there lowers the path
    # MTU toward the other peer, a port unreachable refuses our socket's connection to it
    for error in (ICMPv6PacketTooBig(mtu=1280), ICMPv6DestUnreach(code=4)):
        raw = _chained6(headers, hop_by_hop, error, "fd00:c::7")
        assert raw[40 + 8 * headers] == error.type and len(raw) == 40 + IPv6(raw[:40]).plen
        out, drop, drops, policy_drops = _through(_chained6(headers, hop_by_hop, error, "fd00:c::7"))
        assert (out, drop) == (b"", Drop.ICMP_QUOTE)
        assert drops["icmp_quote"] == 1 and sum(drops.values()) == 1 and policy_drops == 1
        own = _chained6(headers, hop_by_hop, error, "fd00:a::7")
        assert _through(own)[:2] == (own, Drop.NONE)


def test_a_first_fragment_without_the_icmpv6_header_is_dropped() -> None:
    """An ICMPv6 error about another peer's flow, sent as two fragments: the first ends where its
    header chain does (a destination options header naming ICMPv6, no ICMPv6 byte), the second
    holds the error.  The first passed unread, the second is a later fragment (never checked), and a
    kernel before 5.16 reassembles them (review revfast F2).  The first is dropped now."""
    key = new_key()
    dp, spi = receiver(key)
    error = bytes(ICMPv6DestUnreach(code=4) / IPerror6(src="fd00:b::10", dst="fd00:c::7") / UDP(sport=40000, dport=53))
    dst_opt = bytes(IPv6ExtHdrDestOpt(nh=58))
    first = IPv6(src="fd00:a::5", dst="fd00:b::10") / IPv6ExtHdrFragment(nh=60, offset=0, m=1, id=7) / dst_opt
    second = IPv6(src="fd00:a::5", dst="fd00:b::10") / IPv6ExtHdrFragment(nh=60, offset=1, m=0, id=7) / error
    verdicts = [dp.inbound(esp_seal(key, spi, seq, bytes(pkt), 41))[1] for seq, pkt in ((1, first), (2, second))]
    assert verdicts == [Drop.ICMP_QUOTE, Drop.NONE]


def _unreachable6_behind_ah(sport: int) -> bytes:
    """A port unreachable from A's host to ours about our UDP packet sport -> A's DNS, whose quote
    carries an AH (24 bytes: length field 4) between the IPv6 header and the UDP one."""
    udp = bytes(UDP(sport=sport, dport=53, len=8, chksum=0))
    ah = bytes([17, 4, 0, 0]) + (0x1234).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(12)
    quoted = bytes(IPerror6(src="fd00:b::10", dst="fd00:a::7", nh=51, plen=1400)) + ah + udp
    return bytes(IPv6(src="fd00:a::5", dst="fd00:b::10") / ICMPv6DestUnreach(code=4) / Raw(quoted))


def test_a_quote_with_ah_is_read_by_the_protocol_behind_it() -> None:
    """Review revcpath R5: the host behind the TUN hands an ICMPv6 error to the protocol behind
    the quote's AH (ipv6_skip_exthdr); the quote was read as protocol 51, ports 0/0, so that it
    failed a selector of the real protocol and ports and passed one of any protocol whose port
    range holds 0, whatever the quoted ports."""
    net_a, net_b = ipaddress.ip_network("fd00:a::/32"), ipaddress.ip_network("fd00:b::/32")
    a_dns = Selector.from_networks(net_a, net_b, proto=17, sport=(53, 53), dport=(40000, 40000))
    icmp6 = Selector.from_networks(net_a, net_b, proto=58)
    low_ports = Selector.from_networks(net_a, net_b, dport=(0, 100))
    for selectors in ((a_dns, icmp6), (a_dns, icmp6, low_ports)):
        key = new_key()
        dp, spi = receiver(key, selectors=selectors)
        for seq, (sport, why) in enumerate(((40000, Drop.NONE), (40001, Drop.ICMP_QUOTE)), 1):
            raw = _unreachable6_behind_ah(sport)
            out, drop = dp.inbound(esp_seal(key, spi, seq, raw, 41))
            assert (drop, out == raw) == (why, why is Drop.NONE), (selectors, sport)
