"""Review revlast2: the exclude-route sweep (h/revlast's kept_address, IkeService.sweep_excludes) still keeps
routes of addresses nobody proved, and drops one a peer proved while its ESP still goes there.

h/revlast made an up IKE SA without MOBIKE keep only the address it authenticated from.  Every other live
IKE SA still keeps its ``remote_addr``, proven or not, and the forgotten hook (reload.forgotten) still names
only an SA's ``remote_addr`` and ``esp_remote`` as the addresses whose routes may have gone stale:

- F1: a half-open IKE SA (one spoofed IKE_SA_INIT, nothing authenticated) keeps the exclude route of its
  source, e.g. the address a departed client proved: ExcludeGate.check answers a routed address before it
  asks the trust, and the host's traffic to it leaves around the full tunnel;
- F2: a non-MOBIKE IKE SA that floated keeps its authenticated address's route (kept_address) but, when
  it ends, its forgotten hook names only where it floated (no route there: the float proves nothing), so
  no sweep runs and that route outlives the IKE SA ("the moved one's own end at the latest" does not hold);
- F3: during a MOBIKE return routability check the sweep keeps the address under check (``remote_addr``,
  unproven) and drops ``esp_hold``, the proven address the Child SAs' ESP still goes to: that ESP then
  follows the full tunnel's routes into the TUN until the check ends.

Real engines (tests/ike/test_engine_vips.py's gateway and clients), the real ExcludeGate, the real
IkeService.sweep_excludes and reload.forgotten; the netlink is a recorder (as
test_float_keeps_no_exclude_route.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

from test_engine_float_refused import _connected
from test_engine_mobike_tunnel_address import CLIENT, _move
from test_engine_vips import GW, V4, client_cfg, gateway, pools
from test_float_unproven_dpd_fails import HALVES, NEW, Routes

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.services.ike import reload
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.record import IkeUpRecord
from tunsec.services.ike.service import IkeService


@dataclasses.dataclass
class Sweeper:
    """The real gate with a recording netlink, and the parts of IkeService that sweep_excludes and
    reload.forgotten read (the pump's part: _sweep_due runs sweep_excludes)."""

    net: Network
    ike_up: dict[bytes, IkeUpRecord]
    routes: Routes = dataclasses.field(default_factory=Routes)
    removed: list[Any] = dataclasses.field(default_factory=list)
    tasks: list[Any] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes.remove = self.removed.extend  # type: ignore[attr-defined]
        self.gate = ExcludeGate(self.routes, lambda: HALVES, lambda d: None, lambda: [],  # type: ignore[arg-type]
                                lambda c: self.tasks.append(asyncio.ensure_future(c)),  # type: ignore[arg-type]
                                lambda ip, data: authenticated_peer(self.net.nodes[GW], self.ike_up, ip, data))
        self.svc = SimpleNamespace(_moves={}, sockets=SimpleNamespace(gate=self.gate, draining=False),
                                   endpoint=self.net.nodes[GW],
                                   ike_up=self.ike_up, trusted=SimpleNamespace(remove=lambda spi: None),
                                   _sweep_due=False, _port_freed=False)

    def proven(self, addr: str) -> None:
        """A client proved ``addr``: the gate added its exclude route."""
        self.routes.held[ip_address(addr)] = self.routes.paths[2][0]

    async def sweep(self) -> None:
        IkeService.sweep_excludes(self.svc)  # type: ignore[arg-type]
        await asyncio.gather(*self.tasks)


def test_a_half_open_ike_sa_of_a_spoofed_ike_sa_init_does_not_keep_a_departed_clients_exclude_route() -> None:
    """F1: the sweep runs when the client that proved NEW leaves (its IKE SA forgotten); a half-open IKE SA
    from NEW then (one IKE_SA_INIT with NEW as its source, answered to NEW, never authenticated) keeps NEW's
    route.  Renewed within each half-open timeout, it keeps it for good."""
    async def run() -> None:
        net = Network()
        gw = gateway(net, pools())
        spoofer = net.add(NEW, IkeEndpoint([client_cfg("nobody.example", NEW, (V4,))]))
        spoofer.initiate("home", "net", net.now)
        (init,) = net.collect()
        net.deliver(init)   # only the IKE_SA_INIT: its answer goes to NEW, to nobody who answers
        net.collect()
        (half_open,) = gw.sas
        assert not half_open.is_closed and half_open.remote_addr[0] == NEW, "no half-open IKE SA (the premise)"
        s = Sweeper(net, {})
        s.proven(NEW)   # a client proved NEW and has left since
        await s.sweep()
        assert ip_address(NEW) in s.removed, (
            f"the exclude route of {NEW}, which no authenticated peer holds, was kept by a half-open IKE SA "
            f"that one spoofed IKE_SA_INIT made: IKE and the host's traffic to {NEW} leave around the full tunnel")
    asyncio.run(run())


def test_the_authenticated_address_route_of_a_floated_non_mobike_ike_sa_goes_when_that_ike_sa_ends() -> None:
    """F2: kept_address keeps CLIENT's route for the floated IKE SA; when the IKE SA ends (its peer deletes
    it, as after the DPD that fails at NEW), reload.forgotten asks may_sweep about NEW only: no sweep."""
    async def run() -> None:
        net = Network()
        client = _connected(net)
        (c_sa,), (g_sa,) = client.sas, net.nodes[GW].sas
        (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
        s = Sweeper(net, {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)})
        s.proven(CLIENT)   # its IKE_AUTH answer went out by CLIENT's exclude route
        net.nodes[GW].on_forget = lambda spi, sa: reload.forgotten(s.svc, spi, sa)  # type: ignore[arg-type]
        _move(net, CLIENT, NEW)   # its NAT mapping moved: its datagrams now come from NEW
        c_sa.send_liveness()
        net.deliver(*net.collect())
        net.collect()
        assert g_sa.remote_addr[0] == NEW and not g_sa.mobike, "the hub did not follow the float (the premise)"
        c_sa.delete(net.now)   # it gives up and leaves (or reconnects: a new IKE SA)
        net.run(until=net.now + 30)
        assert g_sa.is_closed, "the hub's IKE SA did not end (the premise)"
        if s.svc._sweep_due:   # IkeService._pump
            s.svc._sweep_due = False
            await s.sweep()
        assert ip_address(CLIENT) in s.removed, (
            f"the exclude route of {CLIENT}, kept for the floated IKE SA that authenticated from it, outlived "
            f"that IKE SA: its end swept nothing, as it asked only about {NEW}")
    asyncio.run(run())


def _mobike_moving(net: Network) -> tuple[Any, Sweeper]:
    """A MOBIKE client at CLIENT whose UPDATE_SA_ADDRESSES from NEW the hub took, its return routability
    check to NEW sent and not answered yet."""
    gw = gateway(net, pools())
    client = net.add(CLIENT, IkeEndpoint([client_cfg("c1.example", CLIENT, (V4,))]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    assert g_sa.mobike
    (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
    s = Sweeper(net, {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)})
    s.proven(CLIENT)
    _move(net, CLIENT, NEW)
    assert c_sa.update_addresses((NEW, 4500))
    net.deliver(*net.collect())
    net.collect()   # the answer and the check: in flight
    assert g_sa.remote_addr[0] == NEW and g_sa.esp_remote[0] == CLIENT, "no check under way (the premise)"
    return g_sa, s


def test_a_sweep_during_a_mobike_return_routability_check_keeps_the_route_the_esp_still_goes_by() -> None:
    """F3: another client's end sweeps while this one's check is out (a round trip; until the check gives
    up, ~165 s, when the new address never answers, e.g. a copy of its update from a made-up source)."""
    async def run() -> None:
        g_sa, s = _mobike_moving(Network())
        await s.sweep()
        assert ip_address(CLIENT) not in s.removed, (
            f"the exclude route of {CLIENT} was removed while the Child SAs' ESP still goes to "
            f"{g_sa.esp_remote[0]} (the check of {NEW} is under way): that ESP goes into the full tunnel's TUN")
    asyncio.run(run())


def test_a_sweep_during_a_mobike_return_routability_check_keeps_no_route_of_the_unproven_address() -> None:
    """F3's other half: the address under check has proven nothing, yet keeps a route another client proved."""
    async def run() -> None:
        _, s = _mobike_moving(Network())
        s.proven(NEW)   # a client proved NEW and has left since
        await s.sweep()
        assert ip_address(NEW) in s.removed, (
            f"the exclude route of {NEW} was kept by an IKE SA whose move there is still unproven")
    asyncio.run(run())
