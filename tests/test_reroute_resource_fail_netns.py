"""A reload whose in-place source change the kernel refuses leaves the route as it is (review W F2).

It used to fall back to removing the route and adding it again: the tunnel's remote network followed
the default route (in clear) in between, and where the add failed too (an IPv6 source still tentative
in DAD) it stayed blocked; without CAP_NET_ADMIN the reload's answer told root to ``ip route del`` a
network a tunnel still wants.  Now the route keeps its old source, still into the TUN, a failed line
says so (the next reload tries again), and root is asked for ``ip route replace ... src``.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import subprocess
from typing import Any

from iproute_proxy import IPRouteProxy
from test_vips_netns import NET, TUN, inside, ns

from tunsec import reroute
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.tun import IPNetwork, IPRoute, NetlinkError, Tun, local_address_in

__all__ = ["ns"]   # the fixture, imported to be used here

NET6 = ipaddress.ip_network("2001:db8:9::/48")
PROBE6 = "2001:db8:9::5"
LOCAL6 = ipaddress.ip_network("2001:db8:1::/64")   # the tunnel's local_ts now: eth1's tentative address
REAL = tunmod._iproute


def _where(ipr: Any, tun_idx: int) -> str:
    try:
        route = ipr.route("get", dst=PROBE6)[0]
    except NetlinkError:
        return "refused"
    return "tun" if route.get_attr("RTA_OIF") == tun_idx else f"oif {route.get_attr('RTA_OIF')} (clear)"


def run_tentative() -> dict[str, Any]:
    seen: list[str] = []

    def look() -> None:
        with REAL() as ipr:
            seen.append(_where(ipr, ipr.link_lookup(ifname=TUN)[0]))

    class Watched(IPRouteProxy):
        """pyroute2's IPRoute, a route lookup made before each request the reload makes."""

        def before(self) -> None:
            look()

    def add(net: IPNetwork, local_nets: tuple[IPNetwork, ...]) -> None:   # the daemon's _add_route
        look()
        tun.add_route(net, local_address_in(local_nets) if local_nets else None)

    tun = Tun(TUN, False, None)  # type: ignore[arg-type]
    tun.add_route(NET6, None)
    tunmod._iproute = Watched
    try:
        lines = asyncio.run(reroute.reload_routes(tun, [(NET6, (LOCAL6,))], add))
    finally:
        tunmod._iproute = REAL
    with IPRoute() as ipr:
        after = _where(ipr, ipr.link_lookup(ifname=TUN)[0])
    return {"seen": seen, "lines": lines, "listed": list(tun.routes), "after": after, "unrouted": list(tun.unrouted)}


def test_a_tentative_new_source_leaves_the_route_into_the_tun(ns: str) -> None:
    for cmd in ("sysctl -qw net.ipv6.conf.all.disable_ipv6=0", f"sysctl -qw net.ipv6.conf.{TUN}.disable_ipv6=0",
                "ip -6 addr add 2001:db8:5::10/64 dev eth0 nodad", "ip -6 route add default via 2001:db8:5::1",
                # no carrier: DAD never completes, the address stays tentative (the kernel refuses it as a source)
                "ip link add eth1 type veth peer name eth1p", "ip link set eth1 up",
                "ip -6 addr add 2001:db8:1::20/64 dev eth1"):
        subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], check=True)
    out = inside(ns, run_tentative)
    assert out["seen"] and set(out["seen"]) == {"tun"}, out["seen"]   # never in clear, never refused
    assert out["after"] == "tun" and out["listed"] == [(NET6, None)] and out["unrouted"] == [], out
    assert len(out["lines"]) == 1 and out["lines"][0].startswith(reroute.FAILED), out["lines"]
    assert "setting source 2001:db8:1::20 on route 2001:db8:9::/48" in out["lines"][0], out["lines"]
    assert out["lines"][0].endswith("the route keeps its old source, into the TUN (the next reload tries again)")


def run_eperm() -> dict[str, Any]:
    class NoCapNetAdmin(IPRouteProxy):
        """pyroute2's IPRoute where every route change is refused EPERM (tunsec gave up CAP_NET_ADMIN)."""

        def route(self, cmd: str, **kw: Any) -> Any:
            if cmd in ("add", "replace", "del", "delete", "change"):
                raise NetlinkError(errno.EPERM, "Operation not permitted")
            return self.i.route(cmd, **kw)

    tun = Tun(TUN, False, None)  # type: ignore[arg-type]
    tun.add_route(NET, None)   # added at start, before privileges went: no source then
    tunmod._iproute = NoCapNetAdmin
    try:
        lines = asyncio.run(reroute.reload_routes(tun, [(NET, (ipaddress.ip_network("192.168.1.0/24"),))],
                                                  lambda net, local: tun.add_route(net, None)))
    finally:
        tunmod._iproute = REAL
    with IPRoute() as ipr:
        tun_idx = ipr.link_lookup(ifname=TUN)[0]
        kernel = [r.get_attr("RTA_PREFSRC") for r in ipr.route("dump", family=socket.AF_INET)
                  if r.get_attr("RTA_DST") == str(NET.network_address) and r.get_attr("RTA_OIF") == tun_idx]
    return {"lines": lines, "listed": list(tun.routes), "kernel": kernel}


