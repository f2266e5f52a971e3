"""Review revsweep4 F2: the sweep after a batch whose peer moved on meanwhile (mobility._sweep_passed,
h/fixsweep3) removes the exclude route of the address the Child SAs are still at, so their ESP goes into the
TUN (dropped there, esp_loop) until the next batch MIGRATEs them.

_sweep_passed keeps, of ``move.left``, the addresses a Child SA is at and decides to sweep only for the
others; but the sweep it asks for (IkeService.sweep_excludes -> ExcludeGate.sweep) keeps only what
kept_addresses names, the IKE SA's ``esp_remote`` (the peer's newest address), not where its Child SAs
still send.  After a batch to Y the peer already moved on to Z: the Child SAs carry ESP to Y until the next
batch (the budget: up to MOVE_INTERVAL; then Z's route wait), and Y's exclude route is removed at once.
The paced sweep's timer (_paced_sweep) has the same effect whenever it fires between an IKE SA's move and
its Child SAs' MIGRATE.  Before h/fixsweep3 a move's own sweep ran only once the Child SAs were at the IKE
SA's path.

The harness of test_mobike_moving_peer_routes.py (review revsweep3 F3's proof): the real IkeService
(test_ikeservice_peers.Gateway: the worker's request handling and C fast path in process, a MOBIKE site
behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves as the TUN's routes,
the moves' budget always allowing; the netlink is a recorder.  The site's next move is delivered while the
MIGRATE of each batch is under way.  Checked at each MIGRATE: the address the Child SA sends its ESP to
until this MIGRATE still has its exclude route."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from typing import Any

import pytest
from test_ikeservice_peers import Gateway, connected, run, site_ip
from test_mobike_exclude_checked import HALVES
from test_mobike_move_sweep import SweptRoutes

from tunsec.services.ike import mobility
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

ADDRESSES = [(f"203.0.113.{50 + n}", 40000 + n) for n in range(4)]


async def move_on(gw: Gateway, site: Any, nxt: Any) -> None:
    """The peer moves on to ``nxt`` (its update and the return routability check pass) while a batch runs."""
    gw.nat[0] = nxt
    assert site.update_addresses()
    await gw.settle(wait_tasks=False)
    assert gw.service.endpoint.sas[0].esp_remote == nxt, "(the premise: the check passed)"


async def moving_gateway() -> tuple[Gateway, SweptRoutes, list[asyncio.Task[Any]]]:
    """A MOBIKE site up, its address's exclude route in (proven in IKE_AUTH), the real gate whose netlink
    jobs are listed, a moves' clock that never makes a batch or a sweep wait."""
    gw = await connected(1, mobike=True)
    svc = gw.service
    ticks = iter(range(0, 10**6, 10))
    svc.move_clock = lambda: float(next(ticks))
    routes = SweptRoutes(gw.worker.log)
    jobs: list[asyncio.Task[Any]] = []

    def spawn(coro: Any) -> asyncio.Task[Any]:
        jobs.append(svc._spawn(coro))
        return jobs[-1]
    svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], spawn,  # type: ignore[arg-type]
                                   lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
    routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]
    return gw, routes, jobs


def test_the_sweep_after_a_batch_keeps_the_route_of_the_address_the_child_sas_still_send_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw, routes, jobs = await moving_gateway()
        svc, site = gw.service, gw.site_sa(0)
        cut: list[str] = []   # addresses whose route was gone while a Child SA still sent its ESP there
        original = mobility._migrate
        upcoming = iter(ADDRESSES[1:])

        async def migrate(self: Any, state: Any, moved: Any, local: Any) -> Any:
            await asyncio.gather(*(j for j in jobs if not j.done()))   # the netlink jobs asked so far are done
            if state.remote.addr not in routes.held:
                cut.append(str(state.remote.addr))
            nxt = next(upcoming, None)
            if nxt is not None:   # the peer moves on while this batch runs
                await move_on(gw, site, nxt)
            return await original(self, state, moved, local)
        monkeypatch.setattr(mobility, "_migrate", migrate)

        gw.nat[0] = ADDRESSES[0]
        assert site.update_addresses()
        await gw.settle()
        assert [str(c.remote.addr) for c in svc.children.values()] == [ADDRESSES[-1][0]], "(the premise)"
        assert not cut, (
            f"the exclude routes of {cut} were removed while the Child SAs still sent their ESP there (into the "
            f"TUN until the next batch): _sweep_passed's sweep keeps the IKE SA's newest address, not its Child "
            f"SAs'")

    run(body())
