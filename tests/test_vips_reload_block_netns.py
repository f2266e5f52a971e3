"""A virtual IP's block racing a reload's route of the same network (review U's open item), with the
real Tun, VirtualIps and reroute.reload_routes in a network namespace.

The reload adds NEW_NET's route through the TUN, then (a separate netlink change, after the event loop
ran other tasks) removed the network's prohibit route.  If the virtual IP went down in between and
could not keep NEW_NET's route (the kernel refused to re-point it, or to put it back after the TUN's
last IPv4 address went), its prohibit route had replaced the route the reload had just added; the
reload then removed that prohibit route: NEW_NET had neither, nothing listed it, and its traffic left
by eth0's default route in clear.  Here the reload's add runs the virtual IP's whole down (its task on
the event loop) right after the route went in, and the kernel refuses the one route change that keeps
NEW_NET on the TUN.  Either the route is listed and on the TUN, or its block holds (listed as
unrouted) and the next reload adds the route again: never eth0.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from typing import Any

import pytest
from iproute_proxy import IPRouteProxy
from pyroute2.netlink.exceptions import NetlinkError
from test_vips_netns import NET, OTHER_NET, REFUSED, TUN, VIP, Client, inside, ns, route_oif, up_event

from tunsec import reroute
from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.tun import RTN_PROHIBIT, IPNetwork, local_address_in

__all__ = ["ns"]   # the fixture, imported to be used here

NEW_NET = ipaddress.ip_network("10.7.0.0/16")
NEW_PROBE = "10.7.0.5"
REAL = tunmod._iproute


class RefuseNewNet(IPRouteProxy):
    """While ``on`` is set, the kernel (pyroute2) refuses any TUN route to NEW_NET (ENOMEM): the change
    that would keep it on the TUN while the virtual IP goes."""

    on = threading.Event()

    def route(self, cmd: str, *a: Any, **kw: Any) -> Any:
        if (self.on.is_set() and cmd == "replace" and kw.get("type") != "prohibit"
                and kw.get("dst") == str(NEW_NET)):
            raise NetlinkError(12, "refused by the test")
        return self.i.route(cmd, *a, **kw)


def wanted(local: tuple[IPNetwork, ...]) -> list[reroute.Route]:
    return [(NET, ()), (OTHER_NET, ()), (NEW_NET, local)]


def run_race(local: tuple[IPNetwork, ...]) -> dict[str, Any]:
    """VIP up; a reload adds NEW_NET (its source the tunnel's local address in ``local``, as the daemon
    picks it) and the VIP goes down right after, NEW_NET's keeping refused; then a reload without refusal."""
    client = Client()
    seen: dict[str, Any] = {}

    def add(net: IPNetwork, local_nets: tuple[IPNetwork, ...]) -> None:   # the daemon's _add_route
        client.tun.add_route(net, local_address_in(local_nets) if local_nets else None)
        if net == NEW_NET and "source" not in seen:   # the first reload's
            seen["source"] = dict(client.tun.routes).get(NEW_NET)
            RefuseNewNet.on.set()
            try:   # the virtual IP's down, its task run on the loop while the reload waits for this thread
                asyncio.run_coroutine_threadsafe(client.apply(lambda: client.vips.down(1)), loop).result()
            finally:
                RefuseNewNet.on.clear()

    async def body() -> None:
        await client.apply(lambda: client.vips.up(1, up_event(VIP)))
        seen["first"] = await reroute.reload_routes(client.tun, wanted(local), add)
        seen["after_first"] = await asyncio.to_thread(state, client)
        seen["second"] = await reroute.reload_routes(client.tun, wanted(local), add)
        seen["after_second"] = await asyncio.to_thread(state, client)

    tunmod._iproute = RefuseNewNet
    try:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(body())
        loop.close()
    finally:
        tunmod._iproute = REAL
    return seen


