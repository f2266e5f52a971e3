"""Review revlate15 (h/fixkeep's route notices, h/fixthrow's exclude routes): proofs in a namespace of the test's
own, with a real TUN and netlink.

F1: the keeper puts back rule 116 when someone removes tunsec's rules (systemd-networkd's start removing foreign
rules, an `ip rule del` of each), but never rule 115 (h/fixks7's mark rule).  With a host-to-host tunnel (a TUN
route that is the peer's own /32, metric 0, beside its exclude throw route at the TUN's mark as metric), tunsec's
own marked IKE and ESP then go into the TUN: the tunnel kills itself until a restart.

F2: another process's route churn in tables not tunsec's (a container runtime, a routing daemon) wakes the keeper:
every one of its notices is queued to the notices' socket and parsed on the control process's event loop, and
once they overflow the socket (ENOBUFS) a check runs, though nothing of table 116 was deleted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.blockrecord import block_mark
from tunsec.dataplane.markrule import MARK, MARK_PRIORITY
from tunsec.dataplane.routekeep import Keeper
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE
from tunsec.dataplane.tun import Tun

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "revlate15t0"
PEER = "192.168.1.20"   # on eth0's link: the host's own path to it is eth0
CHURN = 4000            # routes another process adds and deletes in the main table


@pytest.fixture
def ns() -> Iterator[str]:
    """A TUN made beforehand (up), and eth0 with a default route: the host's own path to the peer."""
    with scratch_netns("revlate15", "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                       "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                       "ip route add default via 192.168.1.1", f"ip tuntap add dev {TUN} mode tun",
                       f"ip link set {TUN} up") as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def test_a_removed_mark_rule_is_put_back_with_rule_116_so_tunsecs_own_ike_and_esp_stay_out_of_the_tun(
        ns: str) -> None:
    """A host-to-host tunnel: TUN route PEER/32 (metric 0) and PEER's exclude throw route (metric: the TUN's mark),
    both in table 116.  Someone removes tunsec's two rules (networkd removes every foreign rule at its start); the
    keeper's round puts 116 back.  On main it leaves 115 out, and a packet of tunsec's marked IKE or ESP socket to
    the peer is routed into the TUN (the TUN route wins over the throw route of the same /32: lower metric)."""
    peer = ip_network(f"{PEER}/32")
    with in_netns(ns):
        tun = Tun(TUN, False, None)  # type: ignore[arg-type]
        tun.add_route(peer, None)    # its first route: rules 116 and 115 added with it (tun._rule)
        ip(ns, "route", "add", "throw", str(peer), "table", str(TABLE), "proto", "116",   # exclude.py's
           "metric", str(block_mark(TUN)))
        marked = ["route", "get", PEER, "mark", hex(MARK)]
        assert f"dev {TUN}" not in ip(ns, *marked), "setup: rule 115 sends marked packets to the main table"
        rules = ip(ns, "rule", "show")
        assert f"{MARK_PRIORITY}:" in rules and f"{RULE_PRIORITY}:" in rules, rules
        ip(ns, "rule", "del", "priority", str(MARK_PRIORITY))
        ip(ns, "rule", "del", "priority", str(RULE_PRIORITY))
        done = Keeper(tun).check()
        assert done.rules == [4], "the keeper put rule 116 back (it does on main)"
        rules = ip(ns, "rule", "show")
        route = ip(ns, *marked)
        assert f"dev {TUN}" not in route, (
            f"rule {MARK_PRIORITY} was not put back with rule {RULE_PRIORITY}: tunsec's own IKE/ESP to its "
            f"host-to-host peer {PEER} go into TUN {TUN}: {route.strip()}; rules:\n{rules}")
