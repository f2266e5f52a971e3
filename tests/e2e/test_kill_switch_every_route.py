"""Review revrestart F3, the fix: every route tunsec puts on the TUN (here a site-to-site connection's
remote_ts, IPv4 and IPv6) has a standing route of the same network into this instance's kill-switch device
(dataplane/killswitch.py), below the TUN's route while the TUN lives, holding the network after a kill -9,
taken over by the next start, and gone with the TUN's route: at a clean stop (the control process, dropped
to the user tunsec with no CAP_NET_ADMIN, removes the device as its owner) and at a reload that drops the
network.  The traffic to a network no tunnel routes any more, or after a clean stop, takes the host's
routes again.

Real parts: tunsec in namespace a of RoutedHosts (b runs no IKE: only routes are looked at), the kernel's
route lookups (ip route get) and listings."""

from __future__ import annotations

import grp
import os
import signal
from collections.abc import Iterator

import pytest
import tunsec_table
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts

from tunsec.bench.netns import wait_until
from tunsec.conf.tunsec_section import WORKER_USER
from tunsec.dataplane.killswitch import STANDING_PRIORITY, device_name

DEVICE = device_name("tunsec0")
DROPPED = "10.77.0.0/24"   # a second remote network, the one the reload drops


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="fixks")
    with t:
        yield t


def path(topo: RoutedHosts, dst: str) -> str:
    r = topo.run(topo.a, ["ip", "route", "get", dst], check=False)
    return r.stdout + r.stderr


def standing(topo: RoutedHosts) -> list[str]:
    """The networks of the routes through the kill-switch device at STANDING_PRIORITY, both families."""
    out = []
    for fam in ("-4", "-6"):
        shown = tunsec_table.show(fam, "dev", DEVICE, ns=topo.a.ns) if DEVICE in links(topo) else ""
        out += [ln.split()[0] for ln in shown.splitlines() if f"metric {STANDING_PRIORITY}" in ln]
    return sorted(out)


def links(topo: RoutedHosts) -> str:
    return topo.run(topo.a, ["ip", "link"]).stdout


def kill9(topo: RoutedHosts, client: TunsecIke) -> None:
    """kill -9 of the control process; its worker ends with its pipe, the TUN with its last descriptor."""
    assert client.proc is not None
    os.kill(client.proc.pid, signal.SIGKILL)
    client.proc.wait(timeout=10)
    client.proc = None
    assert wait_until(lambda: "tunsec0" not in links(topo), 15)


def site_to_site(topo: RoutedHosts, remote_ts: str, extra: str = "") -> TunsecIke:
    conn = Conn(topo.a, topo.b, local_ts=f"{topo.a.inner_net4}, {topo.a.inner_net6}", remote_ts=remote_ts)
    return TunsecIke(topo, conn, tunsec_extra=extra)


def test_a_split_tunnels_standing_routes_lie_under_the_tun_and_go_at_a_clean_stop(topo: RoutedHosts) -> None:
    """On main: no standing route at all (only a full tunnel's halves had one)."""
    client = site_to_site(topo, f"{topo.b.inner_net4}, {topo.b.inner_net6}")
    client.start()
    assert standing(topo) == sorted([topo.b.inner_net4, topo.b.inner_net6]), (links(topo), client.log_tail())
    for dst in (topo.b.inner4, topo.b.inner6):
        assert "dev tunsec0" in path(topo, dst), path(topo, dst)   # the TUN's route wins while it lives
    assert "dev veth0" in path(topo, topo.b.outer4)   # the peer's outer address is no tunnel's: untouched
    client.stop()   # as the user tunsec, no CAP_NET_ADMIN: the device goes as its owner's
    assert DEVICE not in links(topo), (links(topo), client.log_tail())
    for dst in (topo.b.inner4, topo.b.inner6):
        assert "dev veth0" in path(topo, dst), path(topo, dst)   # the host's default route again


def test_a_killed_runs_standing_routes_are_taken_over_by_the_next_start(topo: RoutedHosts) -> None:
    """After a kill -9 the device holds the network (the TUN is gone); the next start uses it and its clean
    stop removes it.  On main: there was none to hold the network."""
    client = site_to_site(topo, topo.b.inner_net4)
    client.start()
    kill9(topo, client)
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)
    client.start()
    assert "dev tunsec0" in path(topo, topo.b.inner4) and standing(topo) == [topo.b.inner_net4], links(topo)
    client.stop()
    assert DEVICE not in links(topo) and "dev veth0" in path(topo, topo.b.inner4), (links(topo), client.log_tail())


def test_a_reload_that_drops_a_network_removes_its_standing_route(topo: RoutedHosts) -> None:
    """A root run (user = root: the reload may change routes).  On main: none was there to remove."""
    client = site_to_site(topo, f"{topo.b.inner_net4}, {DROPPED}", extra="  user = root\n")
    client.start()
    assert standing(topo) == sorted([topo.b.inner_net4, DROPPED]), (links(topo), client.log_tail())
    client.write(remote_ts=topo.b.inner_net4)
    r = client.cli("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"routes removed: {DROPPED}" in r.stdout, r.stdout
    assert standing(topo) == [topo.b.inner_net4], (links(topo), client.log_tail())
    assert "dev veth0" in path(topo, "10.77.0.1")   # no tunnel's: the host's default route
    client.stop()
    assert DEVICE not in links(topo), links(topo)


def test_an_unprivileged_reload_says_the_standing_route_it_may_not_add(topo: RoutedHosts) -> None:
    """Run as the user tunsec (no CAP_NET_ADMIN): a reload that brings a network says the commands for
    root, the standing route's before the TUN's, and stays a success as the TUN route's note does."""
    client = site_to_site(topo, topo.b.inner_net4)
    client.start()
    client.write(remote_ts=f"{topo.b.inner_net4}, {DROPPED}")
    os.chown(client.conf, 0, grp.getgrnam(WORKER_USER).gr_gid)   # the reload reads it as the user tunsec
    client.conf.chmod(0o640)
    r = client.cli("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"standing routes not added (tunsec may not change routes, no CAP_NET_ADMIN): as root run ip route add "
            f"{DROPPED} dev {DEVICE} table 116 proto 116 metric {STANDING_PRIORITY}") in r.stdout, r.stdout
    assert f"ip route add {DROPPED} dev tunsec0" in r.stdout, r.stdout
    client.stop()
    assert DEVICE not in links(topo), links(topo)


def test_a_killed_runs_standing_route_leaves_the_peers_exclude_route_its_path(topo: RoutedHosts) -> None:
    """remote_ts covers the peer's own outer address (its whole subnet): the peer has an exclude route (a host
    route, more specific) that outlives the kill as the standing route does, so a restart's IKE still
    reaches it while the rest of the subnet is held.  On main the rest went in clear."""
    subnet = "198.51.100.0/24"   # b's outer subnet, b at .2
    client = site_to_site(topo, subnet)
    client.start()
    kill9(topo, client)
    assert "dev veth0" in path(topo, topo.b.outer4), path(topo, topo.b.outer4)   # the peer: by its exclude route
    assert f"dev {DEVICE}" in path(topo, "198.51.100.7"), path(topo, "198.51.100.7")   # the rest: held
    client.start()   # its IKE reaches the peer again; its clean stop leaves the host as it was
    client.stop()
    assert DEVICE not in links(topo) and "dev veth0" in path(topo, "198.51.100.7"), links(topo)
