"""A reload that gives a TUN route another source address (the tunnel's local_ts now holds an address
of this host) changes it in place, with the real Tun and reroute.reload_routes in a network namespace.

It used to remove the route, then (other netlink requests and event-loop turns later) add it again
with the new source: meanwhile the tunnel's remote network followed the default route through eth0,
in clear.  Here every route lookup made while the reload runs (at each of its netlink requests, and
when it adds a route) must find the TUN.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from iproute_proxy import IPRouteProxy
from test_vips_netns import NET, PROBE, REFUSED, TUN, inside, ns, route_oif

from tunsec import reroute
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.tun import IPNetwork, IPRoute, Tun, local_address_in

__all__ = ["ns"]   # the fixture, imported to be used here

LAN = ipaddress.ip_network("192.168.1.0/24")   # eth0's (the fixture's 192.168.1.10/24)
REAL = tunmod._iproute


def run() -> dict[str, Any]:
    seen: list[str] = []

    def look() -> None:
        with REAL() as ipr:
            by = {ipr.link_lookup(ifname=TUN)[0]: "tun", ipr.link_lookup(ifname="eth0")[0]: "eth0", REFUSED: "refused"}
            seen.append(by[route_oif(ipr, PROBE)])

    class Watched(IPRouteProxy):
        """pyroute2's IPRoute, a route lookup made before each request the reload makes."""

        def before(self) -> None:
            look()

    def add(net: IPNetwork, local_nets: tuple[IPNetwork, ...]) -> None:   # the daemon's _add_route
        look()
        tun.add_route(net, local_address_in(local_nets) if local_nets else None)

    tun = Tun(TUN, False, None)  # type: ignore[arg-type]
    tun.add_route(NET, None)   # as configured before: local_ts held no address of this host
    tunmod._iproute = Watched
    try:
        lines = asyncio.run(reroute.reload_routes(tun, [(NET, (LAN,))], add))
    finally:
        tunmod._iproute = REAL
    with IPRoute() as ipr:
        tun_idx = ipr.link_lookup(ifname=TUN)[0]
        sources = [r.get_attr("RTA_PREFSRC") for r in ipr.route("dump", family=socket.AF_INET)
                   if r.get_attr("RTA_DST") == str(NET.network_address) and r.get_attr("RTA_OIF") == tun_idx]
    return {"seen": seen, "lines": lines, "listed": list(tun.routes), "sources": sources}


def test_a_new_source_address_changes_the_route_in_place(ns: str) -> None:
    out = inside(ns, run)
    assert out["seen"] and set(out["seen"]) == {"tun"}, out["seen"]   # never eth0, never unrouted
    assert out["listed"] == [(NET, "192.168.1.10")] and out["sources"] == ["192.168.1.10"], out
    assert out["lines"] == [f"routes given another source address: {NET} (src 192.168.1.10)"], out["lines"]
