"""Review revsweep3 F4: mobility._move_children waits for the exclude route of the path it read before it took
``_changes`` (``await _route_ready(self, move.path)``), then MIGRATEs to ``move.path`` as it is once it holds
the lock.  A MOBIKE move that lands while the mover waits for ``_changes`` (another peer's install or
MIGRATE holds it: under load, the usual case) has the Child SAs MIGRATEd to the newer address while that
address's exclude route is still going in: on a full-tunnel hub their ESP follows the TUN's routes (dropped
there as esp_loop, csrc/ownesp.c) until the netlink job ends, or for good if it fails (ROUTE_WAIT is not
waited either).  That is what _route_ready exists to prevent (review revmobfix F1), and h/fixsweep2's
expect() made a MOBIKE move rely on it.

Fixed (h/fixsweep3): the mover MIGRATEs only to the address whose route it waited for; if the peer moved on
meanwhile it goes round again, waiting for the newer address's route outside the lock.

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function, the full tunnel's halves
as the TUN's routes; the netlink is a recorder whose job for the second address is in flight until the
test ends.  The test holds ``_changes`` while the site moves twice, as another peer's change would."""

from __future__ import annotations

import asyncio
import socket
import threading
from ipaddress import ip_address
from typing import Any

import pytest
from test_ikeservice_peers import connected, run, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.dataplane import pipe
from tunsec.services.ike import mobility
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

Y = ("203.0.113.50", 40000)
Z = ("203.0.113.60", 40001)


class SlowZ(Routes):
    """Z's exclude route goes in only when ``release`` is set (a slow netlink job); the others at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        if ip_address(Z[0]) in peers:
            self.release.wait(30)
        return super().ensure(peers, nets)

    def remove(self, peers: list[Any]) -> None:
        for p in peers:
            self.held.pop(p, None)


async def _moved(gw: Any, to: tuple[str, int]) -> None:
    gw.nat[0] = to
    assert gw.site_sa(0).update_addresses()
    for _ in range(500):   # the update, the check and its answer (the tasks waiting on the lock left waiting)
        await gw.settle(wait_tasks=False)
        if gw.service.endpoint.sas[0].esp_remote == to:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"(the premise: the check of {to} passed)")


def test_the_child_sas_are_not_migrated_to_a_newer_address_before_its_exclude_route(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        routes = SlowZ()
        gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                           lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        svc.sockets.gate = gate
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]   # proven in IKE_AUTH
        unrouted: list[str] = []   # MIGRATE targets whose exclude route was not in when the MIGRATE went
        original = mobility._migrate

        async def migrate(self: Any, state: Any, moved: Any, local: Any) -> Any:
            if moved.addr not in routes.held:
                unrouted.append(f"{moved.addr} (waiting: {moved.addr in gate.waiting})")
            return await original(self, state, moved, local)
        monkeypatch.setattr(mobility, "_migrate", migrate)
        try:
            await svc._changes.acquire()   # another peer's change holds the lock
            try:
                await _moved(gw, Y)   # its route goes in; the mover waits for the lock
                await _moved(gw, Z)   # the site moves on; Z's route job is in flight
                assert ip_address(Y[0]) in routes.held and ip_address(Z[0]) in gate.waiting, "(the premise)"
            finally:
                svc._changes.release()
            # until the mover MIGRATEd, or a while (it waits for Z's route: well within ROUTE_WAIT, 5 s)
            for _ in range(200):
                await gw.settle(wait_tasks=False)
                if any(isinstance(m, pipe.Migrate) for m in gw.worker.log):
                    break
                await asyncio.sleep(0.01)
        finally:
            routes.release.set()
        await gw.settle()
        migrates = [str(m.new_remote.addr) for m in gw.worker.log if isinstance(m, pipe.Migrate)]
        assert migrates and migrates[-1] == Z[0], f"(the premise: the Child SAs followed to Z: {migrates})"
        assert not unrouted, (
            f"the Child SAs were MIGRATEd to {unrouted} before its exclude route was in: the mover waited for Y's "
            f"route, then took the newer path under _changes; on a full-tunnel hub their ESP goes into the TUN "
            f"until Z's netlink job ends")

    run(body())
