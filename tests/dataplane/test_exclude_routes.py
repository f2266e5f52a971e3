"""Full tunnels and exclude routes (dataplane/exclude.py): the computations, then the routes in a namespace
of the test's own (real netlink: a dummy device stands in for the TUN, another for the host's uplink)."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from os import PathLike
from pathlib import Path as FsPath

import pytest

from tunsec.bench.netns import in_netns
from tunsec.dataplane import rpfilter
from tunsec.dataplane.exclude import ExcludeRoutes, Path, best_path, captured, local_throws, tun_networks, tun_routes
from tunsec.dataplane.localrules import LOCAL_PRIORITY
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE

HALVES4 = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
HALVES6 = [ip_network("::/1"), ip_network("8000::/1")]
DEFAULT4 = Path(ip_network("0.0.0.0/0"), "192.0.2.1", 2)
LAN4 = Path(ip_network("192.0.2.0/24"), None, 2)


def test_a_default_route_goes_into_the_tun_as_its_two_halves() -> None:
    assert list(tun_networks(ip_network("0.0.0.0/0"))) == HALVES4
    assert list(tun_networks(ip_network("::/0"))) == HALVES6
    assert tun_networks(ip_network("10.0.0.0/8")) == (ip_network("10.0.0.0/8"),)
    local = (ip_network("10.3.0.1/32"),)
    routes = [(ip_network("0.0.0.0/0"), local), (ip_network("0.0.0.0/1"), ()), (ip_network("::/0"), ())]
    # each network once, with the local networks of the first tunnel naming it
    assert tun_routes(routes) == [(HALVES4[0], local), (HALVES4[1], local), (HALVES6[0], ()), (HALVES6[1], ())]


def test_the_path_is_the_longest_prefix_then_the_lowest_metric() -> None:
    backup = Path(ip_network("0.0.0.0/0"), "192.0.2.254", 2, priority=100)
    peer = ip_address("198.51.100.2")
    assert best_path([backup, DEFAULT4, LAN4], peer) == DEFAULT4
    assert best_path([backup, DEFAULT4, LAN4], ip_address("192.0.2.7")) == LAN4
    assert best_path([LAN4], peer) is None
    assert best_path([DEFAULT4], ip_address("2001:db8::1")) is None


def test_a_peer_is_captured_by_any_tun_route_covering_it() -> None:
    """tunsec's table comes before the main table (dataplane/routetable.py): a TUN route covering a peer takes
    it whatever the length of the host's path to it, a connected link's too (fixks5), and with no path at all
    (review revks4 F3: a throw route needs none, it serves once the host has one)."""
    gateway = ip_address("198.51.100.2")
    assert captured(gateway, HALVES4)                 # a full tunnel: every gateway through a router
    assert captured(ip_address("192.0.2.7"), HALVES4)     # and every neighbour on the link
    # a site-to-site remote_ts covering the peer, reached through a router
    assert captured(ip_address("192.0.2.1"), [ip_network("192.0.2.0/24")])
    assert not captured(gateway, [ip_network("10.0.0.0/8")])
    assert captured(ip_address("2001:db8:2::2"), HALVES6)
    assert not captured(ip_address("2001:db8:2::2"), HALVES4)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with uplink up0 (192.0.2.2/24, 2001:db8:1::2/64, default routes via .1), tsx0 as the TUN
    (its routes the full tunnel's halves, in tunsec's table behind its rule, as Tun.add_route puts them)."""
    name = f"fixfull-ex-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for dev in ("up0", "tsx0"):   # veth pairs, both ends here and up (no dummy module on every kernel)
            ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            ip(name, "link", "set", dev, "up")
            ip(name, "link", "set", f"{dev}p", "up")
        ip(name, "addr", "add", "192.0.2.2/24", "dev", "up0")
        ip(name, "-6", "addr", "add", "2001:db8:1::2/64", "dev", "up0", "nodad")
        ip(name, "route", "add", "default", "via", "192.0.2.1")
        ip(name, "-6", "route", "add", "default", "via", "2001:db8:1::1")
        for family in ("-4", "-6"):
            ip(name, family, "rule", "add", "priority", str(RULE_PRIORITY), "lookup", str(TABLE))
        for half in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"):
            ip(name, "route", "add", half, "dev", "tsx0", "table", str(TABLE))
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ours(ns: str) -> str:
    """tunsec's exclude routes: its proto, in its table or the main table."""
    return "".join(ip(ns, family, "route", "show", "proto", str(RTPROT_TUNSEC), "table", table)
                   for family in ("-4", "-6") for table in (str(TABLE), "main"))


