"""(review revfull F3) after a kill -9 (a crash, the OOM killer) a full tunnel's traffic leaves in clear.

The halves (0.0.0.0/1 + 128.0.0.0/1) are routes of the TUN tunsec made: they go with it when its last
descriptor closes, and the host's default route, which h/fixfull no longer replaces, takes every
address again until tunsec is started once more. Before h/fixfull the TUN's route *was* the default
route: it went with the TUN and left none, so the traffic stopped (failed closed). No gateway is
needed to see it: a full-tunnel client, its tunnel not up yet, routes everything into its TUN; after
the kill nothing may go by the uplink in clear (only the exclude routes' peers, whose IKE must).
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import control
import pytest
import tunsec_table
from ike_peers import Conn, TunsecIke
from reachable import python_argv
from roadwarrior import RoadWarriorConn
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until
from tunsec.conf.tunsec_section import WORKER_USER
from tunsec.dataplane.killswitch import device_name
from tunsec.dataplane.localrules import LOCAL_PRIORITY

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
    assert tunsec_table.show("-4", "dev", device, ns=topo.a.ns).count("metric 4294967294") == 2
    client.stop()
    assert device not in topo.run(topo.a, ["ip", "link"]).stdout
    assert f"via {topo.links[0][1]} dev veth0" in path(topo, ELSEWHERE)   # the host's own default route again


@dataclass
class PreparedIke(TunsecIke):
    """tunsec run as WORKER_USER with no capability at all, after `tunsec prepare` (root) set the host up:
    its control socket (and state_dir, which an IKE-only start makes) in a directory prepare gives the
    user, its configuration root's and read through the user's group, as prepare requires."""

    @property
    def sock(self) -> Path:
        return self.topo.workdir / f"run-{self.host.ns}" / "tunsec.sock"

    @property
    def state_dir(self) -> Path:
        return self.sock.parent / "state"

    def __post_init__(self) -> None:
        self.dir = self.topo.workdir / f"tunsec-{self.host.ns}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock.parent.mkdir(mode=0o750)
        self.write()
        os.chown(self.conf, 0, grp.getgrnam(WORKER_USER).gr_gid)
        self.conf.chmod(0o640)

    def env(self) -> list[str]:
        """What runs prepare and up under (`env ...`): the environment they get (none of their own here)."""
        return []

    def prepare(self) -> str:
        r = self.topo.run(self.host, [*self.env(), sys.executable, "-m", "tunsec", "prepare", "-c", str(self.conf),
                                      "--user", WORKER_USER], check=False, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def start(self) -> None:
        pw = pwd.getpwnam(WORKER_USER)
        # CAP_NET_BIND_SERVICE alone (IKE on port 500, as a unit's AmbientCapabilities= gives it): no CAP_NET_ADMIN
        as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                   "--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
                   "--bounding-set=-all,+net_bind_service", "--", *self.env()]
        argv = [*python_argv(as_user), "-m", "tunsec", "up", "-c", str(self.conf)]
        offset = control.log_size(self.log)
        self.spawn(self.host, argv, lambda: control.is_up(self.log, offset, self.sock))

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


def test_a_prepared_full_tunnel_run_unprivileged_reaches_its_gateway_and_fails_closed(topo: RoutedHosts) -> None:
    """(h/prepare) `tunsec prepare` adds what a privileged start adds for a full tunnel: the configured
    gateway's exclude route and the kill switch.  `tunsec up` with no capability uses them without
    asking the kernel again: its IKE leaves by the uplink (the tunnel comes up), and after a kill -9
    nothing leaves in clear while the gateway stays reachable by the uplink; a clean stop leaves them
    for the next start.  Before, prepare added neither (the gateway's IKE went into the TUN, the start
    logged the refused route and device) and made a device of another name."""
    gateway = TunsecIke(topo, Conn(topo.b, topo.a, local_ts="0.0.0.0/0"))
    gateway.start()
    client = PreparedIke(topo, Conn(topo.a, topo.b, remote_ts="0.0.0.0/0", start_action="start"),
                         tunsec_extra="  workers = 1\n")
    uplink = f"via {topo.links[0][1]} dev {topo.a.veth}"
    said = client.prepare()
    assert f"exclude routes {topo.b.outer4} via {topo.links[0][1]}" in said, said
    device = device_name("tunsec0")
    assert f"dev {device} (kill switch)" in said, said
    client.start()
    client.wait_established(20)   # its IKE reached the gateway: by the uplink, not into the TUN
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    log = client.log_text()
    assert "refused" not in log, log   # nothing tried again that prepare had done (EPERM)
    assert "WARNING TUN tunsec0" not in log, log   # the MTU prepare chose is the start's (its peer by the uplink)
    assert uplink in path(topo, topo.b.outer4)

    client.kill()
    assert "dev tunsec0" in path(topo, ELSEWHERE)   # the TUN is prepare's: it stays, nobody reads it
    assert uplink not in path(topo, ELSEWHERE), "a killed full tunnel's traffic leaves in clear"
    assert uplink in path(topo, topo.b.outer4)   # the gateway's IKE still leaves by the uplink
    topo.run(topo.a, ["ip", "link", "del", "tunsec0"])   # the TUN gone too (by root): the kill switch holds
    assert f"dev {device}" in path(topo, ELSEWHERE)
    client.prepare()   # the TUN made again; what is in place stays
    client.start()
    client.wait_established(20)
    r = client.cli("prepare", "--undo")
    assert r.returncode == 1 and "a tunsec is running on" in r.stderr, r.stdout + r.stderr
    client.stop()   # a clean stop leaves prepare's work for the next start
    links = topo.run(topo.a, ["ip", "link"]).stdout
    assert f"{device}:" in links and "tunsec0" in links and links.count("tsks") == 1, links
    assert uplink in path(topo, topo.b.outer4)

    r = client.cli("prepare", "--undo")   # and prepare's work goes: the host routes as it did before
    assert r.returncode == 0, r.stdout + r.stderr
    # the gateway's; the local_ts's is a rule (h/fixlocal), which goes too
    removed = r.stdout.split("exclude routes removed: ")[-1].split(";")[0].split(", ")
    assert f"{topo.b.outer4}/32" in removed, r.stdout
    assert f"rule del priority {LOCAL_PRIORITY} to {topo.a.inner_net4} lookup main" in r.stdout, r.stdout
    assert f"{LOCAL_PRIORITY}:" not in topo.run(topo.a, ["ip", "rule"]).stdout
    links = topo.run(topo.a, ["ip", "link"]).stdout
    assert "tsks" not in links and "tunsec0" not in links, links
    assert tunsec_table.proto_routes(topo.a.ns) == ""
    assert uplink in path(topo, ELSEWHERE)
