"""Every tunnel fails closed: a standing route under each of the TUN's routes, into a device that drops
what it is given (review revfull F3 for a full tunnel's halves, review revrestart F3 for every other one).

The TUN's routes (each tunnel's remote network: a site-to-site or road-warrior remote_ts, a manual
tunnel's remote network, a gateway's pools; a full tunnel's as the halves of a default route,
dataplane/exclude.py) go with the TUN when its last descriptor closes.  After a kill -9 (a crash, the OOM
killer) the host's other routes (its default route) would carry the tunnels' traffic in clear until the
next start (for ever if it fails).  So each has a route of the same network with a metric below the TUN's
(STANDING_PRIORITY; the TUN's is IPv4's 0, IPv6's 1024), in tunsec's table with it (routetable.py: looked up
before the main table, so no route of the host's wins over it, of any metric: review revks3 F2), into a
device of this instance's (``name``): a persistent TUN no
process reads (no carrier: the kernel drops what is routed to it; a dummy device would do the same, but
its kernel module is often missing).  While the TUN lives its route wins; once it is gone the device
takes the traffic.  The exclude routes (host routes, more specific) survive as well, so a restart's IKE
still reaches its peers; the blocks' prohibit routes (metric 0, and the virtual IPs' guards at 0xFFFFFFFF)
keep their place above and below.  Another instance's device holds its own networks: a network two
instances route has one standing route (the kernel keeps one per network and metric), the other's, and
is left to it (said as a failure).

Not a prohibit route: the kernel's IPv4 lookup stops at an error route of the longest prefix whatever
the output interface asked for, and IKE to an address nothing has authenticated yet leaves by the
uplink's interface through that lookup (IP_PKTINFO's ipi_ifindex, services/ike/exclude_gate.py: it
skips the routes of other devices, the TUN's and this one's, and takes the host's default route).

The device and a network's standing route are added before the TUN's route (at start and at a reload
that brings the network), found again at a start after a kill -9 (EEXIST), and go after the TUN's
route: a network's at a reload that drops it and at a start that no longer has it (keep_only), the
device (and its routes with it) at a clean stop after the TUN, and at a start or reload with no route at
all.  A start that fails before it looked at the device leaves it: it may be a killed run's, failing
closed, or a running instance's (review revprep F2).  Only a clean stop removes it (review revks F1): a
start that fails after it took a killed run's device over, or a run that fails after it was up (it gives up
on its worker), keeps it (``close(clean=False)``), so that those networks stay dropped until a start
succeeds; a first start that fails removes the device it added (it never held a tunnelled network).

The device is root's (TUNSETOWNER 0: a TUN with no owner is anyone's to attach to, and one of the service
user's is that user's processes', who would read a killed run's traffic, review revks F3).  The control
process holds a descriptor attached to it from the start on (``fd``, taken with CAP_NET_ADMIN before the
privilege drop), never read: no other process may attach while it is held (a single-queue TUN takes one),
and the clean stop removes the device through it without CAP_NET_ADMIN (TUNSETPERSIST 0).  At a kill -9 the
kernel closes it and the device is again a TUN nobody reads.  While held the device has a carrier: the
standing routes still lie under the TUN's, and what reaches them waits in its queue until dropped.  A
reload's change of a standing route without CAP_NET_ADMIN is a command for root, as the TUN's routes'
(``unapplied``).  Where ignore_routes_with_linkdown is set the kernel passes over a device without carrier:
linkdown.py keeps this one's routes used, or says why it cannot (review revks F2).

Only a TUN nobody reads (or the one this run holds) is taken for the device: a link of that name of another
kind (a veth whose peer is in a container) or one another process has open would carry the traffic on, the
opposite of a kill switch, and is neither used nor deleted (review revprep F4) if root owns it (a TUN root owns
that a process holds: another tunsec's kill switch).  One root does not own that a process reads (a local
user attached to an ownerless one) is deleted where this process may, which cuts the reader off, and made
again; where it may not, its standing routes go if they can, else an ERROR says whose they are (ksreader.py,
review revlate10 F1).  Made again for one `tunsec prepare` left (keep_found), it is prepare's as the one found
was: held while tunsec runs, released but not removed at the clean stop (review revlate11 R1).

`tunsec prepare` (root) makes the device and its routes for a later `tunsec up` that holds no
CAP_NET_ADMIN: that start finds them (a device up, a route per network) and uses them without writing
to the kernel; on a TUN it did not make (``keep_found``: prepare's, or one made by hand) it leaves a
device it found at its clean stop, as it leaves the TUN's routes it found: they serve the next start.
Such a device found with another owner or none (a prepare's of before h/fixks2, `ip tuntap add` without
``user``) is made root's and let go at once, unheld for that start (review revks2 F1): the kernel lets any
process attach to a TUN with neither owner nor group, and set its owner, so even an unprivileged start
does; one of another user's it may not attach to is an ERROR with root's fix.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN

from tunsec.dataplane.blockrecord import block_mark
from tunsec.dataplane.exclude import IPNetwork
from tunsec.dataplane.ksreader import STANDING_PRIORITY, cut_off, tun_owner_of
from tunsec.dataplane.linkdown import keep_used
from tunsec.dataplane.netlink import IPRoute, NetlinkError, as_oserror, reason
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC
from tunsec.dataplane.routes import destination, ifname
from tunsec.dataplane.routetable import TABLE, in_table
from tunsec.dataplane.tun import NO_ADDR_GEN
from tunsec.dataplane.tundev import LinkState, hold, holds, let_go, link_state, me, tun_owner, tun_owner_uid, unpersist

log = logging.getLogger("tunsec.tun")

IFF_UP = 0x1   # linux/if.h
CLEAR = "if tunsec is killed its traffic leaves in clear"


def device_name(tun: str) -> str:
    """This instance's device: from its TUN's mark (blockrecord.block_mark), 12 characters."""
    return f"tsks{block_mark(tun) & 0xFFFFFFFF:08x}"


@dataclass
class KillSwitch:
    """This instance's device and its standing routes, by network."""

    tun: str
    keep_found: bool = False   # a device found at start stays at the clean stop (the TUN was made for us)
    held: set[IPNetwork] = field(default_factory=set)
    found: bool = False        # the device was there, and keep_found: close() leaves it
    # close() removes the device: this instance added it, or took over one a killed run left (not keep_found);
    # never one it did not look at (a refusal before ensure: it may be a running instance's)
    owned: bool = False
    taken_over: bool = False   # owned, a killed run's: its networks were held before this start (close keeps it)
    up: bool = False   # set once tunsec is up (Daemon.run): its networks were tunnelled (close keeps it)
    fd: int = -1   # a descriptor attached to the owned device, unread (tundev.hold): the clean stop's remover
    index: int | None = None   # the device this run judged (added, found or taken over): judged once
    # the commands for root of the changes refused for want of CAP_NET_ADMIN (a reload's answer says them)
    unapplied: list[str] = field(default_factory=list)
    # what makes the kernel pass over the standing routes (linkdown.py), as ensure last found it: prepare refuses
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return device_name(self.tun)

    def ensure(self, nets: Iterable[IPNetwork]) -> list[str]:
        """A standing route for each of nets (the TUN's routes about to go in; none: keep_only, after the
        TUN's routes, removes the device).  What failed, one line each (logged: that traffic then leaves in
        clear after a kill -9); one refused for want of CAP_NET_ADMIN goes to unapplied instead."""
        want = list(dict.fromkeys(nets))
        if not want or not self.tun:   # no TUN (the daemon's before it opens one): no kill switch either
            return []
        failed: list[str] = []
        with IPRoute() as ipr, as_oserror(f"adding the tunnels' standing routes (device {self.name})"):
            try:
                idx = self._device(ipr)
            except NetlinkError as exc:
                if exc.code == errno.EPERM:   # an unprivileged start on a TUN made by hand: root's commands
                    exists = self.index is not None   # found (the index is set before it is brought up)
                    self.unapplied += [*([] if exists else [f"ip tuntap add dev {self.name} mode tun user root"]),
                                       f"ip link set {self.name} up",
                                       *(_route_add(net, self.name) for net in want if net not in self.held)]
                    return []
                failed.append(f"device {self.name} for the tunnels' standing routes refused: {reason(exc)}; {CLEAR}")
                log.error("%s", failed[-1])
                return failed
            if self.owned and any(n.version == 6 for n in want):
                _ipv6_on(ipr, idx, self.name)
            self.skipped = keep_used(self.name, {n.version for n in want}, CLEAR)
            for skipped in self.skipped:
                failed.append(skipped)
                log.error("%s", skipped)
            standing = _standing(ipr, idx, {n.version for n in want})
            for net in want:
                if net in self.held:
                    continue
                if net in standing:   # tunsec prepare's, or a killed run's: in place, nothing to write
                    self.held.add(net)
                    log.info("standing route %s dev %s in place (under TUN %s's route)", net, self.name, self.tun)
                    continue
                if (line := self._add(ipr, idx, net)) is not None:
                    failed.append(line)
                    log.error("%s", line)
        return failed

    def _add(self, ipr: Any, idx: int, net: IPNetwork) -> str | None:
        """net's standing route; the failed line if it cannot be (one for root's hand goes to unapplied)."""
        cmd = _route_add(net, self.name)
        try:
            ipr.route("add", dst=str(net), oif=idx, proto=RTPROT_TUNSEC, priority=STANDING_PRIORITY, table=TABLE)
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                self.unapplied.append(cmd)
                return None
            if exc.code != errno.EEXIST:
                return f"standing route {net} dev {self.name} refused: {reason(exc)}; {CLEAR} (as root: {cmd})"
            holder = _holder(ipr, net)
            if holder is not None and holder != idx:   # another instance's kill switch (or root's route)
                to = (f"goes to {ifname(ipr, holder)} (another tunsec's kill switch?)" if holder else
                      "goes to no device (root's blackhole, prohibit or multipath route?)")
                return f"standing route {net} dev {self.name} refused: the route of that network and metric {to}, " \
                       f"not ours; if it goes, {CLEAR}"
        self.held.add(net)   # added, or one a killed run of ours left on our device: ours now
        log.info("standing route %s dev %s (under TUN %s's route: its traffic is dropped if tunsec is killed)",
                 net, self.name, self.tun)
        return None

    def _device(self, ipr: Any) -> int:
        """The device's index, added (a persistent TUN, up: its routes are used without a carrier) if it is
        not there, or made again if a process reads the one found and root does not own it (ksreader.py)."""
        found = ipr.link_lookup(ifname=self.name)
        ours = bool(found) and found[0] == self.index and self.fd >= 0 and holds(self.fd, self.name)
        if not ours:   # a descriptor of ours on a device root deleted since is detached: let go
            self.release()
        remade = False   # a device found, its reader cut off: this one replaces it (keep_found: it stays too)
        if found and not ours:
            found = self._unread(ipr, found[0])
            remade = not found
        if found and found[0] != self.index:   # the one this run judged already keeps its verdict
            found = self._judge(ipr, found[0])
            remade = not found   # [] only if a reader attached meanwhile was cut off
        if not found:
            self._hold(create=True)
            # one that replaces tunsec prepare's (keep_found) is prepare's too: released, not removed, at the
            # clean stop, with its routes, for a later unprivileged start (review revlate11 R1)
            kept = remade and self.keep_found
            self.owned, self.taken_over, self.found = not kept, False, kept
            found = ipr.link_lookup(ifname=self.name)
            _no_addr_gen(ipr, found[0], self.name)   # before it is up: held, it has a carrier
        self.index = int(found[0])
        link = ipr.link("get", index=found[0])[0]
        if not link["flags"] & IFF_UP:   # one up already needs no write (none without CAP_NET_ADMIN)
            ipr.link("set", index=found[0], state="up")
        return int(found[0])

    def _unread(self, ipr: Any, idx: int) -> list[int]:
        """[idx] if it is a TUN nobody reads; [] once a TUN a process reads that root does not own was deleted
        (ksreader.cut_off: the reader cut off); NetlinkError EEXIST for any other link (another kind, a TUN root
        owns that a process holds: another tunsec's kill switch), left as it is."""
        state = link_state(ipr, idx)
        if state.unread_tun():
            return [idx]
        owner = tun_owner_of(ipr, idx, self.name) if state.kind == "tun" else None
        if owner is None or owner == 0:
            raise NetlinkError(errno.EEXIST, f"{self.name} exists and is not a TUN nobody reads "
                               f"({_described(state)}): not ours, left as it is")
        cut_off(ipr, idx, self.name, owner)
        return []

    def _judge(self, ipr: Any, idx: int) -> list[int]:
        """The verdict on device idx found unread: a killed run's taken over (held), or kept for later starts
        (keep_found) and made root's; [] if a process attached to one not root's meanwhile (cut off)."""
        self.found = self.keep_found
        self.owned = self.taken_over = not self.keep_found
        if self.owned:   # a killed run's, perhaps as another user: ours to remove at the clean stop
            _no_addr_gen(ipr, idx, self.name)   # before the hold gives it a carrier
            self._hold(create=False)
        elif tun_owner_uid(self.name) != 0:   # one of before h/fixks2, or added by hand without user
            _no_addr_gen(ipr, idx, self.name)
            if not self._make_roots():   # a process attached since it was found unread
                return self._unread(ipr, idx)
        return [idx]

    def _hold(self, create: bool) -> None:
        """The device held (tundev.hold), created if create (NetlinkError if it cannot be: EPERM, no
        CAP_NET_ADMIN); one taken over that cannot be held is said (its clean stop then needs CAP_NET_ADMIN)."""
        try:
            self.fd = hold(self.name, IFF_TUN | IFF_NO_PI, create)
        except OSError as err:
            if create:
                raise NetlinkError(err.errno or errno.EIO, f"creating {self.name}: {err.strerror or err}") from err
            log.warning("device %s taken over is not held (%s): removing it at the clean stop needs CAP_NET_ADMIN",
                        self.name, err.strerror or err)

    def _make_roots(self) -> bool:
        """A device found for later starts (keep_found) that is not root's made so (review revks2 F1: with no
        owner it is anyone's to attach to, and the attacher reads a killed run's traffic): held and let go at
        once, so it stays unheld for an unprivileged tunsec up.  Where this process may not, an ERROR with root's
        fix.  False: a process has it open (EBUSY, a race with its attach; the caller judges it again)."""
        owner = tun_owner(self.name)
        try:
            let_go(hold(self.name, IFF_TUN | IFF_NO_PI, create=False), remove=False)
        except OSError as err:
            if err.errno in (errno.EPERM, errno.EACCES):
                log.error("kill switch %s is not root's (owner %s) and %s may not make it so (no CAP_NET_ADMIN): "
                          "its owner's (or its group's) processes may attach to it and read the tunnels' traffic if "
                          "tunsec is killed. As root, once: tunsec prepare -c FILE --user %s",
                          self.name, owner, me(), me())
            elif err.errno == errno.EBUSY:
                return False
            else:
                log.error("kill switch %s (owner %s) not made root's: %s; left as it is", self.name, owner,
                          err.strerror or err)
            return True
        log.info("kill switch %s made root's (it had owner %s)", self.name, owner)
        return True

    def release(self) -> None:
        """The descriptor held on the device closed (it stays, a TUN nobody reads)."""
        if self.fd >= 0:
            let_go(self.fd, remove=False)
            self.fd = -1

    def keep_only(self, nets: Iterable[IPNetwork]) -> list[str]:
        """After the TUN's routes went: the standing routes of networks not among nets go (a reload dropped
        them, a start no longer has them); with none left, the device goes.  What failed, one line each
        (logged); one refused for want of CAP_NET_ADMIN goes to unapplied."""
        keep = set(nets)
        if not self.tun:
            return []
        if not keep:
            self.remove()
            return []
        if self.index is None:   # never judged (ensure refused it): nothing of ours on it
            return []
        failed: list[str] = []
        try:
            with IPRoute() as ipr:
                gone = (_standing(ipr, self.index, {4}) | _standing_v6(ipr, self.index, keep | self.held)) - keep
                for net in sorted(gone, key=str):
                    if (line := self._drop(ipr, net)) is not None:
                        failed.append(line)
                        log.error("%s", line)
        except NetlinkError as exc:
            failed.append(f"standing routes on {self.name} not checked: {reason(exc)}")
            log.error("%s", failed[-1])
        return failed

    def _drop(self, ipr: Any, net: IPNetwork) -> str | None:
        """net's standing route off the device; the failed line if it stays (one for root goes to unapplied)."""
        try:
            ipr.route("del", dst=str(net), oif=self.index, proto=RTPROT_TUNSEC, priority=STANDING_PRIORITY,
                      table=TABLE)
        except NetlinkError as exc:
            if exc.code == errno.EPERM:
                self.unapplied.append(f"ip route del {net} dev {self.name} table {TABLE} metric {STANDING_PRIORITY}")
                return None
            if exc.code != errno.ESRCH:
                return f"standing route {net} dev {self.name} stays: {reason(exc)}; its traffic is dropped if " \
                       f"tunsec is killed (as root: ip route del {net} dev {self.name} table {TABLE} " \
                       f"metric {STANDING_PRIORITY})"
        self.held.discard(net)
        log.info("standing route %s dev %s removed (no tunnel routes it any more)", net, self.name)
        return None

    def take_unapplied(self) -> str:
        """The commands for root in unapplied, taken off it, as one ("": none)."""
        cmds = "; ".join(self.unapplied)
        self.unapplied.clear()
        return cmds

    def report_unapplied(self, config_path: str) -> None:
        """At an unprivileged start: the one error for the standing routes it may not add (or remove)."""
        if cmds := self.take_unapplied():
            log.error("kill switch %s not set up as this configuration needs and %s may not change it (no "
                      "CAP_NET_ADMIN): if tunsec is killed the tunnels' traffic leaves in clear. As root run: %s (or "
                      "once: tunsec prepare -c %s --user %s)", self.name, me(), cmds, config_path, me())

    def close(self, clean: bool = True) -> None:
        """At the stop, after the TUN's routes: at a clean one the device and its routes go, and the host's
        other routes carry the traffic again; one found on a TUN made for us (keep_found) stays for the next
        start, as the TUN and its routes do; one it never looked at stays too (owned).  At a failure (not
        clean) a device it took over from a killed run, or whose networks it held while up, stays: those
        networks stay dropped until a start succeeds (review revks F1)."""
        if self.owned and not clean and (self.taken_over or (self.up and self.held)):
            log.error("device %s of the tunnels' standing routes stays (tunsec did not stop cleanly): %s are "
                      "dropped until tunsec starts again; to send them by the host's other routes instead, as "
                      "root: ip link del %s", self.name, ", ".join(sorted(map(str, self.held))) or "its networks",
                      self.name)
            self.release()
            self.held.clear()
            self.found = self.owned = self.taken_over = False
            self.index = None
            return
        if self.owned:
            self.remove()
            return
        if self.found:
            log.info("device %s of the tunnels' standing routes stays (it was there at start: tunsec "
                     "prepare's)", self.name)
        self.release()   # one made anew for prepare's (its reader cut off) was held: unheld for the next start
        self.held.clear()

    def remove(self) -> None:
        """The device and its routes go (a start or reload without a route, a clean stop): by netlink, or
        without CAP_NET_ADMIN through the descriptor held on it (a TUN no longer persistent goes when closed)."""
        if not self.tun:
            return
        if self.fd >= 0 and holds(self.fd, self.name):
            try:
                let_go(self.fd, remove=True)
                log.info("device %s of the tunnels' standing routes removed", self.name)
            except OSError as err:
                log.warning("device %s stays: %s (as root: ip link del %s)", self.name, err.strerror or err, self.name)
            self.fd = -1
        else:
            self.release()
            self._delete()
        self.held.clear()
        self.found = self.owned = self.taken_over = False
        self.index = None

    def _delete(self) -> None:
        """The device deleted by netlink (or, refused, as its owner's), unless it is not a TUN nobody reads."""
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.name)
                if found and not (state := link_state(ipr, found[0])).unread_tun():
                    log.warning("link %s is not a TUN nobody reads (%s): not a kill switch of ours, left as it is",
                                self.name, _described(state))
                elif found:
                    _delete(ipr, found[0], self.name)
                    log.info("device %s of the tunnels' standing routes removed", self.name)
        except (NetlinkError, OSError) as exc:
            log.warning("device %s stays: %s (as root: ip link del %s)", self.name,
                        reason(exc) if isinstance(exc, NetlinkError) else exc.strerror or exc, self.name)


