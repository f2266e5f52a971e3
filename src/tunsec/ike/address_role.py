"""What an address is to this host's IKE endpoint: asked of a virtual IP a gateway assigns us
(exchanges/ike_config.py) and of a REDIRECT's target (redirect.py), before a client takes either,
and of the address a peer moves its IKE SA and Child SAs to (exchanges/mobike.py, MOBIKE or a NAT
float: refused_address).

- "own": a connection has it as its local address, or (asked with ``host``: a REDIRECT's target, a
  peer's new address) any interface of this host has it (the IKE service's netlink dump,
  services/ike/host_addresses.py; review revclient s20 F3);
- "peer": the peer of an established IKE SA, or a connection's remote address (``peers``: the
  connections of those IKE SAs and remote addresses);
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
revclient F1, F2), or to the gateway of another of our connections, whose IKE SA of ours there its
INITIAL_CONTACT would end (review revclient s20 F1).  Asked once per CFG_REPLY or REDIRECT a client
gets, so a pass over the connections is fine.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.policy.claims import Peer, holder
from tunsec.policy.full_tunnel import default_routes as _default_routes
from tunsec.policy.pad import AddressMatch, address_match, same_ip
from tunsec.policy.selector import IPAddress, IPNetwork, Ts

from .config import IkeConfig

if TYPE_CHECKING:
    from .by_address import EstablishedByAddress  # (imports sa.py, which imports this module)
    from .state import AddressPool, IkeSaState, SelectorClaims


@dataclass(frozen=True, slots=True)
class Role:
    kind: str                       # "own", "peer", "pool" or "tunnel" (see the module)
    connection: str = ""            # "pool", "tunnel": the connection whose pools / remote_ts hold it
    pool: str = ""                  # "pool": the pool's name
    network: IPNetwork | None = None   # "tunnel": the most specific network of that remote_ts holding it
    peers: frozenset[str] = frozenset()   # "peer": the connections whose peer it is (IKE SAs, remote_addr)


def full_tunnel(config: IkeConfig) -> set[IPNetwork]:
    """The networks of config's remote_ts that are its full tunnel (_default_routes), if any."""
    return _default_routes([net for child in config.children for ts in child.remote_ts if not ts.dynamic
                            for net in ts.networks()])


def is_full_tunnel(nets: Sequence[IPNetwork]) -> bool:
    """nets (a TUN's routes) hold a full tunnel of either family (_default_routes)."""
    return bool(_default_routes(nets))


def address_role(configs: Iterable[IkeConfig], established: EstablishedByAddress,
                 pools: AddressPool | None, ip: IPAddress, claims: SelectorClaims | None = None,
                 host: Collection[IPAddress] = ()) -> Role | None:
    """The role of ``ip`` (see the module), the first that applies in the order listed there, or None;
    ``established``: the endpoint's established IKE SAs by peer address; ``pools``: its pools;
    ``claims``: the remote selectors its Child SAs hold; ``host``: the addresses of this host's
    interfaces, when the question counts them (not a virtual IP's: ours are on the TUN)."""
    configs = list(configs)
    text = str(ip)
    if ip in host or any(c.local_addr is not None and same_ip(c.local_addr, text) for c in configs):
        return Role("own")
    peers = {c.name for c in configs if address_match(c.remote_addr, text) is AddressMatch.EXACT}
    at_peer = ip in established
    if at_peer:
        peers.update(sa.name for sa in established.at(ip))
    if at_peer or peers:
        return Role("peer", peers=frozenset(peers))
    if pools is not None:
        for c in configs:
            name = pools.holding(c.pools, text) if c.pools else None
            if name is not None:
                return Role("pool", c.name, pool=name)
    # (connection, its networks, the full tunnel of whom they are): a peer's full tunnel made once
    # by claims.containing for all its claims found, and the networks of each selector it holds once,
    # however many of its Child SAs hold it (review revcost F3)
    held: list[tuple[str, list[IPNetwork], set[IPNetwork]]] = []
    for c in configs:   # dynamic: the peer's address or lease, "peer" or "pool" above
        nets = [net for child in c.children for ts in child.remote_ts if not ts.dynamic for net in ts.networks()]
        held.append((c.name, nets, _default_routes(nets)))
    seen: set[tuple[str, object, Ts]] = set()
    for claim, _, full in claims.containing(ip) if claims is not None else ():
        if (claim.conn, claim.peer, claim.ts) not in seen:
            seen.add((claim.conn, claim.peer, claim.ts))
            held.append((claim.conn, claim.ts.networks(), full))
    best: tuple[IPNetwork, str] | None = None
    for name, nets, everything in held:
        for net in nets:
            if net not in everything and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, name)
    return Role("tunnel", best[1], network=best[0]) if best is not None else None


