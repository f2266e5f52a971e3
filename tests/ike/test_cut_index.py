"""services/ike/cut_index.py: a bisect finds what a pass over every piece of a cut finds (review revwiden F3)."""

from __future__ import annotations

import random

from tunsec.policy.selector import Ts
from tunsec.services.ike.cut_index import CutIndex
from tunsec.services.ike.widen import _meets


def _ts(lo: int, hi: int, v6: bool = False) -> Ts:
    return Ts.parse(f"fd00::{lo:x}-fd00::{hi:x}" if v6 else f"10.0.{lo >> 8}.{lo & 255}-10.0.{hi >> 8}.{hi & 255}")


def test_a_lookup_finds_what_every_piece_compared_finds() -> None:
    rng = random.Random(7)
    for _ in range(200):
        cut = []
        for _ in range(rng.randrange(0, 12)):
            lo = rng.randrange(0, 4000)
            cut.append(_ts(lo, lo + rng.choice((0, 3, 40, 900)), v6=rng.random() < 0.2))
        index = CutIndex.of(tuple(cut))
        for _ in range(20):
            lo = rng.randrange(0, 4000)
            asked = _ts(lo, lo + rng.choice((0, 5, 300)), v6=rng.random() < 0.2)
            assert index.meets(asked, _meets) == any(_meets(asked, piece) for piece in cut), (cut, asked)