def test_exclude_routes_keep_the_peers_path_and_go_at_close(ns: str) -> None:
    ex = ExcludeRoutes("tsx0")
    peers = [ip_address("198.51.100.2"), ip_address("192.0.2.7"), ip_address("2001:db8:2::2")]
    with in_netns(ns):
        assert ex.ensure(peers, HALVES4 + HALVES6) == []
    # each a throw route in tunsec's table: the lookup goes on to the main table, by the host's path
    assert set(ex.held) == set(peers)
    assert "via 192.0.2.1 dev up0" in ip(ns, "route", "get", "198.51.100.2")
    assert "dev up0" in ip(ns, "route", "get", "192.0.2.7") and "via" not in ip(ns, "route", "get", "192.0.2.7")
    assert "dev tsx0" in ip(ns, "route", "get", "192.0.2.77")   # the link's route loses to the halves (fixks5)
    assert "via 2001:db8:1::1 dev up0" in ip(ns, "-6", "route", "get", "2001:db8:2::2")
    assert "dev tsx0" in ip(ns, "route", "get", "203.0.113.9")   # everything else: into the TUN
    assert f"throw 198.51.100.2 metric {ex.mark}" in ours(ns), ours(ns)   # ours: its proto
    with in_netns(ns):
        ex.keep_only([peers[2]])
    assert "198.51.100.2" not in ours(ns) and "2001:db8:2::2" in ours(ns)
    with in_netns(ns):
        ex.close()
    assert ours(ns) == "" and ex.held == {}
    assert "default via 192.0.2.1 dev up0" in ip(ns, "route", "show", "default")


def test_a_start_removes_the_exclude_routes_a_killed_run_of_its_own_left(ns: str) -> None:
    """Its mark's throw routes, and the host routes by the peer's path a tunsec of before fixks5 put in the main
    table; another instance's stay."""
    ex = ExcludeRoutes("tsx0")
    ip(ns, "route", "add", "throw", "198.51.100.2/32", "table", str(TABLE), "proto", str(RTPROT_TUNSEC), "metric",
       str(ex.mark))
    ip(ns, "route", "add", "198.51.100.4/32", "via", "192.0.2.1", "proto", str(RTPROT_TUNSEC), "metric", str(ex.mark))
    ip(ns, "-6", "route", "add", "throw", "2001:db8:2::2/128", "table", str(TABLE), "proto", str(RTPROT_TUNSEC),
       "metric", str(ex.mark))
    # another instance's (another TUN's mark) stays
    other = ExcludeRoutes("tsy0").mark
    ip(ns, "route", "add", "throw", "198.51.100.3/32", "table", str(TABLE), "proto", str(RTPROT_TUNSEC), "metric",
       str(other))
    with in_netns(ns):
        ex.clear_stale()
    assert "198.51.100.2" not in ours(ns) and "198.51.100.4" not in ours(ns) and "2001:db8:2::2" not in ours(ns)
    assert "198.51.100.3" in ours(ns)


