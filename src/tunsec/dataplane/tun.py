"""The TUN device: created (or attached) through pytun-pmd3, configured with
pyroute2 and direct ioctls where pytun-pmd3 falls short on Linux
(../shared/notes/platform.md: its IPv4 address setters and mq_attach are
broken and it has no TUNSETOFFLOAD)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from pytun_pmd3 import TunTapDevice
from pytun_pmd3.linux import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

from tunsec.dataplane.blockrecord import BlockRecord, block_mark, mark_metrics, route_mark
from tunsec.dataplane.markrule import ensure_mark_rules
from tunsec.dataplane.netlink import IPRoute, NetlinkError, _netlink, _reason, netlink_failure
from tunsec.dataplane.prohibitroute import RT_TABLE_MAIN as RT_TABLE_MAIN
from tunsec.dataplane.prohibitroute import RTN_PROHIBIT as RTN_PROHIBIT
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC as RTPROT_TUNSEC
from tunsec.dataplane.prohibitroute import delete as _delete_prohibit
from tunsec.dataplane.routes import RT_SCOPE_LINK, destination, gateways, ifname, in_main
from tunsec.dataplane.routetable import TABLE, ensure_rules, in_table
from tunsec.dataplane.tundev import me, open_error, tun_flags, tun_group, tun_owner

log = logging.getLogger("tunsec.tun")


def _iproute() -> Any:
    """IPRoute asking the kernel for its reason with each refusal (extended ACK: "IPv6 is disabled on
    nexthop device", where the errno alone says "Permission denied")."""
    return IPRoute(ext_ack=True)


IPNetwork = IPv4Network | IPv6Network

# bytes ESP-in-UDP adds around an inner packet, before padding:
# UDP 8 + SPI/seq 8 + IV 8 + pad length/next header 2 + ICV 16
ESP_UDP_OVERHEAD = 8 + 8 + 8 + 2 + 16
TXQUEUELEN = 4096
# the most segments the fast path cuts one TSO/USO read into (csrc/tunsec_dp.h TS_VNET_MAX_SEGS, tests
# check they agree): a TCP sender with a small MSS would otherwise hand it 64 KiB reads of more
VNET_MAX_SEGS = 256
IFA_F_NODAD = 0x02   # linux/if_addr.h

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
    with _iproute() as ipr, _netlink(f"finding the interface towards {dst} to size the MTU"):
        try:
            routes = ipr.route("get", dst=dst)
        except (NetlinkError, OSError) as exc:
            why = _reason(exc) if isinstance(exc, NetlinkError) else exc.strerror or str(exc)
            log.warning("no route to %s to size the MTU (%s); assuming 1500", dst, why)
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
    # what this configuration needs on the device that tunsec may not change (no
    # CAP_NET_ADMIN): (what is wrong, the command root should run); see report_unapplied
    unapplied: list[tuple[str, str]] = field(default_factory=list)
    # networks of the tunnels whose route the kernel refused: why.  Their SAs and policies are in the
    # worker while the host's other routes (a default route) would carry their traffic in clear, so a
    # prohibit route of ours holds it (fail closed) until their route is added (see block); also one
    # an earlier run left that this start could not remove, or whose TUN route is not in (clear_stale_blocks)
    unrouted: dict[IPNetwork, Unrouted] = field(default_factory=dict)
    # which of tunsec's prohibit routes are this instance's (another tunsec may run in this namespace);
    # None: none is, so a start removes none (blockrecord.py)
    record: BlockRecord | None = field(default=None, repr=False, compare=False)
    # networks whose unmarked prohibit route (an older tunsec's) the start took for this instance's, its
    # record listing them: the only unmarked blocks it lifts or counts as its own later (owns)
    unmarked: set[IPNetwork] = field(default_factory=set, repr=False, compare=False)
    # the IP versions whose rule (routetable.py: tunsec's table before the main table) was looked at
    ruled: set[int] = field(default_factory=set, repr=False, compare=False)
    # IP versions whose mark rule (markrule.py) this run has in place: the route keeper puts it back too
    marked: set[int] = field(default_factory=set, repr=False, compare=False)
    # held for each whole change of the TUN's routes and addresses (its netlink sequence and the lists
    # above): a reload's thread and the virtual IPs' run at once, and remove_address's guard-delete-
    # restore must not interleave with a route added or removed meanwhile (lost, or put back untracked).
    # Reentrant: remove_routes unblocks under it
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def open(cls, name: str, offload: bool = True, queues: int = 1) -> Tun:
        """Create or attach; with offload, a virtio header on every packet and TSO/USO
        super-packets; with queues > 1, a multi-queue TUN (one queue per loop thread)."""
        existed = interface_exists(name)
        multi_queue = queues > 1
        if existed:
            # a TUN made for us (ip tuntap add ... [multi_queue] [vnet_hdr]) is opened as it was made:
            # the kernel refuses a queue of the other kind (EINVAL), whatever workers says
            dev_flags = tun_flags(name)
            multi_queue = bool(dev_flags & IFF_MULTI_QUEUE)
            offload = bool(dev_flags & IFF_VNET_HDR)
            if tun_owner(name).startswith("none") and tun_group(name) < 0:
                log.warning("TUN %s has no owner: any local user may attach to it and read or inject its "
                            "packets; make it with ip tuntap add ... user U (tunsec prepare does)", name)
            if queues > 1 and not multi_queue:
                log.warning("TUN %s exists without multiple queues; using one queue", name)
                queues = 1
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0) | (IFF_MULTI_QUEUE if multi_queue else 0)
        try:
            dev = TunTapDevice(name=name, flags=flags)
        except OSError as err:
            raise OSError(err.errno, open_error(name, existed, err)) from err
        tun = cls(name=dev.name, created=not existed, device=dev, vnet_hdr=offload)
        for _ in range(queues - 1):
            tun.extra.append(TunTapDevice(name=dev.name, flags=flags))
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
        """MTU, IPv6 quiet, txqueuelen, link up: each only where the device is not so already,
        and where tunsec may not change it (EPERM), noted in unapplied instead."""
        with _iproute() as ipr, _netlink(f"reading TUN {self.name}"):
            idx = ipr.link_lookup(ifname=self.name)[0]
            link = ipr.link("get", index=idx)[0]
            # no link-local address, so no router solicitations or MLD reports that match no policy:
            # inner IPv6 only needs the routes.  Netlink, not /proc/sys (read-only in containers)
            if _addr_gen_mode(link) not in (None, ADDR_GEN_MODE_NONE):
                self._change(lambda: ipr.link("set", index=idx, IFLA_AF_SPEC=NO_ADDR_GEN),
                             f"setting addrgenmode none on TUN {self.name}", "it would get an IPv6 link-local address",
                             f"ip link set dev {self.name} addrgenmode none")
            if int(link.get_attr("IFLA_MTU") or 0) != mtu:
                self._change(lambda: ipr.link("set", index=idx, mtu=mtu),
                             f"setting the MTU of TUN {self.name} to {mtu}",
                             f"its MTU is {link.get_attr('IFLA_MTU')}, not {mtu}", f"mtu {mtu}")
            # a longer queue absorbs bursts while the worker is busy with a batch,
            # instead of dropping them into TCP retransmits (a tuning only: never warned about)
            if int(link.get_attr("IFLA_TXQLEN") or 0) < TXQUEUELEN:
                self._change(lambda: ipr.link("set", index=idx, txqlen=TXQUEUELEN),
                             f"setting txqueuelen {TXQUEUELEN} on TUN {self.name}", "", "")
            # super-packets of no more segments than the fast path cuts, which drops a larger one whole
            if self.vnet_hdr and int(link.get_attr("IFLA_GSO_MAX_SEGS") or 0) > VNET_MAX_SEGS:
                self._change(lambda: ipr.link("set", index=idx, IFLA_GSO_MAX_SEGS=VNET_MAX_SEGS),
                             f"setting gso_max_segs {VNET_MAX_SEGS} on TUN {self.name}", "", "")
            if not link["flags"] & IFF_UP:
                self._change(lambda: ipr.link("set", index=idx, state="up"), f"bringing TUN {self.name} up",
                             "it is down", "up")
        log.info("TUN %s up, MTU %d", self.name, mtu)

    def _change(self, apply: Callable[[], object], operation: str, what: str, fix: str,
                hint: Callable[[], str] = lambda: "") -> None:
        """apply(); EPERM (no CAP_NET_ADMIN) noted in unapplied, any other refusal raised as
        netlink_failure's OSError naming operation, with hint() as the fix."""
        try:
            apply()
        except NetlinkError as exc:
            if exc.code != errno.EPERM:
                raise netlink_failure(exc, operation, hint()) from exc
            if what:
                self.unapplied.append((what, fix))
            log.debug("TUN %s: %s: %s", self.name, fix or "tuning", exc)

    def add_route(self, dst: IPNetwork, src: str | None) -> None:
        """dst through the TUN, then its prohibit route (block) off, both under the lock: a virtual IP's
        block made between the two was taken off too (its route had been replaced: neither was left, the
        traffic left in clear); one made after stays, dst unlisted, for the next reload to add.  A refusal
        other than EPERM raises OSError naming the route, the TUN and the reason; one of the unblock is
        logged and dst stays listed in unrouted (the reload says so)."""
        with self._lock:
            if self._add_route(dst, src):
                self._unblock_routed(dst)

    def _add_route(self, dst: IPNetwork, src: str | None) -> bool:
        """False: not added for want of CAP_NET_ADMIN (the command is in unapplied)."""
        op = f"adding route {dst} via TUN {self.name}"
        with _iproute() as ipr, _netlink(op):
            idx = ipr.link_lookup(ifname=self.name)[0]
            self._rule(ipr, dst.version)
            if _has_route(ipr, idx, dst):
                log.info("route %s via %s exists", dst, self.name)
                return True   # not ours: left in place at exit
            kw: dict[str, object] = {"dst": str(dst), "oif": idx, **TUN_ROUTE}
            if src:
                kw["prefsrc"] = src
            cmd = f"ip route add {dst} dev {self.name}" + (f" src {src}" if src else "") + TUN_ROUTE_ARGS
            before = len(self.unapplied)
            self._change(lambda: ipr.route("replace", **kw), op, f"no route to {dst} through it", cmd,
                         lambda: self._family_hint(dst))
            if len(self.unapplied) > before:
                return False
            self.routes.append((dst, src))
        log.info("route %s via %s%s", dst, self.name, f" src {src}" if src else "")
        return True

    def _rule(self, ipr: Any, version: int) -> None:
        """The rule that has tunsec's table (these routes) looked up before the main table, once per IP version;
        missing without CAP_NET_ADMIN (tunsec prepare's taken away): root's command in unapplied."""
        if version in self.ruled:
            return
        try:
            missing = ensure_rules(ipr, [version])
            # refused without CAP_NET_ADMIN: the IKE and ESP sockets then carry no mark either (markrule.py)
            if not ensure_mark_rules(ipr, [version]):
                self.marked.add(version)
        except NetlinkError as exc:   # a kernel without IPv6: the route's own refusal says why
            if exc.code != errno.EAFNOSUPPORT:
                raise
            return
        for cmd in missing:
            self.unapplied.append((f"no rule looks up table {TABLE} (its routes) before the main table", cmd))
        self.ruled.add(version)

    def _unblock_routed(self, dst: IPNetwork) -> None:
        """dst's block off now that its TUN route is in."""
        try:
            self.unblock(dst)
        except OSError as exc:
            why = f"route {dst} via TUN {self.name} added, its prohibit route stays: {exc.strerror or exc}"
            self.unrouted[dst] = Unrouted(why, blocked=True)
            log.error("%s", why)

    def _family_hint(self, dst: IPNetwork) -> str:
        """What to do when the kernel refused an IPv6 route because IPv6 is off (on the TUN: EACCES, on
        the host: EAFNOSUPPORT); "" when that is not why."""
        if dst.version != 6:
            return ""
        if not os.path.isdir("/proc/sys/net/ipv6"):
            return (f"this kernel runs without IPv6 (ipv6.disable=1): remove the IPv6 networks ({dst}) from "
                    "the tunnels' remote_ts")
        try:
            with open(f"/proc/sys/net/ipv6/conf/{self.name}/disable_ipv6") as f:
                if f.read().strip() != "1":
                    return ""
        except OSError:
            return ""
        return (f"IPv6 is disabled on {self.name}: as root, sysctl -w net.ipv6.conf.{self.name}.disable_ipv6=0 "
                f"while it exists (net.ipv6.conf.default.disable_ipv6=0 for a TUN tunsec creates at start), "
                f"or remove the IPv6 networks ({dst}) from the tunnels' remote_ts")

    def block(self, dst: IPNetwork, why: str) -> None:
        """dst has no route through the TUN (why): a prohibit route keeps its traffic off the host's
        other routes (senders get EACCES / ICMP administratively prohibited) until unblock().  Raises
        OSError if the kernel refuses that too (dst stays noted as unrouted, not blocked).  A route of
        ours to dst is no longer listed: the prohibit route replaces it, a reload adds it again."""
        op = f"blocking {dst} (prohibit route) while TUN {self.name} has no route to it"
        with self._lock:
            # blocked already: a refused replace leaves that route in, so it stays blocked and recorded
            was = self.unrouted.get(dst, Unrouted(why, blocked=False)).blocked
            self.unrouted[dst] = Unrouted(why, blocked=was)
            self._note_blocks(dst)   # recorded before it exists: a kill -9 in between leaves none unrecorded
            try:
                with _iproute() as ipr, _netlink(op):
                    self._rule(ipr, dst.version)   # a block of tunsec's table holds nothing without it
                    # replace, as add_route does: a route of the host's to that very network must not win.
                    # Marked as tunsec's (proto) and recorded as this instance's: a tunsec killed before it
                    # could remove it finds it at its next start (clear_stale_blocks), by its TUN's mark
                    # (blockrecord.py); add_route's replace of the same network takes it over too
                    ipr.route("replace", dst=str(dst), type="prohibit", proto=RTPROT_TUNSEC, **TUN_ROUTE,
                              metrics=mark_metrics(self.name))
            except OSError:
                self._note_blocks()
                raise
            # only now: a refused block leaves our route to dst in the kernel, listed, so that a reload
            # removing the tunnel removes it too (unlisted, it would outlive the tunnel and tunsec)
            self.routes = [r for r in self.routes if r[0] != dst]
            self.unmarked.discard(dst)   # replaced by a marked one
            self.unrouted[dst] = Unrouted(why, blocked=True)
        log.warning("%s: traffic to it is refused until a reload adds its route", op)

    def unblock(self, dst: IPNetwork) -> None:
        """dst routed through the TUN again, or no tunnel's any more: our prohibit route goes (only a
        prohibit route: the TUN route add_route put in its place stays)."""
        with self._lock:
            gone = self.unrouted.pop(dst, None)
            if gone is None or not gone.blocked:
                return
            try:
                self._remove_prohibit(dst)
            except OSError:
                self.unrouted[dst] = gone   # still there: still ours, and said by `tunsec status`
                raise
            self.unmarked.discard(dst)
            self._note_blocks()
        log.info("prohibit route of %s removed", dst)

    def _note_blocks(self, *pending: IPNetwork) -> None:
        """The record of this instance's prohibit routes: its blocked networks, and pending ones about to be."""
        if self.record is not None:
            self.record.keep({d for d, u in self.unrouted.items() if u.blocked} | set(pending))

    def clear_stale_blocks(self, wanted: set[IPNetwork]) -> None:
        """At start, once the configuration's routes are in: the prohibit routes an earlier tunsec left
        (killed before it could remove them): only this instance's, tunsec's proto with its TUN's mark, or
        unmarked (an older tunsec's) and in its record (never another program's, nor another tunsec's in
        this namespace, whatever the record says: blockrecord.py).
        Those of networks no tunnel wants go (the host would stay cut off from them, and status would
        not say why); one whose network is wanted but still blocked (its TUN route replaces it when
        it goes in: this one did not) holds its traffic and is listed, as a refused route's is.  A
        failure is logged and the route listed: start-up goes on."""
        with self._lock:
            if self._clear_stale_blocks(wanted) and self.record is not None:
                self.record.settle()
            self._note_blocks()

    def _clear_stale_blocks(self, wanted: set[IPNetwork]) -> bool:
        """False when the routes could not be listed (the record's leftovers stay this instance's)."""
        try:
            with _iproute() as ipr, _netlink("listing prohibit routes"):
                found = [(destination(r), r) for family in (socket.AF_INET, socket.AF_INET6)
                         for r in ipr.route("dump", family=family) if _ours_prohibit(r)]
        except OSError as exc:
            log.warning("prohibit routes an earlier tunsec may have left not checked: %s", exc.strerror or exc)
            return False
        mine, mark = self.record.inherited if self.record is not None else set(), block_mark(self.name)
        held = {d for d, _s in self.routes} | {d for d, r in found if in_table(r)}   # in tunsec's table
        for dst, r in found:
            # another tunsec's in this namespace (or an older tunsec's whose record was lost)
            if route_mark(r) != mark and (route_mark(r) is not None or dst not in mine):
                log.warning("prohibit route of %s (tunsec's, proto %d) is not this instance's (not its TUN's mark, nor "
                            "unmarked and recorded: %s): left "
                            "in place, another tunsec in this network namespace may hold it; if none does, as root: "
                            "ip route del prohibit %s proto %d table %s", dst, RTPROT_TUNSEC,
                            self.record.name() if self.record is not None else "no record", dst, RTPROT_TUNSEC,
                            r.get_attr("RTA_TABLE"))
                continue
            # remove_address's stand-in for a TUN route (killed before it put the route back): the TUN
            # route, in by now, is preferred, so it goes whether its network is wanted or not; so does one in the
            # main table (a tunsec's of before h/fixks5) of a network tunsec's table routes or blocks (looked up
            # first); one of a network it does not (its route not added: unprivileged) holds it still
            if dst in wanted and r.get_attr("RTA_PRIORITY") != _GUARD_PRIORITY and (in_table(r) or dst not in held):
                self._adopt(dst, r, f"left by an earlier tunsec; no route through TUN {self.name} yet")
                continue
            try:
                _delete_stale(r, dst)
            except OSError as exc:
                log.error("%s", exc.strerror or exc)
                self._adopt(dst, r, f"left by an earlier tunsec, no tunnel routes it: {exc.strerror or exc}")
                continue
            log.warning("prohibit route of %s, left by an earlier tunsec that did not stop cleanly, removed: "
                        "no tunnel routes it", dst)
        return True

    def _adopt(self, dst: IPNetwork, r: Any, why: str) -> None:
        """A leftover prohibit route of this instance's kept (blocked): an unmarked one is known as its own
        from now on (owns), as its record said at start."""
        self.unrouted[dst] = Unrouted(why, blocked=True)
        if route_mark(r) is None:
            self.unmarked.add(dst)

    def _remove_prohibit(self, dst: IPNetwork) -> None:
        """dst's prohibit routes of this instance's (owns); another TUN's of dst (its replace took the place
        of ours), or an unmarked one this start did not take, is theirs: it stays, their traffic refused.
        One gone between the dump and its delete is gone (another's replace took its place: review revblock
        F1); one of theirs a delete took in that time is put back (prohibitroute.py)."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        with _iproute() as ipr, _netlink(f"removing the prohibit route of {dst}"):
            for r in ipr.route("dump", family=family):
                if _ours_prohibit(r) and destination(r) == dst and self.owns(dst, route_mark(r)):
                    _delete_prohibit(ipr, _prohibit_key(r, dst), dst, self.owns)

    def owns(self, dst: IPNetwork, mark: int | None) -> bool:
        """A prohibit route of tunsec's to dst carrying mark (None: none) is this instance's: its TUN's mark,
        or unmarked and taken at start from its record (blockrecord.py)."""
        return mark == block_mark(self.name) if mark is not None else dst in self.unmarked

    def remove_route(self, dst: IPNetwork) -> None:
        """One of our routes off the TUN (a reload removed or changed its tunnel); a route that is not
        ours is left alone.  Without CAP_NET_ADMIN it stays (still ours: removed at exit if it can be)
        and the command for root is in unapplied."""
        op = f"removing route {dst} from TUN {self.name}"
        with self._lock, _iproute() as ipr, _netlink(op):
            if not any(r[0] == dst for r in self.routes):
                return
            links = ipr.link_lookup(ifname=self.name)
            before = len(self.unapplied)
            try:
                if links:
                    self._change(lambda: ipr.route("del", dst=str(dst), oif=links[0], table=TABLE), op,
                                 f"route to {dst} through it", f"ip route del {dst} dev {self.name} table {TABLE}")
            except OSError as exc:   # already gone (someone removed it): nothing left to do
                if exc.errno != errno.ESRCH:
                    raise
            if len(self.unapplied) > before:
                return
            self.routes = [r for r in self.routes if r[0] != dst]
        log.info("route %s via %s removed", dst, self.name)

    def add_address(self, addr: str) -> None:
        """A virtual IP the peer assigned us (host prefix, no DAD: it is ours alone); idempotent.

        Runs at any time after start-up: the control process keeps CAP_NET_ADMIN for it
        (privilege.give_up_control, ``vips``). Raises OSError with the kernel's reason."""
        with self._lock, _iproute() as ipr, _netlink(f"adding virtual IP {addr} to TUN {self.name}"):
            idx = ipr.link_lookup(ifname=self.name)[0]
            ip = ip_address(addr)
            prefix = 32 if ip.version == 4 else 128
            if any(msg.get_attr("IFA_ADDRESS") == str(ip) for msg in ipr.get_addr(index=idx)):
                return
            ipr.addr("add", index=idx, address=str(ip), prefixlen=prefix, flags=IFA_F_NODAD)
        log.info("virtual IP %s on %s", addr, self.name)

    def address_elsewhere(self, addr: str) -> str | None:
        """The name of another interface of this host (not the TUN) that has ``addr``, or None."""
        ip = ip_address(addr)
        with _iproute() as ipr, _netlink(f"listing the addresses of this host for virtual IP {addr}"):
            own = ipr.link_lookup(ifname=self.name)
            for msg in ipr.get_addr(family=socket.AF_INET if ip.version == 4 else socket.AF_INET6):
                have = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if have and ip_address(have) == ip and msg["index"] not in own:
                    links = ipr.get_links(msg["index"])
                    return str(links[0].get_attr("IFLA_IFNAME")) if links else f"#{msg['index']}"
        return None

    def address_conflict(self, addr: str) -> str | None:
        """Why ``addr`` may not be a virtual IP on the TUN, or None.  As a local address of this host it
        would take the traffic the host sends to it: another interface's address, the host's router
        (a gateway of the main table), an address of a network on another interface's link (the
        router, a DNS server, a neighbour; its broadcast), a local route's."""
        other = self.address_elsewhere(addr)
        if other is not None:
            return f"interface {other} of this host has it"
        ip = ip_address(addr)
        with _iproute() as ipr, _netlink(f"looking up the routes of this host for virtual IP {addr}"):
            tun = ipr.link_lookup(ifname=self.name)
            return _lan_role(ipr, ip, tun[0] if tun else -1)

    def remove_address(self, addr: str) -> None:
        """A virtual IP off the TUN, our routes kept.  The kernel deletes the IPv4 routes whose source
        it was (in the main table only: not ours, in tunsec's table; replaced all the same) and, with the TUN's
        last IPv4 address, every IPv4 route through it: those are backed
        by a prohibit route of the lowest preference meanwhile (their traffic is refused, never sent
        by the host's other routes in clear), then put back without that source.  A route the kernel
        will not take back stays blocked by it, until a reload adds the route (unrouted)."""
        ip = ip_address(addr)
        with self._lock, _iproute() as ipr, _netlink(f"removing virtual IP {addr} from TUN {self.name}"):
            links = ipr.link_lookup(ifname=self.name)
            have = [str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=links[0])] if links else []
            if str(ip) not in have:
                return
            last = ip.version == 4 and not any(ip_address(a).version == 4 and a != str(ip) for a in have)
            guarded = [d for d, _s in self._lost_with(str(ip), last)]
            self._note_blocks(*guarded)   # recorded before they exist, as block's
            placed: list[IPNetwork] = []
            for dst in guarded:   # before the address goes: a failure here leaves it in place
                try:
                    # add, not replace: a prohibit route of that network at that metric is there already
                    # (an operator's kill switch under the VPN's route): it covers the network, and is
                    # neither taken over nor deleted after (review revblock F3)
                    ipr.route("add", dst=str(dst), type="prohibit", priority=_GUARD_PRIORITY, table=TABLE,
                              proto=RTPROT_TUNSEC, metrics=mark_metrics(self.name))
                except NetlinkError as exc:   # those put in go (blocking nothing: the routes stay), or stay recorded
                    if exc.code == errno.EEXIST:
                        continue
                    self._restore(ipr, links[0], placed, "", False)
                    self._note_blocks()
                    raise
                placed.append(dst)
            try:
                ipr.addr("del", index=links[0], address=str(ip), prefixlen=32 if ip.version == 4 else 128)
            finally:
                self._restore(ipr, links[0], placed, str(ip), last)
                self._note_blocks()
        log.info("virtual IP %s removed from %s", addr, self.name)

    def _lost_with(self, gone: str, last: bool) -> list[tuple[IPNetwork, str | None]]:
        """Our routes the kernel deletes with address gone: the IPv4 ones whose source it is, and with
        the TUN's last IPv4 address every IPv4 one."""
        return [(d, s) for d, s in self.routes if d.version == 4 and (last or s == gone)]

    def _restore(self, ipr: Any, idx: int, guarded: Sequence[IPNetwork], gone: str, last: bool) -> None:
        """The routes the address took with it back on the TUN, as self.routes lists them now (not as
        guarded: one removed meanwhile stays off, one added meanwhile comes back); then the guards go,
        but for a route the kernel will not take back: its guard stays as its block."""
        failed: set[IPNetwork] = set()
        for dst, src in self._lost_with(gone, last):
            kept = src if src and src != gone else None
            kw: dict[str, object] = {"dst": str(dst), "oif": idx, **TUN_ROUTE}
            if kept:
                kw["prefsrc"] = kept
            try:
                ipr.route("replace", **kw)
            except NetlinkError as exc:   # a reload adds the route
                why = f"route {dst} via TUN {self.name} lost with virtual IP {gone}: {_reason(exc)}"
                self.unrouted[dst] = Unrouted(why, blocked=dst in guarded)
                self.routes = [r for r in self.routes if r[0] != dst]
                failed.add(dst)
                log.error("%s; its traffic is refused (prohibit route) until a reload adds the route", why)
                continue
            self.routes = [(d, kept if d == dst else s) for d, s in self.routes]
        for dst in guarded:
            if dst in failed:
                continue
            try:
                # naming proto and mark: an IPv4 delete takes only a route whose metrics match (ours)
                ipr.route("del", dst=str(dst), type="prohibit", priority=_GUARD_PRIORITY, proto=RTPROT_TUNSEC,
                          table=TABLE, metrics=mark_metrics(self.name))
            except NetlinkError as exc:   # harmless: the TUN route is preferred; said, not raised
                if exc.code == errno.ESRCH:   # removed by someone else: nothing of ours left
                    continue
                log.warning("route %s: its stand-in prohibit route stays: %s", dst, _reason(exc))
                if self.record is not None:   # in the kernel still: recorded, for the next start to remove
                    self.record.hold(dst)

    def set_route_source(self, dst: IPNetwork, src: str | None) -> None:
        """Give one of our routes a preferred source (a virtual IP) or none; others' routes are left alone.

        The kernel drops an IPv4 route whose source address goes away, so it is put back without one."""
        kw: dict[str, object] = {"dst": str(dst), **TUN_ROUTE}
        if src:
            kw["prefsrc"] = src
        with self._lock:
            if not any(r[0] == dst for r in self.routes):
                return
            with _iproute() as ipr, _netlink(f"setting source {src or 'none'} on route {dst} via TUN {self.name}"):
                ipr.route("replace", oif=ipr.link_lookup(ifname=self.name)[0], **kw)
            self.routes = [(d, src if d == dst else s) for d, s in self.routes]
        log.info("route %s via %s%s", dst, self.name, f" src {src}" if src else "")

    def set_source_or_block(self, dst: IPNetwork, src: str | None, why: str) -> str | None:
        """set_route_source, or where the kernel refuses, block(dst) in the same change: a reload cannot
        remove dst's route in between (its block would outlive every tunnel of it).  What was refused
        (``why`` and the reason; dst is blocked), or None; block's OSError is raised."""
        with self._lock:
            try:
                self.set_route_source(dst, src)
                return None
            except OSError as err:
                refused = f"{why}: {err.strerror or err}"
            self.block(dst, refused)
            return refused

    def block_if_gone(self, dst: IPNetwork, why: str) -> bool:
        """block(dst, why) if the kernel no longer has our route to dst (it deletes an IPv4 route whose
        source address went) or cannot say (fail closed); False, nothing done, if it has.  block's
        OSError is raised."""
        with self._lock:
            try:
                with _iproute() as ipr, _netlink(f"looking up route {dst} via TUN {self.name}"):
                    if _has_route(ipr, ipr.link_lookup(ifname=self.name)[0], dst):
                        return False
            except OSError as err:
                log.error("%s; blocking its traffic", err.strerror or err)
            self.block(dst, why)
            return True

    def report_unapplied(self, config_path: str) -> None:
        """The one warning for an unprivileged start on a TUN not set up as needed."""
        if not self.unapplied:
            return
        link = [fix for _, fix in self.unapplied if fix in ("up",) or fix.startswith("mtu ")]
        cmds = [f"ip link set dev {self.name} {' '.join(link)}"] if link else []
        cmds += [fix for _, fix in self.unapplied if fix.startswith("ip ")]
        log.warning("TUN %s is not set up as this configuration needs and %s may not change it (no CAP_NET_ADMIN): "
                    "%s. Starting anyway; as root run: %s (or once: tunsec prepare -c %s --user %s)",
                    self.name, me(), "; ".join(what for what, _ in self.unapplied), "; ".join(cmds),
                    config_path, me())

    def remove_routes(self) -> None:
        with self._lock:
            self._remove_routes()

    def _remove_routes(self) -> None:
        for dst in list(self.unrouted):   # not the TUN's: they outlive it
            try:
                self.unblock(dst)
            except OSError as exc:
                log.warning("at exit: %s", exc.strerror or exc)
        with _iproute() as ipr:
            links = ipr.link_lookup(ifname=self.name)
            for dst, _src in self.routes:
                try:
                    if links:
                        ipr.route("del", dst=str(dst), oif=links[0], table=TABLE)
                except (NetlinkError, OSError) as exc:   # at exit: gone with its TUN, or removed by someone
                    log.debug("route %s: %s", dst, exc)
        self.routes.clear()

    def close(self) -> None:
        if not self.created or self.unrouted:
            self.remove_routes()   # the device stays (or our prohibit routes would); our routes must not
        self.routes.clear()
        for d in self.extra:
            d.close()
        self.device.close()        # a TUN we created disappears with its last fd
        if self.record is not None:
            self.record.close()


