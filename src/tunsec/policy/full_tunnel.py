"""What counts as a full tunnel (ike/address_role.py's module docstring): here, below ike/, as
policy/claims.py asks it too (whether a peer's widened pieces are one, review revclaims3 F2)."""

from __future__ import annotations

import heapq
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
    prefix length at which the networks that wide cover the family (EVERYTHING), or none.  Decided
    on the networks' address intervals in one sorted pass (:func:`_covering_length`), not by
    collapsing them once per prefix length: a peer's selectors of odd bounds are hundreds of
    networks of a hundred lengths each, asked of every move it makes (review revcost F3)."""
    found: set[IPNetwork] = set()
    for version, space in EVERYTHING.items():
        mine = [n for n in nets if n.version == version]
        length = _covering_length(mine, int(space.network_address), int(space.broadcast_address))
        if length is not None:
            found.update(n for n in mine if n.prefixlen <= length)
    return found


def without_full_tunnel(selectors: Sequence[Ts]) -> tuple[Ts, ...]:
    """``selectors`` without those of their full tunnel (default_routes: 0.0.0.0/0, its two halves,
    ::/0, 2000::/3), more specific networks beside it kept: what a named connection's configured
    selectors claim (services/ike/configured_claims.py).  Selectors that hold fewer addresses of each
    family than EVERYTHING cannot cover it: returned as they are, without making their networks (a named
    child's selectors at each load and reload, the load's warning: conf/named_claims.py)."""
    if all(sum(int(t.end) - int(t.start) + 1 for t in selectors if not t.dynamic and t.version == version)
           < space.num_addresses for version, space in EVERYTHING.items()):
        return tuple(selectors)
    full = default_routes([n for t in selectors if not t.dynamic for n in t.networks()])
    return tuple(t for t in selectors if t.dynamic or not set(t.networks()) <= full)


def _covering_length(nets: Sequence[IPNetwork], first: int, last: int) -> int | None:
    """The shortest prefix length L such that those of ``nets`` of prefix length L or less cover
    the addresses first..last, or None if all of them do not.  That is the widest (greatest) of the
    narrowest lengths covering each address: a sweep over the networks by first address, keeping
    those that hold the current address in a heap by prefix length (the top holds it most widely);
    the current address moves to the end of the top or to the next network's start, whichever
    comes first, so each network is pushed and popped once (n log n)."""
    spans = sorted((int(n.network_address), int(n.broadcast_address), n.prefixlen) for n in nets
                   if int(n.broadcast_address) >= first and int(n.network_address) <= last)
    holding: list[tuple[int, int]] = []   # (prefix length, last address) of the networks begun
    need, at, i = 0, first, 0
    while at <= last:
        while i < len(spans) and spans[i][0] <= at:
            heapq.heappush(holding, (spans[i][2], spans[i][1]))
            i += 1
        while holding and holding[0][1] < at:   # ended before the current address
            heapq.heappop(holding)
        if not holding:
            return None   # a gap: not covered at any length
        length, end = holding[0]
        need = max(need, length)
        at = min(end, spans[i][0] - 1 if i < len(spans) else end) + 1
    return need
