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
from pytun_pmd3.linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

log = logging.getLogger("tunsec.tun")

IPNetwork = IPv4Network | IPv6Network

# bytes ESP-in-UDP adds around an inner packet, before padding:
# UDP 8 + SPI/seq 8 + IV 8 + pad length/next header 2 + ICV 16
ESP_UDP_OVERHEAD = 8 + 8 + 8 + 2 + 16
TXQUEUELEN = 4096

# linux/if_tun.h: pytun-pmd3 has no TUNSETOFFLOAD
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40
OFFLOAD_NAMES = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6", TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}
# most capable first: kernels before 6.2 refuse USO, very old ones TSO
OFFLOAD_CHOICES = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
)


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
    vnet_hdr: bool = False
    offloads: int = 0
    routes: list[tuple[IPNetwork, str | None]] = field(default_factory=list)
    extra: list[TunTapDevice] = field(default_factory=list)   # queues 1.. of a multi-queue TUN

    @classmethod
    def open(cls, name: str, offload: bool = True, queues: int = 1) -> Tun:
        """Create or attach; with offload, a virtio header on every packet and TSO/USO
        super-packets; with queues > 1, a multi-queue TUN (one queue per loop thread)."""
        existed = interface_exists(name)
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        if existed and queues > 1 and not _is_multi_queue(name):
            log.warning("TUN %s exists without multiple queues; using one queue", name)
            queues = 1
        dev = TunTapDevice(name=name, flags=flags | (IFF_MULTI_QUEUE if queues > 1 else 0))
        tun = cls(name=dev.name, created=not existed, device=dev, vnet_hdr=offload)
        for _ in range(queues - 1):
            tun.extra.append(TunTapDevice(name=dev.name, flags=flags | IFF_MULTI_QUEUE))
        for d in (dev, *tun.extra):
            fd = d.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        if offload:
            tun.offloads = tun._set_offloads()
        log.info("%s TUN %s, offloads: %s", "attached to" if existed else "created", dev.name,
                 ", ".join(tun.offload_names()) or "none")
        return tun

    def _set_offloads(self) -> int:
        for choice in OFFLOAD_CHOICES:
            try:
                fcntl.ioctl(self.device.fileno(), TUNSETOFFLOAD, choice)
            except OSError as err:
                log.debug("TUNSETOFFLOAD %#x refused: %s", choice, err)
                continue
            return choice
        return 0

    def offload_names(self) -> list[str]:
        return [n for bit, n in OFFLOAD_NAMES.items() if self.offloads & bit]

    def fileno(self) -> int:
        return int(self.device.fileno())

    @property
    def nqueues(self) -> int:
        return 1 + len(self.extra)

    def queue_fileno(self, queue: int) -> int:
        return int(self.device.fileno() if queue == 0 else self.extra[queue - 1].fileno())

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
        for d in self.extra:
            d.close()
        self.device.close()        # a TUN we created disappears with its last fd


def _is_multi_queue(name: str) -> bool:
    """An existing TUN's flags (the kernel refuses to attach a queue of the other kind)."""
    try:
        with open(f"/sys/class/net/{name}/tun_flags") as f:
            return bool(int(f.read(), 16) & IFF_MULTI_QUEUE)
    except (OSError, ValueError):
        return False


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