def _ours_prohibit(r: Any) -> bool:
    """A prohibit route tunsec made (block): in its table, with our proto; or in the main table (a tunsec of before
    h/fixks5 left it)."""
    return bool(r["type"] == RTN_PROHIBIT and r["proto"] == RTPROT_TUNSEC and (in_table(r) or in_main(r)))


def _delete_stale(r: Any, dst: IPNetwork) -> None:
    """A leftover of this instance's (its mark, or unmarked and recorded: the one the dump found); gone
    meanwhile is gone, and another TUN's block a delete took in its place is put back."""
    mark = route_mark(r)
    with _iproute() as ipr, _netlink(f"removing the prohibit route of {dst} an earlier tunsec left",
                                     lambda: f"as root: ip route del prohibit {dst} table {r.get_attr('RTA_TABLE')}"):
        _delete_prohibit(ipr, _prohibit_key(r, dst), dst, lambda _d, m: m == mark)


def _prohibit_key(r: Any, dst: IPNetwork) -> dict[str, object]:
    """What names that one prohibit route in a delete.  With its mark: the kernel deletes an IPv4 route only
    if the metrics given match (another TUN's block that took its place since the dump stays; IPv6's delete
    ignores metrics, so there only the dump tells)."""
    kw: dict[str, object] = {"dst": str(dst), "type": "prohibit", "table": r.get_attr("RTA_TABLE"),
                             "proto": RTPROT_TUNSEC}
    if (mark := route_mark(r)) is not None:
        kw["metrics"] = {"reordering": mark}
    if (oif := r.get_attr("RTA_OIF")) is not None:   # IPv6's sit on lo: a delete by dst alone
        kw["oif"] = oif                                # could take the TUN route
    if (prio := r.get_attr("RTA_PRIORITY")) is not None:
        kw["priority"] = prio
    return kw


