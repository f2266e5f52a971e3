"""Which addresses other peers' claims hold, built once per TsClaims.containing question (review
revclaims3 F1): containing widens a peer's Child SAs across the gaps between their pieces that others
hold (policy/claims.py _widened), and asking each gap with a pass over every claim cost (the peer's
Child SAs) x (pieces) x (all claims), seconds of the control thread at a hub of 10,000 claims for one
MOBIKE move.  Here one pass gathers the addresses, merged per family into sorted disjoint intervals,
and each gap is a bisect or a few.

A gap is held for a piece only by claims that hold the piece's traffic there (review revclaims3 F4):
of any protocol, or the piece's, with ports that hold the piece's.  Nearly every claim is of every
protocol and port (``every``); the few that are not are merged per kind of piece asked, on demand."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunsec.policy.selector import Ts

_ANY_PORTS = (0, 0xFFFF)

_Kind = tuple[int, int, int, int]   # a piece's (family, protocol, first port, last port)


@dataclass(frozen=True, slots=True)
class Spans:
    """Disjoint, non-adjacent address intervals, sorted: their first and last addresses."""

    firsts: list[int]
    lasts: list[int]

    @classmethod
    def merged(cls, spans: Iterable[tuple[int, int]]) -> Spans:
        firsts: list[int] = []
        lasts: list[int] = []
        for lo, hi in sorted(spans):
            if lasts and lo <= lasts[-1] + 1:   # overlapping or adjacent: one interval
                lasts[-1] = max(lasts[-1], hi)
            else:
                firsts.append(lo)
                lasts.append(hi)
        return cls(firsts, lasts)

    def reach(self, at: int) -> int:
        """The last address of the interval holding ``at``, or at - 1 if none does."""
        i = bisect.bisect_right(self.firsts, at) - 1
        return self.lasts[i] if i >= 0 and self.lasts[i] >= at else at - 1


@dataclass(slots=True)
class Held:
    """The addresses that some claims hold (others' than the asking peer's)."""

    every: dict[int, Spans]                     # by family: claims of every protocol and port
    some: list[tuple[int, int, Ts]]             # claims of one protocol or some ports only
    _kinds: dict[_Kind, Spans] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[int, int, Ts]]) -> Held:
        """From (first address, last address, selector) of each claim that counts."""
        every: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        some: list[tuple[int, int, Ts]] = []
        for lo, hi, ts in entries:
            if ts.protocol == 0 and (ts.start_port, ts.end_port) == _ANY_PORTS:
                every[ts.version].append((lo, hi))
            else:
                some.append((lo, hi, ts))
        return cls({fam: Spans.merged(spans) for fam, spans in every.items()}, some)

    def holds(self, piece: Ts, first: int, last: int) -> bool:
        """Whether every address of first..last (none: True) is held for ``piece``'s traffic."""
        both = (self.every[piece.version], self._kind(piece))
        at = first
        while at <= last:
            before = at
            for spans in both:   # an interval of each may follow the other's: at most a few steps
                at = max(at, spans.reach(at) + 1)
            if at == before:
                return False
        return True

    def _kind(self, piece: Ts) -> Spans:
        kind = (piece.version, piece.protocol, piece.start_port, piece.end_port)
        if kind not in self._kinds:
            self._kinds[kind] = Spans.merged(
                (lo, hi) for lo, hi, ts in self.some if ts.version == piece.version
                and ts.protocol in (0, piece.protocol) and ts.start_port <= piece.start_port
                and ts.end_port >= piece.end_port)
        return self._kinds[kind]