def other_peer(role: Role | None, config: IkeConfig) -> str | None:
    """Whose IKE peer ``role`` says its address is, when that is no peer of ``config`` (the connection
    asking: neither its remote address nor an established IKE SA of it is there), or None.  An IKE SA
    of ``config`` sent there would meet that connection's gateway, and its INITIAL_CONTACT (none of
    ``config``'s identities is up) would end our IKE SA of the other connection there (review
    revclient s20 F1); a peer of our own gateway connection (a road warrior) is no gateway at all."""
    if role is None or role.kind != "peer" or config.name in role.peers:
        return None
    names = ", ".join(sorted(role.peers))
    return f"the address of an IKE peer of connection {names}" if names else "the address of an IKE peer"


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


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def unmapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped one (::ffff:a.b.c.d) stands for, else ip: the form every check
    compares (a peer writing a.b.c.d so would pass the own-address and remote_ts checks)."""
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip


def usable_gateway(address: str) -> bool:
    """An address IKE may be sent to (a REDIRECT's target, what an FQDN resolved to, a peer's new
    address): not unspecified, multicast, loopback (a local service would get our IKE), broadcast or
    otherwise reserved, nor link-local (neither a redirect nor a move carries an interface to scope it
    with)."""
    try:
        ip = unmapped(ipaddress.ip_address(address))
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_reserved
                or (ip.version == 4 and ip in _THIS_NETWORK))


def refused_address(st: IkeSaState, address: str, what: str, *, moving: bool = False,
                    authenticated: bool = False) -> str | None:
    """Why ``what`` of ``st``'s connection must not be sent to ``address``, or None: a client's IKE
    to a REDIRECT's target (redirect.refused_target), or, ``moving``, a peer's IKE and ESP to the
    address it moved to (MOBIKE's UPDATE_SA_ADDRESSES, or a NAT float without MOBIKE:
    exchanges/mobike.py; review revmobike F1).  Refused: no usable address (usable_gateway), this
    host's own (the IKE address in use, role "own"), inside one of our pools (a road warrior's),
    inside a remote_ts of the connection, or inside another tunnel (other_tunnel).  The host routes
    all of these into the TUN or to itself: a road warrior moving to its own virtual IP through its
    tunnel would loop its ESP through the TUN, a spoofed source behind another peer would put this
    peer's ESP into that peer's tunnel.  ``moving`` counts every "tunnel" role, the connection's own
    too (its remote_ts, or any Child SA's claims, another peer's of the same connection as well):
    ESP sent there goes into the TUN whichever tunnel holds it, but not a move within the network
    of its own its current address lies in already (own_network); full tunnels are nobody's (the
    module), so a peer on the internet is still followed, and "peer" comes first, so clients sharing
    one NAT's public address are too.  A REDIRECT's target keeps the stricter own-remote_ts rule
    (the tunnel the new IKE SA is to set up) and other_tunnel's (ours as specifically: the gateway we
    talk to is the one the host sends that traffic to anyway).  A target inside the connection's own full
    tunnel is allowed only if the REDIRECT is ``authenticated`` (in IKE_AUTH) or the target is the
    connection's remote address: the new gateway gets an exclude route as the first one did, and an
    unauthenticated REDIRECT in IKE_SA_INIT, which anyone on the path can forge, must not choose the
    address routed around the full tunnel (review revfull F2).  "This host's own" is every address of
    its interfaces too (role "own" asked with ``host``), and a REDIRECT's target may not be another
    connection's IKE peer (other_peer: its INITIAL_CONTACT would end our IKE SA there); a gateway
    cluster's members, named by no other connection, and this connection's own gateways are followed
    (review revclient s20 F1, F3)."""
    if not usable_gateway(address):
        kind = "peer" if moving else "gateway"
        return f"{address} is no {kind} address (unspecified, multicast, loopback, broadcast, reserved or link-local)"
    ip = unmapped(ipaddress.ip_address(address))
    local = st.local_addr[0] if st.local_addr is not None else None
    role = st.address_role(ip, host=True) if st.address_role is not None else None
    if (local is not None and _same(ip, local)) or (role is not None and role.kind == "own"):
        return f"{address} is an address of this host"
    if role is not None and role.kind == "pool":
        return f"{address} is inside pool {role.pool} of connection {role.connection} " \
               f"({what} would go to a road warrior)"
    if moving:
        if role is not None and role.kind == "tunnel" and not own_network(st, role, ip):
            return f"{address} is inside remote_ts {role.network} of {holder(role.connection)} " \
                   f"({what} would go into that tunnel)"
        return None
    peer = other_peer(role, st.config)
    if peer is not None:
        return f"{address} is {peer} ({what} would go to that connection's gateway)"
    host = Ts.host(ip)
    trusted = authenticated or address_match(st.config.remote_addr, str(ip)) is AddressMatch.EXACT
    everything = full_tunnel(st.config)
    # a full tunnel's networks cover every gateway: the daemon keeps a trusted new one's address out of the
    # TUN's routes (an exclude route, dataplane/exclude.py), as the first gateway's; a narrower one is named first
    holding = sorted(((set(ts.networks()) <= everything, child.name, ts) for child in st.config.children
                      for ts in child.remote_ts if not ts.dynamic and ts.contains(host)), key=lambda h: h[0])
    for full, child_name, ts in holding:
        if not (full and trusted):
            return f"{address} is inside remote_ts {ts} of child {child_name} ({what} would go into the tunnel)"
    tunnel = other_tunnel(role, st.config, ip)
    if tunnel is not None:
        return f"{address} is {tunnel} ({what} would go into that tunnel)"
    return None


def own_network(st: IkeSaState, role: Role, address: IPAddress) -> bool:
    """Whether a moving peer's new address, in the "tunnel" ``role``, lies in its own network: the most
    specific network holding it (``role.network``) is one of the connection's configured remote_ts, or
    of this IKE SA's own Child SAs' (what they negotiated), and holds the peer's current address too
    (review revmobfix F1).  Such a peer's outer address lies inside what its tunnel carries (a spoke
    whose WAN 10.1.255.1 is in its branch block 10.1.0.0/16, a site reached through a router in its
    own remote_ts: dataplane/exclude.py), so the host reaches it outside the TUN already (an exclude
    route, or a more specific route of its own), and a second address there is reached the same way:
    the exclude gate (services/ike/exclude_gate.py) routes an authenticated peer's new address before
    our first datagram to it, and mobility.py moves the Child SAs' ESP only after that.  Refusing it
    would leave the peer's ESP at the address it left (a failover to its second uplink, a NAT's new
    mapping).  A narrower network of another peer's (a claim), another connection's, a network
    the peer does not live in yet, or one another peer holds (a claim of exactly that network:
    another spoke's LAN, :func:`_held_by_another`) stays refused: that is the TUN's traffic to
    someone else."""
    net = role.network
    if net is None or role.connection != st.config.name:
        return False
    try:
        current = unmapped(ipaddress.ip_address(st.esp_remote[0]))
    except ValueError:
        return False
    if current not in net:
        return False
    # generators chained, not unpacked into a tuple: the search stops at the first selector of that
    # network, without the networks of every Child SA made first (review revcost F3)
    configured = (ts for child in st.config.children for ts in child.remote_ts if not ts.dynamic)
    negotiated = (ts for child in st.children.values() for ts in child.remote_ts)
    return any(_network_of(ts, net) for ts in itertools.chain(configured, negotiated)) \
        and not _held_by_another(st, net, address)


def _network_of(ts: Ts, net: IPNetwork) -> bool:
    """Whether ``net`` is one of ``ts``'s networks; those of a selector that does not hold it all
    are not made."""
    return ts.version == net.version and int(ts.start) <= int(net.network_address) \
        and int(net.broadcast_address) <= int(ts.end) and net in ts.networks()


def _held_by_another(st: IkeSaState, net: IPNetwork, address: IPAddress) -> bool:
    """Whether another peer's Child SA (of any connection: TsClaims tells peers apart as a Child SA's
    selectors are checked) holds ``net`` itself, as a claim that holds ``address``: the configured
    network is then that peer's LAN, not the moving peer's (review revcert3 F3).  A narrower claim
    is the role's network already (refused); a full tunnel is nobody's (the module)."""
    if st.ts_claims is None:
        return False
    me = Peer(st.peer_id, st.config.lease_proof)
    found = st.ts_claims.overlaps(me, [Ts.host(address)], [], by_name=st.config.names_its_peer)
    return any(n == net for claim, _ in found for n in claim.ts.networks())


def _same(ip: IPAddress, text: str) -> bool:
    try:
        return ip == unmapped(ipaddress.ip_address(text))
    except ValueError:
        return False
