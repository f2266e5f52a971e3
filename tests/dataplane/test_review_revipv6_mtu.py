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
_choose_mtu runs on a stand-in daemon that has only what it reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from esp_ref import inner, new_key, sender

from tunsec.daemon import Daemon
from tunsec.dataplane.pipe import Alg

OUTER_MTU = 1500
IPV6_HEADER, UDP_HEADER = 40, 8


class _RoadWarriorGateway:
    """An IKE service of %any connections (no remote address) serving IPv6 clients only."""

    def peer_addresses(self) -> list[object]:
        return []

    def esp_endpoints(self) -> list[tuple[int, str, int]]:
        return [(6, "2001:db8::1", 4500)]


def _chosen_mtu() -> int:
    fake = SimpleNamespace(cfg=SimpleNamespace(tunsec=SimpleNamespace(mtu=None, outer_mtu=OUTER_MTU)),
                           services=[_RoadWarriorGateway()])
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
