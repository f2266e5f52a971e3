"""The configured selectors of connections that name their peer, in the selector claims (review revlan F1).

The claims (policy/claims.py) held what up Child SAs hold: a named site's network was nobody's while
its Child SA was down.  A peer of a connection of %any whose remote_ts covers it (a hub's spoke: anyone
with the hub's group PSK, any certificate of its CA) could ask for it then and get it; its policies
took the LAN's traffic to that network (a trap's band comes after the Child SAs'; without a trap the
TUN's route leads to the spoke's policy alike), and the named peer's own Child SA was refused, or
proposed without the network, for as long as the spoke stayed.

So each child of a connection that names its peer (IkeConfig.names_its_peer) holds its configured
(remote_ts, local_ts), resolved as the trap policies are (traps.install_traps: ``dynamic`` as the
connection's addresses, left out where the address is %any; a full tunnel left out: without_full_tunnel),
under that peer (its remote.id and
proof), from the service's construction (before anyone is answered) until a reload's configuration
no longer names it, whatever its start_action: a trap's network, a start child's while it
reconnects, a responder's (none) while its peer is away are the named peer's all the same, and the
TUN routes each to whichever policy matches.  These claims (``configured``) bind only peers whose
connection does not name them (TsClaims.overlaps): a %any spoke is refused (a site) or narrowed (a
road warrior) around them; among named peers the Child SAs decide as before, so a primary and a
backup named with the same selectors, and named spokes choosing their parts of one wide remote_ts,
are as they were.  config's load warns about a connection of %any whose remote_ts overlaps a named
one's (conf/named_overlap.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from tunsec.conf.connections import Connection
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.full_tunnel import without_full_tunnel
from tunsec.policy.selector import IPNetwork, Ts

Key = tuple[str, str]   # (connection, child)


def configured_selectors(conn: Connection, pools: Sequence[IPNetwork] = ()
                         ) -> Iterator[tuple[str, tuple[Ts, ...], tuple[Ts, ...]]]:
    """Each child of ``conn`` (named) with its remote and local selectors as the trap policies resolve
    them, its full tunnel left out (policy/full_tunnel.py without_full_tunnel: the
    default route through that peer is no network of its, as ike/address_role.py counts it for none;
    claimed while down, it would refuse every road warrior's lease and spoke toward the same local side).
    A remote selector that meets one of the ``pools`` is left out (the child's others are claimed): a named
    spoke's wide remote_ts (10.0.0.0/8, its part chosen at negotiation) is no claim on the road warriors'
    leases in it (review revtrap F5), nor is a pool a reason to drop the child's other networks (review
    revlate3 F1); what its Child SAs hold they claim, as before h/fixtrap."""
    ike = conn.ike
    for ch in ike.children:
        remote = tuple(t for t in without_full_tunnel(_resolved(ch.remote_ts, ike.remote_addr))
                       if t.dynamic or not _meets(t, pools))
        if remote:
            yield ch.name, remote, _resolved(ch.local_ts, ike.local_addr)


def _meets(t: Ts, pools: Sequence[IPNetwork]) -> bool:
    return any(p.overlaps(n) for n in t.networks() for p in pools if p.version == n.version)


def _resolved(selectors: Iterable[Ts], addr: str | None) -> tuple[Ts, ...]:
    """``selectors`` with ``dynamic`` as ``addr``, left out where that is unknown (or no address)."""
    out = []
    for t in selectors:
        try:
            r = t.resolve(addr)
        except ValueError:
            continue
        if r is not None:
            out.append(r)
    return tuple(out)


class ConfiguredClaims:
    """The claims of the named connections' configured children, in the claims the IKE service reads."""

    def __init__(self, claims: TsClaims, handles: Iterator[int], pools: Sequence[IPNetwork] = ()) -> None:
        self.claims = claims
        self._handles = handles   # the IKE service's: a claim handle no Child SA has
        self._pools = pools   # the address pools' networks (a reload keeps the pools)
        self._of: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._of)

    def follow(self, connections: Iterable[Connection]) -> None:
        """Claimed: exactly the named ``connections``' children's selectors (a changed child's new ones in
        place of its old ones at once); those a configuration no longer names released."""
        want = {(c.ike.name, name): (c, remote, local) for c in connections if c.ike.names_its_peer
                for name, remote, local in configured_selectors(c, self._pools)}
        for gone in [k for k in self._of if k not in want]:
            self.claims.remove(self._of.pop(gone))
        for key, (conn, remote, local) in want.items():
            handle = self._of.get(key)
            if handle is None:
                handle = self._of[key] = next(self._handles)
            peer = Peer(conn.ike.remote.id, conn.ike.lease_proof)
            self.claims.add(handle, conn.ike.name, peer, remote, local, named=True, by_name=True, configured=True)
