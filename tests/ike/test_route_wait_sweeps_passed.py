"""Review revsweep4 F3: a MOBIKE peer that moves on while its mover waits for the route of its last address
(or for ``_changes``) keeps the exclude route of every address it passed, for as long as it goes on:
h/fixsweep3's F4 fix goes round again (``continue`` in mobility._move_children) without a batch, and so
without the sweep of the addresses passed that the same merge added after each batch (_sweep_passed,
review revsweep3 F3).  Each move adds its address's route (ExcludeGate.expect); ``move.left`` only grows.

The wait is ROUTE_WAIT (5 s) at most for a slow netlink job, and as long as ``_changes`` is held by other
peers' installs for the lock (a burst of clients connecting): a peer moving once per wait holds one route
per address it visits (the host's traffic to each leaves by the uplink in clear, revsweep2 F3's harm).

The harness of test_mobike_moving_peer_routes.py (revsweep3 F3's proof): the real IkeService, ExcludeGate
and trust function, the full tunnel's halves as the TUN's routes, a clock that never makes anything wait,
the netlink a recorder.  The site's next move is delivered while each route wait is under way (as a peer's
update arriving then would be)."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address
from typing import Any

import pytest
from test_ikeservice_peers import run
from test_sweep_keeps_child_route import move_on, moving_gateway

from tunsec.services.ike import mobility

ADDRESSES = [(f"203.0.113.{50 + n}", 40000 + n) for n in range(8)]


def test_addresses_a_peer_passed_during_each_route_wait_lose_their_routes_while_it_moves_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw, routes, jobs = await moving_gateway()
        site = gw.site_sa(0)
        waits: list[str] = []            # the address each route wait was for
        held_then: list[set[Any]] = []   # the routes held when each began
        original = mobility._route_ready
        upcoming = iter(ADDRESSES[1:])

        async def route_ready(self: Any, ike: int, path: Any) -> None:
            await asyncio.gather(*(j for j in jobs if not j.done()))
            waits.append(path[0][0])
            held_then.append(set(routes.held))
            nxt = next(upcoming, None)
            if nxt is not None:   # the peer moves on while the mover waits
                await move_on(gw, site, nxt)
            await original(self, ike, path)
        monkeypatch.setattr(mobility, "_route_ready", route_ready)

        gw.nat[0] = ADDRESSES[0]
        assert site.update_addresses()
        await gw.settle()
        assert waits == [a for a, _ in ADDRESSES], f"(the premise: one route wait per address: {waits})"
        # at the last wait the IKE SA is at ADDRESSES[-1]; its Child SAs never left site_ip(0); every
        # address before ADDRESSES[-2] was passed by the IKE SA a move or more before, and no Child SA is there
        k = len(ADDRESSES) - 1
        stale = [a for a, _ in ADDRESSES[:k - 1] if ip_address(a) in held_then[k]]
        assert not stale, (
            f"when the mover waited for the route of {ADDRESSES[k][0]}, the exclude routes of {stale}, which the "
            f"IKE SA had passed (no Child SA ever went there), were all still held: the F4 'continue' skips "
            f"_sweep_passed, so a peer moving during each wait keeps one route per address it visits")

    run(body())
