"""Full tunnels and exclude routes (dataplane/exclude.py): the computations, then the routes in a namespace
of the test's own (real netlink: a dummy device stands in for the TUN, another for the host's uplink)."""

from __future__ import annotations

import errno
import logging
import secrets
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from tunsec.bench.netns import in_netns
from tunsec.dataplane import exclude
from tunsec.dataplane.exclude import ExcludeRoutes, Path, best_path, captured, tun_networks, tun_routes
from tunsec.dataplane.netlink import NetlinkError
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC

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


def test_a_peer_is_captured_by_a_tun_route_at_least_as_specific_as_its_path() -> None:
    gateway = ip_address("198.51.100.2")
    assert captured(gateway, HALVES4, DEFAULT4)                 # a full tunnel: every gateway through a router
    assert not captured(ip_address("192.0.2.7"), HALVES4, LAN4)   # on the link: its connected route wins
    # a site-to-site remote_ts covering the peer, reached through a router
    assert captured(ip_address("192.0.2.1"), [ip_network("192.0.2.0/24")], DEFAULT4)
    assert not captured(gateway, [ip_network("10.0.0.0/8")], DEFAULT4)
    assert not captured(gateway, HALVES4, None)                 # unreachable but through the tunnel: nothing to keep
    assert captured(ip_address("2001:db8:2::2"), HALVES6, Path(ip_network("::/0"), "2001:db8:1::1", 2))
    assert not captured(ip_address("2001:db8:2::2"), HALVES4, Path(ip_network("::/0"), "2001:db8:1::1", 2))


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with uplink up0 (192.0.2.2/24, 2001:db8:1::2/64, default routes via .1), tsx0 as the TUN
    (its routes the full tunnel's halves)."""
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
        for half in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"):
            ip(name, "route", "add", half, "dev", "tsx0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ours(ns: str) -> str:
    return ip(ns, "route", "show", "proto", str(RTPROT_TUNSEC)) + ip(ns, "-6", "route", "show", "proto",
                                                                     str(RTPROT_TUNSEC))


def test_exclude_routes_keep_the_peers_path_and_go_at_close(ns: str) -> None:
    ex = ExcludeRoutes("tsx0")
    peers = [ip_address("198.51.100.2"), ip_address("192.0.2.7"), ip_address("2001:db8:2::2")]
    with in_netns(ns):
        assert ex.ensure(peers, HALVES4 + HALVES6) == []
    # the gateways through the router: host routes by the default routes' path; the neighbour: none
    assert set(ex.held) == {peers[0], peers[2]}
    assert "via 192.0.2.1 dev up0" in ip(ns, "route", "get", "198.51.100.2")
    assert "dev up0" in ip(ns, "route", "get", "192.0.2.77")   # the link's own route, more specific
    assert "via 2001:db8:1::1 dev up0" in ip(ns, "-6", "route", "get", "2001:db8:2::2")
    assert "dev tsx0" in ip(ns, "route", "get", "203.0.113.9")   # everything else: into the TUN
    assert f"metric {ex.mark}" in ours(ns)
    with in_netns(ns):
        ex.keep_only([peers[2]])
    assert "198.51.100.2" not in ours(ns) and "2001:db8:2::2" in ours(ns)
    with in_netns(ns):
        ex.close()
    assert ours(ns) == "" and ex.held == {}
    assert "default via 192.0.2.1 dev up0" in ip(ns, "route", "show", "default")


def test_a_start_removes_the_exclude_routes_a_killed_run_of_its_own_left(ns: str) -> None:
    ex = ExcludeRoutes("tsx0")
    ip(ns, "route", "add", "198.51.100.2/32", "via", "192.0.2.1", "proto", str(RTPROT_TUNSEC), "metric", str(ex.mark))
    ip(ns, "-6", "route", "add", "2001:db8:2::2/128", "via", "2001:db8:1::1", "proto", str(RTPROT_TUNSEC),
       "metric", str(ex.mark))
    # another instance's (another TUN's mark) stays
    other = ExcludeRoutes("tsy0").mark
    ip(ns, "route", "add", "198.51.100.3/32", "via", "192.0.2.1", "proto", str(RTPROT_TUNSEC), "metric", str(other))
    with in_netns(ns):
        ex.clear_stale()
    assert "198.51.100.2" not in ours(ns) and "2001:db8:2::2" not in ours(ns)
    assert "198.51.100.3" in ours(ns)


def test_exclude_routes_follow_the_hosts_default_route_when_it_changes(ns: str) -> None:
    """DHCP or another daemon moves the default route while tunsec runs: the halves still win over it, and
    the peer's exclude route takes its new path (until then IKE would go to the old router)."""
    ex = ExcludeRoutes("tsx0")
    gateway = ip_address("198.51.100.2")
    with in_netns(ns):
        ex.ensure([gateway], HALVES4)
    ip(ns, "route", "replace", "default", "via", "192.0.2.254")
    assert "via 192.0.2.1 dev up0" in ip(ns, "route", "get", str(gateway))
    with in_netns(ns):
        ex.follow()
    assert "via 192.0.2.254 dev up0" in ip(ns, "route", "get", str(gateway))
    ip(ns, "route", "del", "default")   # the uplink gone for a moment: the route stays as it was
    with in_netns(ns):
        ex.follow()
        assert ex.held[gateway].gateway == "192.0.2.254"
        ex.close()
    assert ours(ns) == ""


def test_a_multipath_route_of_our_mark_is_not_taken_as_in_place(ns: str) -> None:
    """(review revprep remark 3) ours have one next hop: a multipath route of the mark, its first hop the
    path the start would take, was taken as in place (kept at the clean stop, its other hops used)."""
    ex = ExcludeRoutes("tsx0", keep_found=True)
    gateway = ip_address("198.51.100.2")
    ip(ns, "route", "add", "198.51.100.2/32", "proto", str(RTPROT_TUNSEC), "metric", str(ex.mark),
       "nexthop", "via", "192.0.2.1", "dev", "up0", "nexthop", "via", "192.0.2.3", "dev", "up0")
    with in_netns(ns):
        assert ex.ensure([gateway], HALVES4) == []
    assert ex.found == set(), "a multipath route was taken as this instance's exclude route"
    assert "nexthop" not in ip(ns, "route", "show", "198.51.100.2/32")   # replaced by the start's own
    with in_netns(ns):
        ex.close()
    assert ours(ns) == ""


class RefusedReplace:
    """IPRoute whose route replace the kernel refuses as it does an unprivileged run's (EPERM)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __enter__(self) -> RefusedReplace:
        self.real.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.__exit__(*exc)

    def route(self, cmd: str, **kw: Any) -> Any:
        if cmd == "replace":
            raise NetlinkError(errno.EPERM, "Operation not permitted")
        return self.real.route(cmd, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_an_exclude_route_that_cannot_follow_is_said_once_per_change(
        ns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """(review revprep remark 2) an unprivileged run's follow() is refused every 10 s once the uplink moved:
    the warning came every round, per peer, for ever."""
    ex = ExcludeRoutes("tsx0")
    gateway = ip_address("198.51.100.2")
    with in_netns(ns):
        ex.ensure([gateway], HALVES4)
    real = exclude._iproute
    monkeypatch.setattr(exclude, "_iproute", lambda: RefusedReplace(real()))
    stays = "exclude route 198.51.100.2/32 stays on its old path"
    ip(ns, "route", "replace", "default", "via", "192.0.2.254")
    with in_netns(ns), caplog.at_level(logging.WARNING, "tunsec.tun"):
        for _ in range(3):
            ex.follow()
        assert caplog.text.count(stays) == 1, caplog.text
        ip(ns, "route", "replace", "default", "via", "192.0.2.253")   # another change: said again
        ex.follow()
        ex.follow()
        assert caplog.text.count(stays) == 2, caplog.text
    assert ex.held[gateway].gateway == "192.0.2.1"   # where it still is
    monkeypatch.setattr(exclude, "_iproute", real)
    with in_netns(ns):
        ex.close()
