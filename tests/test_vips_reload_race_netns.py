"""A reload changing the TUN's routes while a virtual IP goes (review T F1), with the real Tun in a
network namespace.

The virtual IP is the TUN's last IPv4 address: removing it, the kernel deletes every IPv4 route
through the TUN, and Tun.remove_address puts back the routes it lists.  A reload runs in another
thread (daemon -> reroute.reload_routes): before Tun held one lock around each whole netlink
sequence, a route the reload added just before the address went was deleted by the kernel and never
put back, yet Tun.routes listed it (its traffic followed the default route through eth0, in clear),
and a route the reload removed then was put back untracked (a blackhole no reload removes).  Here
the reload's thread starts at the moment the address is deleted; with the lock it waits for the
whole removal, and its change is made after it.
"""
from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable
from typing import Any

from iproute_proxy import IPRouteProxy
from test_vips_netns import (
    OTHER_NET,
    OTHER_PROBE,
    PROBE,
    REFUSED,
    TUN,
    VIP,
    Client,
    inside,
    ns,
    prohibits,
    route_oif,
    up_event,
)

from tunsec.dataplane import tun as tunmod
from tunsec.dataplane.tun import IPRoute

__all__ = ["ns"]   # the fixture, imported to be used here

NEW_NET = ipaddress.ip_network("10.7.0.0/16")
NEW_PROBE = "10.7.0.5"


def down_with_reload(client: Client, reload: Callable[[], None]) -> None:
    """The virtual IP goes; reload() runs in another thread just as the address is deleted."""
    real = tunmod._iproute
    threads: list[threading.Thread] = []

    class Hooked(IPRouteProxy):
        """The real IPRoute; the address's deletion starts the reload's thread first."""

        def addr(self, cmd: str, *a: Any, **kw: Any) -> Any:
            if cmd == "del" and not threads:
                threads.append(threading.Thread(target=reload))
                threads[0].start()
                # without the lock the reload's change is made now; with it, it waits for the removal
                # (a slow start of the thread can only hide the race, never fail the fixed code)
                threads[0].join(1.0)
            return self.i.addr(cmd, *a, **kw)

    tunmod._iproute = Hooked
    try:
        asyncio.run(client.apply(lambda: client.vips.down(1)))
    finally:
        tunmod._iproute = real
        for t in threads:
            t.join()
    assert threads   # the address was deleted (through the hook)


def test_a_route_a_reload_adds_while_the_virtual_ip_goes_stays_on_the_tun(ns: str) -> None:
    def run() -> tuple[bool, bool, list[str]]:
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(VIP))))
        down_with_reload(client, lambda: client.tun.add_route(NEW_NET, None))
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            listed = any(d == NEW_NET for d, _ in client.tun.routes)
            return listed, route_oif(ipr, NEW_PROBE) == tun_idx, prohibits(ipr)

    listed, via_tun, guards = inside(ns, run)
    assert listed and via_tun   # listed and on the TUN: not through eth0 in clear
    assert guards == []


def test_a_route_a_reload_removes_while_the_virtual_ip_goes_stays_off(ns: str) -> None:
    def run() -> tuple[bool, str, str, list[str]]:
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(VIP))))
        down_with_reload(client, lambda: client.tun.remove_route(OTHER_NET))
        with IPRoute() as ipr:
            by = {ipr.link_lookup(ifname=TUN)[0]: "tun", ipr.link_lookup(ifname="eth0")[0]: "eth0", REFUSED: "refused"}
            return (any(d == OTHER_NET for d, _ in client.tun.routes), by[route_oif(ipr, OTHER_PROBE)],
                    by[route_oif(ipr, PROBE)], prohibits(ipr))

    listed, other_by, net_by, guards = inside(ns, run)
    # no tunnel routes it any more: the host's other routes take it, as after any removal (not a TUN
    # route nobody lists, which no reload would ever remove)
    assert not listed and other_by == "eth0"
    assert net_by == "tun" and guards == []   # the connection's own route is back on the TUN
