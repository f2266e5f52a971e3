"""h/fixlocal (review revlate14 F2): the rule that keeps a local network on the host's own routes (localrules.py)
is kept like the rule before tunsec's table: deleted by hand, the route keeper's round puts it back, and the
kernel's notice of its deletion (a rule of the main table) wakes the keeper at once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.localrules import LOCAL_PRIORITY
from tunsec.dataplane.netlink import NLMSG
from tunsec.dataplane.routekeep import Keeper
from tunsec.dataplane.routenotice import RTM_DELRULE, deletion_in_table
from tunsec.dataplane.tun import Tun

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "fixlocal0"
SITE, LAN = ip_network("10.0.0.0/8"), ip_network("10.1.0.0/24")
SITE6, LAN6 = ip_network("fd00::/16"), ip_network("fd00:1::/64")


@pytest.fixture
def ns() -> Iterator[str]:
    """A TUN made beforehand (up), eth0 with a default route (the way out in clear), lan0 the site's LAN."""
    with scratch_netns("fixlocal", "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                       "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                       "ip route add default via 192.168.1.1",
                       "ip link add lan0 type veth peer name lan0p", "ip link set lan0 up", "ip link set lan0p up",
                       "ip addr add 10.1.0.254/24 dev lan0", "ip -6 addr add fd00:1::1/64 dev lan0 nodad",
                       f"ip tuntap add dev {TUN} mode tun", f"ip link set {TUN} up") as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def test_a_local_networks_rule_deleted_by_hand_is_put_back(ns: str) -> None:
    """Both families: the rule deleted (`ip rule del`), the keeper's next round adds it again, counts it and the
    LAN is local again (without it, tunsec's table's 10.0.0.0/8 takes the LAN into the TUN)."""
    with in_netns(ns):
        tun = Tun(TUN, False, None)  # type: ignore[arg-type]
        ex = ExcludeRoutes(TUN)
        assert ex.keep_local([(SITE, (LAN,)), (SITE6, (LAN6,))], drop=False) == []
        tun.add_route(SITE, None)
        tun.add_route(SITE6, None)
        keeper = Keeper(tun, local=ex.local_nets)
        try:
            assert "dev lan0" in ip(ns, "route", "get", "10.1.0.5")
            for fam, net in (("-4", LAN), ("-6", LAN6)):
                ip(ns, fam, "rule", "del", "priority", str(LOCAL_PRIORITY), "to", str(net))
            assert f"dev {TUN}" in ip(ns, "route", "get", "10.1.0.5")
            done = keeper.check()
            assert keeper.rules_put_back == 2, (done, ip(ns, "rule"), ip(ns, "-6", "rule"))
            assert "dev lan0" in ip(ns, "route", "get", "10.1.0.5")
            assert "dev lan0" in ip(ns, "-6", "route", "get", "fd00:1::5")
            keeper.check()
            assert keeper.rules_put_back == 2   # in place: nothing to do
        finally:
            ex.close()
            tun.remove_routes()


def test_the_kernels_notice_of_a_deleted_main_table_rule_wakes_the_keeper() -> None:
    """The notice of a deleted rule of the main table counts as the table's (the local networks' rules look it
    up), a deleted main-table route does not (the host's own routes change often)."""
    def message(kind: int, table: int) -> bytes:
        body = bytes([2, 24, 0, 0, table, 0, 0, 1, 0, 0, 0, 0])   # fib_rule_hdr / rtmsg: table at byte 4
        return NLMSG.pack(NLMSG.size + len(body), kind, 0, 0, 0) + body

    assert deletion_in_table(message(RTM_DELRULE, 254))
    assert not deletion_in_table(message(25, 254))   # RTM_DELROUTE of the main table: not ours
