"""Review revipv6 F2: a road-warrior gateway (remote_addrs = %any) sizes its TUN for an IPv4 outer
header even when its clients come over IPv6 (here: its only ESP endpoint is IPv6).

daemon._choose_mtu sizes the tunnel MTU from the connections' remote addresses (tunnel_mtu(outer,
peer.version)); with none (%any) it falls back to tunnel_mtu(outer, 4), 20 bytes too much for an
IPv6 outer header.  A full-size inner packet to an IPv6 client then makes an ESP-in-UDP datagram
larger than the outer MTU: the kernel fragments it at the source (IPV6_PMTUDISC_WANT, a GSO run is
refused and split, loop.c send_split), and a path that drops IPv6 fragments (RFC 9098) loses it with
no Packet Too Big towards the inner sender, whose packets fit the TUN's MTU: a black hole for
full-size packets.

The ESP datagram is the fast path's own (Dataplane.outbound, the SA's algorithm as negotiated);
_choose_mtu runs on a stand-in daemon that has only what it reads.

The fix (tun_size.choose_mtu): with no peer known, the size is for an IPv6 outer header when an ESP
endpoint is IPv6 or the IPv6 wildcard; a configured `mtu` still wins, known peers still size it.
Review revipv6 R2 too: the warning for a tunnel MTU below 1280 looks at the TUN's routes (an IKE
connection's IPv6 selectors and pools), not only at manual tunnels."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from types import SimpleNamespace

import pytest
from esp_ref import inner, new_key, sender

from tunsec.daemon import Daemon
from tunsec.dataplane.pipe import Alg
from tunsec.dataplane.tun import tunnel_mtu

OUTER_MTU = 1500
IPV6_HEADER, UDP_HEADER = 40, 8


class _RoadWarriorGateway:
    """An IKE service of %any connections (no remote address) serving IPv6 clients only."""

    def peer_addresses(self) -> list[object]:
        return []

    def esp_endpoints(self) -> list[tuple[int, str, int]]:
        return [(6, "2001:db8::1", 4500)]


class _Service:
    """What a service says of its outer paths and routes (services/base.py Service)."""

    def __init__(self, peers: list[IPv4Address | IPv6Address], endpoints: list[tuple[int, str, int]],
                 routes: tuple[str, ...] = ()) -> None:
        self.peers, self.endpoints, self.nets = peers, endpoints, [ip_network(n) for n in routes]

    def peer_addresses(self) -> list[IPv4Address | IPv6Address]:
        return self.peers

    def esp_endpoints(self) -> list[tuple[int, str, int]]:
        return self.endpoints

    def routes(self) -> list[tuple[IPv4Network | IPv6Network, tuple[()]]]:
        return [(n, ()) for n in self.nets]


def _chosen_mtu(*services: object, mtu: int | None = None) -> int:
    fake = SimpleNamespace(cfg=SimpleNamespace(tunsec=SimpleNamespace(mtu=mtu, outer_mtu=OUTER_MTU)),
                           services=list(services) or [_RoadWarriorGateway()])
    return Daemon._choose_mtu(fake)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", [Alg.AES128GCM16, Alg.AES256GCM16], ids=["aes128gcm16", "aes256gcm16"])
def test_a_full_size_inner_packet_to_an_ipv6_client_fits_the_outer_mtu(alg: Alg) -> None:
    mtu = _chosen_mtu()
    dp = sender(new_key(alg))
    dp.set_tunnel_mtu(mtu)
    pkt = inner(6, b"\xcd" * (mtu - 48))
    assert len(pkt) == mtu
    esp, peer, drop, _ = dp.outbound(pkt)
    assert esp and peer is not None, drop
    outer = IPV6_HEADER + UDP_HEADER + len(esp)
    # on main: mtu 1438, outer 1520 > 1500 (fragmented at the source)
    assert outer <= OUTER_MTU, f"tunnel MTU {mtu}: its full-size packets leave as {outer}-byte IPv6 datagrams"


def test_the_same_packet_to_an_ipv4_client_fits() -> None:
    """The control: over IPv4 (20-byte header) the same datagram is exactly the outer MTU."""
    mtu = _chosen_mtu()
    dp = sender(new_key(Alg.AES128GCM16))
    dp.set_tunnel_mtu(mtu)
    esp, _, drop, _ = dp.outbound(inner(4, b"\xab" * (mtu - 28)))
    assert esp, drop
    assert 20 + UDP_HEADER + len(esp) <= OUTER_MTU


def test_a_gateway_on_both_wildcards_sizes_for_ipv6() -> None:
    """No local_addrs: both wildcards (conf ike_endpoints), clients of either family: the smaller."""
    assert _chosen_mtu(_Service([], [(4, "0.0.0.0", 4500), (6, "::", 4500)])) == tunnel_mtu(OUTER_MTU, 6) == 1418


def test_an_ipv4_only_gateway_keeps_the_ipv4_size() -> None:
    assert _chosen_mtu(_Service([], [(4, "192.0.2.1", 4500)])) == tunnel_mtu(OUTER_MTU, 4) == 1438


def test_known_peers_still_size_it_and_a_configured_mtu_wins() -> None:
    site = _Service([IPv4Address("198.51.100.7")], [(4, "0.0.0.0", 4500), (6, "::", 4500)])
    assert _chosen_mtu(site) == 1438
    assert _chosen_mtu(_Service([], [(6, "::", 4500)]), mtu=1300) == 1300


class _Tun:
    """The TUN as _setup_tun drives it: its MTU set, routes added (nothing on the host)."""

    def __init__(self) -> None:
        self.mtu = 0
        self.routes: list[tuple[IPv4Network | IPv6Network, object]] = []
        self.unapplied: list[tuple[str, str]] = []

    def configure(self, mtu: int) -> None:
        self.mtu = mtu

    def add_route(self, net: IPv4Network | IPv6Network, src: object) -> None:
        self.routes.append((net, src))

    def clear_stale_blocks(self, nets: object) -> None:
        pass


def _set_up(routes: tuple[str, ...], mtu: int) -> _Tun:
    daemon = Daemon.__new__(Daemon)   # only what _setup_tun reads
    tun = _Tun()
    daemon.cfg = SimpleNamespace(tunsec=SimpleNamespace(mtu=mtu, outer_mtu=OUTER_MTU), path="tunsec.conf")  # type: ignore[assignment]
    daemon.services = [_Service([], [(6, "::", 4500)], routes)]  # type: ignore[list-item]
    daemon.manual = SimpleNamespace(carries_ipv6=lambda: False)  # type: ignore[assignment]
    daemon.tun, daemon.excludes, daemon.route_keeper = tun, None, None  # type: ignore[assignment]
    daemon.killswitch = SimpleNamespace(ensure=lambda nets: [], keep_only=lambda nets: [],  # type: ignore[assignment]
                                        report_unapplied=lambda path: None)
    daemon._setup_tun()
    return tun


@pytest.mark.parametrize("routes, warned", [(("fd00:10::/64",), True), (("10.10.0.0/16",), False)],
                         ids=["ike-ipv6-pool", "ipv4-only"])
def test_a_tunnel_mtu_below_1280_warns_when_an_ike_connection_carries_ipv6(
        routes: tuple[str, ...], warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Review revipv6 R2: the warning looked only at manual tunnels; an IKE gateway's IPv6 pool (a
    route into the TUN) below 1280 went unwarned, though the kernel takes IPv6 off such a TUN."""
    with caplog.at_level(logging.WARNING):
        tun = _set_up(routes, 1200)
    assert tun.mtu == 1200 and [str(n) for n, _ in tun.routes] == list(routes)
    assert ("below IPv6's minimum 1280" in caplog.text) is warned
