"""The load's warning about a connection of %any whose remote_ts overlaps a named connection's.

A connection that names its peer holds its children's configured selectors for that peer while
they are down too (services/ike/configured_claims.py, review revlan F1): a peer of a connection of
%any (a hub's spokes with a group PSK, a CA's certificates, road warriors) is refused those networks
(a site), or narrowed around them (a connection with pools), and what this host starts on such a
connection is proposed without them.  Warned, not refused, as the manual tunnels' and pools' overlaps
are (conf/manual.py, conf/pools.py): a hub routing 10.0.0.0/8 to its spokes beside one named site
of it is a setup that works, the named site's network excepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.conf.errors import ConfigIssue
from tunsec.policy.full_tunnel import without_full_tunnel
from tunsec.policy.selector import Ts

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection


def named_overlap_warnings(connections: Sequence[Connection]) -> list[ConfigIssue]:
    """A child of a connection of %any whose remote_ts overlaps a named connection's child's toward
    local_ts that meet (one warning per child: the first such overlap).  ``dynamic`` selectors on
    either side are not warned about (what they become is the peer's address or lease), nor a named
    connection's full tunnel, which is not claimed (services/ike/configured_claims.py)."""
    named = [(c, ch, without_full_tunnel(ch.config.remote_ts)) for c in connections if c.ike.names_its_peer
             for ch in c.children]
    out = []
    for c in connections:
        if c.ike.names_its_peer:
            continue
        for child in c.children:
            remote, local = child.config.remote_ts, child.config.local_ts
            found = next(((n, ch, mine, theirs) for n, ch, claimed in named for mine in remote for theirs in claimed
                          if _overlap(mine, theirs) and _locals_meet(local, ch.config.local_ts)), None)
            if found is None:
                continue
            n, ch, mine, theirs = found
            what = ("its clients are narrowed around them" if c.ike.pools
                    else "a peer asking for them is refused (TS_UNACCEPTABLE)")
            out.append(ConfigIssue(
                child.file or c.file, child.line or c.line, f"connections.{c.name}.children.{child.name}.remote_ts",
                f"{mine} overlaps {theirs}, the remote_ts of connection {n.name}'s child {ch.name}, which names its "
                f"peer ({n.ike.remote.id}), toward local_ts that meet: those networks are that peer's, also while "
                f"its Child SA is down, and this connection's peers (remote id %any) may not take them: {what}, and "
                "what this host starts here is proposed without them; leave them out of remote_ts, or name the "
                "peer (remote.id)"))
    return out


def _overlap(mine: Ts, theirs: Ts) -> bool:
    return not mine.dynamic and not theirs.dynamic and mine.intersect(theirs) is not None


def _locals_meet(mine: Sequence[Ts], theirs: Sequence[Ts]) -> bool:
    """Some pair of local selectors meets; a ``dynamic`` one (an address not known here) meets any."""
    if any(t.dynamic for t in (*mine, *theirs)) or not mine or not theirs:
        return True
    return any(a.intersect(b) is not None for a in mine for b in theirs)
