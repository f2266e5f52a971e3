"""Review revsweep3 F1: ExcludeGate.expect drops a checked MOBIKE address's exclude route when WAITING_MAX
addresses wait already (counted ``dropped``), and nothing asks for it again: the Child SAs are MIGRATEd
there all the same, and on a full-tunnel hub their ESP follows the TUN's routes until the gateway next
sends IKE there (DPD, an answer, a rekey), which is review revsweep2 F2 again, under load.

expect()'s docstring says "beyond: counted, and the next IKE there asks again"; that holds for check(),
whose datagram IKE retransmits, but after a MOBIKE check there is no next IKE to the new address (that was
F2's point), and mobility._route_ready waits only while the address is in ``gate.waiting``: a dropped one
is not, so the MIGRATE goes at once.

WAITING_MAX (64) addresses wait while one netlink job adds their routes: a burst of clients authenticating
on a full-tunnel hub (each IKE_AUTH answer to a captured address waits for its route), e.g. after a
restart, or other MOBIKE clients moving at once.  Here the 64 are expect()ed captured addresses whose
netlink job is in flight (blocked until the site's move settled), which is the state such a burst leaves
the gate in.

Fixed (h/fixsweep3): while the Child SAs wait for the route of an address their MOBIKE SA proved,
mobility._route_ready asks the gate again (ExcludeGate.unrouted), which queues it once there is room.

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function, the full tunnel's
halves as the TUN's routes; the netlink is a recorder."""

from __future__ import annotations

import asyncio
import socket
import threading
from ipaddress import ip_address
from typing import Any

from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.dataplane import pipe
from tunsec.services.ike.exclude_gate import WAITING_MAX, ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

MOVED = ("203.0.113.50", 40000)


class SlowRoutes(Routes):
    """The first netlink job (the burst's) waits for ``release``; records the MIGRATEs sent before each
    address's route was asked for."""

    def __init__(self, worker_log: list[Any]) -> None:
        super().__init__()
        self.worker_log = worker_log
        self.release = threading.Event()
        self.migrates_before: dict[Any, int] = {}

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        for p in peers:
            self.migrates_before.setdefault(p, sum(isinstance(m, pipe.Migrate) for m in self.worker_log))
        self.release.wait(30)
        return super().ensure(peers, nets)

    def remove(self, peers: list[Any]) -> None:   # the sweep's (the move's own, mobility._sweep_left)
        for p in peers:
            self.held.pop(p, None)


def test_a_checked_mobike_address_gets_its_exclude_route_before_the_migrate_also_after_a_burst() -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        routes = SlowRoutes(gw.worker.log)
        gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                           lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        svc.sockets.gate = gate
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
        try:
            for n in range(WAITING_MAX):   # the burst: 64 captured addresses wait, their job in flight
                gate.expect(ip_address(f"198.18.{n // 250}.{n % 250 + 1}"))
            assert len(gate.waiting) == WAITING_MAX and gate.stats.dropped == 0, "(the premise: a full wait list)"
            gw.nat[0] = MOVED   # the site moves (MOBIKE: UPDATE_SA_ADDRESSES from there, the check passes)
            assert gw.site_sa(0).update_addresses()
            for _ in range(2000):   # until the check's answer came (the burst's job still in flight)
                await gw.settle(wait_tasks=False)
                if svc.endpoint.sas[0].esp_remote == MOVED:
                    break
                await asyncio.sleep(0.01)
            assert svc.endpoint.sas[0].esp_remote == MOVED, "(the premise: the check passed)"
        finally:
            routes.release.set()
        for _ in range(3):
            await gw.settle()   # the burst's job ends; anything asked meanwhile goes in
        migrates = [m for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        assert migrates and all(str(m.new_remote.addr) == MOVED[0] for m in migrates), (
            "(the premise: the check passed and the Child SAs were MIGRATEd to the new address)")
        new = ip_address(MOVED[0])
        assert new in routes.migrates_before, (
            f"the Child SAs were MIGRATEd to {MOVED[0]} ({len(migrates)} MIGRATEs) and its exclude route was "
            f"never asked for (gate.stats.dropped = {gate.stats.dropped}; routes: {len(routes.held)}, "
            f"{new} among them: {new in routes.held}): expect() dropped it while {WAITING_MAX} addresses waited, "
            f"and nothing is sent there to ask again, so the hub's ESP to the site goes into the TUN")
        assert routes.migrates_before[new] == 0, "the exclude route was asked for only after the MIGRATEs"

    run(body())