def test_exclude_routes_follow_the_hosts_default_route_when_it_changes(ns: str) -> None:
    """DHCP or another daemon moves the default route while tunsec runs: the halves still win over it, and
    the peer's traffic takes the new path at once (a throw route: the main table decides); follow() only notes
    it (status, IKE sent without an exclude route)."""
    ex = ExcludeRoutes("tsx0")
    gateway = ip_address("198.51.100.2")
    with in_netns(ns):
        ex.ensure([gateway], HALVES4)
    ip(ns, "route", "replace", "default", "via", "192.0.2.254", "dev", "up0")   # a DHCP client names the device
    assert "via 192.0.2.254 dev up0" in ip(ns, "route", "get", str(gateway))
    assert "dev tsx0" in ip(ns, "route", "get", "203.0.113.9")
    with in_netns(ns):
        ex.follow()
        assert ex.held[gateway].gateway == "192.0.2.254"
    ip(ns, "route", "del", "default")   # the uplink gone for a moment: the last path known is kept
    with in_netns(ns):
        ex.follow()
        assert ex.held[gateway].gateway == "192.0.2.254"
        ex.close()
    assert ours(ns) == ""


def test_an_older_tunsecs_host_route_of_our_mark_is_not_taken_as_in_place(ns: str) -> None:
    """(review revprep remark 3, fixks5) a start on a TUN made for it takes only a throw route of its mark in
    tunsec's table as in place: the host route by the peer's path a tunsec of before fixks5 put in the main table
    would lose to the TUN's routes; the start adds its own and the stale one goes."""
    ex = ExcludeRoutes("tsx0", keep_found=True)
    gateway = ip_address("198.51.100.2")
    ip(ns, "route", "add", "198.51.100.2/32", "via", "192.0.2.1", "proto", str(RTPROT_TUNSEC), "metric", str(ex.mark))
    with in_netns(ns):
        assert ex.ensure([gateway], HALVES4) == []
        ex.clear_stale()
    assert ex.found == set(), "a main-table route was taken as this instance's exclude route"
    assert "via" not in ours(ns) and "throw 198.51.100.2" in ours(ns), ours(ns)
    with in_netns(ns):
        ex.close()
    assert ours(ns) == ""


def test_a_peer_without_a_path_gets_its_throw_route_and_takes_the_path_once_it_comes(ns: str) -> None:
    """(review revks4 F3) a full tunnel started before the host has a default route (DHCP not answered yet, a
    laptop off the network): the gateway is captured all the same, its throw route goes in at once, and the
    default route that comes later is the gateway's path; follow() notes it.  Before, no path meant no exclude
    route, and none came with the path: IKE and ESP to the gateway went into the TUN until a reload."""
    ex = ExcludeRoutes("tsx0")
    gateway = ip_address("198.51.100.2")
    ip(ns, "route", "del", "default")
    with in_netns(ns):
        assert ex.ensure([gateway], HALVES4) == []
    assert gateway in ex.held and ex.held[gateway] is None
    assert "throw 198.51.100.2" in ours(ns), ours(ns)
    ip(ns, "route", "add", "default", "via", "192.0.2.1", "dev", "up0")   # the DHCP answer (its client names the dev)
    assert "via 192.0.2.1 dev up0" in ip(ns, "route", "get", str(gateway))
    with in_netns(ns):
        ex.follow()
        path = ex.held[gateway]
        assert path is not None and path.gateway == "192.0.2.1"
        ex.close()
    assert ours(ns) == ""


def test_the_next_hop_of_a_peers_path_gets_no_throw_route(ns: str) -> None:
    """(review revlate14 F1) the router of a peer's path is whatever the host's routes say (a LAN's DHCP server
    chooses it): a throw route for it would let that address leave the tunnel in clear.  Under a full tunnel it
    stays in the TUN, also after the default route moves; only the peers' own addresses are thrown."""
    ex = ExcludeRoutes("tsx0")
    with in_netns(ns):
        ex.ensure([ip_address("198.51.100.2"), ip_address("192.0.2.7")], HALVES4)
    assert f"throw 198.51.100.2 metric {ex.mark}" in ours(ns), ours(ns)
    assert "192.0.2.1 " not in ours(ns), ours(ns)
    assert "dev tsx0" in ip(ns, "route", "get", "192.0.2.1"), ip(ns, "route", "get", "192.0.2.1")
    ip(ns, "route", "replace", "default", "via", "192.0.2.254", "dev", "up0")
    with in_netns(ns):
        ex.follow()
    assert "192.0.2.254" not in ours(ns), ours(ns)
    with in_netns(ns):
        ex.close()
    assert ours(ns) == ""


