"""A client's virtual IP going down with the real Tun in a network namespace (review N3).

The TUN route to the tunnel's remote network has the virtual IP as its source, and the virtual IP is
the TUN's only IPv4 address. Removing it, the kernel deletes the IPv4 routes whose source it was and,
as the TUN's last IPv4 address, every IPv4 route through the TUN (another tunnel's too, which tunsec
never put back); until a route was back its network followed the default route through eth0, in
clear. Now a prohibit route of the lowest preference stands in for each route while the address
goes: no route lookup made during the down leaves through eth0 (a thread counts them while it runs;
how many it makes depends on the machine, none may leave), and both routes are back after it.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.daemon import Daemon
from tunsec.dataplane.blockrecord import BlockRecord
from tunsec.dataplane.exclude import Route
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.tun import RTN_PROHIBIT, IPRoute, NetlinkError, Tun
from tunsec.ike.config import child_config
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.services.ike.vips import VirtualIps

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "tsvip0"
NET = ipaddress.ip_network("10.9.0.0/16")
PROBE = "10.9.0.5"
OTHER_NET = ipaddress.ip_network("10.8.0.0/16")
OTHER_PROBE = "10.8.0.5"
VIP = ipaddress.ip_address("10.3.0.1")
T = TypeVar("T")


@pytest.fixture
def ns() -> Iterator[str]:
    """eth0 (192.168.1.10/24) with the default route, and a TUN."""
    with scratch_netns("tsvip", "ip link add eth0 type veth peer name eth0p", "ip link set eth0 up",
                       "ip link set eth0p up", "ip addr add 192.168.1.10/24 dev eth0",
                       "ip route add default via 192.168.1.1", f"ip tuntap add dev {TUN} mode tun",
                       f"ip link set {TUN} up") as name:
        yield name


def inside(ns: str, fn: Callable[[], T]) -> T:
    """fn in a thread of its own in ns (the threads it starts, asyncio.to_thread's, are ns's too)."""
    def run() -> T:
        with in_netns(ns):
            return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


class Conn:
    class ike:   # what VirtualIps reads of a Connection: its children's remote_ts
        children = (child_config("net", "dynamic", [str(NET)], "aes128gcm16"),)


def up_event(addr: ipaddress.IPv4Address, name: str = "home") -> IkeSaUp:
    return IkeSaUp(name, b"i" * 8, b"r" * 8, Identity.parse("c1.example"), Identity.parse("gw.example"),
                   ("192.0.2.1", 4500), 4500, "aes128gcm16", own_vips=(addr,))


class Client:
    """The real Tun and VirtualIps, as the daemon wires them."""

    def __init__(self, conns: dict[str, object] | None = None) -> None:
        """``conns``: the connections by name (else Conn under every name)."""
        self.tun = Tun(TUN, False, None)  # type: ignore[arg-type]
        self.tun.add_route(NET, None)
        self.tun.add_route(OTHER_NET, None)   # another tunnel's, without a virtual IP
        self.tasks: list[asyncio.Future[None]] = []
        self.vips = VirtualIps(lambda: self.tun, lambda name: Conn if conns is None else conns.get(name),  # type: ignore[arg-type,return-value]
                               self._spawn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> object:
        self.tasks.append(asyncio.ensure_future(coro))
        return None

    async def apply(self, change: Callable[[], None]) -> None:
        """change() (VirtualIps.up or down) and the netlink work it spawned."""
        change()
        await asyncio.gather(*self.tasks)
        self.tasks.clear()


REFUSED = -1


def route_oif(ipr: Any, dst: str = PROBE) -> int:
    """The interface a packet to dst leaves by; REFUSED by a prohibit route (not sent at all)."""
    try:
        return int(ipr.route("get", dst=dst)[0].get_attr("RTA_OIF"))
    except NetlinkError:
        return REFUSED


def prohibits(ipr: Any) -> list[str]:
    return [f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.route("dump", family=socket.AF_INET)
            if r["type"] == RTN_PROHIBIT]


def test_the_route_stays_on_the_tun_while_the_virtual_ip_goes(ns: str) -> None:
    def run() -> tuple[int, int, bool, list[str], list[str]]:
        # pyroute2's synchronous calls run an event loop of their own: none here while one runs
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(VIP))))
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            assert ipr.route("get", dst=PROBE)[0].get_attr("RTA_PREFSRC") == str(VIP)
            counts = {"lookups": 0, "leaked": 0}
            stop = threading.Event()

            def probe() -> None:
                with IPRoute() as p:
                    while not stop.is_set():
                        for dst in (PROBE, OTHER_PROBE):
                            counts["lookups"] += 1
                            oif = route_oif(p, dst)
                            if oif not in (tun_idx, REFUSED):   # refused: the guard's prohibit route held it
                                counts["leaked"] += 1

            prober = threading.Thread(target=probe)
            prober.start()
            try:
                asyncio.run(client.apply(lambda: client.vips.down(1)))
            finally:
                stop.set()
                prober.join()
            addresses = [str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=tun_idx)]
            after = [route_oif(ipr, dst) == tun_idx for dst in (PROBE, OTHER_PROBE)]
            return counts["lookups"], counts["leaked"], after, prohibits(ipr), addresses

    lookups, leaked, after, guards, addresses = inside(ns, run)
    assert lookups > 0 and leaked == 0
    assert after == [True, True]   # both routes through the TUN again (the other tunnel's too)
    assert guards == [] and str(VIP) not in addresses


def test_an_address_eth0_has_is_not_put_on_the_tun(ns: str) -> None:
    def run() -> list[str]:
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(ipaddress.IPv4Address("192.168.1.10")))))
        with IPRoute() as ipr:
            return [str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=ipr.link_lookup(ifname=TUN)[0])]

    assert inside(ns, run) == []


def test_a_stand_in_an_earlier_run_left_is_cleared_at_start(ns: str, tmp_path: Path) -> None:
    """A tunsec killed inside remove_address leaves a stand-in prohibit route (recorded as its own, as
    remove_address does before it adds it): the next start removes it even for a network it routes
    (the TUN route is preferred: it blocks nothing, yet was ours)."""
    subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "add", "prohibit", str(NET), "metric", "4294967295",
                    "proto", "116"], check=True)
    tmp_path.chmod(0o700)
    inside(ns, lambda: BlockRecord.open(str(tmp_path), TUN, None).keep({NET}))   # the record is ns's

    def run() -> tuple[list[str], bool]:
        client = Client()   # its routes are in, as the daemon's start has them before clearing
        client.tun.record = BlockRecord.open(str(tmp_path), TUN, None)
        client.tun.clear_stale_blocks({NET, OTHER_NET})
        with IPRoute() as ipr:
            return prohibits(ipr), NET in client.tun.unrouted

    assert inside(ns, run) == ([], False)


def test_a_route_is_not_re_pointed_to_an_address_the_tun_never_got(ns: str) -> None:
    """Review T F3: IKE SA 2 of the connection holds 10.3.0.2, which eth0 has (refused for the TUN);
    IKE SA 1's address goes: the route keeps no source rather than eth0's address."""
    subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "add", "10.3.0.2/32", "dev", "eth0"], check=True)

    def run() -> list[object]:
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(VIP))))
        asyncio.run(client.apply(lambda: client.vips.up(2, up_event(ipaddress.IPv4Address("10.3.0.2")))))
        asyncio.run(client.apply(lambda: client.vips.down(1)))
        with IPRoute() as ipr:   # the route as it is set ("route get" names the source chosen anyway)
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            return [r.get_attr("RTA_PREFSRC") for r in ipr.route("dump", family=socket.AF_INET)
                    if r.get_attr("RTA_DST") == str(NET.network_address) and r.get_attr("RTA_OIF") == tun_idx]

    assert inside(ns, run) == [None]


@pytest.mark.parametrize("vip", ["192.168.1.1", "192.168.1.53", "192.168.1.255", "192.168.1.0", "172.16.9.9",
                                 "198.51.100.1"])
def test_an_address_of_the_hosts_lan_or_router_is_not_put_on_the_tun(ns: str, vip: str) -> None:
    """Review T F2: the default router (192.168.1.1), a LAN neighbour such as its DNS server, the LAN's
    broadcast or network address, an on-link route's network (172.16.0.0/16 dev eth0) or a gateway of
    the main table off the LAN (198.51.100.1, onlink): as a local address of the TUN the host's own
    traffic to it would die while the SA is up.  10.3.0.1 (the default route's) still goes on."""
    for cmd in ("ip route add 172.16.0.0/16 dev eth0", "ip route add 203.0.113.0/24 via 198.51.100.1 dev eth0 onlink"):
        subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], check=True)

    def run() -> tuple[list[str], str, str]:
        client = Client()
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(ipaddress.IPv4Address(vip)))))
        asyncio.run(client.apply(lambda: client.vips.up(2, up_event(VIP))))
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            route = ipr.route("get", dst=vip)[0]
            return ([str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=tun_idx)],
                    str(route["type"]), str(route.get_attr("RTA_OIF") == tun_idx))

    addresses, kind, via_tun = inside(ns, run)
    assert addresses == [str(VIP)]
    assert kind != "2" and via_tun == "False"   # not local: still sent out as before


