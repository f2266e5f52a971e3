"""Review revfinal F1: the addresses a MOBIKE SA left (``IkeMove.left``) are kept by every sweep while the move
is under way (IkeService.sweep_excludes, review revsweep4 F2's fix, 10c418db), yet a move that ends without its
own sweep (mobility._sweep_left) lets them go with no sweep asked for: a worker restart clears ``_moves``
(restart.worker_restarted) and renegotiates the Child SAs where their IKE SAs are, so no ESP goes to the
address left any more, but its exclude route stays until some other IKE SA's end or move happens to sweep:
on a quiet gateway, for as long as the IKE SA lives.  The host's traffic to that address (inside a tunnel's
network, someone else's by then) leaves by the uplink in clear (revsweep2 F3's harm).

The likely way there: a move whose MIGRATE the worker refuses (its retry pending, ``move.busy``, the address
left held in ``move.left``) -- a worker in trouble, which is what a restart follows.

The harness of test_sweep_keeps_child_route.py (moving_gateway): the real IkeService with the worker's
request handling and C fast path in process, the real ExcludeGate and trust function, the full tunnel's halves
as the TUN's routes, the netlink a recorder, a moves' clock that never makes anything wait."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from test_ikeservice_peers import InProcessWorker, _now, run, site_ip
from test_mobike_move_sweep import _gateway
from test_sweep_keeps_child_route import moving_gateway

from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.services.ike import mobility

Y = ("203.0.113.50", 40000)


def test_a_worker_restart_during_a_move_does_not_keep_the_route_of_the_address_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw, routes, jobs = await moving_gateway()
        svc, site = gw.service, gw.site_sa(0)
        x = ip_address(site_ip(0))

        async def refused(self: Any, state: Any, moved: Any, local: Any) -> WorkerError:
            return WorkerError("MIGRATE", Errno.EIO)   # the worker in trouble: the move's retry is pending
        monkeypatch.setattr(mobility, "_migrate", refused)
        gw.nat[0] = Y
        assert site.update_addresses()
        await gw.settle()
        (move,) = svc._moves.values()
        assert move.busy and str(x) in move.left, "(the premise: the move is under way, the address left kept)"
        assert x in routes.held and ip_address(Y[0]) in routes.held, "(the premise: both routes in)"

        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)   # the worker restarts
        await svc.worker_restarted()
        await gw.settle()
        await asyncio.gather(*(j for j in jobs if not j.done()))
        children = [str(c.remote.addr) for c in svc.children.values()]
        assert children == [Y[0]], f"(the premise: the Child SA renegotiated where its IKE SA is: {children})"
        assert not svc._moves, "(the premise: the restart ended the move)"
        assert x not in routes.held, (
            f"the exclude route of {x}, which the MOBIKE SA left for {Y[0]} and no SA sends to any more, stays "
            f"after the worker restart ended the move: its addresses left went with it, no sweep asked for "
            f"(routes held: {sorted(map(str, routes.held))})")

    run(body())


def test_an_ike_sa_gone_during_a_move_does_not_keep_the_route_of_an_address_it_passed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for an IKE SA that ends while its move is under way (ikesas._ike_lineage_gone pops the move):
    the sweep that its end asks for (reload.forgotten) names only where it authenticated (X) and where it is
    (Z); when neither holds a route (a split tunnel whose network holds only Y, the address it passed), no
    sweep runs, and Y's route stays until some other peer's end or move sweeps."""
    async def body() -> None:
        z = ("192.0.2.77", 40001)
        gw, routes = await _gateway([ip_network(f"{Y[0]}/32")])
        svc, site = gw.service, gw.site_sa(0)
        routes.held.clear()   # X, the site's first address, is outside the TUN's routes: no route

        async def refused(self: Any, state: Any, moved: Any, local: Any) -> WorkerError:
            return WorkerError("MIGRATE", Errno.EIO)   # the move's retry pending: it is under way
        monkeypatch.setattr(mobility, "_migrate", refused)
        for to in (Y, z):
            gw.nat[0] = to
            assert site.update_addresses()
            await gw.settle()
        (move,) = svc._moves.values()
        assert move.busy and Y[0] in move.left, f"(the premise: Y passed, kept while the move is under way: {move})"
        assert ip_address(Y[0]) in routes.held, "(the premise: Y got its route after its check)"

        site.delete(_now())   # the IKE SA ends mid-move
        await gw.settle()
        assert not svc.endpoint.sas and not svc._moves, "(the premise: the IKE SA and its move are gone)"
        assert ip_address(Y[0]) not in routes.held, (
            f"the exclude route of {Y[0]}, which the MOBIKE SA passed (kept by the sweeps while its move was under "
            f"way), stays after the IKE SA ended: its move's addresses left went with it, no sweep asked for")

    run(body())
