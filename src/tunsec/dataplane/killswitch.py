"""A full tunnel fails closed: a standing route under each of its halves, into a device that drops what
it is given (review revfull F3).

A full tunnel's routes are the halves of a default route on the TUN (dataplane/exclude.py): they go with
the TUN when its last descriptor closes.  After a kill -9 (a crash, the OOM killer) the host's own default
route, which the halves only outranked, would carry everything in clear until the next start (for ever if
it fails).  So each half also has a route of the same network with a metric below the TUN's
(STANDING_PRIORITY; the TUN's is 0) into a device of this instance's (``name``): a persistent TUN no
process reads (no carrier: the kernel drops what is routed to it; a dummy device would do the same, but
its kernel module is often missing).  While the TUN lives its route wins; once it is gone the device
takes the traffic.  The
exclude routes (host routes, more specific) survive as well, so a restart's IKE still reaches its peers.

Not a prohibit route: the kernel's IPv4 lookup stops at an error route of the longest prefix whatever
the output interface asked for, and IKE to an address nothing has authenticated yet leaves by the
uplink's interface through that lookup (IP_PKTINFO's ipi_ifindex, services/ike/exclude_gate.py: it
skips the routes of other devices, the TUN's and this one's, and takes the host's default route).

The device (and with it its routes) is added before the halves at start and at a reload that brings a
full tunnel, found again at a start after a kill -9 (EEXIST), and deleted at a clean stop after the
TUN, at a reload that drops the full tunnel, and at a start that has none.  A start that fails before
it looked at the device leaves it: it may be a killed run's, failing closed, or a running instance's
(review revprep F2).

Only a TUN nobody reads is taken for the device: a link of that name of another kind (a veth whose peer is
in a container) or one a process has open would carry the traffic on, the opposite of a kill switch, and
is neither used nor deleted (review revprep F4).

`tunsec prepare` (root) makes the device and its routes for a later `tunsec up` that holds no
CAP_NET_ADMIN: that start finds them (a device up, a route per half) and uses them without writing to
the kernel; on a TUN it did not make (``keep_found``: prepare's, or one made by hand) it leaves a device
it found at its clean stop, as it leaves the TUN's routes it found: they serve the next start.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tunsec.dataplane.blockrecord import block_mark
from tunsec.dataplane.exclude import IPNetwork, is_half
from tunsec.dataplane.netlink import IPRoute, NetlinkError, as_oserror, reason
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC
from tunsec.dataplane.routes import destination, in_main
from tunsec.dataplane.tundev import LinkState, link_state

log = logging.getLogger("tunsec.tun")

# below the TUN's routes (metric 0): the route that holds a full tunnel's half once the TUN is gone
STANDING_PRIORITY = 0xFFFFFFFE
IFF_UP = 0x1   # linux/if.h


def device_name(tun: str) -> str:
    """This instance's device: from its TUN's mark (blockrecord.block_mark), 12 characters."""
    return f"tsks{block_mark(tun) & 0xFFFFFFFF:08x}"


@dataclass
class KillSwitch:
    """This instance's device and its standing routes, by half."""

    tun: str
    keep_found: bool = False   # a device found at start stays at the clean stop (the TUN was made for us)
    held: set[IPNetwork] = field(default_factory=set)
    found: bool = False        # the device was there, and keep_found: close() leaves it
    # close() removes the device: this instance added it, or took over one a killed run left (not keep_found);
    # never one it did not look at (a refusal before ensure: it may be a running instance's)
    owned: bool = False
    index: int | None = None   # the device this run judged (added, found or taken over): judged once

    @property
    def name(self) -> str:
        return device_name(self.tun)

    def ensure(self, nets: Iterable[IPNetwork]) -> list[str]:
        """A standing route for each half among nets (the TUN's routes about to go in); with none, the
        device a killed run left goes.  What failed, one line each (logged: the tunnel then fails open
        after a kill -9)."""
        want = [n for n in nets if is_half(n)]
        if not want:
            self.remove()
            return []
        failed: list[str] = []
        with IPRoute() as ipr, as_oserror(f"adding the full tunnel's standing routes (device {self.name})"):
            try:
                idx = self._device(ipr)
            except NetlinkError as exc:
                failed.append(f"device {self.name} for the full tunnel's standing routes refused: "
                              f"{reason(exc)}; if tunsec is killed its full tunnel's traffic leaves in clear")
                log.error("%s", failed[-1])
                return failed
            standing = _standing(ipr, idx, {n.version for n in want})
            for half in want:
                if half in self.held:
                    continue
                if half in standing:   # tunsec prepare's, or a killed run's: in place, nothing to write
                    self.held.add(half)
                    log.info("standing route %s dev %s in place (under TUN %s's route)", half, self.name, self.tun)
                    continue
                try:
                    ipr.route("add", dst=str(half), oif=idx, proto=RTPROT_TUNSEC, priority=STANDING_PRIORITY)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:   # EEXIST: one a killed run of ours left: ours now
                        failed.append(f"standing route {half} dev {self.name} refused: {reason(exc)}; if tunsec "
                                      f"is killed its full tunnel's traffic leaves in clear (as root: ip route add "
                                      f"{half} dev {self.name} proto {RTPROT_TUNSEC} metric {STANDING_PRIORITY})")
                        log.error("%s", failed[-1])
                        continue
                self.held.add(half)
                log.info("standing route %s dev %s (under TUN %s's route: the full tunnel fails closed)", half,
                         self.name, self.tun)
        return failed

    def _device(self, ipr: Any) -> int:
        """The device's index, added (a persistent TUN, up: its routes are used without a carrier) if it is
        not there."""
        found = ipr.link_lookup(ifname=self.name)
        if found:
            if not (state := link_state(ipr, found[0])).unread_tun():
                raise NetlinkError(errno.EEXIST, f"{self.name} exists and is not a TUN nobody reads "
                                   f"({_described(state)}): not ours, left as it is")
            if found[0] != self.index:   # the one this run added or judged already keeps its verdict
                self.found = self.keep_found
                self.owned = not self.keep_found
        else:
            ipr.link("add", ifname=self.name, kind="tuntap", mode="tun")
            self.owned = True
            found = ipr.link_lookup(ifname=self.name)
        self.index = int(found[0])
        link = ipr.link("get", index=found[0])[0]
        if not link["flags"] & IFF_UP:   # one up already needs no write (none without CAP_NET_ADMIN)
            ipr.link("set", index=found[0], state="up")
        return int(found[0])

    def keep_only(self, nets: Iterable[IPNetwork]) -> None:
        """No half among nets any more (a reload dropped the full tunnel): the device goes."""
        if not any(is_half(n) for n in nets):
            self.remove()

    def close(self) -> None:
        """At a clean stop, after the TUN's routes: the device and its routes go, and the host's default
        route carries the traffic again; one found on a TUN made for us (keep_found) stays for the next
        start, as the TUN and its routes do; one it never looked at stays too (owned)."""
        if self.owned:
            self.remove()
            return
        if self.found:
            log.info("device %s of the full tunnel's standing routes stays (it was there at start: tunsec "
                     "prepare's)", self.name)
        self.held.clear()

    def remove(self) -> None:
        """The device and its routes go (a start or reload without a full tunnel, a clean stop)."""
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.name)
                if found and not (state := link_state(ipr, found[0])).unread_tun():
                    log.warning("link %s is not a TUN nobody reads (%s): not a kill switch of ours, left as it is",
                                self.name, _described(state))
                elif found:
                    ipr.link("del", index=found[0])
                    log.info("device %s of the full tunnel's standing routes removed", self.name)
        except (NetlinkError, OSError) as exc:
            log.warning("device %s stays: %s (as root: ip link del %s)", self.name,
                        reason(exc) if isinstance(exc, NetlinkError) else exc.strerror or exc, self.name)
        self.held.clear()
        self.found = self.owned = False
        self.index = None


def _described(state: LinkState) -> str:
    return f"kind {state.kind or 'none'}" if state.kind != "tun" else "a TUN a process has open"


def _standing(ipr: Any, idx: int, versions: set[int]) -> set[IPNetwork]:
    """The standing routes on the device (index idx) already, of the IP versions asked (only those: a
    kernel without IPv6 refuses its dump): networks of the main table's routes of tunsec's proto through it
    with STANDING_PRIORITY (what ensure adds; another table's, or another proto's, holds nothing here)."""
    out: set[IPNetwork] = set()
    for family in (socket.AF_INET if v == 4 else socket.AF_INET6 for v in sorted(versions)):
        for r in ipr.route("dump", family=family, oif=idx):
            if (r.get_attr("RTA_OIF") == idx and r.get_attr("RTA_PRIORITY") == STANDING_PRIORITY and in_main(r)
                    and r["proto"] == RTPROT_TUNSEC):
                out.add(destination(r))
    return out
