"""tunsec's own routing table and the rule before the main table (dataplane/routetable.py, fixks5 for review
revks3 F1, F2, F5) in a namespace of the test's own, real netlink: the TUN's routes go there, a start adds the
rule once per family and two instances share it, a start without CAP_NET_ADMIN says root's command for a
missing rule, and the rule goes (prepare --undo) only once the table is empty."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
import tunsec_table
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.markrule import MARK, MARK_PRIORITY, SO_MARK, remove_mark_rules
from tunsec.dataplane.netlink import IPRoute
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE, remove_unused_rules
from tunsec.dataplane.tun import Tun
from tunsec.services.base import bind_udp

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN, OTHER_TUN = "fixrta0", "fixrtb0"
SITE, SITE6, LAB = ip_network("10.2.0.0/24"), ip_network("fd00:2::/64"), ip_network("10.7.0.0/24")
NOBODY = 65534
RULE = f"{RULE_PRIORITY}:\tfrom all lookup {TABLE}"


@pytest.fixture
def ns() -> Iterator[str]:
    """Two TUNs made beforehand (nobody's, up, IPv6 on), and eth0 with a default route: the way out in clear."""
    with scratch_netns("fixrt", "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                       "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                       "ip -6 addr add 2001:db8:1::10/64 dev eth0 nodad", "ip route add default via 192.168.1.1",
                       "ip -6 route add default via 2001:db8:1::1",
                       *(f"ip tuntap add dev {t} mode tun user {NOBODY}" for t in (TUN, OTHER_TUN)),
                       *(f"ip link set {t} up" for t in (TUN, OTHER_TUN))) as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def rules(ns: str) -> list[str]:
    return [ln for family in ("-4", "-6") for ln in ip(ns, family, "rule").splitlines() if f"lookup {TABLE}" in ln]


def way(ns: str, dst: str) -> str:
    return ip(ns, "-6" if ":" in dst else "-4", "route", "get", dst)


def test_the_tuns_routes_go_into_the_table_behind_one_rule_per_family_that_two_instances_share(ns: str) -> None:
    """Before fixks5 the TUN's routes were main-table routes: a more specific route of the host's (here the
    host's own 10.2.0.0/25 by eth0, as an IPv6 router advertisement's on-link prefix would be) took part of the
    tunnel's network by eth0, in clear.  Now that route stays the host's, and loses."""
    ip(ns, "route", "add", "10.2.0.0/25", "via", "192.168.1.1")
    ip(ns, "-6", "route", "add", "fd00:2::/65", "via", "2001:db8:1::1", "metric", "1")
    with in_netns(ns):
        a, b = Tun(TUN, False, None), Tun(OTHER_TUN, False, None)  # type: ignore[arg-type]
        a.add_route(SITE, None)
        a.add_route(SITE6, None)
        b.add_route(LAB, None)   # the second instance: the rule is there already
        assert a.unapplied == [] and b.unapplied == []
    assert rules(ns) == [RULE, RULE], rules(ns)
    assert f"{SITE} dev {TUN}" in tunsec_table.show("-4", ns=ns) and f"{LAB} dev {OTHER_TUN}" in tunsec_table.show(
        "-4", ns=ns)
    assert f"{SITE6} dev {TUN}" in tunsec_table.show("-6", ns=ns)
    assert f"dev {TUN}" in way(ns, "10.2.0.5") and f"dev {TUN}" in way(ns, "fd00:2::5")
    with in_netns(ns):
        a.remove_routes()   # the clean stop: its routes go, the host's and the rule stay
    assert "10.2.0.0/25 via 192.168.1.1 dev eth0" in ip(ns, "route", "show")
    assert "dev eth0" in way(ns, "10.2.0.5") and rules(ns) == [RULE, RULE]
    with in_netns(ns), IPRoute() as ipr:
        assert remove_unused_rules(ipr) == [f"ip -6 rule del priority {RULE_PRIORITY} lookup {TABLE}"]
    assert rules(ns) == [RULE]   # IPv4's stays: b's route is in the table
    with in_netns(ns):
        b.remove_routes()
        with IPRoute() as ipr:
            assert remove_unused_rules(ipr) == [f"ip rule del priority {RULE_PRIORITY} lookup {TABLE}"]
    assert rules(ns) == []


# a start without CAP_NET_ADMIN on a TUN whose route root put in tunsec's table but not the rule
UNPRIVILEGED = """
import os, sys
from ipaddress import ip_network
from tunsec.dataplane.tun import Tun
from tunsec.services.base import bind_udp
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
tun = Tun(sys.argv[1], False, None)
tun.add_route(ip_network(sys.argv[2]), None)
print(tun.unapplied, tun.routes)
"""


def test_a_start_without_cap_net_admin_says_roots_command_for_a_missing_rule(ns: str) -> None:
    """The route is in (tunsec prepare's, or root's by hand) but not the rule: without it nothing is looked up
    in the table, the tunnel's traffic takes the main table's routes, so the start says the command."""
    ip(ns, "route", "add", str(SITE), "dev", TUN, "table", str(TABLE))
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", UNPRIVILEGED, TUN, str(SITE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (f"[('no rule looks up table {TABLE} (its routes) before the main table', 'ip rule add priority "
            f"{RULE_PRIORITY} lookup {TABLE}')] []\n") == r.stdout, r.stdout
    ip(ns, "rule", "add", "priority", str(RULE_PRIORITY), "lookup", str(TABLE))   # what root runs
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", UNPRIVILEGED, TUN, str(SITE)],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "[] []\n", r.stdout + r.stderr   # found in place: nothing to say, not listed as its own


MARK_RULE = f"{MARK_PRIORITY}:\tfrom all fwmark {MARK:#x} lookup main"


def mark_rules(ns: str) -> list[str]:
    return [ln for family in ("-4", "-6") for ln in ip(ns, family, "rule").splitlines() if "fwmark" in ln]


def test_tunsecs_own_ike_and_esp_sockets_carry_the_mark_that_the_rule_sends_past_the_table(ns: str) -> None:
    """(review revks4 F5) a host-to-host tunnel's TUN route is the peer's own address, which wins over the peer's
    throw route in the same table: tunsec's IKE and ESP to the peer went into the TUN.  Now the route's rule comes
    with a rule of tunsec's mark before it (one per family, shared), the IKE and ESP sockets (bind_udp, as root)
    carry the mark, and the lookup of the mark takes the main table's path; everything else to the peer takes the
    TUN's.  The rule goes with tunsec's table's at prepare --undo (table empty)."""
    peer = ip_network("198.51.100.2/32")
    ip(ns, "route", "add", "throw", str(peer), "table", str(TABLE), "metric", "7")   # the exclude route loses
    with in_netns(ns):
        a, b = Tun(TUN, False, None), Tun(OTHER_TUN, False, None)  # type: ignore[arg-type]
        a.add_route(peer, None)
        a.add_route(SITE6, None)
        b.add_route(LAB, None)
        for version, addr in ((4, "0.0.0.0"), (6, "::")):
            ike = bind_udp(version, addr, 0, purpose="IKE", mark=True)
            other = bind_udp(version, addr, 0, purpose="RADIUS")
            assert ike.getsockopt(socket.SOL_SOCKET, SO_MARK) == MARK and other.getsockopt(socket.SOL_SOCKET,
                                                                                          SO_MARK) == 0
            ike.close()
            other.close()
    assert mark_rules(ns) == [MARK_RULE, MARK_RULE], mark_rules(ns)
    assert f"dev {TUN}" in way(ns, "198.51.100.2")
    assert "via 192.168.1.1 dev eth0" in ip(ns, "route", "get", "198.51.100.2", "mark", hex(MARK))
    with in_netns(ns):
        a.remove_routes()
        with IPRoute() as ipr:
            assert remove_mark_rules(ipr, (4, 6)) == [f"ip -6 rule del priority {MARK_PRIORITY} fwmark {MARK:#x} "
                                                      "lookup main"]
        b.remove_routes()
        ip(ns, "route", "del", "throw", str(peer), "table", str(TABLE), "metric", "7")
        with IPRoute() as ipr:
            assert remove_mark_rules(ipr, (4, 6)) == [f"ip rule del priority {MARK_PRIORITY} fwmark {MARK:#x} "
                                                      "lookup main"]
    assert mark_rules(ns) == []