@dataclass(frozen=True)
class Unrouted:
    """A tunnel's network the kernel refused to route through the TUN: why, and whether our prohibit
    route holds its traffic (False: the kernel refused that too)."""

    why: str
    blocked: bool


# where the TUN's routes and the blocks go: tunsec's table (routetable.py), looked up before the main table, so
# no route of the host's of any metric competes (review revks3 F1, F3, F5).  The family's default metric (IPv4's
# 0; IPv6's 1024: the kernel makes a metric 0 1024): a block and the TUN route of a network share the key, so
# either replaces the other; TUN_ROUTE_ARGS: the same in root's commands
TUN_ROUTE: dict[str, int] = {"table": TABLE}
TUN_ROUTE_ARGS = f" table {TABLE}"
# the metric of the prohibit route that stands in for a TUN route while remove_address runs: the least
# preferred, so the TUN route (metric 0) wins whenever it is there
_GUARD_PRIORITY = 0xFFFFFFFF
ADDR_GEN_MODE_NONE = 1   # linux/if_link.h IN6_ADDR_GEN_MODE_NONE
IFF_UP = 0x1
NO_ADDR_GEN = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", ADDR_GEN_MODE_NONE)]})]}


def _addr_gen_mode(link: Any) -> int | None:
    af = link.get_attr("IFLA_AF_SPEC")
    inet6 = af.get_attr("AF_INET6") if af is not None else None
    mode = inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") if inet6 is not None else None
    return None if mode is None else int(mode)