def _route_add(net: IPNetwork, device: str) -> str:
    """The command for root that adds net's standing route."""
    return f"ip route add {net} dev {device} table {TABLE} proto {RTPROT_TUNSEC} metric {STANDING_PRIORITY}"


def _delete(ipr: Any, idx: int, name: str) -> None:
    """Device idx (name) deleted; without CAP_NET_ADMIN as its owner (OSError EPERM if not that either)."""
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code != errno.EPERM:
            raise
        unpersist(name, IFF_TUN | IFF_NO_PI)


def _no_addr_gen(ipr: Any, idx: int, name: str) -> None:
    """No IPv6 address of its own on our device (addrgenmode none), set before a hold first gives it a
    carrier (new, taken over or found): it would otherwise get a link-local address and send DAD and
    router solicitations into its unread queue."""
    try:
        ipr.link("set", index=idx, IFLA_AF_SPEC=NO_ADDR_GEN)
    except NetlinkError as exc:   # a kernel without IPv6
        log.debug("addrgenmode of %s left as it is: %s", name, reason(exc))


def _ipv6_on(ipr: Any, idx: int, name: str) -> None:
    """IPv6 on our device, with no address of its own (addrgenmode none: it carries nothing): where new
    links start with IPv6 disabled the kernel refuses an IPv6 route through them (EACCES).  Left as it is
    where this user may not (the route's refusal then says so)."""
    path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
    try:
        with open(path) as f:
            if f.read().strip() != "1":
                return
        ipr.link("set", index=idx, IFLA_AF_SPEC=NO_ADDR_GEN)
        with open(path, "w") as f:
            f.write("0")
        log.info("IPv6 enabled on %s (no address) for the tunnels' IPv6 standing routes", name)
    except (OSError, NetlinkError) as exc:
        log.debug("IPv6 on %s left as it is: %s", name, exc)


