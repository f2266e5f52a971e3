"""Review revsweep3 F3: a MOBIKE peer that moves again while each MIGRATE batch runs keeps the exclude route of
every address it and its Child SAs left, for as long as it goes on: mobility._move_children sweeps
``move.left`` only when a batch ends with ``move.path`` unchanged, and each new move adds to ``left`` and
(ExcludeGate.expect) a route for the new address.

The addresses left are left by the Child SAs too once a later batch MIGRATEd them on: nothing sends there any
more, yet their routes stay (the host's traffic to them leaves by the uplink in clear, outside the full
tunnel: revsweep2 F3's harm) and they pile up, one per move, in the kernel's table and in ``move.left``.
A peer that controls (or receives at: anyone on the gateway's uplink path does) a range of addresses, moving
on whenever a batch runs, holds a route for each.

Fixed (h/fixsweep3): after each batch without a retry, the addresses of ``move.left`` no Child SA of the
IKE SA is at, nor the IKE SA, are swept (mobility._sweep_passed).

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves
as the TUN's routes, the moves' budget always allowing (a clock that runs on); the netlink is a recorder.
The site's next move is delivered while the MIGRATE of each batch is under way (the worker's answer is what
the batch awaits), as a peer's update arriving during the batch would be."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from typing import Any

import pytest
from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES
from test_mobike_move_sweep import SweptRoutes
from test_sweep_keeps_child_route import move_on

from tunsec.services.ike import mobility
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

ADDRESSES = [(f"203.0.113.{50 + n}", 40000 + n) for n in range(6)]


def test_addresses_a_moving_peers_child_sas_left_lose_their_routes_while_it_moves_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        ticks = iter(range(0, 10**6, 10))
        svc.move_clock = lambda: float(next(ticks))   # the budget never makes a batch wait
        routes = SweptRoutes(gw.worker.log)
        jobs: list[asyncio.Task[Any]] = []   # the gate's netlink jobs (route adds, the sweeps' removals)

        def spawn(coro: Any) -> asyncio.Task[Any]:
            jobs.append(svc._spawn(coro))
            return jobs[-1]
        svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], spawn,  # type: ignore[arg-type]
                                       lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        x = ip_address(site_ip(0))
        routes.held[x] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
        site = gw.site_sa(0)
        targets: list[str] = []     # where each MIGRATE took the Child SAs
        held_then: list[set[Any]] = []   # the routes held when each MIGRATE began
        original = mobility._migrate
        upcoming = iter(ADDRESSES[1:])

        async def migrate(self: Any, state: Any, moved: Any, local: Any) -> Any:
            targets.append(str(moved.addr))
            await asyncio.gather(*(j for j in jobs if not j.done()))   # the netlink jobs asked so far are done
            held_then.append(set(routes.held))
            nxt = next(upcoming, None)
            if nxt is not None:   # the peer moves on while this batch runs
                await move_on(gw, site, nxt)
            return await original(self, state, moved, local)
        monkeypatch.setattr(mobility, "_migrate", migrate)

        gw.nat[0] = ADDRESSES[0]
        assert site.update_addresses()
        await gw.settle()
        assert targets == [a for a, _ in ADDRESSES], (
            f"(the premise: one batch per address, the Child SAs MIGRATEd to each in turn: {targets})")
        # when the Child SAs go on to ADDRESSES[k] they are at ADDRESSES[k-1]: X and ADDRESSES[:k-1] were
        # left by the IKE SA and its Child SAs, by one batch at least
        k = len(ADDRESSES) - 1
        left = [x, *(ip_address(a) for a, _ in ADDRESSES[:k - 1])]
        stale = [str(a) for a in left if a in held_then[k]]
        assert not stale, (
            f"when the Child SAs moved on to {ADDRESSES[k][0]}, the exclude routes of {stale}, which the IKE SA "
            f"and its Child SAs had left a batch or more before, were all still held: a peer moving during each "
            f"batch keeps one route per address it visited (move.left: {len(left)} addresses)")

    run(body())
