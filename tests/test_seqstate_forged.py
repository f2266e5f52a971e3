"""RESERVE_LOWs a worker taken over forges (review of 2026-12-03, F5): whatever they say, a manual
SA's persisted limit moves by at most the next number (OUT's `needed`), a burst (IN's jump) and a
bounded rate (any number of refills), so after a restart the key still has sequence numbers; and
never backwards, so no number is handed out twice.  A fake clock: extend takes the time."""

from __future__ import annotations

from pathlib import Path

from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import GROWTH_WHEN_SHORT, MIN_BLOCK_OUT, SEQ_BURST, SEQ_MAX_32, SEQ_RATE_MAX, SeqState

KEY = bytes(range(1, 21))
SPI = 0xC0020001


def state(d: Path, direction: Direction) -> SeqState:
    return SeqState.open(d, "site-b", SPI, direction, KEY, False)


def test_a_forged_need_moves_an_outbound_limit_by_one_block_at_most(tmp_path: Path) -> None:
    """An OUT SA can need no number but the next: `needed` = 2**32-1 reserves as a refill that ran
    out would, not the whole sequence space; a restart starts past it with numbers left."""
    st = state(tmp_path, Direction.OUT)
    st.restart()
    limit, _ = st.extend(now=1.0, needed=SEQ_MAX_32)
    assert MIN_BLOCK_OUT < limit <= MIN_BLOCK_OUT + MIN_BLOCK_OUT * GROWTH_WHEN_SHORT + 1
    start, again, _ = state(tmp_path, Direction.OUT).restart()
    assert start == limit < again < SEQ_MAX_32


def test_a_forged_jump_moves_an_inbound_limit_by_a_burst_at_most(tmp_path: Path) -> None:
    """An IN SA's `needed` (an authenticated number past the limit: a peer that restarted) moves the
    limit by SEQ_BURST at most in one refill; later refills follow at SEQ_RATE_MAX a second."""
    st = state(tmp_path, Direction.IN)
    _, first, _ = st.restart()
    limit, _ = st.extend(now=1.0, needed=SEQ_MAX_32)
    assert first < limit <= first + SEQ_BURST
    limit2, _ = st.extend(now=2.0, needed=SEQ_MAX_32)
    assert limit < limit2 <= limit + SEQ_RATE_MAX
    start, again, _ = state(tmp_path, Direction.IN).restart()
    assert start == limit2 < again < SEQ_MAX_32


def test_forged_refills_use_up_numbers_no_faster_than_the_rate_bound(tmp_path: Path) -> None:
    """300 RESERVE_LOWs within 3 ms (the block grows to its largest on the rate they show: 256 of
    them used up a 32-bit SA) move the limit by the burst and 3 ms of the rate, one number a refill
    at least; a refill a second later reserves a whole block again; nothing ever moves back."""
    st = state(tmp_path, Direction.OUT)
    _, first, _ = st.restart()
    limits = [st.extend(now=1.0 + i * 1e-5)[0] for i in range(300)]
    assert all(b > a for a, b in zip([first, *limits], limits, strict=False))   # each at least one more
    assert limits[-1] - first <= SEQ_BURST + 0.003 * SEQ_RATE_MAX + 300
    later, _ = st.extend(now=5.0)
    assert later - limits[-1] == st.block
    start, again, _ = state(tmp_path, Direction.OUT).restart()
    assert start == later < again < SEQ_MAX_32
