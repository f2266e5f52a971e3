"""What h/fixsweep3's fixes of review revsweep3 F1 and F2 must keep.

F1: mobility._route_ready now asks the gate again (ExcludeGate.unrouted) for an address that still needs its
exclude route, as a MOBIKE move's checked address dropped at WAITING_MAX does.  Only a proven address may be
asked for: a NAT float without MOBIKE proves nothing (exclude_trust: Trust.UNPROVEN, review revfull4 F2), and
its Child SAs waiting for a route there must not add one (review revfull F1: an address of the peer's choosing
routed around the full tunnel, in clear).

F2: the sweeps of addresses MOBIKE SAs left are paced (mobility._paced_sweep, one timer): one asked for
within MOVE_INTERVAL of the last runs when its turn comes, also when a worker restart cancelled the timer that
was waiting for it (IkeService._cancel_timers) -- the next move's sweep asks for a new one.

F3: after each batch the addresses the IKE SA's Child SAs left are swept (mobility._sweep_passed), not one a
Child SA of it is still at (one given up after MIGRATE_TRIES, rekeyed where it is: its ESP goes there until
its successor is up).

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in process,
a site behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves as the TUN's
routes; the netlink is a recorder.  The moves' clock is set by hand where the pacing is looked at."""

from __future__ import annotations

import asyncio
import math
import socket
from ipaddress import ip_address

from test_ikeservice_peers import Gateway, connected, run, site_ip
from test_mobike_exclude_checked import HALVES
from test_mobike_move_sweep import SweptRoutes

from tunsec.dataplane import pipe
from tunsec.services.ike import mobility
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.mobility import MOVE_INTERVAL

FLOATED = ("203.0.113.70", 40000)


def _gate(gw: Gateway) -> SweptRoutes:
    svc = gw.service
    routes = SweptRoutes(gw.worker.log)
    svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                   lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
    routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
    return routes


def test_a_float_without_mobike_gets_no_exclude_route_by_its_child_sas_waiting_for_one() -> None:
    """A site without MOBIKE floats (its DPD from a new NAT mapping, an address the full tunnel captures):
    the gate answers nothing there and asks no route, and the MIGRATE's wait asks none either."""
    async def body() -> None:
        gw = await connected(1, mobike=False)
        routes = _gate(gw)
        gw.nat[0] = FLOATED
        gw.site_sa(0).send_liveness()
        await gw.settle()
        svc = gw.service
        assert svc.endpoint.sas[0].esp_remote == FLOATED, "(the premise: the IKE SA floated)"
        assert svc.sockets.gate is not None and svc.sockets.gate.stats.unproven_float, (
            "(the premise: the gate refused to answer there)")
        assert any(isinstance(m, pipe.Migrate) for m in gw.worker.log), "(the premise: the Child SAs followed)"
        assert ip_address(FLOATED[0]) not in routes.asked, (
            f"an exclude route was asked for {FLOATED[0]}, where a peer without MOBIKE floated (unproven): "
            f"routes asked {sorted(map(str, routes.asked))}")

    run(body())


def test_a_paced_sweep_whose_timer_a_worker_restart_cancelled_comes_with_the_next_move() -> None:
    """A MOBIKE site without Child SAs moves X -> Y (its sweep at once: X goes), Y -> Z (its sweep waits its
    turn), a worker restart cancels the service's timers, then Z -> W within the interval: W's move asks for a
    sweep again, which runs once the interval is over, taking Y's and Z's routes."""
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        now = [1000.0]
        svc.move_clock = lambda: now[0]
        routes = _gate(gw)
        site = gw.site_sa(0)
        for child in list(site.children):   # no Child SA: each move sweeps (mobility._move, not _strays)
            site.delete_child(child.unique_id)
        await gw.settle()
        moves = [("203.0.113.50", 40000), ("203.0.113.60", 40001), ("203.0.113.80", 40002)]
        for n, to in enumerate(moves):
            gw.nat[0] = to
            assert site.update_addresses()
            await gw.settle()
            assert svc.endpoint.sas[0].esp_remote == to, "(the premise: the check passed)"
            if n == 0:
                assert ip_address(site_ip(0)) in routes.removed, "(the premise: the first sweep ran at once)"
            if n == 1:
                assert ip_address(moves[0][0]) in routes.held, "(the premise: the second sweep waits its turn)"
                svc._cancel_timers()   # a worker restart (restart.py) cancels the timer it waits on
        now[0] += MOVE_INTERVAL
        await asyncio.sleep(MOVE_INTERVAL)   # the timer W's move started is due within it
        await gw.settle()
        stale = [a for a, _ in moves[:2] if ip_address(a) in routes.held]
        assert not stale, (
            f"the routes of {stale}, left by the site, stay: the sweep W's move asked for never ran "
            f"(held: {sorted(map(str, routes.held))})")
        assert ip_address(moves[2][0]) in routes.held

    run(body())


def test_the_sweep_after_a_batch_keeps_the_address_a_child_sa_stayed_at() -> None:
    """The site moves from X to Y by MOBIKE while another change holds ``_changes``: the IKE SA is at Y, its
    Child SA still at X (as one given up would stay).  A batch's sweep of what was passed then leaves X in
    ``move.left`` and asks no sweep; X's route goes with the move's last sweep, once the Child SA left."""
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        routes = _gate(gw)
        (ike,) = svc._by_ike
        (child,) = gw.children_of(0)
        x, y = site_ip(0), ("203.0.113.50", 40000)
        await svc._changes.acquire()
        try:
            gw.nat[0] = y
            assert gw.site_sa(0).update_addresses()
            for _ in range(500):   # the update, the check and its answer (the mover left waiting on the lock)
                await gw.settle(wait_tasks=False)
                if svc.endpoint.sas[0].esp_remote == y:
                    break
                await asyncio.sleep(0.01)
            move = svc._moves[ike]
            assert svc.endpoint.sas[0].esp_remote == y and move.left == {x} and str(child.remote.addr) == x, (
                "(the premise: the IKE SA is at Y, its Child SA at X)")
            mobility._sweep_passed(svc, ike, move)
            pace = svc._left_sweep   # a sweep asked for: run (last) or waiting (timer)
            assert move.left == {x} and pace.last == -math.inf and pace.timer is None, (
                f"a batch's sweep took {x}, where a Child SA of the moving IKE SA still is")
        finally:
            svc._changes.release()
        await gw.settle()
        assert str(child.remote.addr) == y[0] and ip_address(x) in routes.removed, "(X's route goes at the end)"

    run(body())
