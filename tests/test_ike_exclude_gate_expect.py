"""ExcludeGate.expect (review revsweep2 F2): a proven address with no datagram of ours to hold (a MOBIKE
move's checked address) is routed around the TUN when the TUN's routes capture it, by the same one task
and job as the held datagrams' addresses, within the same WAITING_MAX bound; nothing for an address
that needs no route or has one.  The netlink is a stand-in that blocks until told (as the real lock
would) and records what it was asked."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from test_ike_exclude_gate_bound import HALVES, SlowRoutes

from tunsec.dataplane.exclude import Path
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.exclude_gate import WAITING_MAX, ExcludeGate

STATIC = ip_address("203.0.113.1")


def _gate(routes: SlowRoutes, tasks: list[Any], sent: list[Datagram]) -> ExcludeGate:
    def spawn(coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        tasks.append(task)
        return task
    return ExcludeGate(routes, lambda: HALVES[:1], sent.append, lambda: [STATIC], spawn,  # type: ignore[arg-type]
                       lambda ip, data: True)


def test_an_expected_address_gets_its_route_in_the_one_job_and_waits_meanwhile() -> None:
    async def run() -> None:
        routes, tasks, sent = SlowRoutes(), [], []
        gate = _gate(routes, tasks, sent)
        moved, held = ip_address("10.0.0.7"), ip_address("10.0.0.8")
        gate.check(held, Datagram(b"x" * 40, (str(held), 4500), 4500, None))
        gate.expect(moved)
        assert moved in gate.waiting and gate.waiting[moved] == [], "(mobility._route_ready waits on this)"
        assert len(tasks) == 1, "one task adds every waiting address's route"
        routes.go.set()
        await asyncio.gather(*tasks)
        assert moved in routes.held and held in routes.held and not gate.waiting
        assert len(sent) == 1, "only the held datagram is sent: expect holds none"
    asyncio.run(run())


def test_an_address_that_needs_no_route_or_has_one_is_not_expected() -> None:
    async def run() -> None:
        routes, tasks, sent = SlowRoutes(), [], []
        gate = _gate(routes, tasks, sent)
        routes.held[ip_address("10.0.0.9")] = Path(ip_network("0.0.0.0/0"), "192.0.2.1", 2)
        gate.clear.add(ip_address("10.0.0.10"))
        for ip in ("10.0.0.9", "10.0.0.10", "198.51.100.7", str(STATIC)):   # held, clear, not captured, static
            gate.expect(ip_address(ip))
        assert not gate.waiting and not tasks
    asyncio.run(run())


def test_expected_addresses_are_bounded_as_held_ones_are() -> None:
    async def run() -> None:
        routes, tasks, sent = SlowRoutes(), [], []
        gate = _gate(routes, tasks, sent)
        for i in range(WAITING_MAX + 5):
            gate.expect(IPv4Address(0x0A000000 + i))
        assert len(gate.waiting) == WAITING_MAX and gate.stats.dropped == 5 and len(tasks) == 1
        routes.go.set()
        await asyncio.gather(*tasks)
    asyncio.run(run())
