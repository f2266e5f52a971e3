"""Review revmanual F3: a worker taken over uses up a manual key's sequence numbers ~4 times faster
than the rate bound (SEQ_RATE_MAX) that docs/issue9-coverage.md ("What remains") gives for it, by
crashing: SeqState.restart(), which every worker start and every tunsec start runs for each manual
SA, reserves a whole persisted block outside the allowance that bounds what RESERVE_LOWs may
reserve, and a few forged RESERVE_LOWs (an OUT SA's "ran out" refill grows the block 16-fold) make
that block MAX_BLOCK (2^24) for good: it is persisted.

A crash loop: the daemon restarts a dying worker MAX_RESTARTS times (after 0.1, 0.2, ... s) and
then exits 1; systemd (contrib/systemd/tunsec.service: Restart=on-failure, RestartSec=2s, the
default StartLimitBurst=5 per 10 s not reached at that pace) starts it again, whose first worker
dies again.  Each lifetime installs every manual SA MAX_RESTARTS + 1 times, each install a new
block."""

from __future__ import annotations

from pathlib import Path

from tunsec.daemon import MAX_RESTARTS
from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import MAX_BLOCK, SEQ_BURST, SEQ_RATE_MAX, SeqState

KEY = bytes(range(1, 21))
SPI = 0xC0020001
RESTART_SEC = 2.0   # contrib/systemd/tunsec.service


def state(d: Path) -> SeqState:
    return SeqState.open(d, "site-b", SPI, Direction.OUT, KEY, False)


def lifetime_seconds() -> float:
    """At least how long one crash-looping tunsec lives and is started again: the daemon's back-off
    before each worker restart (daemon._restart_worker), then systemd's RestartSec."""
    return sum(min(2 ** (k - 1) * 0.1, 5.0) for k in range(1, MAX_RESTARTS + 1)) + RESTART_SEC


def test_a_crash_looping_worker_uses_up_numbers_no_faster_than_the_rate_bound(tmp_path: Path) -> None:
    st = state(tmp_path)
    _, first, _ = st.restart()
    now = 1.0
    for _ in range(3):   # forged "ran out" refills: the block grows 16-fold each, to its largest
        st.extend(now=now, needed=st.limit + 1)
        now += 0.01
    assert st.block == MAX_BLOCK   # persisted: every later install reserves that much

    lifetimes = 4
    for _ in range(lifetimes):      # tunsec started again by systemd: a new process, the same file
        st = state(tmp_path)
        for _ in range(MAX_RESTARTS + 1):   # its first worker and each restarted one, each dying at once
            st.restart()
    elapsed = lifetimes * lifetime_seconds()
    used = st.limit - first
    bound = SEQ_BURST + elapsed * SEQ_RATE_MAX
    assert used <= bound, (f"{used} numbers ({used / 2**32:.1%} of a 32-bit SA) in {elapsed:.1f} s: "
                           f"{used / elapsed / SEQ_RATE_MAX:.1f} times SEQ_RATE_MAX (bound {bound:.0f})")
