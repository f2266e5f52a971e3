"""A non-MOBIKE client's NAT float proves nothing (exclude_trust.py), yet the sweep of exclude routes keeps
every live IKE SA's ``remote_addr``: an address it floated to (spoofed sources suffice: an authenticated
peer holds the keys) keeps an exclude route another client had proven there, after that client is gone,
for as long as the floated IKE SA lives -- and ExcludeGate.check answers it there by that route before
asking the trust (``ip in routes.held``), so Trust.UNPROVEN never applies.

Real engines (the float test's), the real ExcludeGate and IkeService.sweep_excludes; the netlink records."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

from test_engine_float_refused import _connected
from test_engine_mobike_tunnel_address import CLIENT, _move
from test_engine_vips import GW
from test_float_unproven_dpd_fails import HALVES, NEW, Routes

from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer
from tunsec.services.ike.record import IkeUpRecord
from tunsec.services.ike.service import IkeService


def test_an_unproven_float_does_not_keep_another_clients_exclude_route() -> None:
    async def run() -> None:
        net = Network()
        client = _connected(net)
        (c_sa,), (g_sa,) = client.sas, net.nodes[GW].sas
        (up_ev,) = [e for e in net.take(GW) if isinstance(e, IkeSaUp)]
        ike_up = {g_sa.local_spi: IkeUpRecord(up_ev, 0.0)}
        routes, removed = Routes(), []
        routes.held[ip_address(NEW)] = routes.paths[2][0]   # another client proved NEW, and has left since
        routes.remove = lambda stale: removed.extend(stale)  # type: ignore[attr-defined]
        tasks: list[Any] = []
        gate = ExcludeGate(routes, lambda: HALVES, lambda d: None, lambda: [],  # type: ignore[arg-type]
                           lambda c: tasks.append(asyncio.ensure_future(c)),  # type: ignore[arg-type]
                           lambda ip, data: authenticated_peer(net.nodes[GW], ike_up, ip, data))
        _move(net, CLIENT, NEW)   # the client's datagrams now come from NEW (a spoofed source would do)
        c_sa.send_liveness()
        net.deliver(*net.collect())
        assert g_sa.remote_addr[0] == NEW and not g_sa.mobike, "the hub did not follow the float (the premise)"
        svc = SimpleNamespace(_moves={}, sockets=SimpleNamespace(gate=gate), endpoint=net.nodes[GW], ike_up=ike_up)
        IkeService.sweep_excludes(svc)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
        assert ip_address(NEW) in removed, (
            f"the exclude route of {NEW}, which no client proved any more, was kept by an IKE SA that only "
            f"floated there: its IKE and ESP to {NEW} leave around the full tunnel")
    asyncio.run(run())
