"""(review revfull F3) after a kill -9 (a crash, the OOM killer) a full tunnel's traffic leaves in clear.

The halves (0.0.0.0/1 + 128.0.0.0/1) are routes of the TUN tunsec made: they go with it when its last
descriptor closes, and the host's default route, which h/fixfull no longer replaces, takes every
address again until tunsec is started once more. Before h/fixfull the TUN's route *was* the default
route: it went with the TUN and left none, so the traffic stopped (failed closed). No gateway is
needed to see it: a full-tunnel client, its tunnel not up yet, routes everything into its TUN; after
the kill nothing may go by the uplink in clear (only the exclude routes' peers, whose IKE must).
"""

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

ELSEWHERE = "203.0.113.9"     # any internet address: the full tunnel's


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revfull")
    with t:
        yield t


def path(topo: RoutedHosts, dst: str) -> str:
    r = topo.run(topo.a, ["ip", "route", "get", dst], check=False)
    return r.stdout + r.stderr


def killed_full_tunnel(topo: RoutedHosts) -> TunsecIke:
    """A full-tunnel client, its tunnel not up yet, started and killed -9 (not running: proc None)."""
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), remote_ts="0.0.0.0/0"))
    client.start()
    assert "dev tunsec0" in path(topo, ELSEWHERE)
    assert client.proc is not None
    os.kill(client.proc.pid, signal.SIGKILL)
    client.proc.wait(timeout=10)
    client.proc = None
    # the worker ends with its pipe, and the TUN with its last descriptor
    assert wait_until(lambda: "tunsec0" not in topo.run(topo.a, ["ip", "link"]).stdout, 15)
    return client


def test_a_killed_full_tunnel_sends_nothing_in_clear(topo: RoutedHosts) -> None:
    killed_full_tunnel(topo)
    now = path(topo, ELSEWHERE)
    assert f"via {topo.links[0][1]} dev veth0" not in now, f"a killed full tunnel's traffic leaves in clear: {now}"


# the fix (dataplane/killswitch.py): held after kill -9, taken over by the next start, gone at a clean stop
def test_the_standing_routes_hold_a_killed_full_tunnel_and_go_at_a_clean_stop(topo: RoutedHosts) -> None:
    device = device_name("tunsec0")
    client = killed_full_tunnel(topo)
    assert f"dev {device}" in path(topo, ELSEWHERE)   # dropped there: nothing leaves in clear
    client.start()   # takes the device over: the halves of the new TUN win
    assert "dev tunsec0" in path(topo, ELSEWHERE)
    assert topo.run(topo.a, ["ip", "route", "show", "dev", device]).stdout.count("metric 4294967294") == 2
    client.stop()
    assert device not in topo.run(topo.a, ["ip", "link"]).stdout
    assert f"via {topo.links[0][1]} dev veth0" in path(topo, ELSEWHERE)   # the host's own default route again
