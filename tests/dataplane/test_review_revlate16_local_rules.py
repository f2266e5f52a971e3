"""Review revlate16: the rule of a covered local_ts (h/fixlocal, localrules.py: priority 114 `to NET lookup main
suppress_prefixlength 0`) lets the main table serve the local network by ANY of its routes but the default one.

F1: a main-table route broader than the local_ts but not the default route (TunnelVision's option-121 halves
0.0.0.0/1 + 128.0.0.0/1 from the uplink's DHCP server, CVE-2024-3661; a summary route) takes the local_ts's
unrouted part out by the uplink in clear: fixlocal's promise (what the main table does not route but by its
default goes into the TUN) holds only for the default route itself.
F2: a TUN route nested inside the local_ts (another tunnel's remote_ts) loses to the main table's route of the
local_ts (an internal router's aggregate): the throw route of before lost to the more specific TUN route in
table 116's longest-prefix match, the rule at 114 comes before table 116 whatever the lengths.

Real netlink in a namespace, as tests/dataplane/test_review_revlate14_throw_routes.py."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest

from tunsec.bench.netns import in_netns
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """uplink up0 192.0.2.2/24, default via 192.0.2.1; LAN lan0 10.1.0.254/24; tsx0 as the TUN (table 116)."""
    name = f"revlate16-lr-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for dev in ("up0", "tsx0", "lan0"):
            ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            ip(name, "link", "set", dev, "up")
            ip(name, "link", "set", f"{dev}p", "up")
        ip(name, "addr", "add", "192.0.2.2/24", "dev", "up0")
        ip(name, "addr", "add", "10.1.0.254/24", "dev", "lan0")
        ip(name, "route", "add", "default", "via", "192.0.2.1")
        ip(name, "rule", "add", "priority", str(RULE_PRIORITY), "lookup", str(TABLE))
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _dev(ns: str, addr: str) -> str:
    out = ip(ns, "route", "get", addr)
    return out.split(" dev ", 1)[1].split()[0]


def test_a_dhcp_pushed_half_route_takes_the_local_ts_unrouted_part_out_in_clear(ns: str) -> None:
    """F1.  The site gateway of revlate14 F2: local_ts 10.1.0.0/16, remote_ts 10.0.0.0/8 by the hub.  With only
    the default route, 10.1.77.5 goes into the TUN (fixlocal).  The uplink's DHCP server (the ISP's, or anyone on
    that link) adds the classless routes 0.0.0.0/1 and 128.0.0.0/1 via 192.0.2.1 (TunnelVision's trick; also a
    second uplink's split default): the rule's `suppress_prefixlength 0` suppresses only length 0, so the main
    table serves 10.1.77.5 by its /1 and it leaves by up0 in clear.  Fails on main; passes with a rule that
    suppresses the main table's routes broader than the local_ts (suppress_prefixlength = its length - 1)."""
    ex = ExcludeRoutes("tsx0")
    site, rest = ip_network("10.1.0.0/16"), ip_network("10.0.0.0/8")
    ip(ns, "route", "add", str(rest), "dev", "tsx0", "table", str(TABLE))
    try:
        with in_netns(ns):
            assert ex.keep_local([(rest, (site,))], drop=False) == []
        assert _dev(ns, "10.1.0.5") == "lan0"
        assert _dev(ns, "10.1.77.5") == "tsx0"   # fixlocal: the unrouted part into the TUN
        for half in ("0.0.0.0/1", "128.0.0.0/1"):   # the lease's option 121
            ip(ns, "route", "add", half, "via", "192.0.2.1", "dev", "up0")
        assert _dev(ns, "10.1.0.5") == "lan0"   # the LAN stays local
        assert _dev(ns, "10.1.77.5") == "tsx0", "the uplink's DHCP routes took the local_ts's rest out in clear"
    finally:
        with in_netns(ns):
            ex.close()
