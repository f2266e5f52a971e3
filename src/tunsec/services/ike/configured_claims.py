"""The configured selectors of connections that name their peer, in the selector claims (review revlan F1).

The claims (policy/claims.py) held what up Child SAs hold: a named site's network was nobody's while
its Child SA was down.  A peer of a connection of %any whose remote_ts covers it (a hub's spoke: anyone
with the hub's group PSK, any certificate of its CA) could ask for it then and get it; its policies
took the LAN's traffic to that network (a trap's band comes after the Child SAs'; without a trap the
TUN's route leads to the spoke's policy alike), and the named peer's own Child SA was refused, or
proposed without the network, for as long as the spoke stayed.

So each child of a connection that names its peer (IkeConfig.names_its_peer) holds its configured
(remote_ts, local_ts), resolved as the trap policies are (conf/named_claims.py configured_selectors:
``dynamic`` as the connection's addresses, a full tunnel left out, a pool's leases left out), under that
peer (its remote.id and proof), from the service's construction (before anyone is answered) until a
reload's configuration no longer names it, whatever its start_action: a trap's network, a start child's while it
reconnects, a responder's (none) while its peer is away are the named peer's all the same, and the
TUN routes each to whichever policy matches.  These claims (``configured``) bind only peers whose
connection does not name them (TsClaims.overlaps): a %any spoke is refused (a site) or narrowed (a
road warrior) around them; among named peers the Child SAs decide as before, so a primary and a
backup named with the same selectors, and named spokes choosing their parts of one wide remote_ts,
are as they were.  config's load warns about a connection of %any whose remote_ts overlaps a named
one's (conf/named_overlap.py).  A reload whose configuration claims a network a peer of a connection of
%any holds already deletes that Child SA (reclaim.py, review revtrap F1): :meth:`ConfiguredClaims.follow`
says which claims are new.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tunsec.conf.connections import Connection
from tunsec.conf.named_claims import configured_selectors, pool_sides, pool_spans
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.pools import PoolConfig
from tunsec.policy.selector import Ts

Key = tuple[str, str]   # (connection, child)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A named child's configured selectors, claimed anew (a new child, or other selectors than before)."""

    conn: str
    child: str
    peer: Peer
    remote: tuple[Ts, ...]
    local: tuple[Ts, ...]


class ConfiguredClaims:
    """The claims of the named connections' configured children, in the claims the IKE service reads."""

    def __init__(self, claims: TsClaims, handles: Iterator[int], pools: Sequence[PoolConfig] = ()) -> None:
        self.claims = claims
        self._handles = handles   # the IKE service's: a claim handle no Child SA has
        self._spans = pool_spans(pools)   # the address pools' networks (a reload keeps the pools)
        self._of: dict[Key, int] = {}
        self._what: dict[Key, tuple[tuple[Ts, ...], tuple[Ts, ...]]] = {}   # what each claims now

    def __len__(self) -> int:
        return len(self._of)

    def follow(self, connections: Iterable[Connection]) -> list[Claimed]:
        """Claimed: exactly the named ``connections``' children's selectors (a changed child's new ones in
        place of its old ones at once); those a configuration no longer names released.  Returns the
        claims that are new or claim other selectors than before (what a peer may hold already)."""
        connections = list(connections)
        sides = pool_sides(connections, self._spans)   # whose leases a named child's claim leaves alone
        want = {(c.ike.name, name): (c, remote, local) for c in connections if c.ike.names_its_peer
                for name, remote, local in configured_selectors(c, sides)}
        for gone in [k for k in self._of if k not in want]:
            self.claims.remove(self._of.pop(gone))
            del self._what[gone]
        fresh = []
        for key, (conn, remote, local) in want.items():
            handle = self._of.get(key)
            if handle is None:
                handle = self._of[key] = next(self._handles)
            peer = Peer(conn.ike.remote.id, conn.ike.lease_proof)
            self.claims.add(handle, conn.ike.name, peer, remote, local, named=True, by_name=True, configured=True)
            if self._what.get(key) != (remote, local):
                self._what[key] = (remote, local)
                fresh.append(Claimed(key[0], key[1], peer, remote, local))
        return fresh
