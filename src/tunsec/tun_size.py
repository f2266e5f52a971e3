"""The TUN's MTU: the largest inner packet whose ESP-in-UDP datagram fits the outer path.

Sized per known peer (its outer family and the interface towards it).  A gateway of %any
connections knows no peer: it sizes for the outer family its clients may come from, IPv6 (a
header 20 bytes longer) when one of its ESP endpoints is IPv6 or the IPv6 wildcard, so that a
full-size packet to an IPv6 client is not fragmented at the source (review revipv6 F2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from tunsec.dataplane.tun import outer_mtu_towards, tunnel_mtu

log = logging.getLogger(__name__)

IPV6_MIN_MTU = 1280   # RFC 8200: below it the kernel takes IPv6 off the TUN


class Sized(Protocol):
    """What a service tells about its outer paths (services/base.py Service)."""

    def peer_addresses(self) -> Sequence[IPv4Address | IPv6Address]: ...

    def esp_endpoints(self) -> Sequence[tuple[int, str, int]]: ...


def choose_mtu(configured: int | None, outer_mtu: int | None, services: Iterable[Sized]) -> int:
    """The tunnel MTU: `configured` wins; else the smallest over the peers' paths; else (no peer
    known: %any) for the family clients may come from, at `outer_mtu` or 1500."""
    if configured:
        return configured
    services = list(services)
    sizes = [tunnel_mtu(outer_mtu or outer_mtu_towards(str(peer)), peer.version)
             for svc in services for peer in svc.peer_addresses()]
    if sizes:
        return min(sizes)
    ipv6 = any(fam == 6 for svc in services for fam, _, _ in svc.esp_endpoints())
    return tunnel_mtu(outer_mtu or 1500, 6 if ipv6 else 4)


def warn_small_for_ipv6(mtu: int, carries_ipv6: bool) -> bool:
    """Log (and say) when IPv6 goes through a TUN below IPv6's minimum MTU: the kernel disables IPv6 on
    it and senders ignore Packet Too Big values under 1280."""
    if mtu >= IPV6_MIN_MTU or not carries_ipv6:
        return False
    log.warning("tunnel MTU %d is below IPv6's minimum %d: IPv6 through it will fail", mtu, IPV6_MIN_MTU)
    return True
