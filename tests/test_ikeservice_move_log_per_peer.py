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

import dataclasses
import functools
import itertools
import logging

import pytest
from test_ikeservice_migrate_retry import failure_logs, refuse_migrates
from test_ikeservice_move_budget import FakeClock
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, psk_ike, run, site_ip, site_net

from tunsec.ike.config import RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.services.ike import mobility

CHILDREN = 16


async def _two_sites() -> Gateway:
    """Site 0 with CHILDREN Child SAs in one IKE SA, site 1 with one; the moves' clock a fake one."""
    gw = Gateway(2, mobike=False)
    await gw.start()
    gw.service.move_clock = FakeClock()
    cfg = dataclasses.replace(
        psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                site_net(0), "10.1.0.0/16"),
        mobike=False,
        children=tuple(child_config(f"c{k}", site_net(0), f"10.1.{k}.0/24", "aes128gcm16") for k in range(CHILDREN)))
    gw.sites[0] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI)))
    gw.sites[0].initiate("site0", "c0", 0.0)
    await gw.settle()
    for k in range(1, CHILDREN):
        gw.site_sa(0).initiate(f"c{k}")
        await gw.settle()
    gw.connect(1)
    await gw.settle()
    assert len(gw.service.children) == CHILDREN + 1
    return gw


def test_one_peers_failed_moves_do_not_hold_back_another_peers_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Site 0's 16 Child SAs follow a NAT rebinding while the worker refuses every MIGRATE: its lines
    stop at its burst.  Then site 1 is rebound too: its line is logged.  On main site 0 had spent the
    service's one limit, and site 1's line was held."""
    monkeypatch.setattr(mobility, "MIGRATE_BACKOFF", 1e6)

    async def body() -> None:
        gw = await _two_sites()
        burst = gw.service._move_log.burst
        refuse_migrates(gw, 10**6)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            gw.nat[0] = (site_ip(0), 40000)
            gw.site_sa(0).send_liveness()
            await gw.settle()
            assert gw.service.events.migrate_failures[("gw", "net")] + \
                sum(gw.service.events.migrate_failures[("gw", f"c{k}")] for k in range(CHILDREN)) == CHILDREN
            assert len(failure_logs(caplog)) == burst   # site 0's own share, the rest held
            gw.nat[1] = (site_ip(1), 40001)
            gw.site_sa(1).send_liveness()
            await gw.settle()
        lines = failure_logs(caplog)
        assert len(lines) == burst + 1 and f"to {site_ip(1)}:40001" in lines[-1], lines[-2:]

    run(body())
