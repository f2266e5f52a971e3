"""Packets that show no ports and port-restricted selectors (RFC 4301 §7).

Peer A holds our peers' side 10.2.0.0/24 (fd00:b::/64) for UDP port 5060, peer B (another
identity) the same networks for ports 0-5059.  A later fragment carries no UDP header: read as
ports 0/0, it fell inside B's range, so the tail of every fragmented datagram to A's port 5060 was
sealed to B, and B's SA admitted later fragments from A's hosts.  Such packets now match only a
selector that allows any port.  The C self-test (csrc/test/test_frag_ports.c) has the cases; this
is the path through cffi, the fragments cut by scapy as the kernel would cut them."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from esp_ref import NET_A4, NET_A6, NET_B4, NET_B6, esp_seal, new_key, spec
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Action, Direction, Policy, Selector

SPI_A, SPI_B, SPI_ANY = 0xA000, 0xB000, 0xC000


def _selectors(ports: tuple[int, int], *, inbound: bool = False) -> tuple[Selector, Selector]:
    """UDP between our side and the peers', `ports` on the peers' side (dport out, sport in)."""
    sels = []
    for ours, theirs in ((NET_A4, NET_B4), (NET_A6, NET_B6)):
        if inbound:
            sels.append(Selector.from_networks(theirs, ours, proto=17, sport=ports))
        else:
            sels.append(Selector.from_networks(ours, theirs, proto=17, dport=ports))
    return sels[0], sels[1]


def _add_child(dp: Dataplane, spi: int, reqid: int, ports: tuple[int, int], priority: int = 10) -> None:
    dp.add(dataclasses.replace(spec(spi, Direction.OUT, new_key(), window=0, reqid=reqid), selectors=_selectors(ports)))
    for k, sel in enumerate(_selectors(ports)):
        dp.spd_add(Policy(id=reqid * 10 + k, priority=priority, action=Action.PROTECT, reqid=reqid, selector=sel))


def _fragments(family: int, sport: int = 5060) -> list[bytes]:
    """A 3000-byte SIP datagram from our side to 10.2.0.7:5060 (fd00:b::7), cut to fit 1400 bytes."""
    sip = b"INVITE sip:bob@example.net SIP/2.0\r\n".ljust(3000, b"x")
    if family == 4:
        return [bytes(f) for f in fragment(IP(src="10.1.0.5", dst="10.2.0.7") / UDP(sport=sport, dport=5060) / sip,
                                           fragsize=1376)]
    whole = IPv6(src="fd00:a::5", dst="fd00:b::7") / IPv6ExtHdrFragment() / UDP(sport=sport, dport=5060) / sip
    return [bytes(f) for f in fragment6(whole, 1400)]


def _spi(esp: bytes) -> int:
    return int(struct.unpack("!I", esp[:4])[0]) if esp else 0


@pytest.mark.parametrize("family", [4, 6])
def test_later_fragments_never_go_to_the_peer_with_port_zero(family: int) -> None:
    dp = Dataplane()
    _add_child(dp, SPI_A, 1, (5060, 5060))
    _add_child(dp, SPI_B, 2, (0, 5059))
    frags = _fragments(family)
    assert len(frags) == 3
    sealed = [dp.outbound(f) for f in frags]
    assert [_spi(esp) for esp, _, _, _ in sealed] == [SPI_A, 0, 0]
    assert [drop for _, _, drop, _ in sealed] == [Drop.NONE, Drop.FRAGMENT_NO_POLICY, Drop.FRAGMENT_NO_POLICY]
    assert dp.drops()["fragment_no_policy"] == 2 and dp.drops()["no_policy"] == 0
    # a child for any port takes them, after A's and B's own
    _add_child(dp, SPI_ANY, 3, (0, 0xFFFF), priority=20)
    assert [_spi(dp.outbound(f)[0]) for f in frags] == [SPI_A, SPI_ANY, SPI_ANY]


@pytest.mark.parametrize("family", [4, 6])
def test_a_port_restricted_sa_does_not_admit_later_fragments(family: int) -> None:
    dp = Dataplane()
    key = new_key()
    spis = {}
    for ports in ((0, 5059), (0, 0xFFFF)):
        spi = dp.getspi()
        dp.update(dataclasses.replace(spec(spi, Direction.IN, key), selectors=_selectors(ports, inbound=True)))
        spis[ports] = spi
    nh = 4 if family == 4 else 41
    # A's host sends B's SA a datagram to our port 5060 from its port 5060: the reverse of _fragments
    frags = _fragments(family)
    back = []
    for f in frags:
        pkt = IP(f) if family == 4 else IPv6(f)
        pkt.src, pkt.dst = pkt.dst, pkt.src
        back.append(bytes(pkt))
    for seq, f in enumerate(back[1:], start=1):
        assert dp.inbound(esp_seal(key, spis[(0, 5059)], seq, f, nh)) == (b"", Drop.POLICY)
        assert dp.inbound(esp_seal(key, spis[(0, 0xFFFF)], seq, f, nh)) == (f, Drop.NONE)
    assert dp.drops()["policy"] == 2
