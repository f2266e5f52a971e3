"""The service's lines of Child SAs following their peer are limited per peer (h/fixloglim).

IkeService._move_log (mobility.py: "CHILD_SA(s) follow their peer", a MIGRATE that failed, given up)
was one LogLimiter for all peers, 10 lines per 10 s: one peer that moves often (a NAT rebinding on
every request, MOBIKE), or whose MIGRATEs fail for many Child SAs at once, spent it, and another
peer's line of its Child SAs' move was then held.  It is a PeerLogLimiter charged to
IkeService.log_peer (refusal_log.peer_key), with a ceiling over all peers.

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway); the fault is injected into the fast path's migrate, the retries'
pause made long: nothing here depends on timing."""

from __future__ import annotations

import logging

import pytest
from test_ikeservice_migrate_retry import failure_logs, rebind, refuse_migrates
from test_ikeservice_move_budget import _site_with_children
from test_ikeservice_peers import run, site_ip

from tunsec.services.ike import mobility

CHILDREN = 16


def test_one_peers_failed_moves_do_not_hold_back_another_peers_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Site 0's 16 Child SAs follow a NAT rebinding while the worker refuses every MIGRATE: its lines
    stop at its burst.  Then site 1 is rebound too: its line is logged.  On main site 0 had spent the
    service's one limit, and site 1's line was held."""
    monkeypatch.setattr(mobility, "MIGRATE_BACKOFF", 1e6)

    async def body() -> None:
        gw, _ = await _site_with_children(CHILDREN, others=1)
        refuse_migrates(gw, 10**6)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            await rebind(gw, 0, 40000)
            assert gw.service.events.migrate_failures[("gw", "net")] == CHILDREN   # each counted
            burst = gw.service._move_log.burst
            assert len(failure_logs(caplog)) == burst   # site 0's own share, the rest held
            await rebind(gw, 1, 40001)
        lines = failure_logs(caplog)
        assert len(lines) == burst + 1 and f"to {site_ip(1)}:40001" in lines[-1], lines[-2:]

    run(body())
