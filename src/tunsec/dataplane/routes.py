"""What a route the kernel dumped (pyroute2's rtmsg) says, in one place for the modules that read the
main table (the host's paths: dataplane/exclude.py, dataplane/tun.py): its table, destination, next hops, a
device's name.  tunsec's own routes are in its own table (routetable.in_table)."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from tunsec.dataplane.prohibitroute import RT_TABLE_MAIN

RTN_UNICAST = 1       # linux/rtnetlink.h
RT_SCOPE_LINK = 253


def in_main(r: Any) -> bool:
    """The route is in the main table (RTA_TABLE, or the header's for a table below 256)."""
    table = r.get_attr("RTA_TABLE")
    return bool((table if table is not None else r["table"]) == RT_TABLE_MAIN)


def destination(r: Any) -> IPv4Network | IPv6Network:
    """A route's destination (a default route has no RTA_DST)."""
    dst = r.get_attr("RTA_DST") or ("0.0.0.0" if r["family"] == socket.AF_INET else "::")
    return ip_network(f"{dst}/{r['dst_len']}")


def next_hops(r: Any) -> list[tuple[str | None, int | None]]:
    """(gateway, device index) of each next hop: the route's own, or each of a multipath route's."""
    if r.get_attr("RTA_OIF") is None and (hops := r.get_attr("RTA_MULTIPATH")):
        return [(h.get_attr("RTA_GATEWAY"), h["oif"]) for h in hops]
    return [(r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"))]


def gateways(r: Any) -> set[IPv4Address | IPv6Address]:
    """A route's next hops' gateways (RTA_GATEWAY, and each of a multipath route's)."""
    hops = [r, *(r.get_attr("RTA_MULTIPATH") or [])]
    return {ip_address(g) for h in hops if (g := h.get_attr("RTA_GATEWAY"))}


def ifname(ipr: Any, idx: int) -> str:
    """The name of device idx (``#idx`` if it is gone)."""
    links = ipr.get_links(idx)
    return str(links[0].get_attr("IFLA_IFNAME")) if links else f"#{idx}"
