"""Which peer holds which remote traffic selectors on a gateway (DESIGN.md "Ownership").

Every Child SA's outbound PROTECT policies sit in one SPD at one priority band, and the fast path
takes the older of two equal-priority policies that both match: a peer whose remote selectors
overlap another peer's would draw traffic meant for that one (its policy first), and its inbound
SA would admit packets with that one's addresses as source.  strongSwan installs both and
leaves the choice to the kernel, whose policy priorities prefer the longer prefix: that hides
part of the overlap only (not the addresses the other peer does not hold a longer prefix for).
Here a responder asks :meth:`TsClaims.overlaps` before it accepts a Child SA's selectors
(exchanges/child.py responder_select, _not_others) and refuses one that overlaps what another
peer holds, or for a road warrior narrows it to the rest.

A peer is its authenticated identity: the same identity may overlap itself (rekeys,
reauthentication make-before-break, a client back with or without INITIAL_CONTACT, a second
IKE SA under ``unique = no``); every other identity may not (the SPD is one for all of them),
unless both peers' connections name their peer (IkeConfig.names_its_peer): then the
administrator gave the same selectors to two named peers, a primary and a backup gateway of one
site, and both may be up (the older's policies carry the traffic; when it goes, the other's).
A peer of a connection of %any (road warriors, EAP users, a CA's certificates) is none the
administrator named: it never overlaps another identity's selectors, named or not.  The IKE
service adds each Child SA's remote selectors when it books it (ChildSaUp) and removes them
when it forgets it.

Lookups bisect a list sorted by start address, widened by the widest selector held: a gateway of
road warriors holds host selectors, and a claim is found without a pass over every client.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from tunsec.policy.selector import Ts


@dataclass(frozen=True, slots=True)   # one per remote selector of every Child SA
class Claim:
    """One remote selector of one Child SA (its handle in the IKE service)."""

    handle: int
    conn: str
    peer: object   # the authenticated identity (Identity), compared with ==
    ts: Ts
    named: bool = False   # its connection names its peer (IkeConfig.names_its_peer)


class TsClaims:
    """Remote selectors held by Child SAs, searchable by address range."""

    def __init__(self) -> None:
        # family -> [(start, end, handle, claim)] sorted
        self._sorted: dict[int, list[tuple[int, int, int, Claim]]] = {4: [], 6: []}
        self._widest: dict[int, int] = {4: 0, 6: 0}   # only grows: a bound on how far back to look
        self._by_handle: dict[int, list[tuple[int, int, int, Claim]]] = {}

    def __len__(self) -> int:
        return len(self._by_handle)

    def add(self, handle: int, conn: str, peer: object, selectors: Sequence[Ts], named: bool = False) -> None:
        entries = [(int(t.start), int(t.end), handle, Claim(handle, conn, peer, t, named))
                   for t in selectors if not t.dynamic]
        self.remove(handle)
        self._by_handle[handle] = entries
        for e in entries:
            fam = e[3].ts.version
            bisect.insort(self._sorted[fam], e, key=lambda x: (x[0], x[2]))
            self._widest[fam] = max(self._widest[fam], e[1] - e[0])

    def clear(self) -> None:
        for entries in self._sorted.values():
            entries.clear()
        self._by_handle.clear()

    def remove(self, handle: int) -> None:
        for e in self._by_handle.pop(handle, ()):
            entries = self._sorted[e[3].ts.version]
            i = bisect.bisect_left(entries, (e[0], e[2]), key=lambda x: (x[0], x[2]))
            while i < len(entries) and entries[i][0] == e[0] and entries[i][2] == e[2]:
                if entries[i] is e:   # among its Child SA's selectors starting there (ports, protocols)
                    del entries[i]
                    break
                i += 1

    def overlaps(self, peer: object, selectors: Sequence[Ts], named: bool = False) -> list[tuple[Claim, Ts]]:
        """The claims of other peers that ``selectors`` overlap, each with the overlap; ``named``:
        the asking peer's connection names it, and so may share selectors with other named peers."""
        found: list[tuple[Claim, Ts]] = []
        for want in selectors:
            fam = want.version
            entries = self._sorted.get(fam, [])
            lo = bisect.bisect_left(entries, int(want.start) - self._widest[fam], key=lambda x: x[0])
            hi = bisect.bisect_right(entries, int(want.end), key=lambda x: x[0])
            for _, end, _, claim in entries[lo:hi]:
                if end < int(want.start) or claim.peer == peer or (named and claim.named):
                    continue
                common = want.intersect(claim.ts)
                if common is not None:
                    found.append((claim, common))
        return found



def describe(found: Sequence[tuple[Claim, Ts]]) -> str:
    """What overlaps of :meth:`TsClaims.overlaps` mean, for a log line: the first one, and how many more."""
    claim, common = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"overlaps {common} of peer {claim.peer} (connection {claim.conn}, its remote {claim.ts}){more}"