def _holder(ipr: Any, net: IPNetwork) -> int | None:
    """The device of tunsec's table's route of net at STANDING_PRIORITY (None: none; 0: a route of no one
    device, a blackhole, prohibit or multipath one: never ours)."""
    for r in ipr.route("dump", family=socket.AF_INET if net.version == 4 else socket.AF_INET6):
        if in_table(r) and r.get_attr("RTA_PRIORITY") == STANDING_PRIORITY and destination(r) == net:
            oif = r.get_attr("RTA_OIF")
            return int(oif) if oif is not None else 0
    return None


def _standing_v6(ipr: Any, idx: int, nets: set[IPNetwork]) -> set[IPNetwork]:
    """_standing's IPv6 routes; none where the kernel refuses the dump and no IPv6 network is asked of it."""
    try:
        return _standing(ipr, idx, {6})
    except NetlinkError:
        if any(n.version == 6 for n in nets):
            raise
        return set()


def _described(state: LinkState) -> str:
    return f"kind {state.kind or 'none'}" if state.kind != "tun" else "a TUN a process has open"


def _standing(ipr: Any, idx: int, versions: set[int]) -> set[IPNetwork]:
    """The standing routes on the device (index idx) already, of the IP versions asked (only those: a
    kernel without IPv6 refuses its dump): networks of tunsec's table's routes of tunsec's proto through it
    with STANDING_PRIORITY (what ensure adds; another table's, or another proto's, holds nothing here: the main
    table's of a tunsec of before h/fixks5 lose to every route of the host's, review revks3 F2)."""
    out: set[IPNetwork] = set()
    for family in (socket.AF_INET if v == 4 else socket.AF_INET6 for v in sorted(versions)):
        for r in ipr.route("dump", family=family, oif=idx):
            if (r.get_attr("RTA_OIF") == idx and r.get_attr("RTA_PRIORITY") == STANDING_PRIORITY and in_table(r)
                    and r["proto"] == RTPROT_TUNSEC):
                out.add(destination(r))
    return out
