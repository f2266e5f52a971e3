"""Review revfull3 F2: an authenticated peer's MOBIKE update from an address of its choosing routes that
address around the hub's full tunnel, before (and whatever) the return routability check says.

mobike._update moves the IKE SA (``remote_addr``) to the update's source at once, before the COOKIE2 check;
services/ike/exclude_trust.authenticated_peer trusts any datagram of an authenticated IKE SA to its
``remote_addr``, so the gate (services/ike/exclude_gate.py) adds an exclude route for the claimed address
before the update's answer and the check leave.  The source of an authenticated request is not proven:
the peer (any user with valid credentials) holds the keys and may send it from any source address.  The
check to an address that never answers fails, the IKE SA goes back to the old address and lives on, and
the route stays until the IKE SA is forgotten: every host behind the hub then reaches that address in
clear, outside the full tunnel.  One route per update: as many addresses as the peer sends updates.

Real engines (tests/ike/test_engine_mobike.py's pair), the real trust function and ExcludeGate; only the
netlink (ExcludeRoutes) is a recorder."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address, ip_network
from typing import Any

from test_engine import B
from test_engine_mobike import A, _move, _up

from tunsec.dataplane.exclude import Path
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

CLAIMED = "192.0.2.66"   # an address the peer claims in its update (its own or anyone's); never answers
HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]   # the hub's full tunnel


class Routes:
    """ExcludeRoutes' surface the gate uses: records the addresses it is asked to route around the TUN."""

    def __init__(self) -> None:
        self.held: dict[Any, Path] = {}
        self.refused = 0
        self.asked: list[Any] = []
        self.paths = {socket.AF_INET: [Path(ip_network("0.0.0.0/0"), "198.51.100.1", 7)]}
        self.removes = 0   # the sweeps' netlink jobs that removed routes

    def ensure(self, peers: list[Any], nets: list[Any]) -> list[str]:
        self.asked += peers
        for p in peers:
            self.held[p] = self.paths[socket.AF_INET][0]
        return []

    def remove(self, peers: list[Any]) -> None:
        self.removes += 1
        for p in peers:
            self.held.pop(p, None)


def test_a_mobike_update_from_a_claimed_address_routes_it_around_the_full_tunnel_only_once_checked() -> None:
    async def run() -> None:
        net, client, gateway = _up()
        b = net.nodes[B]
        up = {gateway.local_spi}   # the service's ike_up: the IKE SA is established
        routes, tasks, sent = Routes(), [], []

        def spawn(coro: Any) -> None:
            tasks.append(asyncio.ensure_future(coro))
        gate = ExcludeGate(routes, lambda: HALVES, sent.append, lambda: [], spawn,  # type: ignore[arg-type]
                           lambda ip, data: authenticated_peer(b, up, ip, data))
        _move(net, A, CLAIMED)   # the peer's update leaves from the claimed source
        net.drop = lambda s: s.dst[0] == CLAIMED   # nothing answers there (nobody, or not the peer)
        assert client.update_addresses((CLAIMED, 4500))
        before = len(net.log)
        net.step()   # the update reaches the gateway, which moves the IKE SA and checks the address
        net.step()
        assert gateway.remote_addr == (CLAIMED, 4500) and gateway.esp_remote != (CLAIMED, 4500)
        out = net.log[before:]
        assert any(s.src[0] == B and s.dst[0] == CLAIMED for s in out)
        for s in out:   # the gateway's answer and its COOKIE2 check, through the gate as sent
            if s.src[0] == B and s.dst[0] == CLAIMED:
                gate.check(ip_address(CLAIMED), Datagram(s.data, s.dst, s.src[1], None))
        await asyncio.gather(*tasks)
        assert ip_address(CLAIMED) not in routes.asked, (
            f"{CLAIMED}, claimed in an authenticated update and not yet checked, was routed around the full "
            f"tunnel (exclude routes asked: {routes.asked})")
    asyncio.run(run())
