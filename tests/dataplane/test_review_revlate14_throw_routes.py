"""Review revlate14 F1: the next hop's throw route (h/fixks7, review revks4 F4) lets whoever sets the host's
main-table routes (a rogue DHCP server on the LAN: option 3 router, option 121 classless routes, as in
TunnelVision, CVE-2024-3661) pick an address that then leaves in clear past the TUN.

fixks5 put tunsec's routes in table 116, before the main table, so that no main-table route of any length takes
a tunnel's network.  fixks7 adds a throw route for the next hop of each peer's path when a TUN route covers it,
and `follow` moves it with the path every FOLLOW_INTERVAL.  The next hop is whatever the main table says: a LAN
attacker who hands out "PEER/32 via X" (or a default route via X, X made on-link by a /32) gets X's traffic out
of the tunnel: a resolver under a full tunnel, a protected server inside a site-to-site remote_ts.  The attacker
answers ARP for X and forwards the ESP, so the tunnel stays up and nothing is logged but an INFO line.

Real netlink in a namespace; the main-table routes are the ones dhclient/networkd install from such a lease."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import pytest

from tunsec.bench.netns import in_netns
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.routetable import RULE_PRIORITY, TABLE

PEER = "198.51.100.2"


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """uplink up0 192.0.2.2/24 with a default route via 192.0.2.1; tsx0 as the TUN behind table 116's rule."""
    name = f"revlate14-hop-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for dev in ("up0", "tsx0"):
            ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            ip(name, "link", "set", dev, "up")
            ip(name, "link", "set", f"{dev}p", "up")
        ip(name, "addr", "add", "192.0.2.2/24", "dev", "up0")
        ip(name, "route", "add", "default", "via", "192.0.2.1")
        ip(name, "rule", "add", "priority", str(RULE_PRIORITY), "lookup", str(TABLE))
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _tun_routes(ns: str, nets: list[str]) -> list:
    for net in nets:
        ip(ns, "route", "add", net, "dev", "tsx0", "table", str(TABLE))
    return [ip_network(n) for n in nets]


def _leaves_by(ns: str, addr: str) -> str:
    out = ip(ns, "route", "get", addr)
    return "tsx0" if "dev tsx0" in out else out.strip()


def test_a_rogue_dhcp_router_address_leaves_in_clear_under_a_full_tunnel(ns: str) -> None:
    """A full tunnel: every destination must go into the TUN.  The LAN's DHCP server renews the lease with
    router 9.9.9.9 (on-link by option 121's 9.9.9.9/32 with gateway 0.0.0.0): the host's DNS to its resolver
    9.9.9.9 then leaves by up0 in clear.  On main: `follow` adds `throw 9.9.9.9` to table 116."""
    ex = ExcludeRoutes("tsx0")
    tun = _tun_routes(ns, ["0.0.0.0/1", "128.0.0.0/1"])
    with in_netns(ns):
        ex.ensure([ip_address(PEER)], tun)
    assert _leaves_by(ns, "9.9.9.9") == "tsx0"   # before the lease: tunnelled
    ip(ns, "route", "add", "9.9.9.9/32", "dev", "up0")   # the lease's on-link route to its "router"
    ip(ns, "route", "replace", "default", "via", "9.9.9.9", "dev", "up0")
    try:
        with in_netns(ns):
            ex.follow()   # the exclude routes' follow loop, every FOLLOW_INTERVAL
        assert _leaves_by(ns, "9.9.9.9") == "tsx0", "a LAN's DHCP server took 9.9.9.9 out of the full tunnel"
    finally:
        with in_netns(ns):
            ex.close()


def test_a_rogue_classless_route_to_the_peer_takes_a_protected_server_out_of_a_site_tunnel(ns: str) -> None:
    """Site-to-site: remote_ts 198.51.100.0/24 covers the peer 198.51.100.2 (exclude.py's own example) and the
    remote site's server 198.51.100.40.  Option 121 gives "198.51.100.40/32 on-link" and "198.51.100.2/32 via
    198.51.100.40": the peer's path now has that server as its next hop, which gets a throw route: the host's
    traffic to the server leaves in clear by the LAN."""
    ex = ExcludeRoutes("tsx0")
    tun = _tun_routes(ns, ["198.51.100.0/24"])
    with in_netns(ns):
        ex.ensure([ip_address(PEER)], tun)
    assert _leaves_by(ns, "198.51.100.40") == "tsx0"
    ip(ns, "route", "add", "198.51.100.40/32", "dev", "up0")
    ip(ns, "route", "add", f"{PEER}/32", "via", "198.51.100.40", "dev", "up0")
    try:
        with in_netns(ns):
            ex.follow()
        assert _leaves_by(ns, "198.51.100.40") == "tsx0", "a classless static route took a remote_ts host out"
    finally:
        with in_netns(ns):
            ex.close()


def test_a_local_ts_wider_than_the_lan_sends_its_unrouted_part_out_by_the_default_route_in_clear(ns: str) -> None:
    """Review revlate14 F2.  A site gateway: local_ts 10.1.0.0/16 (its site; the LAN 10.1.0.0/24 is connected,
    the rest behind internal routers, or not in use), remote_ts 10.0.0.0/8 by the hub.  keep_local throws all of
    10.1.0.0/16 to the main table, whose only route for 10.1.77.5 is the default: the gateway's own traffic and
    what the tunnel brings for it leave by the uplink in clear (to the ISP), where fixks5's table 116 kept them
    in the TUN.  The same when an internal router's route goes (its link down, OSPF withdrawn).  Fails on main;
    passes once only what the main table routes other than by its default route leaves table 116 (wg-quick's
    `lookup main suppress_prefixlength LEN-1`, as a rule for the local_ts only)."""
    ex = ExcludeRoutes("tsx0")
    ip(ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
    ip(ns, "addr", "add", "10.1.0.254/24", "dev", "lan0")
    ip(ns, "link", "set", "lan0", "up")
    site, rest = ip_network("10.1.0.0/16"), ip_network("10.0.0.0/8")
    _tun_routes(ns, [str(rest)])
    try:
        with in_netns(ns):
            assert ex.keep_local([(rest, (site,))], drop=False) == []
        assert "dev lan0" in ip(ns, "route", "get", "10.1.0.5")   # the LAN stays local: what fixks7 wanted
        assert "dev up0" not in ip(ns, "route", "get", "10.1.77.5"), "the site's unrouted part leaves in clear"
    finally:
        with in_netns(ns):
            ex.close()
