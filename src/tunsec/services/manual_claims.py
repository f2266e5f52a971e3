"""The manual tunnels' networks in the selector claims (policy/claims.py, review revreload F2).

The IKE service consults the claims on every Child SA, whichever side asked for it: a peer whose
remote selectors overlap another's (toward local selectors that meet) is refused, or a road warrior
narrowed around them.  Without the manual tunnels in them, a peer of a wide remote_ts (a hub's
spokes, a full tunnel) could be given a manual tunnel's network: the manual policies' band comes
first outbound, but the peer's inbound SA admits the network's addresses as source, and its
policies take the traffic whenever the manual ones are out (a reload replacing a tunnel takes the
old policies out before the new ones go in; a worker that refuses the new ones leaves none).

So each tunnel the configuration names holds its (remote_ts, local_ts) under an owner no IKE peer
equals (claims.manual_owner), from the service's construction (before the IKE service answers
anyone) until a reload's configuration no longer names it: through a replacement, and through an
install that failed (the network is still the tunnel's, its traffic dropped, not an IKE peer's).
Two manual tunnels may overlap each other, as before (their policies' order in the manual band
decides; check_unique keeps their SAs apart): only IKE peers' claims count against them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tunsec.conf.manual import ManualTunnel
from tunsec.policy.claims import TsClaims, describe, is_manual, manual_owner


class ManualClaims:
    """The claims of the manual tunnels a configuration names, in the claims the IKE service reads."""

    def __init__(self, claims: TsClaims) -> None:
        self.claims = claims
        self._handles: dict[str, int] = {}   # tunnel name -> its claim handle
        # below zero: the IKE service counts its Child SAs' handles up from 1, in the same claims
        self._next = itertools.count(-1, -1)

    def follow(self, tunnels: Sequence[ManualTunnel]) -> None:
        """Claimed: exactly ``tunnels``' networks (a changed tunnel's new selectors in place of its old
        ones, at once: nothing waits between the two); those of tunnels no longer named released."""
        names = {t.name for t in tunnels}
        for gone in [n for n in self._handles if n not in names]:
            self.claims.remove(self._handles.pop(gone))
        for t in tunnels:
            if t.name not in self._handles:
                self._handles[t.name] = next(self._next)
            conn, peer = manual_owner(t.name)
            self.claims.add(self._handles[t.name], conn, peer, t.remote_ts, t.local_ts)

    def held_by_ike(self, tunnels: Sequence[ManualTunnel]) -> list[str]:
        """Why ``tunnels`` (a reload's new or changed ones) cannot have their networks: an IKE peer's
        Child SA holds a part of one toward local selectors that meet the tunnel's.  The operator's
        manual tunnel would take that peer's traffic from it outbound while its SA still admits the
        network inbound: refused, as two connections' peers overlapping are, until that IKE SA is gone."""
        out = []
        for t in tunnels:
            _conn, peer = manual_owner(t.name)
            # an IKE peer's Child SA, not a named connection's configured child (services/ike/configured_claims.py:
            # the tunnel comes first, and that connection's Child SAs are narrowed or refused around it)
            found = [(c, ts) for c, ts in self.claims.overlaps(peer, t.remote_ts, t.local_ts)
                     if not is_manual(c) and not c.configured]
            if found:
                out.append(f"manual tunnel {t.name} ({t.file}:{t.line}): its remote_ts "
                           f"{', '.join(map(str, t.remote_ts))} toward local_ts {', '.join(map(str, t.local_ts))} "
                           f"{describe(found)}: that IKE peer's Child SA holds the network; end it first "
                           "(`tunsec terminate`, or a reload that removes or narrows its connection), then reload")
        return out
