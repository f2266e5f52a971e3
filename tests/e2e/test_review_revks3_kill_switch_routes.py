"""Review revks3: routes of the host's (or of anyone on its link) that win over the TUN's routes or the
kill switch's standing routes, and TUN routes the kernel dropped that nothing puts back.

F1 (high): an IPv6 router advertisement's on-link prefix (anyone on the uplink's link) more specific than a
tunnel's route takes its traffic out of the TUN, in clear, while the tunnel is up (a full tunnel's ::/1 by
2000::/3).
F2 (high): the standing route (killswitch.py) has metric STANDING_PRIORITY (0xFFFFFFFE).  A route of the same
network the host has, or gets later, with any lower metric (a DHCP client's or NetworkManager's, an updown
script's) loses to the TUN's route while tunsec runs, so nothing looks wrong, and wins over the standing route
once the TUN is gone: after a kill -9 the tunnel's traffic leaves by it, in clear.  Nothing says so.
F3 (medium): the TUN's IPv6 routes go in at IPv6's default metric 1024, not 0: a host route of the network
below 1024 (an on-link prefix, 256) wins over the TUN's route while tunsec runs.
F4 (medium): TUN routes the kernel deleted (TUN down and up, their source address deleted) are never put
back, not even by a reload: the tunnel's traffic is dropped (with F2's route: sent in clear) while tunsec
says it is up.  Fixed by h/fixks6 (routekeep.py): a watch and each reload put them back, or say root's command.
F5 (low): the TUN's route replaces the host's own route of the network at the same metric, and the clean
stop removes it.

Real parts: tunsec in namespace a of RoutedHosts (b runs no IKE: only routes are looked at), the kernel's
route lookups (ip route get), kill -9 of the control process by PID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts
from test_kill_switch_every_route import kill9, path

from tunsec.bench.netns import wait_until
from tunsec.dataplane.killswitch import device_name
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE

DEVICE = device_name("tunsec0")
SENTINEL = "10.99.0.0/24"   # a route of the test's own through the TUN: what the kernel does to the TUN's routes


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revks3")
    with t:
        yield t


def site_to_site(topo: RoutedHosts, extra: str = "") -> TunsecIke:
    conn = Conn(topo.a, topo.b, local_ts=f"{topo.a.inner_net4}, {topo.a.inner_net6}",
                remote_ts=f"{topo.b.inner_net4}, {topo.b.inner_net6}")
    return TunsecIke(topo, conn, tunsec_extra=extra)


def test_a_hosts_route_of_the_tunnels_network_with_a_lower_metric_leaks_after_kill9(topo: RoutedHosts) -> None:
    """F2. The host routes the tunnel's IPv4 network itself, at metric 100 (a DHCP client's classless route,
    NetworkManager's) by its uplink.  While tunsec runs the TUN's route wins (metric 0); after a kill -9 of
    tunsec the promise is that the tunnel's traffic is dropped (the kill switch's device), never sent by the
    host's other routes.  On main it leaves by veth0, in clear, and nothing said so at start."""
    topo.run(topo.a, ["ip", "route", "add", topo.b.inner_net4, "via", topo.links[0][1], "metric", "100"])
    client = site_to_site(topo)
    client.start()
    assert "dev tunsec0" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)   # the TUN's route wins
    kill9(topo, client)
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)


def test_a_lower_metric_route_added_while_tunsec_runs_leaks_after_kill9(topo: RoutedHosts) -> None:
    """F2. The same with the host's route added after the start (a DHCP renewal, an updown script's `ip route
    add`): nothing watches for it.  On main the IPv4 network leaves by veth0 after the kill -9."""
    client = site_to_site(topo)
    client.start()
    topo.run(topo.a, ["ip", "route", "add", topo.b.inner_net4, "via", topo.links[0][1], "metric", "600"])
    assert "dev tunsec0" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)
    kill9(topo, client)
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)


def test_an_ipv6_route_of_the_tunnels_network_below_metric_1024_wins_while_tunsec_runs(topo: RoutedHosts) -> None:
    """F3. The TUN's IPv6 routes go in without a metric (tun.py _add_route's replace): IPv6's default, 1024,
    not 0 as the IPv4 ones and as killswitch.py says.  A host route of the tunnel's IPv6 network with a lower
    metric (an IPv6 router advertisement's on-link prefix, 256; a DHCPv6 or NetworkManager route, 100) then
    wins over the TUN's route while tunsec runs: the tunnel's traffic leaves by the uplink in clear, with the
    tunnel up.  On main fd00:2::1 goes by veth0 (IPv4, metric 0, is not affected)."""
    topo.run(topo.a, ["ip", "-6", "route", "add", topo.b.inner_net6, "via", topo.links[0][2], "metric", "256"])
    client = site_to_site(topo)
    client.start()
    tun6 = topo.run(topo.a, ["ip", "-6", "route", "show", "dev", "tunsec0"]).stdout
    assert "dev tunsec0" in path(topo, topo.b.inner6), (path(topo, topo.b.inner6), tun6)


