"""The fast path's guard against sealing its own ESP again (review revmobike F1, defence in depth).

An outbound SA whose peer address the host routes into the TUN (a peer that moved to an address
inside a pool or a tunnel) would have its ESP-in-UDP read back from the TUN and sealed again, round
after round (tests/dataplane/test_esp_loop_tun.py shows it with a real TUN).  A packet
that is UDP from the chosen SA's port (and address, unless the SA's is the wildcard) to its remote
address and port is dropped as `esp_loop`, and so is any UDP from one of our ESP ends (our address
and port: the worker's own, whatever SA it would enter, review revmobfix F2: csrc/ownesp.c); traffic
that merely looks alike (another source address or port, a later fragment) is sealed as before.  Through cffi, packets
built with scapy."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from esp_ref import new_key, spec
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Action, Direction, Endpoint, Policy, Selector

GW, VIP = "192.0.2.1", "10.3.0.1"          # our address; the peer's, moved to where the TUN routes it
GW6, VIP6 = "2001:db8::1", "fd00:3::1"
SPI = 0x1001


def _dp(family: int, local: str | None = None) -> Dataplane:
    """One outbound SA of a full tunnel (local_ts 0/0, the road warrior's) to the peer at VIP:4500."""
    gw, vip = (GW, VIP) if family == 4 else (GW6, VIP6)
    local = local if local is not None else gw
    width = 32 if family == 4 else 128
    sel = Selector.from_networks(ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0"),
                                 ipaddress.ip_network(f"{vip}/{width}"))
    dp = Dataplane()
    dp.add(dataclasses.replace(spec(SPI, Direction.OUT, new_key(), window=0), selectors=(sel,),
                               local=Endpoint(ipaddress.ip_address(local), 4500),
                               remote=Endpoint(ipaddress.ip_address(vip), 4500)))
    dp.spd_add(Policy(id=1, priority=10, action=Action.PROTECT, reqid=1, selector=sel))
    return dp


def _udp(family: int, src: str, sport: int, dport: int, payload: bytes = b"\0" * 64) -> bytes:
    dst = VIP if family == 4 else VIP6
    if family == 4:
        return bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)
    return bytes(IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


@pytest.mark.parametrize("family", [4, 6])
def test_our_own_esp_to_the_sas_peer_is_not_sealed_again(family: int) -> None:
    dp = _dp(family)
    gw = GW if family == 4 else GW6
    esp, _, drop, _ = dp.outbound(_udp(family, gw, 4500, 4500))
    assert (esp, drop) == (b"", Drop.ESP_LOOP)
    assert dp.drops()["esp_loop"] == 1
    assert dp.get(SPI, Direction.OUT, Endpoint(ipaddress.ip_address(VIP if family == 4 else VIP6), 4500)) \
        .counters["packets"] == 0


@pytest.mark.parametrize("family", [4, 6])
def test_traffic_that_only_looks_alike_is_sealed(family: int) -> None:
    dp = _dp(family)
    gw, lan = (GW, "10.9.0.7") if family == 4 else (GW6, "fd00:9::7")
    for packet in (_udp(family, lan, 4500, 4500),     # a host behind us doing NAT-T of its own
                   _udp(family, gw, 4501, 4500)):     # another port of ours
        esp, to, drop, _ = dp.outbound(packet)
        assert drop == Drop.NONE and esp and to is not None
    assert dp.drops()["esp_loop"] == 0


@pytest.mark.parametrize("family", [4, 6])
def test_anything_from_our_esp_end_is_ours_whatever_its_destination(family: int) -> None:
    """Nothing but the worker (and our IKE on that port) sends from our ESP socket's address and port:
    UDP from there is dropped whatever its destination (review revmobfix F2, ownesp.c), to another
    port of the SA's peer (our IKE to a peer on a custom port), or to another SA's peer
    (test_esp_loop_pair.py)."""
    dp = _dp(family)
    gw = GW if family == 4 else GW6
    assert dp.outbound(_udp(family, gw, 4500, 4501))[2] == Drop.ESP_LOOP
    assert dp.drops()["esp_loop"] == 1


def test_an_sa_from_the_wildcard_drops_its_esp_from_any_of_our_addresses() -> None:
    """Its ESP leaves from the route's choice of our addresses: only the ports and the peer can tell."""
    dp = _dp(4, local="0.0.0.0")
    assert dp.outbound(_udp(4, "198.51.100.4", 4500, 4500))[2] == Drop.ESP_LOOP


def test_a_later_fragment_passes_once_and_its_next_round_is_dropped() -> None:
    """A fragmented ESP datagram's later fragments show no ports: sealed once, their ESP (a whole
    datagram again) is the next packet back from the TUN and dropped."""
    dp = _dp(4)
    first, later = (bytes(f) for f in fragment(IP(src=GW, dst=VIP) / UDP(sport=4500, dport=4500) / (b"x" * 1500),
                                               fragsize=1400))
    assert dp.outbound(first)[2] == Drop.ESP_LOOP
    esp, _, drop, _ = dp.outbound(later)
    assert drop == Drop.NONE and esp
    again = _udp(4, GW, 4500, 4500, esp)
    assert dp.outbound(again)[2] == Drop.ESP_LOOP
