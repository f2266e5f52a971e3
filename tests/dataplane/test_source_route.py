"""Source routes and the selectors (review revesp F1), and TFC dummies in an SA's lifetime (R2).

The selectors see an inner packet's header destination only; an IPv4 LSRR/SSRR option with hops to
go or an IPv6 Routing header with segments left names more (csrc/srcroute.h).  Such a packet is
dropped as `source_route` both ways: opened from a peer's ESP (the proofs are in
test_review_revesp_source_route*.py) and read from the TUN (a local host's, which the peer's side
would route on past the selectors).  What must keep passing: other IPv4 options, spent routes,
extension headers, ICMP errors whose quote carries a route (the original packet's, never walked).
Options cut short are malformed, as the kernel finds them.  Scapy builds the packets; esp_ref
(independent of csrc/) seals them.  The C self-test (csrc/test/test_srcroute.c) has the cases
byte by byte."""

from __future__ import annotations

import pytest
from esp_ref import B_OUTER, esp_seal, new_key, opened, receiver, sender
from scapy.layers.inet import (
    ICMP,
    IP,
    UDP,
    IPerror,
    IPOption_LSRR,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_SSRR,
    IPOption_Timestamp,
    UDPerror,
)
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.packet import Packet

from tunsec.dataplane.fastpath import Dataplane, Drop, EventType
from tunsec.dataplane.pipe import Direction, ExpireReason, Lifetime

OUTSIDE4, OUTSIDE6 = "192.0.2.99", "2001:db8::99"   # in no selector (esp_ref's SEL4, SEL6)
OUT_SPI = 0x1001


def _inbound(pkt: Packet | bytes) -> tuple[bytes, Drop, dict[str, int], int]:
    """pkt sealed by the peer, opened here: what comes out, why not, the drops, the SA's policy_drops."""
    return opened(bytes(pkt))


def _outbound(pkt: Packet | bytes) -> tuple[Dataplane, bytes, Drop]:
    dp = sender(new_key(), OUT_SPI)
    esp, _, drop, _ = dp.outbound(bytes(pkt))
    return dp, esp, drop


def _v4(*options: Packet) -> Packet:
    return IP(src="10.1.0.5", dst="10.2.0.9", options=list(options)) / UDP(sport=4000, dport=53) / b"x"


def _v6(*ext: Packet) -> Packet:
    pkt: Packet = IPv6(src="fd00:a::5", dst="fd00:b::9")
    for e in ext:
        pkt = pkt / e
    return pkt / UDP(sport=4000, dport=53) / b"x"


def _srh(segleft: int) -> Packet:
    return IPv6ExtHdrSegmentRouting(addresses=[OUTSIDE6, "fd00:b::9"], segleft=segleft, lastentry=1)


LIVE = {
    "lsrr": _v4(IPOption_LSRR(routers=[OUTSIDE4])),
    "ssrr": _v4(IPOption_SSRR(routers=[OUTSIDE4])),
    "lsrr-after-nop-and-ra": _v4(IPOption_NOP(), IPOption_Router_Alert(),
                                 IPOption_LSRR(routers=["10.2.0.7", OUTSIDE4])),
    "lsrr-last-hop-to-go": _v4(IPOption_LSRR(routers=["10.2.0.7", OUTSIDE4], pointer=8)),
    "srh": _v6(_srh(1)),
    "srh-behind-hbh-and-dst": _v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), _srh(1)),
    "type0-rh": _v6(IPv6ExtHdrRouting(addresses=[OUTSIDE6], segleft=1)),
    "srh-first-fragment": _v6(_srh(1), IPv6ExtHdrFragment(m=1)),
}

PASSING = {
    "router-alert": _v4(IPOption_Router_Alert()),
    "timestamp": _v4(IPOption_Timestamp(flg=0, pointer=5, timestamp=0)),
    "spent-lsrr": _v4(IPOption_LSRR(routers=[OUTSIDE4], pointer=8)),
    "spent-ssrr-after-nops": _v4(IPOption_NOP(), IPOption_NOP(),
                                 IPOption_SSRR(routers=["10.2.0.7", OUTSIDE4], pointer=12)),
    "spent-srh": _v6(_srh(0)),
    "spent-rh-behind-hbh": _v6(IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=[OUTSIDE6], segleft=0)),
    "dst-opts-and-fragment": _v6(IPv6ExtHdrDestOpt(), IPv6ExtHdrFragment(m=1)),
}