def test_a_router_advertisement_of_the_tunnels_ipv6_prefix_takes_it_while_tunsec_runs(topo: RoutedHosts) -> None:
    """F3, by anyone on the uplink's link: a router advertisement (here from the router namespace, scapy)
    whose prefix option names the tunnel's remote /64 as on-link makes the kernel add it (proto kernel,
    expiring) at metric 256 by the uplink, under the TUN's route at 1024.  On main the tunnel's IPv6
    traffic then leaves by veth0 in clear (to whoever answers neighbour solicitations there) while the
    tunnel is up."""
    client = site_to_site(topo)
    client.start()
    assert "dev tunsec0" in path(topo, topo.b.inner6), path(topo, topo.b.inner6)
    router_advertisement(topo, topo.b.inner_net6.split("/")[0], 64)
    assert wait_until(lambda: "dev veth0" in topo.run(topo.a, ["ip", "-6", "route", "show", topo.b.inner_net6]).stdout,
                      5), topo.run(topo.a, ["ip", "-6", "route"]).stdout
    assert "dev tunsec0" in path(topo, topo.b.inner6), path(topo, topo.b.inner6)


def test_the_hosts_own_route_of_the_tunnels_network_is_not_taken_by_the_tuns(topo: RoutedHosts) -> None:
    """F5. The host routes the tunnel's IPv4 network itself at IPv4's default metric, 0 (an operator's static
    route to the remote site, here by the router).  The TUN's route goes in by netlink replace (tun.py
    _add_route) at the same key (network, metric 0): the kernel replaces the host's route by the TUN's,
    tunsec lists it as its own (_has_route only looks for one through the TUN) and the clean stop removes it.
    The host's route is gone for good: the network then follows the default route (elsewhere: the internet,
    in clear).  On main the host's route is missing after the clean stop."""
    gw4 = topo.links[0][1]
    topo.run(topo.a, ["ip", "route", "add", topo.b.inner_net4, "via", gw4])
    client = site_to_site(topo)
    client.start()
    client.stop()
    after = topo.run(topo.a, ["ip", "route", "show", topo.b.inner_net4]).stdout
    assert f"via {gw4} dev veth0" in after, (after, client.log_tail())


