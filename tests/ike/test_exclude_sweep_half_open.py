"""Review revlast2 R1: a half-open IKE SA keeps no exclude route (exclude_trust.kept_address), so its end
makes no sweep due, also when its forged source is a live client's routed address.  Before, the forgotten
hook (reload.forgotten) asked ExcludeGate.may_sweep about the SA's remote_addr: a flood of spoofed
IKE_SA_INITs from the addresses of live clients bought a pass over all IKE SAs per pump turn in which
one of them timed out, around revfull3's bound (test_ike_exclude_sweep_due.py).

The real engines, gate, forgotten hook and sweep (test_exclude_sweep_proven.py's Sweeper)."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_address

from test_engine_float_refused import CLIENT, _connected
from test_engine_vips import GW, V4, client_cfg
from test_exclude_sweep_proven import Sweeper

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.services.ike import reload
from tunsec.services.ike.record import IkeUpRecord

SPOOFER = "198.51.100.66"   # sends IKE_SA_INITs with CLIENT's address as their source


def test_a_half_open_ike_sa_from_a_live_clients_routed_address_makes_no_sweep_due() -> None:
    async def run() -> None:
        net = Network()
        client = _connected(net)
        gw = net.nodes[GW]
        (g_sa,) = gw.sas
        (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
        s = Sweeper(net, {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)})
        s.proven(CLIENT)   # the client's IKE_AUTH answer went out by CLIENT's exclude route
        gw.on_forget = lambda spi, sa: reload.forgotten(s.svc, spi, sa)  # type: ignore[arg-type]
        spoofer = net.add(SPOOFER, IkeEndpoint([client_cfg("nobody.example", SPOOFER, (V4,))]))
        spoofer.initiate("home", "net", net.now)
        (init,) = net.collect()
        net.deliver(dataclasses.replace(init, src=(CLIENT, init.src[1])))   # forged: CLIENT's address
        net.collect()   # its answer to CLIENT, whose IKE SA has no such SPI
        half_open = next(sa for sa in gw.sas if sa is not g_sa)
        assert half_open.is_half_open and half_open.remote_addr[0] == CLIENT, "no half-open SA (the premise)"
        net.now += half_open.config.half_open_timeout + 1
        gw.handle_timer(net.now)
        net.collect()
        assert half_open.is_closed and not g_sa.is_closed, "the half-open SA did not time out alone (the premise)"
        assert not s.svc._sweep_due, (
            f"a half-open IKE SA whose forged source is {CLIENT} (routed: a live client's) made a sweep due "
            "when it timed out: one pass over all IKE SAs per spoofed IKE_SA_INIT")
        # the client's own end still sweeps its route
        client.sas[0].delete(net.now)
        net.run(until=net.now + 30)
        assert g_sa.is_closed and s.svc._sweep_due
        await s.sweep()
        assert ip_address(CLIENT) in s.removed
    asyncio.run(run())
