"""Review revpeerdos F3 (proof): a peer that creates and deletes Child SAs in a loop writes two INFO
lines per loop into the gateway's log, without bound.

The peer decides how often it creates, rekeys and deletes Child SAs (each loop is two round trips,
well within max_child_sas: one Child SA at a time).  services/ike/installs.py logs "CHILD_SA ... up"
and "CHILD_SA ... deleted" at INFO for each, with no limiter, while the project's rule
(docs/layout.md: a line for what a peer may repeat as fast as it likes goes through a limiter) is
applied to its MOBIKE moves (services/ike/mobility.py _log_move: "the peer decides how often it
moves"), refusals and limits.  At the control process's pace (hundreds of loops a second across
the identity's max_ike_sas_per_identity IKE SAs) one peer exceeds journald's default rate limit
(10000 lines per 30 s per service), which then drops every tunsec line for the rest of the
interval: the other peers' AUTHENTICATION_FAILED lines (fail2ban's input), IKE SAs established and
closed, errors.

A real IkeService with the fast path in process (test_ikeservice_peers.Gateway) and a site's engine.
"""

from __future__ import annotations

import logging
import random

import pytest
from test_ikeservice_peers import connected, run

from tunsec.loglimit import PeerLogLimiter

LOOPS = 60
ROOM = 20   # lines the churn may write: a burst of a limiter and its summary, whatever the loop count


def test_a_peers_child_sa_churn_writes_a_bounded_number_of_info_lines(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        gw = await connected(1)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tunsec"):
            for _ in range(LOOPS):
                sa = gw.site_sa(0)
                sa.initiate("net")
                await gw.settle()
                new = [c for c in sa.children if c.name == "net"][-1]
                sa.delete_child(new.unique_id)
                await gw.settle()
        assert len(gw.children_of(0)) == 1   # every loop's Child SA came and went
        churn = [r for r in caplog.records if r.levelno >= logging.INFO and "CHILD_SA" in r.getMessage()]
        assert len(churn) <= ROOM, f"{len(churn)} INFO lines for {LOOPS} Child SAs the peer made and deleted"

    run(body())


def test_our_own_rekeys_are_logged_at_full_rate(caplog: pytest.LogCaptureFixture) -> None:
    """Fix of review revpeerdos F3: what we start is not the peer's churn (operators and tests wait
    for its lines): the gateway rekeys site 0's Child SA LOOPS times, and each new Child SA's "up"
    line is written at INFO."""
    async def body() -> None:
        gw = await connected(1)
        site = gw.site_sa(0)
        ours = gw.service.endpoint.sa_by_spi(site.spi_r)
        assert ours is not None
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tunsec"):
            for _ in range(LOOPS):
                gw.service._rekey_child(ours, ours.children[-1].unique_id)
                gw.service._pump()   # (a call straight on the SA: its request goes out with the pump)
                await gw.settle()
        ups = [r for r in caplog.records if r.levelno >= logging.INFO and "CHILD_SA net up" in r.getMessage()]
        assert len(ups) == LOOPS

    run(body())


def test_one_peers_churn_leaves_another_peers_lines() -> None:
    """Fix of review revpeerdos F3: the limiter is per peer: after peer A spent its burst, peer B's
    lines still pass; A's held lines are counted in its next line admitted."""
    now = [0.0]
    limiter = PeerLogLimiter(burst=3, period=60.0, clock=lambda: now[0])
    assert [limiter.admit("a") for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.admit("b") == 0
    now[0] = 60.0
    assert limiter.admit("a") == 2


def test_the_peer_table_is_bounded_and_a_busy_peer_keeps_its_limit() -> None:
    """Fix of review revpeerdos F3: past ``cap`` peers a new one takes the quietest's place (Space-
    Saving), so many peers cannot flush a busy peer's entry and with it its limit; the lines the
    evicted one held are reported with the next line admitted."""
    limiter = PeerLogLimiter(burst=2, period=60.0, cap=4, clock=lambda: 0.0)
    assert [limiter.admit("busy") for _ in range(50)] == [0, 0] + [None] * 48   # more than a quarter of all
    for i in range(100):
        limiter.admit(f"quiet{i}")
    assert len(limiter) == 4
    assert limiter.admit("busy") is None   # still over its limit: its entry stayed


def counts(limiter: PeerLogLimiter) -> dict[object, int]:
    return {peer: entry.count for peer, entry in limiter._peers.items()}


def test_past_the_cap_the_entry_with_the_smallest_count_is_evicted() -> None:
    """Review revcfg remark: the smallest entry was found by a scan of the table (O(cap) per line
    while peers rotate past the cap), now through a heap of records updated lazily.  A peer whose
    record in the heap is older than its count (it was the smallest when pushed) is not evicted for
    it: the smallest count is, and the newcomer carries it + 1 (Space-Saving)."""
    limiter = PeerLogLimiter(burst=2, period=60.0, cap=3, clock=lambda: 0.0)
    for peer in ("a", "b", "c"):
        limiter.admit(peer)
    for _ in range(5):
        limiter.admit("a")   # a's record (count 1) now stale
    limiter.admit("c")
    limiter.admit("d")
    assert counts(limiter) == {"a": 6, "c": 2, "d": 2}   # b (1) went, not a
    limiter.admit("e")
    assert counts(limiter)["a"] == 6 and counts(limiter)["e"] == 3 and len(limiter) == 3   # c or d (2) went


def test_the_evictions_match_space_saving_over_a_long_skewed_stream() -> None:
    """Against a model of Space-Saving that scans for the smallest count: after each line the
    counts agree, each evicted peer had the smallest count (any of those tied), and the heap holds
    one record per peer (it does not grow with the lines)."""
    rng = random.Random(1)
    cap = 8
    limiter = PeerLogLimiter(burst=2, period=60.0, cap=cap, clock=lambda: 0.0)
    model: dict[object, int] = {}
    evictions = 0
    for _ in range(5000):
        peer = f"p{min(int(rng.paretovariate(0.8)), 60)}"   # a few busy peers, many rare ones
        limiter.admit(peer)
        if peer in model or len(model) < cap:
            model[peer] = model.get(peer, 0) + 1
        else:
            (gone,) = set(model) - set(counts(limiter))
            assert model[gone] == min(model.values())
            model[peer] = model.pop(gone) + 1
            evictions += 1
        assert counts(limiter) == model
        assert len(limiter._heap) == len(model)
    assert evictions > 1000   # the stream did rotate past the cap