@pytest.mark.parametrize("how", ["link down and up", "the TUN's last IPv4 address deleted"])
def test_a_tun_route_the_kernel_dropped_is_put_back_by_a_reload(topo: RoutedHosts, how: str) -> None:
    """F4. The kernel deletes the TUN's routes when an operator sets the TUN down (and up again), and when the TUN
    loses its last IPv4 address (fib_disable_ip: every IPv4 route through it, in every table).  Nothing put them
    back (blockwatch keeps the blocks only) and a reload did not either: Daemon._add_route skips a network
    Tun.routes still lists.  The tunnel's traffic went to the kill switch (dropped) for good while tunsec said it
    was up.  On main the route stays gone after the reload (its answer: no changes).
    Adapted to table 116 (h/fixks5): the review's second case, the route's source address (local_ts, on another
    device) deleted and added, no longer drops the route (the kernel deletes a route with its source address in
    the main table only); the TUN's own last IPv4 address still does.  That the kernel took the TUN's routes is
    read from a route of the test's own through the TUN (in another table), which nothing puts back: the watch
    (routekeep.py) may put tunsec's back before the reload, the end is what counts."""
    client = site_to_site(topo, extra="  user = root\n")
    client.start()
    assert "dev tunsec0" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)
    topo.run(topo.a, ["ip", "route", "add", SENTINEL, "dev", "tunsec0", "table", "201"])
    if how == "link down and up":
        topo.run(topo.a, ["ip", "link", "set", "tunsec0", "down"])
        topo.run(topo.a, ["ip", "link", "set", "tunsec0", "up"])
    else:
        topo.run(topo.a, ["ip", "addr", "add", "10.9.9.9/32", "dev", "tunsec0"])
        topo.run(topo.a, ["ip", "addr", "del", "10.9.9.9/32", "dev", "tunsec0"])
    sentinel = topo.run(topo.a, ["ip", "route", "show", "table", "201"], check=False)
    assert SENTINEL not in sentinel.stdout and sentinel.returncode == 0, sentinel   # the kernel took them
    r = client.cli("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dev tunsec0" in path(topo, topo.b.inner4), (path(topo, topo.b.inner4), r.stdout)


def test_the_watch_puts_back_the_tuns_routes_and_the_rules_without_a_reload(topo: RoutedHosts) -> None:
    """F4, the watch (routekeep.py): the TUN set down and up again (both families' routes gone), then the rules
    that look up table 116 deleted by hand.  Within a few of its rounds each is back, with no reload, said in the
    log and counted in `tunsec status`.  On main nothing comes back."""
    client = site_to_site(topo, extra="  user = root\n")
    client.start()
    topo.run(topo.a, ["ip", "link", "set", "tunsec0", "down"])
    topo.run(topo.a, ["ip", "link", "set", "tunsec0", "up"])
    assert wait_until(lambda: all("dev tunsec0" in path(topo, dst) for dst in (topo.b.inner4, topo.b.inner6)), 20), \
        (path(topo, topo.b.inner4), path(topo, topo.b.inner6), client.log_tail())
    for family in ("-4", "-6"):
        topo.run(topo.a, ["ip", family, "rule", "del", "priority", str(RULE_PRIORITY), "lookup", str(TABLE)])
    assert wait_until(lambda: all(f"lookup {TABLE}" in topo.run(topo.a, ["ip", family, "rule"]).stdout
                                  for family in ("-4", "-6")), 20), client.log_tail()
    assert "dev tunsec0" in path(topo, topo.b.inner4) and "dev tunsec0" in path(topo, topo.b.inner6)
    tun = client.status()["tun"]
    assert tun["routes_put_back"] == 2 and tun["rules_put_back"] == 2 and tun["routes_lost"] == [], tun
    assert f"route {topo.b.inner_net4} via TUN tunsec0 was removed" in client.log.read_text()


def test_without_cap_net_admin_a_dropped_route_is_said_once_with_roots_command(topo: RoutedHosts) -> None:
    """F4 where the control process gave CAP_NET_ADMIN up at its drop (a split tunnel on a TUN it created,
    docs/privileges.md): it cannot put the route back, so it says root's command in one ERROR (not one a round),
    lists the route as lost in `tunsec status`, and a reload's answer fails with the command.  Once root ran it,
    the route is no longer lost.  On main nothing notices: the status lists nothing and the reload answers
    no changes."""
    client = site_to_site(topo)   # drops to the tunsec user
    client.readable_by_tunsec()
    client.start()
    topo.run(topo.a, ["ip", "link", "set", "tunsec0", "down"])
    topo.run(topo.a, ["ip", "link", "set", "tunsec0", "up"])
    cmd = f"ip route add {topo.b.inner_net4} dev tunsec0 src {topo.a.inner4} table {TABLE}"

    def lost() -> list[str]:
        return [f"{x['network']}: {x['reason']}" for x in client.status()["tun"].get("routes_lost", [])]

    assert wait_until(lambda: any(cmd in x for x in lost()), 20), (lost(), client.log_tail())
    r = client.cli("reload")   # the same check: its answer says it, the log not again
    assert r.returncode != 0 and cmd in r.stdout + r.stderr, r.stdout + r.stderr
    said = [ln for ln in client.log.read_text().splitlines()
            if f"route {topo.b.inner_net4} via TUN tunsec0 was removed" in ln and "reload: " not in ln]
    assert len(said) == 1 and "ERROR" in said[0] and cmd in said[0], said
    topo.run(topo.a, cmd.split())   # what root runs
    assert wait_until(lambda: not any(str(topo.b.inner_net4) in x for x in lost()), 20), lost()
    assert "dev tunsec0" in path(topo, topo.b.inner4)


def router_advertisement(topo: RoutedHosts, prefix: str, length: int) -> None:
    """An IPv6 router advertisement from the router's side of a's link (anyone on that link may send one):
    no default router, one prefix option, on-link, no SLAAC address."""
    send = ("from scapy.all import *; "
            f"sendp(Ether(dst='33:33:00:00:00:01')/IPv6(dst='ff02::1')/ICMPv6ND_RA(routerlifetime=0)/"
            f"ICMPv6NDOptPrefixInfo(prefix='{prefix}', prefixlen={length}, L=1, A=0, validlifetime=600, "
            f"preferredlifetime=600), iface='{topo.links[0][0]}', verbose=False)")
    topo.run(topo.a, ["sysctl", "-q", "-w", "net.ipv6.conf.veth0.accept_ra=1"])   # a host's default (no forwarding)
    topo.run(topo.r, ["python3", "-c", send])


def test_a_router_advertisement_takes_a_full_tunnels_ipv6_traffic_while_it_is_up(topo: RoutedHosts) -> None:
    """F1. A full tunnel (remote_ts ::/0) routes ::/1 and 8000::/1 into the TUN, more specific than the host's
    default route only.  An on-link prefix of any length in a router advertisement becomes a route (metric
    256, by the uplink) more specific than those halves: 2000::/3 takes every global unicast destination out
    of the tunnel, in clear, onto the uplink's link, where the sender answers the neighbour solicitations
    (TunnelVision's, CVE-2024-3661, class; IPsec's kernel policies would still protect that traffic, routes
    alone do not).  No capability needed: anyone on the client's Wi-Fi.  On main 2001:db8:99::1 then goes by
    veth0 while tunsec runs."""
    client = site_to_site(topo)
    client.write(remote_ts="0.0.0.0/0, ::/0")
    client.start()
    internet = "2001:db8:99::1"
    assert "dev tunsec0" in path(topo, internet), path(topo, internet)
    router_advertisement(topo, "2000::", 3)
    assert wait_until(lambda: "2000::/3" in topo.run(topo.a, ["ip", "-6", "route"]).stdout, 5), \
        topo.run(topo.a, ["ip", "-6", "route"]).stdout
    assert "dev tunsec0" in path(topo, internet), path(topo, internet)