@pytest.mark.parametrize("pkt", LIVE.values(), ids=LIVE.keys())
def test_a_live_source_route_from_the_peer_is_dropped_as_source_route(pkt: Packet) -> None:
    out, drop, drops, policy_drops = _inbound(pkt)
    assert (out, drop) == (b"", Drop.SOURCE_ROUTE)
    assert drops["source_route"] == 1 and sum(drops.values()) == 1
    assert policy_drops == 1   # the SA's own count: its policy check refused it


@pytest.mark.parametrize("pkt", LIVE.values(), ids=LIVE.keys())
def test_a_local_hosts_live_source_route_is_not_sealed(pkt: Packet) -> None:
    """Read from the TUN: sealed, the peer's side would route it on past the selectors.  Dropped
    before the SPD: no sequence number taken, no ACQUIRE."""
    dp, esp, drop = _outbound(pkt)
    assert (esp, drop) == (b"", Drop.SOURCE_ROUTE)
    assert dp.drops()["source_route"] == 1
    assert dp.get(OUT_SPI, Direction.OUT, B_OUTER).seq == 0
    assert list(dp.events()) == []


@pytest.mark.parametrize("pkt", PASSING.values(), ids=PASSING.keys())
def test_other_options_spent_routes_and_extension_headers_still_pass(pkt: Packet) -> None:
    out, drop, drops, _ = _inbound(pkt)
    assert (out, drop) == (bytes(pkt), Drop.NONE) and sum(drops.values()) == 0
    _, esp, drop = _outbound(pkt)
    assert drop is Drop.NONE and esp


def _options_patched(opts: bytes) -> bytes:
    """An IPv4 UDP packet whose options area (IHL 6 or 7) is these bytes, as they are: scapy would fix them."""
    assert len(opts) % 4 == 0
    raw = bytearray(bytes(_v4(*[IPOption_NOP()] * len(opts))))
    raw[20:20 + len(opts)] = opts
    return bytes(raw)


BAD_OPTIONS = {
    "length-past-the-options": b"\x83\x09\x04\x00",
    "length-1": b"\x44\x01\x00\x00",
    "length-0": b"\x07\x00\x00\x00",
    "no-length-byte": b"\x01\x01\x01\x83",
    "lsrr-without-pointer": b"\x83\x02\x00\x00",
}


@pytest.mark.parametrize("opts", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_options_cut_short_are_malformed_both_ways(opts: bytes) -> None:
    pkt = _options_patched(opts)
    out, drop, drops, _ = _inbound(pkt)
    assert (out, drop) == (b"", Drop.MALFORMED) and drops["malformed"] == 1
    assert _outbound(pkt)[2] is Drop.MALFORMED


def test_what_follows_end_of_options_is_not_read() -> None:
    """End of Option List ends the list (RFC 791): a source route's bytes after it are padding."""
    pkt = _options_patched(b"\x00\x83\x07\x04" + bytes(4))
    assert _inbound(pkt)[:2] == (pkt, Drop.NONE)


def test_an_icmp_error_quoting_a_routed_packet_is_judged_by_its_flow_only() -> None:
    """The quote is the original packet as it left (its route is that packet's, not this one's):
    never walked, so an error about our host's source-routed packet still reaches it."""
    quoted = IPerror(src="10.2.0.10", dst="10.1.0.7", options=[IPOption_LSRR(routers=[OUTSIDE4])]) / UDPerror(
        sport=40000, dport=53)
    err = IP(src="10.1.0.5", dst="10.2.0.10") / ICMP(type=3, code=3) / quoted
    out, drop, drops, _ = _inbound(err)
    assert (out, drop) == (bytes(err), Drop.NONE) and sum(drops.values()) == 0


# ------------------------------------------------------------------ R2: TFC dummies


def test_tfc_dummies_count_in_the_sas_byte_lifetime() -> None:
    """A dummy (next header 59) took the key and a number like any packet: its whole payload (data,
    padding, trailer) counts in the SA's bytes and packets, and a stream of them meets the hard byte
    limit as any traffic would, instead of running on one key without end."""
    key = new_key()
    dp, spi = receiver(key, soft=Lifetime(bytes=80), hard=Lifetime(bytes=100))
    drops = [dp.inbound(esp_seal(key, spi, seq, bytes(40), 59))[1] for seq in range(1, 5)]   # 44 bytes each
    assert drops == [Drop.DUMMY, Drop.DUMMY, Drop.LIFETIME, Drop.LIFETIME]
    expires = [(e.hard, e.reason) for e in dp.events() if e.type is EventType.EXPIRE]
    assert expires == [(False, ExpireReason.BYTES), (True, ExpireReason.BYTES)]
    info = dp.get(spi, Direction.IN)
    assert info.state == "dead" and (info.counters["packets"], info.counters["bytes"]) == (2, 88)
