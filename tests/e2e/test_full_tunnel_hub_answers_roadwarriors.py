"""A full-tunnel site that also takes road warriors from anywhere (services/ike/exclude_gate.py): its
halves capture every client's address, yet it answers a client's IKE_SA_INIT by the uplink without a
route (the client is not authenticated yet: review revfull F1), and routes the client's address around
the full tunnel only once the client is authenticated (the exclude route goes in before the IKE_AUTH
answer leaves), so its ESP does not go into the TUN.

    road warrior a (192.0.2.2) -- router r -- site b (198.51.100.2): hq = 0.0.0.0/0 to 203.0.113.1
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from ike_peers import CHILD, TunsecIke
from roadwarrior import GatewayConn, Pool, RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until

HQ = "203.0.113.1"   # the site's hub: never up here (start_action none); its full tunnel's halves are in


@dataclass(frozen=True)
class SiteGateway(GatewayConn):
    """b: road warriors from any address, and everything else to its hub."""

    def connections(self) -> str:
        return super().connections() + f"""  hq {{
    version = 2
    local_addrs = {self.me.outer4}
    remote_addrs = {HQ}
    proposals = {self.proposals}
    local {{
      auth = psk
      id = {self.my_id()}
    }}
    remote {{
      auth = psk
      id = {self.peer_id()}
    }}
    children {{
      {CHILD} {{
        local_ts = {self.me.inner_net4}
        remote_ts = 0.0.0.0/0
        esp_proposals = {self.esp_proposals}
        mode = tunnel
      }}
    }}
  }}
"""


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixfull2")
    with t:
        yield t


def test_a_full_tunnel_site_answers_a_road_warrior_and_routes_it_out_only_once_authenticated(
        topo: RoutedHosts) -> None:
    site = TunsecIke(topo, SiteGateway(topo.b, topo.a, pools=(Pool("rw4", "10.3.0.0/24"),)))
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), start_action="start"))
    site.start()
    assert "dev tunsec0" in topo.run(topo.b, ["ip", "route", "get", topo.a.outer4]).stdout   # captured
    client.start()
    assert wait_until(lambda: bool(client.established()), 30), site.log_tail()
    assert wait_until(lambda: f"exclude route {topo.a.outer4}/32" in site.log_text(), 10), site.log_tail()
    lines = site.log_text().splitlines()
    routed = next(i for i, ln in enumerate(lines) if f"exclude route {topo.a.outer4}/32" in ln)
    up = next(i for i, ln in enumerate(lines) if "IKE SA established" in ln)
    # the IKE SA is up (its IKE_AUTH answer is about to leave) before the route goes in, not at IKE_SA_INIT
    assert up < routed, f"the client's address was routed out before it was authenticated:\n{lines[routed]}"
    counters = site.status()["exclude_routes"]   # its IKE_SA_INIT answer left by the uplink's interface
    assert counters["uplink"] >= 1 and counters["held"] == 2 and counters["into_tun"] == 0, counters
    path = topo.run(topo.b, ["ip", "route", "get", topo.a.outer4]).stdout
    assert f"via {topo.links[1][1]} dev veth0" in path, path
    # the Child SA carries traffic: the client's ESP left by the uplink, not into the site's TUN
    r = topo.run(topo.a, ["ping", "-c", "2", "-W", "2", topo.b.inner4], check=False)
    assert r.returncode == 0, r.stdout + r.stderr + site.log_tail()
    client.stop()
    site.stop()
