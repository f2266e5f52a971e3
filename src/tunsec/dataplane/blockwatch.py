"""This instance's prohibit routes kept in the kernel whatever others do to them.

A blocked network's prohibit route (Tun.block) holds traffic that would otherwise take the host's other
routes in clear.  Anyone with CAP_NET_ADMIN in the namespace may delete it: root by hand, another program,
or another tunsec instance whose record lists the network (its service user may write that record, and the
record cannot tell a forged entry from a real one).  So every INTERVAL seconds, while something is blocked,
the routes are looked at and a missing one is put back (logged, rate-limited): its traffic may leave in
clear for at most about INTERVAL seconds.

A block is this instance's by its TUN's mark (Tun.owns; an unmarked one only if the start took it from its
record): another TUN's block of the network (another instance's replace took the place of ours) is not, so
ours is said lost and put back, with add, once theirs goes; never over theirs.

The look is one netlink dump the kernel filters (NETLINK_GET_STRICT_CHK: tunsec's proto, prohibit routes
only, of every table: tunsec's own (routetable.py), and the main table where an older tunsec's stay): a few
of them rather than the host's whole routing table (pyroute2 filters dumps in Python, seconds for a full
table).  A kernel without dump filtering sends every route: each is checked here.
Only the kernel's datagrams are read (netlink.from_kernel): a route another netlink socket unicast to the
dump's socket would have hidden a deleted block from the check (review revlate7 R1).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket

from tunsec.dataplane.blockrecord import mark_metrics
from tunsec.dataplane.netlink import RTM_NEWROUTE as RTM_NEWROUTE
from tunsec.dataplane.netlink import ForeignDrops, _netlink, route_dump
from tunsec.dataplane.prohibitroute import RTN_PROHIBIT, RTPROT_TUNSEC, prohibit_of
from tunsec.dataplane.routetable import TABLE
from tunsec.dataplane.tun import IPNetwork, Tun, Unrouted, _iproute
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.tun")

INTERVAL = 2.0

# datagrams another netlink socket unicast to a route dump's socket: not the kernel's answer, dropped
FOREIGN = ForeignDrops("prohibit route check", log)


async def watch(tun: Tun, stopping: asyncio.Event, interval: float = INTERVAL, keeper: Keeper | None = None) -> None:
    """Until stopping: tun's blocks put back when someone else removed them (netlink in a thread); keeper:
    the one netadmin.py asks whether a lost block waits to be put back."""
    keeper = keeper or Keeper(tun)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            return
        try:   # in the thread, under the TUN's lock: a reload's thread changes what is blocked meanwhile
            await asyncio.to_thread(keeper.check)
        except Exception as err:   # a bug: said, and the next round still runs
            keeper._say(logging.ERROR, "checking this instance's prohibit routes failed: %s: %s",
                        type(err).__name__, err)


class Keeper:
    """The check, with what it lost (blocks it could not put back: tried again each round)."""

    def __init__(self, tun: Tun) -> None:
        self.tun = tun
        self.lost: dict[IPNetwork, str] = {}   # network: why it was blocked
        self.limit = LogLimiter(burst=5, period=60.0)

    def check(self) -> None:
        """Under the TUN's lock: its blocks and the kernel agree for the time of the look and the repair."""
        tun = self.tun
        with tun._lock:
            self.lost = self._still_lost()
            # routed through the TUN again (add_route's replace took the prohibit route over; unblock comes
            # after it): the TUN holds that traffic, and a prohibit route put back would replace the TUN route
            routed = {d for d, _s in tun.routes}
            blocked = {d for d, u in tun.unrouted.items() if u.blocked and d not in routed}
            if not blocked and not self.lost:
                return
            try:
                present = {net for net, mark in tunsec_prohibits() if tun.owns(net, mark)}
            except OSError as err:
                self._say(logging.WARNING, "prohibit routes not checked: %s", err.strerror or err)
                return
            retry = dict(self.lost)   # those lost in an earlier round: one try each round
            for dst in sorted(blocked - present, key=lambda n: (n.version, int(n.network_address), n.prefixlen)):
                self._put_back(dst, tun.unrouted[dst].why)
            for dst, why in retry.items():
                self._put_back(dst, why)

    def _still_lost(self) -> dict[IPNetwork, str]:
        """Under the TUN's lock: the lost blocks a check still tries to put back (unrouted, not blocked, no
        route of ours: one a reload took out of the configuration or routed again is no longer one)."""
        tun = self.tun
        routed = {r for r, _ in tun.routes}
        return {d: w for d, w in self.lost.items() if d in tun.unrouted and not tun.unrouted[d].blocked
                and d not in routed}

    def holding(self) -> bool:
        """Under the TUN's lock: a block held, or a lost one a check would put back (CAP_NET_ADMIN for both)."""
        return any(u.blocked for u in self.tun.unrouted.values()) or bool(self._still_lost())

    def _put_back(self, dst: IPNetwork, why: str) -> None:
        tun = self.tun
        tun._note_blocks(dst)   # recorded before it exists, as block's
        try:
            with _iproute() as ipr, _netlink(f"putting back the prohibit route of {dst}"):
                # add, not replace: a route someone else put in the block's place (another VPN, root, a
                # tunnel moved elsewhere) is theirs; taken over, it would be gone for good once we unblock
                ipr.route("add", dst=str(dst), type="prohibit", proto=RTPROT_TUNSEC, table=TABLE,
                          metrics=mark_metrics(tun.name))
        except OSError as err:
            taken = err.errno == errno.EEXIST
            known = dst in self.lost
            self.lost[dst] = why
            said = ("its place is taken by a route not this instance's (left alone; put back once it goes)"
                    if taken else f"it cannot be put back: {err.strerror or err}")
            tun.unrouted[dst] = Unrouted(f"{why}; its prohibit route was removed by someone else and {said}",
                                         blocked=False)
            tun._note_blocks()
            if not (taken and known):   # a route that stays there is said once, not every round
                self._say(logging.ERROR, "prohibit route of %s removed by someone else and not put back: %s; %s",
                          dst, said, "its traffic follows that route" if taken else "its traffic may leave in clear")
            return
        self.lost.pop(dst, None)
        tun.unmarked.discard(dst)   # the one put back is marked
        tun.unrouted[dst] = Unrouted(why, blocked=True)
        self._say(logging.WARNING, "prohibit route of %s removed by someone else: put back (traffic to it is "
                  "refused until a reload adds its route)", dst)

    def _say(self, level: int, fmt: str, *args: object) -> None:
        held = self.limit.admit()
        if held is not None:
            log.log(level, fmt + "%s", *args, suffix(held))


def tunsec_prohibits() -> set[tuple[IPNetwork, int | None]]:
    """tunsec's prohibit routes in its table or the main table (either family): each one's network and mark (None:
    none)."""
    return {n for family in (socket.AF_INET, socket.AF_INET6) for n in _dump(family)}


def _dump(family: int) -> set[tuple[IPNetwork, int | None]]:
    body = route_dump(family, FOREIGN, proto=RTPROT_TUNSEC, kind=RTN_PROHIBIT)   # table 0: every table
    return {net for msg in body if (net := _prohibit_of(msg)) is not None}


def _prohibit_of(msg: bytes) -> tuple[IPNetwork, int | None] | None:
    """The network and mark of one route message if it is a prohibit route of tunsec's (prohibit_of)."""
    p = prohibit_of(msg)
    return (p.net, p.mark) if p is not None else None
