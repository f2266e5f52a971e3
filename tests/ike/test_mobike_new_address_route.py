"""Review revsweep2 F2: after a MOBIKE move that passed its return routability check, a full-tunnel hub
has no exclude route for the peer's new address, and nothing asks for one: the Child SAs' ESP, MIGRATEd
there, follows the full tunnel's routes into the TUN.

Since review revfull3 F2 the gate trusts a MOBIKE SA's IKE only to ``esp_remote`` (exclude_trust.
authenticated_peer), so the update's answer and the COOKIE2 check to the new address leave by the uplink's
interface without a route (rightly: nothing is proven yet).  When the check's answer comes back, the engine
moves ``esp_remote`` there and the service MIGRATEs the Child SAs (mobility._follow_peers, _move_children);
mobility._route_ready waits only while the address is in ``gate.waiting``, which only a datagram sent
there puts it in, and the gateway has nothing more to send: its next IKE to the new address is its DPD
(sent only when no ESP comes in: the client's keeps coming), an answer to the client's next request (a
strongSwan client without dpd_delay sends none), or a rekey, hours later.  Meanwhile every packet of the
hub to the client goes into the TUN (dropped there as esp_loop, csrc/ownesp.c).  revlast2's F3 note ("the
next IKE there is PROVEN; mobility._route_ready waits for it") and _route_ready's docstring ("a MOBIKE move
of ESP comes after the return routability check, whose request the gate held already") describe the time
before revfull3 F2.

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function (as
IkeService.exclude_routes makes them, the full tunnel's halves as the TUN's routes); the netlink is a
recorder.  The site moves; the MIGRATEs to its new address go out, and no exclude route is asked for it,
before or after."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.dataplane import pipe
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer


class RecordingRoutes(Routes):
    """Also records how many MIGRATEs the worker had been sent when each exclude route was asked for."""

    def __init__(self, worker_log: list[Any]) -> None:
        super().__init__()
        self.worker_log = worker_log
        self.migrates_before: dict[Any, int] = {}

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        for p in peers:
            self.migrates_before.setdefault(p, sum(isinstance(m, pipe.Migrate) for m in self.worker_log))
        return super().ensure(peers, nets)


def test_the_gateways_child_sas_are_not_migrated_to_a_checked_address_without_its_exclude_route() -> None:
    moved = ("203.0.113.50", 40000)

    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        routes = RecordingRoutes(gw.worker.log)
        svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                       lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH (a full-tunnel hub)
        gw.nat[0] = moved   # the site's new address (MOBIKE: it sends UPDATE_SA_ADDRESSES from there)
        assert gw.site_sa(0).update_addresses()
        await gw.settle()
        migrates = [m for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        assert migrates and all(str(m.new_remote.addr) == moved[0] for m in migrates), (
            "(the premise: the check passed and the Child SAs were MIGRATEd to the new address)")
        new = ip_address(moved[0])
        assert new in routes.migrates_before, (
            f"the Child SAs were MIGRATEd to {moved[0]} ({len(migrates)} MIGRATEs) and no exclude route was ever "
            f"asked for it (routes: {sorted(map(str, routes.held))}): the hub's ESP to the site goes into the "
            f"full tunnel's TUN until the gateway next sends IKE there")
        assert routes.migrates_before[new] == 0, "the exclude route was asked for only after the MIGRATEs"

    run(body())
