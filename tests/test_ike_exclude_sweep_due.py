"""Review revfull3 (remark): the exclude routes are swept when a forgotten IKE SA's address held one, not
whenever any IKE SA is forgotten while some route is held.  A hub with authenticated clients always holds
routes for addresses that are not configured peers, so every half-open SA of a spoofed IKE_SA_INIT that
timed out bought a pass over all IKE SAs (ExcludeGate.may_sweep with the forgotten SA's addresses,
services/ike/reload.forgotten)."""

from __future__ import annotations

import asyncio

from test_ike_exclude_gate import GATEWAY, HALVES, SPOOFED, STATIC, Routes, datagram, gate


def test_only_a_forgotten_ike_sa_whose_address_holds_a_route_makes_a_sweep_due() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []   # type: ignore[var-annotated]
        g = gate(routes, HALVES, sent, tasks)
        g.check(GATEWAY, datagram(GATEWAY))   # an authenticated client's address: routed around the TUN
        await asyncio.gather(*tasks)
        assert GATEWAY in routes.held
        # a half-open SA from a spoofed source (no route: it left by the uplink) goes
        assert g.check(SPOOFED, datagram(SPOOFED)) and SPOOFED not in routes.held
        assert not g.may_sweep({str(SPOOFED)})
        assert not g.may_sweep({str(STATIC), "not an address"})   # a connection's peer is never swept
        assert g.may_sweep({str(GATEWAY)})   # the client's IKE SA went: its route may be stale
    asyncio.run(run())