def test_a_refused_address_going_leaves_another_tunnels_route_alone(ns: str) -> None:
    """Review W F3: a site-to-site tunnel routes OTHER_NET with the host's LAN address 192.168.1.10 as
    source; another connection's gateway assigns 192.168.1.10 (refused: eth0 has it).  When that IKE SA
    went, the route was re-pointed off an address the TUN never had: stripped of its source (or blocked
    where the kernel refused)."""
    def run() -> tuple[list[object], list[str], bool]:
        client = Client()
        client.tun.set_route_source(OTHER_NET, "192.168.1.10")
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(ipaddress.IPv4Address("192.168.1.10")))))
        asyncio.run(client.apply(lambda: client.vips.down(1)))
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            sources = [r.get_attr("RTA_PREFSRC") for r in ipr.route("dump", family=socket.AF_INET)
                       if r.get_attr("RTA_DST") == str(OTHER_NET.network_address) and r.get_attr("RTA_OIF") == tun_idx]
            return sources, prohibits(ipr), route_oif(ipr, OTHER_PROBE) == tun_idx

    sources, guards, via_tun = inside(ns, run)
    assert sources == ["192.168.1.10"] and guards == [] and via_tun


WORK_NET = ipaddress.ip_network("10.7.0.0/16")


def routing(*nets: ipaddress.IPv4Network) -> object:
    """A connection whose child's remote_ts are nets (what VirtualIps reads of one)."""
    child = child_config("net", "dynamic", [str(n) for n in nets], "aes128gcm16")
    return type("Connection", (), {"ike": type("ike", (), {"children": (child,)})})


