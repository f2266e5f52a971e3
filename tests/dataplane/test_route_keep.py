"""The TUN's routes the kernel or someone else removed, put back by routekeep.Keeper (h/fixks6, review revks3 F4)
in a namespace of the test's own, real TUNs and netlink: another instance's route in the place is not fought
over, a route a reload took off is not put back, one whose source address went comes back without it, a deleted
rule comes back, and a route the start found in place (tunsec prepare's) is watched too."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
import tunsec_table
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.daemon import Daemon
from tunsec.dataplane.routekeep import Keeper
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE
from tunsec.dataplane.tun import Tun

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN, OTHER_TUN = "fixkpa0", "fixkpb0"
SITE, SITE6 = ip_network("10.2.0.0/24"), ip_network("fd00:2::/64")
NOBODY = 65534


@pytest.fixture
def ns() -> Iterator[str]:
    """Two TUNs made beforehand (nobody's, up), and eth0 with a default route: the way out in clear."""
    with scratch_netns("fixkp", "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                       "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                       "ip route add default via 192.168.1.1",
                       *(f"ip tuntap add dev {t} mode tun user {NOBODY}" for t in (TUN, OTHER_TUN)),
                       *(f"ip link set {t} up" for t in (TUN, OTHER_TUN))) as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def test_another_instances_route_in_the_place_is_left_alone_and_ours_comes_back_once_it_goes(
        ns: str, caplog: pytest.LogCaptureFixture) -> None:
    """Instance b's TUN route of the same network took a's place in table 116 (its replace).  a's check finds its
    route missing and may not take the place back (the two would take it from each other every round): it says so
    once and lists it as lost; b's check finds its own in place.  Once b's goes, a's comes back."""
    with in_netns(ns):
        a, b = Tun(TUN, False, None), Tun(OTHER_TUN, False, None)  # type: ignore[arg-type]
        a.add_route(SITE, None)
        b.add_route(SITE, None)
        ka, kb = Keeper(a), Keeper(b)
        with caplog.at_level(logging.ERROR, logger="tunsec.tun"):
            for _ in range(3):
                assert ka.check().put_back == [] and kb.check().put_back == []
        assert f"{SITE} dev {OTHER_TUN}" in tunsec_table.show("-4", ns=ns)
        assert [x["network"] for x in ka.status()["routes_lost"]] == [str(SITE)]   # type: ignore[union-attr]
        assert len([r for r in caplog.records if str(SITE) in r.getMessage()]) == 1, caplog.text
        b.remove_routes()
        assert ka.check().put_back == [SITE] and ka.status()["routes_lost"] == [] and ka.routes_put_back == 1
    assert f"{SITE} dev {TUN}" in tunsec_table.show("-4", ns=ns)


def test_a_route_a_reload_took_off_is_not_put_back_and_one_whose_source_went_comes_back_without_it(ns: str) -> None:
    """a routes SITE with a virtual IP of the TUN's as its source, and SITE6.  Root deletes that address, the TUN's
    last IPv4 one: the kernel takes every IPv4 route through the TUN; the check puts SITE back without the source
    (the kernel refuses a source the host no longer has).  A reload then takes SITE6's tunnel away (remove_route):
    the check leaves it off."""
    ip(ns, "addr", "add", "10.1.0.5/32", "dev", TUN)
    with in_netns(ns):
        a = Tun(TUN, False, None)  # type: ignore[arg-type]
        a.add_route(SITE, "10.1.0.5")
        a.add_route(SITE6, None)
        keeper = Keeper(a)
        assert keeper.check().put_back == []
        ip(ns, "addr", "del", "10.1.0.5/32", "dev", TUN)
        assert f"{SITE} dev {TUN}" not in tunsec_table.show("-4", ns=ns)   # the kernel's doing
        assert keeper.check().put_back == [SITE]
        assert a.routes == [(SITE, None), (SITE6, None)], a.routes
        ip(ns, "-6", "route", "del", str(SITE6), "dev", TUN, "table", str(TABLE))   # root's, say
        a.remove_route(SITE6)   # a reload's: the tunnel is gone
        assert keeper.check().put_back == [] and keeper.status()["routes_lost"] == []
    assert f"{SITE} dev {TUN}" in tunsec_table.show("-4", ns=ns) and str(SITE6) not in tunsec_table.show("-6", ns=ns)


def test_a_deleted_rule_is_put_back(ns: str) -> None:
    """Without the rule the table is never looked up: the tunnels' traffic takes the main table's routes (the
    default route by eth0, in clear)."""
    with in_netns(ns):
        a = Tun(TUN, False, None)  # type: ignore[arg-type]
        a.add_route(SITE, None)
        keeper = Keeper(a)
        ip(ns, "rule", "del", "priority", str(RULE_PRIORITY), "lookup", str(TABLE))
        assert "dev eth0" in ip(ns, "route", "get", "10.2.0.5")
        assert keeper.check().rules == [4] and keeper.rules_put_back == 1
    assert f"dev {TUN}" in ip(ns, "route", "get", "10.2.0.5")


def test_a_route_the_start_found_in_place_is_watched_too_and_left_unlisted(ns: str) -> None:
    """tunsec prepare's route (root's here) is in table 116 before the start: Daemon._add_route finds it, does not
    list it as its own (the exit leaves it), and hands it to the keeper, which puts it back once it is gone; a
    reload whose configuration no longer routes it takes it off the watch."""
    ip(ns, "route", "add", str(SITE), "dev", TUN, "src", "192.168.1.10", "table", str(TABLE))
    with in_netns(ns):
        d = Daemon.__new__(Daemon)   # only what _add_route reads
        d.tun = Tun(TUN, False, None)  # type: ignore[arg-type]
        d.route_keeper = Keeper(d.tun)
        d._add_route(SITE, (ip_network("192.168.1.0/24"),))
        assert d.tun.routes == [] and d.route_keeper.found == {SITE: "192.168.1.10"}
        ip(ns, "route", "del", str(SITE), "dev", TUN, "table", str(TABLE))
        assert d.route_keeper.check().put_back == [SITE] and d.tun.routes == []
        back = tunsec_table.show("-4", ns=ns)
        assert f"{SITE} dev {TUN} " in back and " src 192.168.1.10 " in back, back
        d.route_keeper.found = {}   # what a reload that no longer routes SITE leaves (Daemon._reload_routes)
        ip(ns, "route", "del", str(SITE), "dev", TUN, "table", str(TABLE))
        assert d.route_keeper.check().put_back == [] and str(SITE) not in tunsec_table.show("-4", ns=ns)
