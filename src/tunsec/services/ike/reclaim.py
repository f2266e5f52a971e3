"""A reload's new configured claims, taken from the peers of %any connections that hold them (review revtrap F1).

The configured claims (configured_claims.py) bind every peer whose connection does not name it, from
the moment a configuration names the connection: a new Child SA of such a peer is refused (a site) or
narrowed (a road warrior) around them.  A reload that starts naming a connection (adds one, gives one a
remote.id, a child, a wider remote_ts) claims networks such a peer may hold already: a spoke of a %any
hub that took 10.2.1.0/24 while no connection named it.  Left alone, it kept them until its Child SA
went: the LAN's traffic to the named peer's network stayed sealed to the spoke, and the named peer's
own Child SA was refused meanwhile.

So the reload deletes each Child SA of such a peer that overlaps a new claim (remote selectors
intersect, local ones meet: TsClaims.overlaps), at once, as ``tunsec terminate --child`` does: its
traffic stops now, the peer is told (INFORMATIONAL DELETE), its IKE SA stays, and what it asks for
again is refused or narrowed around the claim.  The named connection's trap or start then brings its
own peer up for the network.  What holds such a claim without a booked Child SA goes too: a
re-creation's (recreate.py) ends, a Child SA whose claim a worker restart holds (restart.py) is deleted
in the engine.  Named peers' Child SAs (a primary and a backup, named spokes) are left alone: the
configured claims do not bind them.  Each deletion is logged (the claim and the holder) and named in
the reload's answer.  Cost: one claims lookup per distinct selectors of the new or changed named
children (each a bisection and a pass over the wide claims), none for a reload that names nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.ike.sa import State
from tunsec.policy.claims import Claim, is_manual
from tunsec.services.ike import install_failed, recreate

if TYPE_CHECKING:
    from tunsec.services.ike.configured_claims import Claimed
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

# who asks TsClaims.overlaps for the Child SAs a new claim meets: no peer's own claims are passed by
_NOBODY = object()


def reclaim(self: IkeService, fresh: Sequence[Claimed]) -> list[str]:
    """Delete what peers of connections that do not name them hold of the claims ``fresh``
    (ConfiguredClaims.follow's new ones); the reload answer's line naming them, if any."""
    taken: dict[int, tuple[Claim, Claimed]] = {}
    # one lookup per distinct selectors (named spokes sharing one wide remote_ts), not per child
    for new in {(c.remote, c.local): c for c in reversed(fresh)}.values():
        # by_name: the configured claims (the new one among them) are passed by, the Child SAs' found
        for claim, _ in self.ts_claims.overlaps(_NOBODY, new.remote, new.local, by_name=True):
            if not claim.by_name and not is_manual(claim):
                taken.setdefault(claim.handle, (claim, new))
    out = []
    for handle, (claim, new) in taken.items():
        what = _take(self, handle)
        if what is None:
            continue
        log.warning("reload: connection %s child %s names its peer (%s) for %s: %s of peer %s (connection %s), which "
                    "held %s, deleted", new.conn, new.child, new.peer.id, ", ".join(map(str, new.remote)), what,
                    claim.peer, claim.conn, claim.ts)
        out.append(f"{getattr(claim.peer, 'id', claim.peer)} ({claim.conn})")
    if not out:
        return []
    return [f"CHILD_SAs of peers of %any connections over networks the new configuration names, deleted: "
            f"{', '.join(dict.fromkeys(out))}"]


def _take(self: IkeService, handle: int) -> str | None:
    """End what holds claim ``handle``: a booked Child SA, one a worker restart holds, a re-creation.
    What it was, for the log; None if nothing of it can be ended now (its IKE SA going already)."""
    state = self.children.get(handle)
    why = "its selectors are a named connection's since a reload"
    if state is not None:
        recreate.end_holding(self, handle, why)   # a joined re-creation tries no more
        done = _delete(self, state.ike, state.unique_id)
        return f"CHILD_SA {state.child} {state.spi_in:08x}_i with {state.remote.addr}" if done else None
    for ike, held in self._held_claims.items():   # (only after a worker restart)
        for unique_id, h in held.items():
            if h == handle:
                return "a CHILD_SA being rekeyed into the new worker" if _delete(self, ike, unique_id) else None
    if recreate.end_holding(self, handle, why):
        return "the re-creation of a CHILD_SA"
    return None


def _delete(self: IkeService, ike: int, unique_id: int) -> bool:
    sa = self._ike_sa(ike)
    if sa is None or sa.state is not State.ESTABLISHED or not install_failed.deletable(sa, unique_id):
        return False   # going already: its claims go with it
    sa.delete_child(unique_id, at_once=True)   # its traffic stops now, answered or not
    return True