def state(client: Client) -> dict[str, Any]:
    """NEW_NET as the kernel has it (TUN, eth0 or refused) and as Tun lists it."""
    with REAL() as ipr:
        by = {ipr.link_lookup(ifname=TUN)[0]: "tun", ipr.link_lookup(ifname="eth0")[0]: "eth0", REFUSED: "refused"}
        prohibits = [f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.route("dump", family=socket.AF_INET)
                     if r["type"] == RTN_PROHIBIT]
        unrouted = client.tun.unrouted.get(NEW_NET)
        return {"by": by[route_oif(ipr, NEW_PROBE)], "listed": any(d == NEW_NET for d, _ in client.tun.routes),
                "blocked": unrouted.blocked if unrouted else None, "prohibits": prohibits}


@pytest.mark.parametrize("local", [(ipaddress.ip_network("10.3.0.0/24"),), ()], ids=["repoint", "restore"])
def test_a_block_racing_a_reloads_route_leaves_it_blocked_and_the_next_reload_routes_it(
        ns: str, local: tuple[IPNetwork, ...]) -> None:
    """repoint: NEW_NET's route has the virtual IP as source (the tunnel's local_ts holds it), so the
    down re-points it first, refused: VirtualIps._repoint blocks it.  restore: no source; the VIP is the
    TUN's last IPv4 address, the kernel deletes NEW_NET's route with it and will not take it back:
    Tun.remove_address's stand-in stays as its block."""
    seen = inside(ns, lambda: run_race(local))
    assert seen["source"] == (str(VIP) if local else None)   # the case meant: the route as the reload added it
    first = seen["after_first"]
    # the block holds, listed as such: not routed by eth0, not a route nobody lists
    assert first == {"by": "refused", "listed": False, "blocked": True, "prohibits": [str(NEW_NET)]}, first
    assert any(line.startswith(reroute.FAILED) and str(NEW_NET) in line for line in seen["first"]), seen["first"]
    # the next reload adds the route again, and only then does the block go
    assert seen["after_second"] == {"by": "tun", "listed": True, "blocked": None, "prohibits": []}, seen
    assert seen["second"] == [f"routes added: {NEW_NET}"], seen["second"]


def test_a_block_made_while_a_reload_removes_its_network_goes_with_it(ns: str) -> None:
    """The reload removes NET's tunnel; after it lifted the blocks of networks no tunnel wants and
    before it removed NET's route, the virtual IP's down blocked NET (its re-pointing refused).  The
    block outlived the tunnel (NET refused until another reload, not following the host's routes
    as a network no tunnel routes does); now the reload lifts such blocks after its removals."""
    def run() -> dict[str, Any]:
        client = Client()   # NET and OTHER_NET routed
        blocked: list[str | None] = []

        class BlockMidway(RefuseNewNet):
            def get_addr(self, *a: Any, **kw: Any) -> Any:   # the reload's look at the sources (stale())
                if not blocked:
                    blocked.append(client.tun.set_source_or_block(NET, None, "route kept the virtual IP"))
                return self.i.get_addr(*a, **kw)

            def route(self, cmd: str, *a: Any, **kw: Any) -> Any:
                if cmd == "replace" and kw.get("type") != "prohibit" and kw.get("dst") == str(NET) and not blocked:
                    raise NetlinkError(12, "refused by the test")
                return self.i.route(cmd, *a, **kw)

        tunmod._iproute = BlockMidway
        try:
            only_other = [(OTHER_NET, (ipaddress.ip_network("10.99.0.0/24"),))]   # NET's tunnel is gone
            lines = asyncio.run(reroute.reload_routes(client.tun, only_other, lambda net, local: None))
        finally:
            tunmod._iproute = REAL
        with REAL() as ipr:
            by = {ipr.link_lookup(ifname=TUN)[0]: "tun", ipr.link_lookup(ifname="eth0")[0]: "eth0", REFUSED: "refused"}
            prohibits = [r.get_attr("RTA_DST") for r in ipr.route("dump", family=socket.AF_INET)
                         if r["type"] == RTN_PROHIBIT]
            return {"blocked": blocked, "lines": lines, "by": by[route_oif(ipr, "10.9.0.5")], "prohibits": prohibits,
                    "unrouted": list(client.tun.unrouted), "listed": [d for d, _ in client.tun.routes]}

    out = inside(ns, run)
    assert out["blocked"] and out["blocked"][0] is not None   # the case meant: NET was blocked midway
    assert out["by"] == "eth0" and out["prohibits"] == [] and out["unrouted"] == [], out
    assert out["listed"] == [OTHER_NET], out
