"""The pieces cut out of a narrowed Child SA (ChildSaUp.cut), indexed by address for services/ike/widen.py.

Every claim released (TsClaims.on_release: each Child SA's delete, rekey or move) is looked up in
each narrowed Child SA's cut; a full tunnel beside thousands of sites has a cut of thousands of
pieces, and comparing each released claim with each of them cost pieces x claims per release (a
mass release: 16 M comparisons at 4,000 sites, review revwiden F3).  Here a lookup is a bisect and
the pieces that meet it."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from tunsec.policy.selector import Ts


@dataclass(frozen=True, slots=True)
class CutIndex:
    """One cut's pieces by family, sorted by first address, with how far the pieces up to each reach."""

    cut: tuple[Ts, ...]
    starts: dict[int, list[int]]
    pieces: dict[int, list[Ts]]
    reach: dict[int, list[int]]   # the highest last address of the pieces up to each, in that order

    @classmethod
    def of(cls, cut: tuple[Ts, ...]) -> CutIndex:
        starts: dict[int, list[int]] = {4: [], 6: []}
        pieces: dict[int, list[Ts]] = {4: [], 6: []}
        reach: dict[int, list[int]] = {4: [], 6: []}
        for piece in sorted(cut, key=lambda t: (t.version, int(t.start))):
            fam = piece.version
            starts[fam].append(int(piece.start))
            pieces[fam].append(piece)
            reach[fam].append(max(int(piece.end), reach[fam][-1] if reach[fam] else -1))
        return cls(cut, starts, pieces, reach)

    def meets(self, ts: Ts, meets: Callable[[Ts, Ts], bool]) -> bool:
        """Whether some piece meets ``ts`` (by ``meets``, asked of the pieces that may only)."""
        fam = ts.version
        first = int(ts.start)
        reach, pieces = self.reach[fam], self.pieces[fam]
        i = bisect.bisect_right(self.starts[fam], int(ts.end)) - 1
        while i >= 0 and reach[i] >= first:   # the pieces starting at or before its end that may reach it
            if meets(ts, pieces[i]):
                return True
            i -= 1
        return False
