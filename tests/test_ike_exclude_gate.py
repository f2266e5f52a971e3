"""IKE to a trusted address the TUN's routes capture waits for its exclude route (services/ike/exclude_gate.py):
the datagrams held, then sent once the route is in; an address outside the TUN's routes passes at once; an
untrusted captured one leaves by the uplink's interface without a route; the routes of addresses no IKE SA
nor connection has any more go at the sweep.  A stand-in for ExcludeRoutes records what it was asked (its
netlink is tests/dataplane/test_exclude_routes.py's)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from tunsec.dataplane.exclude import IPAddress, IPNetwork, Path
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.exclude_gate import HELD_PER_PEER, WAITING_MAX, ExcludeGate, exclude_counters
from tunsec.services.ike.exclude_trust import Trust

HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
GATEWAY, OTHER, STATIC = ip_address("198.51.100.2"), ip_address("203.0.113.5"), ip_address("192.0.2.99")
SPOOFED = ip_address("203.0.113.80")   # an IKE_SA_INIT's source nothing authenticated
LOCAL = ip_address("192.0.2.7")       # on the host's connected link (captured too: tunsec's table comes first)
LINK = 3                               # the interface of that link's route
UPLINK = 7                             # the interface of the host's default route


@dataclass
class Routes:
    held: dict[IPAddress, Path] = field(default_factory=dict)
    refused: int = 0
    asked: list[list[IPAddress]] = field(default_factory=list)
    removed: list[set[IPAddress]] = field(default_factory=list)
    paths: dict[int, list[Path]] = field(default_factory=lambda: {
        socket.AF_INET: [Path(ip_network("0.0.0.0/0"), "192.0.2.1", UPLINK),
                         Path(ip_network("192.0.2.0/24"), None, LINK)]})

    def ensure(self, peers: Iterable[IPAddress], tun_nets: Sequence[IPNetwork]) -> list[str]:
        self.asked.append(list(peers))
        for p in peers:
            self.held[p] = Path(ip_network("0.0.0.0/0"), "192.0.2.1", UPLINK)
        return []

    def remove(self, gone: list[IPAddress]) -> None:
        self.removed.append(set(gone))
        for p in gone:
            self.held.pop(p, None)


def datagram(to: IPAddress, n: int = 0) -> Datagram:
    return Datagram(bytes([n]), (str(to), 500), 500, None)


def gate(routes: Routes, nets: list[IPNetwork], sent: list[Datagram], tasks: list[Any]) -> ExcludeGate:
    def spawn(coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        tasks.append(task)
        return task
    return ExcludeGate(routes, lambda: nets, sent.append, lambda: [STATIC], spawn,  # type: ignore[arg-type]
                       lambda ip, data: ip not in (SPOOFED, LOCAL))


def test_a_captured_peer_gets_its_exclude_route_before_its_first_datagram_goes() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        first = [datagram(GATEWAY, n) for n in range(HELD_PER_PEER + 3)]
        assert all(g.check(GATEWAY, d) is None for d in first)
        assert sent == [] and routes.asked == []   # asked in a thread, once
        await asyncio.gather(*tasks)
        assert routes.asked == [[GATEWAY]] and sent == first[:HELD_PER_PEER]   # the rest: IKE retransmits them
        assert g.check(GATEWAY, datagram(GATEWAY)) == 0   # from now on: straight out, as routed
    asyncio.run(run())


def test_an_address_outside_the_tun_routes_passes_at_once() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, [ip_network("10.0.0.0/8")], sent, tasks)
        assert g.check(GATEWAY, datagram(GATEWAY)) == 0
        assert g.check(ip_address("2001:db8::1"), datagram(ip_address("2001:db8::1"))) == 0
        assert tasks == [] and routes.asked == []
    asyncio.run(run())


def test_the_sweep_removes_the_routes_of_peers_no_ike_sa_nor_connection_has() -> None:
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        for peer in (GATEWAY, OTHER):
            g.check(peer, datagram(peer))
        await asyncio.gather(*tasks)
        assert routes.asked == [[GATEWAY, OTHER]]   # one job for both
        assert g.may_sweep()
        g.sweep(lambda: [GATEWAY])   # OTHER's IKE SA closed (a MOBIKE move, a REDIRECT away)
        await asyncio.gather(*tasks)
        assert set(routes.held) == {GATEWAY} and routes.removed == [{OTHER}]
        g.sweep(lambda: [GATEWAY])   # nothing to remove: no thread
        assert len(tasks) == 2
    asyncio.run(run())


def test_an_unauthenticated_captured_address_leaves_by_the_uplink_without_a_route() -> None:
    """Review revfull F1: an IKE_SA_INIT answer, a COOKIE or an INIT REDIRECT to a made-up source gets no
    exclude route; it leaves by the interface of the host's own path (the kernel skips the TUN's routes)."""
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        assert g.check(SPOOFED, datagram(SPOOFED)) == UPLINK
        # on the link, inside the halves: by the link's interface (fixks5: the halves, in tunsec's table, take it)
        assert g.check(LOCAL, datagram(LOCAL)) == LINK
        assert tasks == [] and routes.asked == [] and routes.held == {} and g.clear == set()
        routes.paths.clear()   # none known: as routed (into the TUN), counted
        assert g.check(SPOOFED, datagram(SPOOFED)) == 0 and g.stats.into_tun == 1
        assert exclude_counters(g) == {"held": 0, "refused": 0, "uplink": 0, "into_tun": 1, "dropped": 0,
                                  "uplink_failed": 0, "unproven_float": 0}
    asyncio.run(run())


def test_the_gate_holds_a_bounded_number_of_trusted_addresses_in_one_job() -> None:
    """Review revfull F4: a burst of authenticated peers waits WAITING_MAX addresses at most, one task."""
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        many = [ip_address(0x0A000000 + i) for i in range(WAITING_MAX + 10)]
        verdicts = [g.check(ip, datagram(ip)) for ip in many]
        assert verdicts == [None] * len(many)
        assert len(g.waiting) == WAITING_MAX and g.stats.dropped == 10 and len(tasks) == 1
        await asyncio.gather(*tasks)
        assert routes.asked == [many[:WAITING_MAX]] and len(sent) == WAITING_MAX and not g.waiting
    asyncio.run(run())


def test_ike_of_an_up_sa_to_where_its_peer_floated_unproven_is_dropped_counted_not_sent_by_the_uplink() -> None:
    """Review revfull4 F2: answered by the uplink, a floated client's DPD would succeed while its ESP goes
    into the TUN; dropped, its DPD fails and it reconnects (services/ike/exclude_trust.py)."""
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        g.trusted = lambda ip, data: Trust.UNPROVEN
        assert g.check(OTHER, datagram(OTHER)) is None
        assert tasks == [] and routes.asked == [] and sent == []
        assert (g.stats.unproven_float, g.stats.uplink) == (1, 0)
        assert exclude_counters(g)["unproven_float"] == 1
    asyncio.run(run())


def test_a_sweep_while_a_route_is_being_added_has_it_go_once_added_unless_trusted_again() -> None:
    """A sweep keeps what waits for its route (a new client's, revfull R1), but one no IKE SA keeps when the
    sweep runs loses its route once the job adds it, unless the address is trusted again meanwhile
    (review revsweep3 R1, revlate2's proof: the MOBIKE path of it)."""
    async def run() -> None:
        routes, sent, tasks = Routes(), [], []
        g = gate(routes, HALVES, sent, tasks)
        g.check(GATEWAY, datagram(GATEWAY))
        g.check(OTHER, datagram(OTHER))
        assert g.may_sweep([str(GATEWAY)]), "an address waiting for its route may be stale once it is in"
        g.sweep(lambda: [])   # neither kept by an IKE SA now
        g.check(OTHER, datagram(OTHER, 1))   # OTHER trusted again since
        await asyncio.gather(*tasks)
        await asyncio.gather(*tasks)   # the removal's thread
        assert routes.asked == [[GATEWAY, OTHER]]
        assert GATEWAY not in routes.held and routes.removed == [{GATEWAY}]
        assert OTHER in routes.held and len(sent) == 3
        g.check(GATEWAY, datagram(GATEWAY))   # back: asked again, kept
        await asyncio.gather(*tasks)
        assert GATEWAY in routes.held and not g.owed
    asyncio.run(run())
