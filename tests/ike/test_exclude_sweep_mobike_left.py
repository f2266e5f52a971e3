"""Review revsweep2 F3: the exclude route of the address a MOBIKE client moved away from outlives its IKE
SA when its new address holds no route of its own.

What remains says a MOBIKE move's old address keeps its route until a sweep runs, "the moved one's own end
at the latest".  h/fixsweep's reload.forgotten asks ExcludeGate.may_sweep only about the address the
forgotten SA keeps (exclude_trust.kept_address: a MOBIKE SA's ``esp_remote``, the new address).  That
address has no exclude route when the TUN's routes do not capture it (a split tunnel whose networks hold
the old address: a client that sat inside a site's or a pool's network and moved out), nor, on a full
tunnel, while no IKE went there since the check (F2): may_sweep says no, no sweep runs, and the old
address's route stays until another routed IKE SA ends or a reload, on a quiet gateway for days.  The host's
traffic to that address (someone else's by then, inside a tunnel's network) leaves by the uplink in clear
instead of through its tunnel.

Real engines (tests/ike/test_engine_vips.py's gateway and a MOBIKE client), the real ExcludeGate, the
real IkeService.sweep_excludes and reload.forgotten as the engine's on_forget, the pump's _sweep_due step;
the netlink is a recorder (test_exclude_sweep_proven.Sweeper)."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

from test_engine_mobike_tunnel_address import CLIENT, _move
from test_engine_vips import GW, V4, client_cfg, gateway, pools
from test_exclude_sweep_proven import Sweeper

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.services.ike import reload
from tunsec.services.ike.record import IkeUpRecord

SITE = ip_network("198.51.100.0/24")   # a tunnel's network (a site's LAN, routed into the TUN): holds CLIENT
NEW = "203.0.113.9"                    # where the client moved: outside every tunnel


def test_the_route_of_the_address_a_mobike_client_left_goes_when_its_ike_sa_ends() -> None:
    async def run() -> None:
        net = Network()
        gw = gateway(net, pools())
        client = net.add(CLIENT, IkeEndpoint([client_cfg("c1.example", CLIENT, (V4,))]))
        client.initiate("home", "net", net.now)
        net.run(until=net.now + 5)
        (c_sa,), (g_sa,) = client.sas, gw.sas
        assert g_sa.mobike, "(the premise: MOBIKE)"
        (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
        s = Sweeper(net, {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)})
        s.gate.tun_nets = lambda: [SITE]
        s.proven(CLIENT)   # its IKE_AUTH answer went out by CLIENT's exclude route (SITE captures CLIENT)
        gw.on_forget = lambda spi, sa: reload.forgotten(s.svc, spi, sa)  # type: ignore[arg-type]
        _move(net, CLIENT, NEW)
        assert c_sa.update_addresses((NEW, 4500))
        net.run(until=net.now + 5)   # the update, the check, its answer: the Child SAs follow to NEW
        assert g_sa.esp_remote[0] == NEW and ip_address(NEW) not in SITE, "(the premise: a checked move out)"
        c_sa.delete(net.now)   # the client leaves
        net.run(until=net.now + 30)
        assert g_sa.is_closed, "(the premise: the hub's IKE SA ended)"
        if s.svc._sweep_due:   # IkeService._pump
            s.svc._sweep_due = False
            await s.sweep()
        assert ip_address(CLIENT) in s.removed, (
            f"the exclude route of {CLIENT}, which the client left for {NEW} by MOBIKE, outlived its IKE SA: "
            f"its end asked may_sweep only about {NEW}, which holds no route; the host's traffic to {CLIENT} "
            f"leaves by the uplink instead of {SITE}'s tunnel until another routed IKE SA ends")
    asyncio.run(run())
