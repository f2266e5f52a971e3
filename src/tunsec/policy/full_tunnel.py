"""What counts as a full tunnel (ike/address_role.py's module docstring): here, below ike/, as
policy/claims.py asks it too (whether a peer's widened pieces are one, review revclaims3 F2)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from tunsec.policy.selector import IPNetwork, Ts

# What a full tunnel covers, by family: the IPv6 one is the global unicast space.
EVERYTHING = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("2000::/3")}

# A family's default route as the TUN gets it (dataplane/exclude.py: more specific than the host's own,
# which stays), and what default_routes counts as a full tunnel too
HALVES: dict[IPNetwork, tuple[IPNetwork, IPNetwork]] = {
    ipaddress.ip_network("0.0.0.0/0"): (ipaddress.ip_network("0.0.0.0/1"), ipaddress.ip_network("128.0.0.0/1")),
    ipaddress.ip_network("::/0"): (ipaddress.ip_network("::/1"), ipaddress.ip_network("8000::/1")),
}


def default_routes(nets: Sequence[IPNetwork]) -> set[IPNetwork]:
    """Those of ``nets`` that are a default route: per family, the networks up to the shortest
    prefix length at which the networks that wide cover the family (EVERYTHING), or none."""
    found: set[IPNetwork] = set()
    for version, space in EVERYTHING.items():
        mine = [n for n in nets if n.version == version]
        for length in sorted({n.prefixlen for n in mine}):
            wide = [n for n in mine if n.prefixlen <= length]
            if any(space.subnet_of(n) for n in ipaddress.collapse_addresses(wide)):  # type: ignore[type-var, arg-type]
                found.update(wide)
                break
    return found


def without_full_tunnel(selectors: Sequence[Ts]) -> tuple[Ts, ...]:
    """``selectors`` without those of their full tunnel (default_routes: 0.0.0.0/0, its two halves,
    ::/0, 2000::/3), more specific networks beside it kept: what a named connection's configured
    selectors claim (services/ike/configured_claims.py)."""
    full = default_routes([n for t in selectors if not t.dynamic for n in t.networks()])
    return tuple(t for t in selectors if t.dynamic or not set(t.networks()) <= full)
