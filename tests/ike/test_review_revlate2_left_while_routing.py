"""Review revlate2, a proof of a known item (What remains: "a sweep skips an address whose route is still
being added (ExcludeGate.may_sweep looks at held and checked addresses only; review revsweep3 R1)"), not a
new finding: a MOBIKE SA that leaves an address while that address's exclude route is still being added
keeps the route until some unrelated sweep.  mobility._sweep_left asks ExcludeGate.may_sweep(left), which
looks only at the routes already held (and the checked-clear addresses); an address still in
``gate.waiting`` (its netlink job not done) is no reason to sweep, so no sweep is asked for, and its route
goes in after the IKE SA left it.  Nothing asks again: the move asked once.

The way there: an authenticated MOBIKE peer moves X -> Y, and on to Z before Y's route job ends (a slow
netlink job, the gate's one task busy with a batch of other peers' addresses, or a peer that answers its
return routability checks quickly).  Y's route stays while the IKE SA lives on at Z: the host's traffic to
Y (inside the full tunnel's halves; someone else's address by then) leaves by the uplink in clear (the harm
of review revsweep2 F3).  Shown for an IKE SA whose Child SAs are gone (``not _strays``: swept at once, no
route wait); the same root cause holds wherever ROUTE_WAIT expires with a left address still waiting
(_sweep_passed, the batch's end), for a move's early end (restart.worker_restarted,
ikesas._ike_lineage_gone), and for reload.forgotten's may_sweep.

The harness of test_mobike_move_sweep_pacing.py (review revsweep3 F2's proof): the real IkeService
(test_ikeservice_peers.Gateway: the worker's request handling and C fast path in process, a MOBIKE site
behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves as the TUN's routes;
the netlink a recorder whose route adds wait until the test lets them go (a slow netlink job)."""

from __future__ import annotations

import asyncio
import socket
import threading
from ipaddress import ip_address
from typing import Any

from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES
from test_mobike_move_sweep import SweptRoutes

from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.mobility import MOVE_INTERVAL

Y = ("203.0.113.50", 40000)
Z = ("203.0.113.60", 40001)


class SlowRoutes(SweptRoutes):
    """Route adds (ensure, in the gate's thread) wait for ``go``: a slow netlink job."""

    def __init__(self, worker_log: list[Any]) -> None:
        super().__init__(worker_log)
        self.go = threading.Event()
        self.started = threading.Event()

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        self.started.set()
        assert self.go.wait(10.0), "(the test never let the route job go)"
        return super().ensure(peers, nets)


def test_an_address_left_while_its_exclude_route_was_being_added_loses_that_route() -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc, site = gw.service, gw.site_sa(0)
        routes = SlowRoutes(gw.worker.log)
        svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                       lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
        for child in list(site.children):   # the peer deletes its Child SAs, keeps its IKE SA
            site.delete_child(child.unique_id)
        await gw.settle()
        assert not svc.children, "(the premise: no Child SA of the site left)"

        gw.nat[0] = Y   # X -> Y: Y proven, its exclude route asked for (ExcludeGate.expect), its job slow
        assert site.update_addresses()
        await gw.settle(wait_tasks=False)
        assert svc.endpoint.sas[0].esp_remote == Y, "(the premise: the check passed)"
        assert await asyncio.to_thread(routes.started.wait, 5.0), "(the premise: Y's route job runs)"
        gate = svc.sockets.gate
        assert ip_address(Y[0]) in gate.waiting and ip_address(Y[0]) not in routes.held, \
            "(the premise: Y's route is being added)"

        gw.nat[0] = Z   # Y -> Z before Y's route job ended
        assert site.update_addresses()
        await gw.settle(wait_tasks=False)
        assert svc.endpoint.sas[0].esp_remote == Z, "(the premise: the check passed)"

        routes.go.set()   # the netlink job ends: Y's route goes in, then Z's
        await asyncio.sleep(2 * MOVE_INTERVAL)   # any paced sweep has had its turn
        await gw.settle()
        assert ip_address(Z[0]) in routes.held, "(the premise: Z, where the IKE SA is, has its route)"
        assert svc.endpoint.sas[0].esp_remote == Z and svc.endpoint.sas[0].state.value == "established"
        assert ip_address(Y[0]) not in routes.held, (
            f"the exclude route of {Y[0]}, which the MOBIKE SA left for {Z[0]} while that route was being added, "
            f"stays while the IKE SA lives on: _sweep_left's may_sweep saw no route held for it then and asked "
            f"for no sweep (routes held: {sorted(map(str, routes.held))})")

    run(body())
