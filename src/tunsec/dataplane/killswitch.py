"""A full tunnel fails closed: a standing prohibit route under each of its halves (review revfull F3).

A full tunnel's routes are the halves of a default route on the TUN (dataplane/exclude.py): they go with
the TUN when its last descriptor closes.  After a kill -9 (a crash, the OOM killer) the host's own default
route, which the halves only outranked, would carry everything in clear until the next start (for ever if
it fails).  So each half also gets a prohibit route of the same network with a metric below the TUN's
(STANDING_PRIORITY, the TUN's is 0): while the TUN lives its route wins; once it is gone the prohibit route
refuses the traffic (senders get EACCES / ICMP administratively prohibited).  The exclude routes (host
routes, more specific) survive as well, so a restart's IKE still reaches its peers.

The prohibit routes are tunsec's (proto 116) with the TUN's mark (RTAX_REORDERING, blockrecord.block_mark),
as Tun.block's: added before the halves, kept across a restart (the next start adds them again first: one
left is found with EEXIST, and Tun.clear_stale_blocks keeps those of halves still wanted and removes the
others by mark), removed at a clean stop after the TUN and when a reload drops the full tunnel.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunsec.dataplane.blockrecord import mark_metrics
from tunsec.dataplane.exclude import IPNetwork, is_half
from tunsec.dataplane.netlink import IPRoute, NetlinkError, _netlink, _reason
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC

log = logging.getLogger("tunsec.tun")

# below the TUN's routes (metric 0) and above remove_address's stand-ins (tun._GUARD_PRIORITY): the
# prohibit route that holds a full tunnel's half once its TUN route is gone
STANDING_PRIORITY = 0xFFFFFFFE


@dataclass
class KillSwitch:
    """This instance's standing prohibit routes, by half."""

    tun: str
    held: set[IPNetwork] = field(default_factory=set)

    def _key(self, half: IPNetwork) -> dict[str, object]:
        return {"dst": str(half), "type": "prohibit", "proto": RTPROT_TUNSEC, "priority": STANDING_PRIORITY,
                "metrics": mark_metrics(self.tun)}

    def ensure(self, nets: Iterable[IPNetwork]) -> list[str]:
        """A standing prohibit route for each half among nets (the TUN's routes about to go in); what
        failed, one line each (logged: the tunnel then fails open after a kill -9, as before)."""
        failed: list[str] = []
        want = [n for n in nets if is_half(n) and n not in self.held]
        if not want:
            return failed
        with IPRoute() as ipr, _netlink("adding the full tunnel's standing prohibit routes"):
            for half in want:
                try:
                    ipr.route("add", **self._key(half))
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:   # EEXIST: one a killed run of ours left: ours now
                        failed.append(f"standing prohibit route {half} refused: {_reason(exc)}; if tunsec is "
                                      f"killed its full tunnel's traffic leaves in clear (as root: ip route add "
                                      f"prohibit {half} proto {RTPROT_TUNSEC} metric {STANDING_PRIORITY})")
                        log.error("%s", failed[-1])
                        continue
                self.held.add(half)
                log.info("standing prohibit route %s (under TUN %s's route: the full tunnel fails closed)", half,
                         self.tun)
        return failed

    def keep_only(self, nets: Iterable[IPNetwork]) -> None:
        """Those of halves not among nets go (a reload dropped the full tunnel)."""
        keep = set(nets)
        self._remove([h for h in self.held if h not in keep])

    def close(self) -> None:
        """At a clean stop, after the TUN's routes: the host's default route carries the traffic again."""
        self._remove(list(self.held))

    def _remove(self, gone: list[IPNetwork]) -> None:
        if not gone:
            return
        try:
            with IPRoute() as ipr:
                for half in gone:
                    self.held.discard(half)
                    try:
                        ipr.route("del", **self._key(half))
                    except NetlinkError as exc:
                        if exc.code != errno.ESRCH:
                            log.warning("standing prohibit route %s stays: %s (as root: ip route del prohibit %s "
                                        "proto %d metric %d)", half, _reason(exc), half, RTPROT_TUNSEC,
                                        STANDING_PRIORITY)
                        continue
                    log.info("standing prohibit route %s removed", half)
        except OSError as exc:
            log.warning("standing prohibit routes %s stay: %s", ", ".join(map(str, gone)), exc.strerror or exc)