def test_without_cap_net_admin_root_is_asked_to_replace_the_source_never_to_delete_the_route(ns: str) -> None:
    out = inside(ns, run_eperm)
    assert not any("ip route del" in line for line in out["lines"]), out["lines"]
    assert len(out["lines"]) == 1 and f"ip route replace {NET} dev {TUN} src 192.168.1.10" in out["lines"][0], out
    assert out["listed"] == [(NET, None)] and out["kernel"] == [None], out   # the route stays, as it was


def run_flushed() -> dict[str, Any]:
    class RefusesSources(IPRouteProxy):
        """pyroute2's IPRoute where a route with a preferred source is refused (EINVAL: the new source
        address gone since the reload looked it up)."""

        def route(self, cmd: str, **kw: Any) -> Any:
            if cmd == "replace" and "prefsrc" in kw:
                raise NetlinkError(errno.EINVAL, "Invalid argument")
            return self.i.route(cmd, **kw)

    def where() -> str:
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            try:
                route = ipr.route("get", dst="10.9.0.5")[0]
            except NetlinkError:
                return "refused"
            return "tun" if route.get_attr("RTA_OIF") == tun_idx else "clear"

    def add(net: IPNetwork, local_nets: tuple[IPNetwork, ...]) -> None:   # the daemon's _add_route
        tun.add_route(net, local_address_in(local_nets) if local_nets else None)

    wanted = [(NET, (ipaddress.ip_network("192.168.2.0/24"),))]   # its local_ts now: eth2's address
    tun = Tun(TUN, False, None)  # type: ignore[arg-type]
    tun.add_route(NET, "192.168.3.10")
    # the old source goes: the kernel deletes the route with it (its network then follows the default route).
    # It does so in the main table only (fib_sync_down_addr); in tunsec's table (fixks5) with the TUN's last IPv4
    # address (fib_disable_ip) or by someone's hand: here by hand
    subprocess.run(["ip", "addr", "del", "192.168.3.10/24", "dev", "eth1"], check=True)
    subprocess.run(["ip", "route", "del", str(NET), "dev", TUN, "table", "116"], check=True)
    flushed = where()
    tunmod._iproute = RefusesSources
    try:
        lines = asyncio.run(reroute.reload_routes(tun, wanted, add))
    finally:
        tunmod._iproute = REAL
    out = {"flushed": flushed, "lines": lines, "after": where(), "listed": list(tun.routes),
           "blocked": [n for n, u in tun.unrouted.items() if u.blocked]}
    out["again"] = asyncio.run(reroute.reload_routes(tun, wanted, add))   # the kernel takes the source now
    out["then"], out["listed_then"], out["unrouted_then"] = where(), list(tun.routes), list(tun.unrouted)
    return out


def test_a_route_the_kernel_deleted_with_its_old_source_is_blocked_when_the_new_one_is_refused(ns: str) -> None:
    """Review Z (low): the in-place change failed and the route was no longer in the kernel (deleted
    with its old source address): it stayed absent, its network followed the default route in clear."""
    for cmd in ("ip link add eth1 type veth peer name eth1p", "ip link set eth1 up", "ip link set eth1p up",
                "ip addr add 192.168.3.10/24 dev eth1", "ip link add eth2 type veth peer name eth2p",
                "ip link set eth2 up", "ip link set eth2p up", "ip addr add 192.168.2.20/24 dev eth2"):
        subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], check=True)
    out = inside(ns, run_flushed)
    assert out["flushed"] == "clear", out   # what the reload finds: the route gone, not by its doing
    assert out["after"] == "refused" and out["listed"] == [] and out["blocked"] == [NET], out
    assert out["lines"] and all(line.startswith(reroute.FAILED) for line in out["lines"]), out["lines"]
    assert "the route was gone: its traffic is refused (prohibit route) until a reload adds the route" \
        in out["lines"][0], out["lines"]
    assert out["then"] == "tun" and out["listed_then"] == [(NET, "192.168.2.20")], out
    assert out["unrouted_then"] == [] and out["again"] == ["routes added: 10.9.0.0/16"], out
