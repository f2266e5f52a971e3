"""IKE to an address the TUN's routes capture waits for its exclude route (services/ike/exclude_gate.py):
the datagrams held, then sent once the route is in; an address outside the TUN's routes passes at once; the
routes of addresses no IKE SA nor connection has any more go at the sweep.  A stand-in for ExcludeRoutes
records what it was asked (its netlink is tests/dataplane/test_exclude_routes.py's)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from tunsec.dataplane.exclude import IPAddress, IPNetwork, Path
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.exclude_gate import HELD_PER_PEER, ExcludeGate

HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
GATEWAY, OTHER, STATIC = ip_address("198.51.100.2"), ip_address("203.0.113.5"), ip_address("192.0.2.99")


@dataclass
class Routes:
    held: dict[IPAddress, Path] = field(default_factory=dict)
    asked: list[IPAddress] = field(default_factory=list)
    kept: list[set[IPAddress]] = field(default_factory=list)

    def ensure(self, peers: Iterable[IPAddress], tun_nets: Sequence[IPNetwork]) -> list[str]:
        for p in peers:
            self.asked.append(p)
            self.held[p] = Path(ip_network("0.0.0.0/0"), "192.0.2.1", 2)
        return []

    def keep_only(self, peers: Iterable[IPAddress]) -> None:
        keep = set(peers)
        self.kept.append(keep)
        self.held = {p: v for p, v in self.held.items() if p in keep}


def datagram(to: IPAddress, n: int = 0) -> Datagram:
    return Datagram(bytes([n]), (str(to), 500), 500, None)


def gate(routes: Routes, nets: list[IPNetwork], sent: list[Datagram], tasks: list[Any]) -> ExcludeGate:
    def spawn(coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        tasks.append(task)
        return task
    return ExcludeGate(routes, lambda: nets, sent.append, lambda: [STATIC], spawn)  # type: ignore[arg-type]


def test_a_captured_peer_gets_its_exclude_route_before_its_first_datagram_goes() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        first = [datagram(GATEWAY, n) for n in range(HELD_PER_PEER + 3)]
        assert all(g.holds(GATEWAY, d) for d in first)
        assert sent == [] and routes.asked == []   # asked in a thread, once
        await asyncio.gather(*tasks)
        assert routes.asked == [GATEWAY] and sent == first[:HELD_PER_PEER]   # the rest: IKE retransmits them
        assert not g.holds(GATEWAY, datagram(GATEWAY))   # from now on: straight out
    asyncio.run(run())


def test_an_address_outside_the_tun_routes_passes_at_once() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, [ip_network("10.0.0.0/8")], sent, tasks)
        assert not g.holds(GATEWAY, datagram(GATEWAY))
        assert not g.holds(ip_address("2001:db8::1"), datagram(ip_address("2001:db8::1")))
        assert tasks == [] and routes.asked == []
    asyncio.run(run())


def test_the_sweep_removes_the_routes_of_peers_no_ike_sa_nor_connection_has() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        for peer in (GATEWAY, OTHER):
            g.holds(peer, datagram(peer))
        await asyncio.gather(*tasks)
        g.sweep(lambda: [GATEWAY])   # OTHER's IKE SA closed (a MOBIKE move, a REDIRECT away)
        await asyncio.gather(*tasks)
        assert set(routes.held) == {GATEWAY} and routes.kept == [{GATEWAY, STATIC}]
        g.sweep(lambda: [GATEWAY])   # nothing to remove: no thread
        assert len(tasks) == 3
    asyncio.run(run())