def test_only_the_configured_local_networks_a_tun_route_covers_get_a_throw_route() -> None:
    """(review revks4 F2) hub and spoke: local_ts 10.1.0.0/24 (the site's LAN), remote_ts 10.0.0.0/8."""
    lan, rest = ip_network("10.1.0.0/24"), ip_network("10.0.0.0/8")
    assert local_throws([(rest, (lan,))]) == {lan}
    assert local_throws([(HALVES4[0], (lan,)), (HALVES4[1], (lan,))]) == {lan}   # a site's full tunnel
    assert local_throws([(ip_network("10.2.0.0/24"), (lan,))]) == set()   # not covered: its connected route wins
    assert local_throws([(rest, (rest,))]) == set()   # the TUN's own network: nothing to keep out
    assert local_throws([(lan, (rest,))]) == set()    # a hub: its local side covers the spoke's: the TUN's wins
    assert local_throws([(rest, ()), (lan, ())]) == set()   # no local network configured (dynamic: a client's)


def _local_rules(ns: str, version: int = 4) -> str:
    """tunsec's rules of local networks (localrules.py), as `ip rule` says them."""
    out = ip(ns, *(["-6"] if version == 6 else []), "rule")
    return "\n".join(line for line in out.splitlines() if line.startswith(f"{LOCAL_PRIORITY}:"))


