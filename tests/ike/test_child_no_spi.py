"""A Child SA we cannot ask for because our own inbound SPI pool is empty (the worker refused GETSPI):
a timer-driven rekey, or the retry of a new Child SA, must fail cleanly and be tried again, not raise
out of the timer (the IKE SA's timer was then never re-armed). Two engines on a fake clock."""

from __future__ import annotations

import dataclasses
import itertools
import random

from test_child_retry import Pool, _live, _requests
from test_engine_more import A, B, cfg, only

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaDown, NegotiationFailed
from tunsec.ike.exchanges.create_child_sa import MAX_RETRIES
from tunsec.ike.sa_timers import REKEY_BACKOFF_MAX
from tunsec.ike.testing import EPOCH, Network

REKEY = 100.0


def _pair(rekey_time: float | None = None) -> tuple[Network, IkeEndpoint, Pool]:
    """A (initiator) takes its inbound SPIs from ``pool``; its children rekey after ``rekey_time``."""
    net, pool = Network(), Pool(3)
    a_cfg = cfg(True)
    if rekey_time is not None:
        a_cfg = dataclasses.replace(a_cfg, children=tuple(
            dataclasses.replace(c, rekey_time=rekey_time, rand_time=0.0) for c in a_cfg.children))
    a = net.add(A, IkeEndpoint([a_cfg], random.Random(3).randbytes, spi_allocator=pool, wall_clock=lambda: EPOCH))
    net.add(B, IkeEndpoint([cfg(False)], random.Random(4).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run(until=1.0)
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, pool


def test_a_timer_rekey_without_an_inbound_spi_is_tried_again() -> None:
    net, a, pool = _pair(REKEY)
    (old,) = _live(a).children
    pool.empty = 1                                   # the rekey's SPI is refused once
    mark = len(net.log)
    net.run(until=REKEY + 20.0)                      # used to raise SpiUnavailable out of handle_timer
    failed = only(net.take(A), NegotiationFailed)
    assert [(f.reason, f.child) for f in failed] == [("TEMPORARY_FAILURE", "net")]
    assert "no inbound SPI" in failed[0].detail
    (rekey,) = _requests(net, mark)                  # nothing went out at REKEY; the retry did, 2-10 s later
    assert REKEY + 2.0 <= rekey.time <= REKEY + 10.0
    (new,) = [c for c in _live(a).children if c.installed]
    assert new.unique_id != old.unique_id and new.rekey_at is not None   # rekeyed, its own timer armed
    assert not only(net.take(A), IkeSaDown)


def test_a_new_child_sa_without_an_inbound_spi_is_tried_again_then_given_up() -> None:
    net, a, pool = _pair()
    sa = _live(a)
    pool.empty = 1000
    mark = len(net.log)
    sa.initiate("web")                               # nothing is sent: no SPI
    net.run()
    assert not _requests(net, mark)
    failed = only(net.take(A), NegotiationFailed)
    assert [(f.reason, f.child) for f in failed] == [("TEMPORARY_FAILURE", "web")] * (1 + MAX_RETRIES)
    assert "not trying again" in failed[-1].detail and "trying again soon" in failed[0].detail
    assert sa.get_timer() is None and not sa.is_closed
    pool.empty = 0                                   # SPIs are back: the child can be asked for again
    sa.initiate("web")
    net.run()
    assert [e.child for e in only(net.take(A), ChildSaUp)] == ["web"]


def test_a_rekey_that_keeps_finding_no_inbound_spi_backs_off_exponentially() -> None:
    """The worker's SAD stays full: the rekey is tried until the hard lifetime, but each failure in a
    row waits twice as long as the one before (2-10 s, 4-20 s, ... up to 64-320 s), not every 2-10 s.
    Once an SPI is there the rekey goes through, and the new Child SA starts over at 2-10 s."""
    net, a, pool = _pair(REKEY)
    tries: list[float] = []
    take = pool.__call__

    def allocator() -> int:
        tries.append(net.now)
        return take()
    _live(a)._st.spi_allocator = allocator
    pool.empty = 1000
    net.run(until=REKEY + 1000.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(gaps) >= 6                            # at most 10+20+40+80+160+320 s apart
    for n, gap in enumerate(gaps):
        factor = min(2 ** n, REKEY_BACKOFF_MAX)
        assert 2.0 * factor <= gap <= 10.0 * factor, (n, gaps)
    failed = only(net.take(A), NegotiationFailed)
    assert len(failed) == len(tries) and {(f.reason, f.child) for f in failed} == {("TEMPORARY_FAILURE", "net")}
    pool.empty = 0
    net.run(until=tries[-1] + 330.0)                 # the next try finds an SPI
    (new,) = _live(a).children
    assert only(net.take(A), ChildSaUp) and new.rekey_failures == 0
