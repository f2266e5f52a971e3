"""Plain veth, no tunnel: the ceiling."""

from __future__ import annotations

from tunsec.bench.netns import TwoHosts
from tunsec.bench.systems.base import System


class PlainVeth(System):
    name = "veth"
    description = "plain veth, no tunnel (ceiling)"

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        topo.route_inner_via_veth()
        self._wait_inner_ping(topo, timeout=5.0)
