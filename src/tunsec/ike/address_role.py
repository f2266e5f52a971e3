"""What an address is to this host's IKE endpoint: asked of a virtual IP a gateway assigns us
(exchanges/ike_config.py) and of a REDIRECT's target (redirect.py), before a client takes either.

- "own": a connection has it as its local address;
- "peer": the peer of an established IKE SA, or a connection's remote address;
- "pool": inside a pool one of our connections leases from (this host is also a gateway: the
  address is, or will be, a road warrior's, routed to it through the TUN);
- "tunnel": inside a non-dynamic ``remote_ts`` of a connection (a host behind a site-to-site
  tunnel, routed through the TUN); the role names the connection and network that hold it most
  specifically.  A remote_ts of everything (0.0.0.0/0, ::/0) counts for none: that is the
  tunnel's default route, and an address the host would reach by its default route is no
  address of anyone in particular (Tun.address_conflict refuses the router, not the internet);
  so two full tunnels, or a split one beside a full one, keep their virtual IPs and redirects.

As a virtual IP (a local address of the host) any of these would take the traffic the host sends to
it: to that peer, that road warrior, that host behind the other tunnel, delivered locally instead
(the local table comes before the TUN's routes); as a REDIRECT target it sends our IKE (the
client's identity, its PSK-keyed AUTH) to ourselves, a road warrior or into another tunnel (review
revclient F1, F2).  Asked once per CFG_REPLY or REDIRECT a client gets, so a pass over the
connections is fine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.policy.pad import AddressMatch, address_match, same_ip
from tunsec.policy.selector import IPAddress, IPNetwork

from .config import IkeConfig

if TYPE_CHECKING:
    from .by_address import EstablishedByAddress  # (imports sa.py, which imports this module)
    from .state import AddressPool


@dataclass(frozen=True, slots=True)
class Role:
    kind: str                       # "own", "peer", "pool" or "tunnel" (see the module)
    connection: str = ""            # "pool", "tunnel": the connection whose pools / remote_ts hold it
    pool: str = ""                  # "pool": the pool's name
    network: IPNetwork | None = None   # "tunnel": the most specific network of that remote_ts holding it


def address_role(configs: Iterable[IkeConfig], established: EstablishedByAddress,
                 pools: AddressPool | None, ip: IPAddress) -> Role | None:
    """The role of ``ip`` (see the module), the first that applies in the order listed there, or None;
    ``established``: the endpoint's established IKE SAs by peer address; ``pools``: its pools."""
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
    best: tuple[IPNetwork, str] | None = None
    for c in configs:
        for child in c.children:
            for ts in child.remote_ts:
                if ts.dynamic:
                    continue   # the peer's address or lease: "peer" or "pool" above
                for net in ts.networks():
                    if net.prefixlen and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                        best = (net, c.name)
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
    return f"inside remote_ts {role.network} of connection {role.connection}"