def _has_route(ipr: Any, idx: int, dst: IPNetwork) -> bool:
    """dst already routed through the TUN (in tunsec's table), as root or tunsec prepare may have done."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    return any(_same_dst(r, dst) and in_table(r) for r in ipr.route("dump", family=family, oif=idx))


def _same_dst(r: Any, dst: IPNetwork) -> bool:
    have = r.get_attr("RTA_DST")
    return have is not None and r["dst_len"] == dst.prefixlen and ip_address(have) == dst.network_address


RTN_LOCAL = 2   # linux/rtnetlink.h


def _lan_role(ipr: Any, ip: IPv4Address | IPv6Address, tun: int) -> str | None:
    """What ``ip`` is to this host outside the TUN (index tun): see Tun.address_conflict."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    main = [r for r in ipr.route("dump", family=family) if in_main(r)]
    if any(ip in gateways(r) for r in main):
        return "a router of this host (a gateway of its main routing table)"
    on_link = [(ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False), a["index"])
               for a in ipr.get_addr(family=family) if a["index"] != tun and a.get_attr("IFA_ADDRESS")]
    # on-link routes to other interfaces too (not a default route through a VPN device)
    on_link += [(destination(r), r.get_attr("RTA_OIF")) for r in main
                if r["scope"] == RT_SCOPE_LINK and r["dst_len"] and r.get_attr("RTA_OIF") not in (tun, None)]
    for net, idx in on_link:
        if ip in net:
            return (f"an address of network {net} on the link of interface {ifname(ipr, idx)} (a neighbour, a "
                    f"server, its broadcast)")
    try:
        found = ipr.route("get", dst=str(ip))[0]
    except NetlinkError:   # unreachable: no network of the host's
        return None
    if found["type"] == RTN_LOCAL and not any(
            m.get_attr("IFA_ADDRESS") == str(ip) for m in ipr.get_addr(index=tun)):
        return "a local address of this host (a local route)"
    return None


def local_address_in(networks: tuple[IPNetwork, ...]) -> str | None:
    """An address this host has inside one of networks (the route's source, as strongSwan picks it)."""
    with _iproute() as ipr, _netlink("listing this host's addresses"):
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            a = ip_address(addr)
            if any(a.version == n.version and a in n for n in networks):
                return str(a)
    return None
