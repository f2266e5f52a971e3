"""Review revfull4 F2: a NAT'd road warrior (no MOBIKE) of a full-tunnel hub whose NAT mapping moves to
another public address keeps a dead tunnel for as long as the IKE SA lives: it never notices, never
reconnects.

The hub follows the float (sa_responder._float: the IKE SA and its Child SAs' ESP go to the new address),
but since h/fixfull3 the float proves nothing (services/ike/exclude_trust.py), so the new address gets no
exclude route: the hub's ESP to it follows the full tunnel's halves into the TUN.  Its IKE there, though,
is sent by the uplink's interface (ExcludeGate._uplink, SEND_IKE's OIF): the client's DPD is answered and
succeeds.  What remains says "its ESP goes into the TUN until it reconnects"; nothing makes it reconnect.
The project's own rule for a float it does not take (review revmobfix F1, sa_responder._acceptable):
"answered at the refused address, the peer's requests (its DPD) would succeed ... while its ESP goes to
the address it left, and it would never notice; unanswered, its DPD fails and it connects again".

Real engines (tests/ike/test_engine_float_refused.py's client and gateway; the gateway's NAT detection
set as a NAT'd client makes it), the real trust function and ExcludeGate; the netlink is a recorder."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address
from typing import Any

from test_eap_natt_full_tunnel_uplink import HALVES, UPLINK, Routes
from test_engine_float_refused import _connected
from test_engine_mobike_tunnel_address import CLIENT, _move
from test_engine_vips import GW

from tunsec.ike.endpoint import Datagram
from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.record import IkeUpRecord

NEW = "203.0.113.9"   # the client's NAT's new public address (a mobile client's mapping moved)


def test_a_floated_clients_dpd_does_not_succeed_while_its_esp_goes_into_the_full_tunnels_tun() -> None:
    async def run() -> None:
        net = Network()
        client = _connected(net)
        (c_sa,), (g_sa,) = client.sas, net.nodes[GW].sas
        (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
        ike_up = {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)}   # the service's, as IkeService._event fills it
        assert not g_sa.mobike
        g_sa._st.nat_peer = True   # NAT detection said the client is behind a NAT (a mobile client is)
        routes, tasks = Routes(), []

        def spawn(coro: Any) -> None:
            tasks.append(asyncio.ensure_future(coro))
        gate = ExcludeGate(routes, lambda: HALVES, lambda d: None, lambda: [], spawn,  # type: ignore[arg-type]
                           lambda ip, data: authenticated_peer(net.nodes[GW], ike_up, ip, data))
        _move(net, CLIENT, NEW)   # the NAT's mapping moved: the client's datagrams now come from NEW
        c_sa.send_liveness()      # its DPD
        (request,) = net.collect()
        net.deliver(request)
        answers = net.collect()
        assert g_sa.esp_remote[0] == NEW, "the hub did not follow the float (the premise)"
        by_uplink = [a for a in answers if a.dst[0] == NEW
                     and gate.check(ip_address(NEW), Datagram(a.data, a.dst, a.src[1], None)) == UPLINK]
        await asyncio.gather(*tasks)
        esp_into_tun = ip_address(NEW) not in routes.held
        for a in by_uplink:   # the uplink delivers them
            net.deliver(a)
        net.run(until=net.now + 600)
        assert not (esp_into_tun and by_uplink and not c_sa.is_closed), (
            f"the client's DPD from {NEW} was answered by the uplink (ifindex {UPLINK}) and succeeded, while "
            f"the hub's ESP to {NEW} has no exclude route and goes into the full tunnel's TUN: the client "
            f"keeps a dead tunnel and never reconnects")
    asyncio.run(run())
