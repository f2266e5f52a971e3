"""The TUN device: created (or attached) through pytun-pmd3, configured with
pyroute2 and direct ioctls where pytun-pmd3 falls short on Linux
(../shared/notes/platform.md: its IPv4 address setters and mq_attach are
broken and it has no TUNSETOFFLOAD)."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address

from pyroute2 import IPRoute
from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN

log = logging.getLogger("tunsec.tun")

IPNetwork = IPv4Network | IPv6Network

# bytes ESP-in-UDP adds around an inner packet, before padding:
# UDP 8 + SPI/seq 8 + IV 8 + pad length/next header 2 + ICV 16
ESP_UDP_OVERHEAD = 8 + 8 + 8 + 2 + 16
TXQUEUELEN = 4096


def tunnel_mtu(outer_mtu: int, outer_family: int) -> int:
    """Largest inner packet whose ESP-in-UDP packet fits outer_mtu."""
    ip_hdr = 20 if outer_family == 4 else 40
    room = outer_mtu - ip_hdr - 8 - 8 - 8 - 16   # ciphertext: inner + pad + 2, a multiple of 4
    return (room // 4) * 4 - 2


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def outer_mtu_towards(dst: str) -> int:
    """MTU of the interface the kernel would use to reach dst (1500 if unknown)."""
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=dst)
        except Exception as exc:
            log.warning("no route to %s to size the MTU (%s); assuming 1500", dst, exc)
            return 1500
        for r in routes:
            mtu = r.get_nested("RTA_METRICS", "RTAX_MTU") if r.get_attr("RTA_METRICS") else None
            if mtu:
                return int(mtu)
            oif = r.get_attr("RTA_OIF")
            if oif:
                links = ipr.link("get", index=oif)
                if links:
                    return int(links[0].get_attr("IFLA_MTU"))
    return 1500


@dataclass
class Tun:
    """An open TUN queue plus the routes tunsec put on it."""

    name: str
    created: bool
    device: TunTapDevice
    routes: list[tuple[IPNetwork, str | None]] = field(default_factory=list)

    @classmethod
    def open(cls, name: str) -> Tun:
        existed = interface_exists(name)
        dev = TunTapDevice(name=name, flags=IFF_TUN | IFF_NO_PI)
        fd = dev.fileno()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        log.info("%s TUN %s", "attached to" if existed else "created", dev.name)
        return cls(name=dev.name, created=not existed, device=dev)

    def fileno(self) -> int:
        return int(self.device.fileno())

    def configure(self, mtu: int) -> None:
        self._quiet_ipv6()
        self.device.mtu = mtu
        with IPRoute() as ipr:
            # a longer queue absorbs bursts while the worker is busy with a batch,
            # instead of dropping them into TCP retransmits
            ipr.link("set", index=ipr.link_lookup(ifname=self.name)[0], txqlen=TXQUEUELEN)
        self.device.up()
        log.info("TUN %s up, MTU %d", self.name, mtu)

    def _quiet_ipv6(self) -> None:
        # no link-local address, so no router solicitations or MLD reports
        # that match no policy: inner IPv6 only needs the routes
        path = f"/proc/sys/net/ipv6/conf/{self.name}/addr_gen_mode"
        try:
            with open(path, "w") as f:
                f.write("1")
        except OSError as err:
            log.debug("%s: %s", path, err)

    def add_route(self, dst: IPNetwork, src: str | None) -> None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.name)[0]
            kw: dict[str, object] = {"dst": str(dst), "oif": idx}
            if src:
                kw["prefsrc"] = src
            ipr.route("replace", **kw)
        self.routes.append((dst, src))
        log.info("route %s via %s%s", dst, self.name, f" src {src}" if src else "")

    def remove_routes(self) -> None:
        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=self.name)
            for dst, _src in self.routes:
                try:
                    if links:
                        ipr.route("del", dst=str(dst), oif=links[0])
                except Exception as exc:
                    log.debug("route %s: %s", dst, exc)
        self.routes.clear()

    def close(self) -> None:
        if not self.created:
            self.remove_routes()   # the device stays; our routes must not
        self.routes.clear()
        self.device.close()        # a TUN we created disappears with its last fd


def local_address_in(networks: tuple[IPNetwork, ...]) -> str | None:
    """An address this host has inside one of networks (the route's source, as strongSwan picks it)."""
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            a = ip_address(addr)
            if any(a.version == n.version and a in n for n in networks):
                return str(a)
    return None