def test_the_rules_of_the_local_networks_go_in_before_and_out_after_the_tuns(ns: str) -> None:
    """keep_local without drop adds only (a reload, before the TUN's routes change); with drop the unwanted go
    (review revlate14 F2: a rule `to LAN lookup main suppress_prefixlength LEN-1`, not a throw route); a killed run's
    throw route of h/fixks7 is removed by the next start's clear_stale, another instance's stays."""
    ex = ExcludeRoutes("tsx0")
    lan, rest = ip_network("10.1.0.0/24"), ip_network("10.0.0.0/8")
    ip(ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
    ip(ns, "addr", "add", "10.1.0.254/24", "dev", "lan0")
    ip(ns, "link", "set", "lan0", "up")
    ip(ns, "route", "add", str(rest), "dev", "tsx0", "table", str(TABLE))
    with in_netns(ns):
        assert ex.keep_local([(rest, (lan,))], drop=False) == []
    assert f"to {lan} lookup main suppress_prefixlength {lan.prefixlen - 1}" in _local_rules(ns), _local_rules(ns)
    assert ours(ns) == "", ours(ns)   # no throw route
    assert "dev lan0" in ip(ns, "route", "get", "10.1.0.5") and "dev tsx0" in ip(ns, "route", "get", "10.2.0.5")
    with in_netns(ns):
        ex.keep_local([], drop=False)
    assert str(lan) in _local_rules(ns)
    with in_netns(ns):
        ex.keep_local([], drop=True)
    assert _local_rules(ns) == "" and ex.lans == set()
    other = ExcludeRoutes("tsy0").mark
    for mark in (ex.mark, other):
        ip(ns, "route", "add", "throw", str(lan), "table", str(TABLE), "proto", str(RTPROT_TUNSEC), "metric", str(mark))
    with in_netns(ns):
        ex.clear_stale()
    assert f"metric {ex.mark}" not in ours(ns) and f"metric {other}" in ours(ns), ours(ns)


def _add_rule(ns: str, net: str) -> None:
    ip(ns, *(["-6"] if ":" in net else []), "rule", "add", "priority", str(LOCAL_PRIORITY), "to", net, "lookup",
       "main", "suppress_prefixlength", str(ip_network(net).prefixlen - 1), "protocol", str(RTPROT_TUNSEC))


def test_a_killed_runs_rule_of_a_local_network_goes_at_start_unless_another_tunsec_covers_it(ns: str) -> None:
    """A start's clear_stale removes the rules (of either family) of local networks it does not want, which a
    killed run left, but one another tunsec's TUN route still covers (it may have the same local_ts: the rules
    are shared); the clean stop leaves a shared rule the same way, and removes its own."""
    ip(ns, "link", "add", "tsy0", "type", "veth", "peer", "name", "tsy0p")
    ip(ns, "link", "set", "tsy0", "up")
    ip(ns, "route", "add", "10.0.0.0/8", "dev", "tsy0", "table", str(TABLE))   # the other tunsec's
    for net in ("10.1.0.0/24", "172.16.1.0/24", "fd00:1::/64"):
        _add_rule(ns, net)
    ex = ExcludeRoutes("tsx0")
    site = ip_network("192.168.5.0/24")
    ip(ns, "route", "add", "192.168.0.0/16", "dev", "tsx0", "table", str(TABLE))   # ours: not another's
    _add_rule(ns, str(site))
    with in_netns(ns):
        ex.clear_stale()
    assert "10.1.0.0/24" in _local_rules(ns), _local_rules(ns)   # covered by tsy0's 10.0.0.0/8
    assert "172.16.1.0/24" not in _local_rules(ns) and str(site) not in _local_rules(ns), _local_rules(ns)
    assert _local_rules(ns, 6) == ""
    with in_netns(ns):
        assert ex.keep_local([(ip_network("10.0.0.0/8"), (ip_network("10.1.0.0/24"),)),
                              (ip_network("192.168.0.0/16"), (site,))]) == []
        ex.close()
    assert "10.1.0.0/24" in _local_rules(ns) and str(site) not in _local_rules(ns), _local_rules(ns)


def test_an_ipv6_local_network_gets_its_rule(ns: str) -> None:
    """IPv6 as IPv4: a site's /48 under remote_ts fd00::/16; its connected /64 stays local, the rest of the /48
    goes into the TUN (the fixture's ::/1 half and this fd00::/16), not out by the default route."""
    ip(ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
    ip(ns, "-6", "addr", "add", "fd00:1::1/64", "dev", "lan0", "nodad")
    ip(ns, "link", "set", "lan0", "up")
    ip(ns, "-6", "route", "add", "fd00::/16", "dev", "tsx0", "table", str(TABLE))
    ex = ExcludeRoutes("tsx0")
    with in_netns(ns):
        assert ex.keep_local([(ip_network("fd00::/16"), (ip_network("fd00:1::/48"),))]) == []
    try:
        assert "dev lan0" in ip(ns, "-6", "route", "get", "fd00:1::5")
        assert "dev tsx0" in ip(ns, "-6", "route", "get", "fd00:1:0:77::5")
    finally:
        with in_netns(ns):
            ex.close()
    assert _local_rules(ns, 6) == ""


def test_strict_reverse_path_filtering_under_tunsecs_routes_is_found(tmp_path: PathLike) -> None:
    """(review revks4 F4) the start's WARNING: rp_filter = 1 (the larger of all's and the device's) on the
    device of an IPv4 peer's path, under a full tunnel or a TUN route that is the peer's own address."""
    conf = FsPath(str(tmp_path))
    for key, value in (("all", "0"), ("lo", "1")):
        (conf / key).mkdir()
        (conf / key / "rp_filter").write_text(f"{value}\n")
    peer = ip_address("198.51.100.2")
    held = {peer: Path(ip_network("0.0.0.0/0"), "127.0.0.2", socket.if_nametoindex("lo"))}
    assert rpfilter.strict_devices(held, HALVES4, conf) == ["lo"]
    assert rpfilter.strict_devices(held, [ip_network("198.51.100.2/32")], conf) == ["lo"]   # host to host
    assert rpfilter.strict_devices(held, [ip_network("198.51.100.0/24")], conf) == []   # the throw route serves
    assert rpfilter.strict_devices({peer: None}, HALVES4, conf) == []
    (conf / "lo" / "rp_filter").write_text("2\n")
    assert rpfilter.strict_devices(held, HALVES4, conf) == []
