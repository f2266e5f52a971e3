"""Review revsweep3 F2: a MOBIKE IKE SA whose Child SAs are gone moves as often as its peer answers return
routability checks, and each move costs the gateway an exclude route added (ExcludeGate.expect), a sweep
(a pass over every IKE SA, mobility._sweep_left -> IkeService.sweep_excludes) and a route removed: unpaced.

mobility._move paces a move's MIGRATEs (one batch per MOVE_INTERVAL, MOVE_BURST at once: "each batch costs
two MIGRATEs per Child SA under _changes, which every peer's install takes too"); h/fixsweep2's sweep of the
address left rides on that pacing when there are Child SAs to move (it runs after the batch), but an IKE SA
that has none (its peer deleted them; the service keeps its handle, so _follow_peers still sees it) takes
``not _strays`` and sweeps at once, at every move.  An authenticated peer alternating X and Y (an
UPDATE_SA_ADDRESSES and a COOKIE2 answer each) buys, per round trip, a pass over all IKE SAs (10,000 on a
busy gateway) and two netlink jobs in threads.  A sweep when an IKE SA is forgotten is coalesced per _pump
(reload.forgotten: ``_sweep_due``) and costs the peer a new IKE SA each; this one is neither.

Fixed (h/fixsweep3): the sweeps of addresses MOBIKE SAs left run at most once per MOVE_INTERVAL,
gateway-wide (mobility._paced_sweep); one asked for meanwhile waits for one timer.

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves
as the TUN's routes, the moves' clock stopped (IkeService.move_clock); the netlink is a recorder."""

from __future__ import annotations

import socket
from ipaddress import ip_address

from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.dataplane import pipe
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.mobility import MOVE_BURST

MOVES = 12


def test_a_childless_mobike_sas_moves_do_not_each_buy_a_sweep_and_two_netlink_jobs() -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        svc.move_clock = lambda: 1000.0   # the moves' budget does not refill: only what pacing allows
        routes = Routes()
        svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                       lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
        site = gw.site_sa(0)
        for child in list(site.children):   # the peer deletes its Child SAs, keeps its IKE SA
            site.delete_child(child.unique_id)
        await gw.settle()
        assert not svc.children, "(the premise: the gateway has no Child SA of the site left)"
        sweeps = 0
        sweep = svc.sweep_excludes

        def counted(reset: bool = False) -> None:
            nonlocal sweeps
            sweeps += 1
            sweep(reset)
        svc.sweep_excludes = counted   # type: ignore[method-assign]
        addresses = [("203.0.113.50", 40000), ("203.0.113.60", 40001)]
        for n in range(MOVES):   # X -> Y -> X ...: each an UPDATE_SA_ADDRESSES and an answered check
            to = addresses[n % 2]
            gw.nat[0] = to
            assert site.update_addresses()
            await gw.settle()
            assert svc.endpoint.sas[0].esp_remote == to, "(the premise: the check passed)"
        assert not any(isinstance(m, pipe.Migrate) for m in gw.worker.log), "(the premise: nothing to MIGRATE)"
        assert sweeps <= MOVE_BURST, (
            f"{MOVES} MOBIKE moves of an IKE SA without Child SAs, the moves' clock stopped, made {sweeps} sweeps "
            f"(each a pass over every IKE SA) and {len(routes.asked)} route adds and {routes.removes} route "
            f"removals (netlink jobs in threads): its MIGRATEs would have been paced to {MOVE_BURST}, its sweeps "
            f"are not paced at all")

    run(body())
