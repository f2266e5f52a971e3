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
says it is up.
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

DEVICE = device_name("tunsec0")


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
