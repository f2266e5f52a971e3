"""What an address is to this host's IKE endpoint: asked of a virtual IP a gateway assigns us
(exchanges/ike_config.py) and of a REDIRECT's target (redirect.py), before a client takes either.

- "own": a connection has it as its local address;
- "peer": the peer of an established IKE SA, or a connection's remote address;
- "pool": inside a pool one of our connections leases from (this host is also a gateway: the
  address is, or will be, a road warrior's, routed to it through the TUN);
- "tunnel": inside a non-dynamic ``remote_ts`` of a connection (a host behind a site-to-site
  tunnel, routed through the TUN), or inside a remote selector one of the host's Child SAs holds
  (``claims``, policy/claims.py: what was negotiated, which may be narrower than the remote_ts it
  came from, a hub's spoke LAN chosen from 0.0.0.0/0, and outlives a reload that drops its
  connection, review revvip F1), a manual tunnel's remote_ts among them (claimed under the
  connection name "manual tunnel NAME": services/manual_claims.py); the role names the connection
  and network that hold it most specifically.  A full tunnel counts for none: that is the tunnel's
  default route, and an address the host would reach by its default route is no address of anyone
  in particular (Tun.address_conflict refuses the router, not the internet); so two full tunnels,
  or a split one beside a full one, keep their virtual IPs and redirects.  A full tunnel is a
  connection's (or a peer's claims') widest networks that together cover the family (:func:`_default_routes`):
  0.0.0.0/0, or 0.0.0.0/1 + 128.0.0.0/1 as a default route is often overridden without being
  replaced (review revvip F2); a more specific network beside them (10.0.0.0/8 besides 0.0.0.0/0)
  still counts.  For IPv6 the family is its global unicast space 2000::/3 (RFC 4291 2.4; every
  global address IANA allocates lies in it), so ::/0, ::/1 + 8000::/1 and 2000::/3 are all full
  tunnels; a ULA (fc00::/7) or other network beside them still counts.

As a virtual IP (a local address of the host) any of these would take the traffic the host sends to
it: to that peer, that road warrior, that host behind the other tunnel, delivered locally instead
(the local table comes before the TUN's routes); as a REDIRECT target it sends our IKE (the
client's identity, its PSK-keyed AUTH) to ourselves, a road warrior or into another tunnel (review
revclient F1, F2).  Asked once per CFG_REPLY or REDIRECT a client gets, so a pass over the
connections is fine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.policy.claims import holder
from tunsec.policy.pad import AddressMatch, address_match, same_ip
from tunsec.policy.selector import IPAddress, IPNetwork

from .config import IkeConfig

if TYPE_CHECKING:
    from .by_address import EstablishedByAddress  # (imports sa.py, which imports this module)
    from .state import AddressPool, SelectorClaims


@dataclass(frozen=True, slots=True)
class Role:
    kind: str                       # "own", "peer", "pool" or "tunnel" (see the module)
    connection: str = ""            # "pool", "tunnel": the connection whose pools / remote_ts hold it
    pool: str = ""                  # "pool": the pool's name
    network: IPNetwork | None = None   # "tunnel": the most specific network of that remote_ts holding it


# What a full tunnel covers, by family (see the module): the IPv6 one is the global unicast space.
_EVERYTHING = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("2000::/3")}


def _default_routes(nets: Sequence[IPNetwork]) -> set[IPNetwork]:
    """Those of ``nets`` that are a default route: per family, the networks up to the shortest
    prefix length at which the networks that wide cover the family (_EVERYTHING), or none."""
    found: set[IPNetwork] = set()
    for version, space in _EVERYTHING.items():
        mine = [n for n in nets if n.version == version]
        for length in sorted({n.prefixlen for n in mine}):
            wide = [n for n in mine if n.prefixlen <= length]
            if any(space.subnet_of(n) for n in ipaddress.collapse_addresses(wide)):  # type: ignore[type-var, arg-type]
                found.update(wide)
                break
    return found


def address_role(configs: Iterable[IkeConfig], established: EstablishedByAddress,
                 pools: AddressPool | None, ip: IPAddress, claims: SelectorClaims | None = None) -> Role | None:
    """The role of ``ip`` (see the module), the first that applies in the order listed there, or None;
    ``established``: the endpoint's established IKE SAs by peer address; ``pools``: its pools;
    ``claims``: the remote selectors its Child SAs hold."""
    configs = list(configs)
    text = str(ip)
    if any(c.local_addr is not None and same_ip(c.local_addr, text) for c in configs):
        return Role("own")
    if ip in established or any(address_match(c.remote_addr, text) is AddressMatch.EXACT for c in configs):
        return Role("peer")
    if pools is not None:
        for c in configs:
            name = pools.holding(c.pools, text) if c.pools else None
            if name is not None:
                return Role("pool", c.name, pool=name)
    held: list[tuple[str, list[IPNetwork], list[IPNetwork]]] = []   # (connection, its networks, all of them)
    for c in configs:   # dynamic: the peer's address or lease, "peer" or "pool" above
        nets = [net for child in c.children for ts in child.remote_ts if not ts.dynamic for net in ts.networks()]
        held.append((c.name, nets, nets))
    for claim, of_peer in claims.containing(ip) if claims is not None else ():
        held.append((claim.conn, claim.ts.networks(), [net for ts in of_peer for net in ts.networks()]))
    best: tuple[IPNetwork, str] | None = None
    for name, nets, together in held:
        everything = _default_routes(together)
        for net in nets:
            if net not in everything and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, name)
    return Role("tunnel", best[1], network=best[0]) if best is not None else None


def other_tunnel(role: Role | None, config: IkeConfig, ip: IPAddress) -> str | None:
    """Where ``ip`` lies in another connection's tunnel, if its role says so and no remote_ts of
    ``config`` (the connection asking) holds it as specifically: that tunnel's traffic to it is what
    the address would take.  None otherwise (ours as specifically: the gateway we talk to is the
    one the host sends that traffic to anyway)."""
    if role is None or role.kind != "tunnel" or role.network is None or role.connection == config.name:
        return None
    own = max((net.prefixlen for child in config.children for ts in child.remote_ts if not ts.dynamic
               for net in ts.networks() if ip in net), default=-1)
    if own >= role.network.prefixlen:
        return None
    return f"inside remote_ts {role.network} of {holder(role.connection)}"