def test_two_connections_given_one_address_both_send_from_it(ns: str) -> None:
    """Review AB F1: home holds 10.3.0.1 (the TUN's first address); work and then other are both given
    10.3.0.2 (one gateway leasing one address per identity).  other's route never got it as its source:
    the kernel chose the TUN's first address, 10.3.0.1, outside other's selectors (10.3.0.2/32), and
    every packet of other's was dropped for the IKE SA's life.  Asked of the kernel (route get)."""
    shared = ipaddress.IPv4Address("10.3.0.2")

    def run() -> tuple[list[str], list[str]]:
        client = Client({"home": routing(NET), "work": routing(WORK_NET), "other": routing(OTHER_NET)})
        client.tun.add_route(WORK_NET, None)
        for handle, addr, name in ((1, VIP, "home"), (2, shared, "work"), (3, shared, "other")):
            asyncio.run(client.apply(lambda h=handle, a=addr, n=name: client.vips.up(h, up_event(a, n))))
        with IPRoute() as ipr:
            tun_idx = ipr.link_lookup(ifname=TUN)[0]
            return ([str(ipr.route("get", dst=d)[0].get_attr("RTA_PREFSRC")) for d in (PROBE, "10.7.0.5", OTHER_PROBE)],
                    [str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=tun_idx)])

    chosen, addresses = inside(ns, run)
    # other's source is in its traffic selectors (10.3.0.2/32): its traffic is sent
    assert chosen == [str(VIP), str(shared), str(shared)]
    assert addresses == [str(VIP), str(shared)]


class Reloading:
    """What Daemon._reload_routes uses of the daemon: the TUN, the services' routes (the reload's
    configuration), the IKE service's virtual IPs; Daemon._add_route adds each."""

    def __init__(self, client: Client, routes: list[tuple[ipaddress.IPv4Network, tuple[()]]]) -> None:
        self.tun = client.tun
        self.services = [type("Service", (), {"routes": staticmethod(lambda: routes)})]
        self.ike = type("IkeService", (), {"vips": client.vips, "sweep_excludes": staticmethod(lambda reset: None)})
        self.excludes = None   # no exclude routes: these networks cover no peer
        self.killswitch = KillSwitch("")   # no full tunnel here: it holds no route
        self.route_keeper = None   # no watch of dropped routes (routekeep.py) in these interleavings

    def _add_route(self, net: ipaddress.IPv4Network, local_nets: tuple[()]) -> None:
        Daemon._add_route(self, net, local_nets)  # type: ignore[arg-type]

    def _tun_routes(self) -> list[Route]:
        return Daemon._tun_routes(self)  # type: ignore[arg-type]

    def _exclude_peers(self, routes: list[Route]) -> list[str]:
        return Daemon._exclude_peers(self, routes)  # type: ignore[arg-type]

    async def reload_routes(self) -> list[str]:
        return await Daemon._reload_routes(self)  # type: ignore[arg-type]


LAB_NET = ipaddress.IPv4Network("10.6.0.0/16")
LAB_VIP = ipaddress.IPv4Address("10.3.0.2")


def test_a_route_a_reload_adds_after_its_ike_sa_came_up_sends_from_its_virtual_ip(ns: str) -> None:
    """Review AD F1: a reload initiates an added connection (lab, start_action = start) in the IKE
    service's reload, before the daemon adds its route: lab's IKE SA came up in between, its routes'
    sources were set while the route was not there, and the route was added without one (a dynamic
    local_ts has no local address).  The kernel chose the TUN's first address, home's 10.3.0.1,
    outside lab's selectors (10.3.0.2/32): every packet of lab's was dropped for the IKE SA's life.
    The daemon's reload code adds it here; the kernel is asked (route get)."""
    def run() -> tuple[str, str]:
        client = Client({"home": routing(NET), "lab": routing(LAB_NET)})
        asyncio.run(client.apply(lambda: client.vips.up(1, up_event(VIP, "home"))))
        asyncio.run(client.apply(lambda: client.vips.up(2, up_event(LAB_VIP, "lab"))))   # the IKE reload's
        lines = asyncio.run(Reloading(client, [(NET, ()), (OTHER_NET, ()), (LAB_NET, ())]).reload_routes())
        with IPRoute() as ipr:
            return lines[0], str(ipr.route("get", dst="10.6.0.5")[0].get_attr("RTA_PREFSRC"))

    added, source = inside(ns, run)
    assert added == f"routes added: {LAB_NET}"
    assert source == str(LAB_VIP)
