"""Review revsweep2 F3, the move's own sweep: the exclude route of an address a MOBIKE site left goes once
its Child SAs left it too (mobility._sweep_left), while its IKE SA lives on; not when some routed IKE SA
ends, and not before the MIGRATEs (the Child SAs' ESP goes there until then).

An IKE SA keeps only the address it is at (exclude_trust.kept_address: a MOBIKE SA's ``esp_remote``), so
without this the route of the address it left stayed until an IKE SA that kept a route ended or a reload
came: the host's traffic to that address (inside a tunnel's network, someone else's by then) left by the
uplink in clear.  Forgetting the IKE SA names the address it authenticated from (reload.forgotten: the
proof test_exclude_sweep_mobike_left.py), which covers one move; the move's sweep covers a chain of them.

The real IkeService (test_ikeservice_peers.Gateway: the worker's request handling and C fast path in
process, a MOBIKE site behind a NAT) with the real ExcludeGate and trust function; the netlink is a
recorder that also records how many MIGRATEs had gone to the worker when each route was removed."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address, ip_network
from typing import Any

from test_ikeservice_peers import Gateway, connected, run, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.dataplane import pipe
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.mobility import MOVE_INTERVAL

Y = ("203.0.113.50", 40000)
Z = ("203.0.113.60", 40001)


class SweptRoutes(Routes):
    """Records the routes removed, and the MIGRATEs the worker had been sent by then."""

    def __init__(self, worker_log: list[Any]) -> None:
        super().__init__()
        self.worker_log = worker_log
        self.removed: dict[Any, int] = {}

    def remove(self, peers: list[Any]) -> None:
        for p in peers:
            self.held.pop(p, None)
            self.removed[p] = sum(isinstance(m, pipe.Migrate) for m in self.worker_log)


async def _gateway(tun_nets: list[Any]) -> tuple[Gateway, SweptRoutes]:
    """A MOBIKE site up, its address's exclude route in (proven in IKE_AUTH), the real gate."""
    gw = await connected(1, mobike=True)
    svc = gw.service
    routes = SweptRoutes(gw.worker.log)
    svc.sockets.gate = ExcludeGate(routes, lambda: tun_nets, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                   lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
    routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]
    return gw, routes


async def _moves(gw: Gateway, to: tuple[str, int]) -> int:
    """The site moves to ``to`` (its update and the check pass); the MIGRATEs the worker got in all."""
    gw.nat[0] = to
    assert gw.site_sa(0).update_addresses()
    await gw.settle()
    assert gw.service.endpoint.sas[0].esp_remote == to, "(the premise: the check passed)"
    return sum(isinstance(m, pipe.Migrate) for m in gw.worker.log)


def test_the_route_of_the_address_a_mobike_site_left_goes_after_its_child_sas_moved() -> None:
    """A full tunnel: the site moves from its first address to Y; the first address's route goes (the
    IKE SA still up), after the MIGRATEs, and Y's stays."""
    async def body() -> None:
        gw, routes = await _gateway(HALVES)
        x = ip_address(site_ip(0))
        migrates = await _moves(gw, Y)
        assert migrates, "(the premise: the Child SAs were MIGRATEd)"
        assert x in routes.removed, (
            f"the exclude route of {x}, which the site left for {Y[0]} by MOBIKE, stays while its IKE SA lives "
            f"(routes: {sorted(map(str, routes.held))})")
        assert routes.removed[x] == migrates, "the route went before the Child SAs' ESP left the address"
        assert ip_address(Y[0]) in routes.held and ip_address(Y[0]) not in routes.removed

    run(body())


def test_each_address_of_a_chain_of_mobike_moves_loses_its_route_once_left() -> None:
    """X -> Y -> Z: Y's route (added after its check, review revsweep2 F2) goes once the site left Y
    too; forgetting the IKE SA would name only X (where it authenticated) and Z (where it is)."""
    async def body() -> None:
        gw, routes = await _gateway(HALVES)
        await _moves(gw, Y)
        assert ip_address(Y[0]) in routes.held, "(the premise: Y got its route)"
        await _moves(gw, Z)
        # the moves' sweeps are paced, one per MOVE_INTERVAL (review revsweep3 F2): the one for Y waits its
        # turn, a timer due before this sleep ends (the last sweep, X's, was before it began)
        await asyncio.sleep(MOVE_INTERVAL)
        await gw.settle()
        assert ip_address(Y[0]) in routes.removed, (
            f"the route of {Y[0]}, left for {Z[0]}, stays: {sorted(map(str, routes.held))}")
        assert ip_address(Z[0]) in routes.held and gw.service.endpoint.sas[0].state.value == "established"

    run(body())


def test_a_site_leaving_a_tunnels_network_by_mobike_loses_that_addresss_route() -> None:
    """A split tunnel whose network holds the site's first address (a client inside a site's or a pool's
    network moving out): Y is not captured, so it holds no route; the first address's route goes at the
    move all the same."""
    async def body() -> None:
        gw, routes = await _gateway([ip_network(f"{site_ip(0)}/32")])
        await _moves(gw, Y)
        assert ip_address(Y[0]) not in routes.held, "(the premise: Y is outside the TUN's routes)"
        assert ip_address(site_ip(0)) in routes.removed, f"{site_ip(0)}'s route stays after the site left it"

    run(body())
