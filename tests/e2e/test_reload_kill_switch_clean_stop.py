"""Review revprep2: a root full-tunnel run on a TUN made by hand (persistent: keep_found) adds the kill
switch's device itself; after a `tunsec reload` (with no change at all) its clean stop leaves the device and
its standing routes, and with the TUN's halves gone at the stop every address of the host goes into the
device, which nobody reads: the host is cut off with no tunsec running.  Without the reload the same stop
removes the device (the run's own, KillSwitch.owned)."""

from __future__ import annotations

import grp
import os
from collections.abc import Iterator

import pytest
from ike_peers import TunsecIke
from roadwarrior import RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.conf.tunsec_section import WORKER_USER
from tunsec.dataplane.killswitch import device_name

ELSEWHERE = "203.0.113.9"     # any internet address: the full tunnel's


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revprep2")
    with t:
        yield t


def path(topo: RoutedHosts, dst: str) -> str:
    r = topo.run(topo.a, ["ip", "route", "get", dst], check=False)
    return r.stdout + r.stderr


def test_a_reload_does_not_make_a_root_run_leave_its_own_kill_switch_at_a_clean_stop(topo: RoutedHosts) -> None:
    device = device_name("tunsec0")
    uplink = f"via {topo.links[0][1]} dev veth0"
    topo.run(topo.a, ["ip", "tuntap", "add", "dev", "tunsec0", "mode", "tun", "vnet_hdr"])   # made by hand
    client = TunsecIke(topo, RoadWarriorConn(topo.a, topo.b, vips=("0.0.0.0",), remote_ts="0.0.0.0/0"),
                       tunsec_extra="  workers = 1\n")
    os.chown(client.conf, 0, grp.getgrnam(WORKER_USER).gr_gid)   # a reload reads it as the user tunsec drops to
    client.conf.chmod(0o640)
    client.start()
    assert "dev tunsec0" in path(topo, ELSEWHERE)
    assert device in topo.run(topo.a, ["ip", "link"]).stdout   # added by this run (there was none)
    r = client.cli("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    client.stop()
    links = topo.run(topo.a, ["ip", "link"]).stdout
    now = path(topo, ELSEWHERE)
    assert device not in links and uplink in now, (
        f"after a reload the clean stop left the run's own kill switch: the host's traffic goes {now}")
