"""(review revfull F4) the exclude gate (services/ike/exclude_gate.py) bounds what it holds per address
(HELD_PER_PEER) but not how many addresses wait at once: each new captured address is one more entry
in ``waiting``, one more task and one more job queued for the default thread pool, each job a full
dump of the routing table under ExcludeRoutes' lock (so the k-th costs O(k) once the earlier ones are
in).  With a full tunnel every IPv4 address but the connected ones is captured, so anyone who can make
tunsec answer (F1: an IKE_SA_INIT from a made-up source) grows it without bound while the netlink
work lags.  A stand-in for ExcludeRoutes blocks, as a slow netlink would, and counts its jobs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_network
from typing import Any

from tunsec.dataplane.exclude import IPAddress, IPNetwork, Path
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.exclude_gate import HELD_PER_PEER, ExcludeGate

HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
SOURCES = 2_000
BOUND = 64   # what a bounded gate would hold at once (any fixed number well below SOURCES proves the point)


@dataclass
class SlowRoutes:
    """ExcludeRoutes' interface: each ensure waits for ``go`` (netlink busy), as the real one's lock would."""

    go: threading.Event = field(default_factory=threading.Event)
    held: dict[IPAddress, Path] = field(default_factory=dict)
    jobs: int = 0

    def ensure(self, peers: Iterable[IPAddress], tun_nets: Sequence[IPNetwork]) -> list[str]:
        self.jobs += 1
        self.go.wait(10)
        for p in peers:
            self.held[p] = Path(ip_network("0.0.0.0/0"), "192.0.2.1", 2)
        return []

    def keep_only(self, peers: Iterable[IPAddress]) -> None:
        pass


def test_the_gate_holds_a_bounded_number_of_addresses_whatever_the_sources() -> None:
    async def run() -> tuple[int, int]:
        routes, tasks = SlowRoutes(), []

        def spawn(coro: Any) -> Any:
            task = asyncio.ensure_future(coro)
            tasks.append(task)
            return task
        # every address trusted (the worst case: authenticated peers, or a gate that trusted all)
        g = ExcludeGate(routes, lambda: HALVES, lambda d: None, lambda: [], spawn,  # type: ignore[arg-type]
                        lambda ip, data: True)
        for i in range(SOURCES):   # one COOKIE (or IKE_SA_INIT answer) each, to made-up sources
            ip = IPv4Address(0x0A000000 + i)   # 10.0.0.0 + i: inside 0.0.0.0/1
            g.check(ip, Datagram(b"x" * 300, (str(ip), 500), 500, None))
        waiting, spawned = len(g.waiting), len(tasks)
        routes.go.set()
        await asyncio.gather(*tasks)
        return waiting, spawned

    waiting, spawned = asyncio.run(run())
    assert HELD_PER_PEER * BOUND < SOURCES
    assert waiting <= BOUND, f"{waiting} addresses held at once ({SOURCES} sources)"
    assert spawned <= BOUND, f"{spawned} tasks, each a netlink dump in a thread ({SOURCES} sources)"
