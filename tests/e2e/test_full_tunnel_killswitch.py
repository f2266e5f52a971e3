"""A full tunnel's standing routes (dataplane/killswitch.py): after a kill -9 its traffic goes into the
device of the standing routes, not in clear; the next start takes the device over and its TUN's halves
win again; a clean stop removes the device, and the host's default route carries the traffic again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from ike_peers import TunsecIke
from roadwarrior import RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until
from tunsec.dataplane.killswitch import device_name

ELSEWHERE = "203.0.113.9"


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixfull2")
    with t:
        yield t


def path(topo: RoutedHosts, dst: str) -> str:
    r = topo.run(topo.a, ["ip", "route", "get", dst], check=False)
    return r.stdout + r.stderr


def test_the_standing_routes_hold_a_killed_full_tunnel_and_go_at_a_clean_stop(topo: RoutedHosts) -> None:
    device = device_name("tunsec0")
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), remote_ts="0.0.0.0/0"))
    client.start()
    assert "dev tunsec0" in path(topo, ELSEWHERE)
    assert client.proc is not None
    os.kill(client.proc.pid, signal.SIGKILL)
    client.proc.wait(timeout=10)
    client.proc = None
    assert wait_until(lambda: "tunsec0" not in topo.run(topo.a, ["ip", "link"]).stdout, 15)
    assert f"dev {device}" in path(topo, ELSEWHERE)   # dropped there: nothing leaves in clear
    client.start()   # takes the device over: the halves of the new TUN win
    assert "dev tunsec0" in path(topo, ELSEWHERE)
    assert topo.run(topo.a, ["ip", "route", "show", "dev", device]).stdout.count("metric 4294967294") == 2
    client.stop()
    assert device not in topo.run(topo.a, ["ip", "link"]).stdout
    assert f"via {topo.links[0][1]} dev veth0" in path(topo, ELSEWHERE)   # the host's own default route again
