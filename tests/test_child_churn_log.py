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

import pytest
from test_ikeservice_peers import connected, run

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
