"""A NAT'd peer's Child SAs follow it to a new address only once the exclude gate has routed that
address outside the TUN (mobility._route_ready; review revmobfix F1's fix lets a peer move within
its own remote_ts, an address the TUN's routes capture).  The float moves the IKE SA at once and the
gate holds its answer while the host route goes in; a MIGRATE made meanwhile would send the Child
SAs' ESP into the TUN.  The gate here is a stand-in that only says which addresses wait (the real
one's netlink job is tests/test_ike_exclude_gate.py's); the rest is the real IkeService with the
worker's request handling and C fast path in process (test_ikeservice_peers.Gateway)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from test_ikeservice_peers import connected, run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint

MOVED = ("198.51.100.201", 40000)


@dataclass
class WaitingGate:
    """Sends everything at once; ``waiting``: the addresses whose exclude route is still going in."""

    waiting: dict[Any, list[Any]] = field(default_factory=dict)

    def holds(self, ip: Any, datagram: Any) -> bool:
        return False

    def check(self, ip: Any, datagram: Any) -> int:
        return 0


def test_the_child_sas_wait_for_the_exclude_route_of_their_peers_new_address() -> None:
    async def body() -> None:
        gw = await connected(1, mobike=False)
        (child,) = gw.children_of(0)
        gate = WaitingGate({ipaddress.ip_address(MOVED[0]): []})
        gw.service.sockets.gate = gate  # type: ignore[assignment]
        gw.nat[0] = MOVED
        gw.site_sa(0).send_liveness()
        await gw.settle(wait_tasks=False)
        assert not [m for m in gw.worker.log if isinstance(m, pipe.Migrate)], "ESP moved before the route was in"
        gate.waiting.clear()   # the route is in
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address(MOVED[0]), MOVED[1])
        assert gw.service.children[child.handle].remote == moved

    run(body())
