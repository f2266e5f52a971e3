"""The kernel's notices that the rule before tunsec's table, or a route of that table, was deleted: the route
keeper (routekeep.py) checks at once rather than at its next poll (review revlate13 F2).

Without the rule nothing in table 116 is looked up: not the TUN's routes, not the kill switch's standing routes,
not the blocks; every tunnel's traffic follows the main table's routes, in clear, until the rule is back.  The
kernel tells every socket subscribed to the rule groups of a deleted rule (RTM_DELRULE: `ip rule del`, `ip rule
flush`, systemd-networkd's start removing foreign rules) and to the route groups of a deleted route
(RTM_DELROUTE: `ip route del ... table 116`), so the check runs within milliseconds of the deletion.  It sends
no notice for the IPv4 routes it flushes itself (a device down, its last IPv4 address gone: fib_sync_down_dev):
the keeper's poll stays for those.  The IPv6 routes it flushes with a device that goes down it notifies, as its
own (port id 0 in the header, where a deletion a process asked for carries that process's): those are left to
the poll too, since nothing goes back through a device that is down, and a check in the moment it is down (an
operator's `ip link set down`, then `up`) would only say so, once more than the loss it then finds.

Read on the event loop (a plain rtnetlink socket, no privilege needed, as the address watch's): a datagram is
read, its messages' type and table looked at (the table's byte in rtmsg and fib_rule_hdr alike: table 116 fits
it), nothing else.  Only the kernel's datagrams count (netlink.from_kernel): any socket with CAP_NET_ADMIN in the
namespace may unicast to ours.  A socket overrun (ENOBUFS: a flood of route changes, a BGP table's, say) may
have hidden a deletion: a check runs then too.  A check only adds (routekeep: never replace), and adds cause no
deletion, so a notice never leads to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from tunsec.dataplane.netlink import NLMSG, ForeignDrops, from_kernel
from tunsec.dataplane.prohibitroute import RT_TABLE_MAIN, RTM_DELROUTE, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE
from tunsec.dataplane.routetable import TABLE

log = logging.getLogger("tunsec.tun")

RTM_DELRULE = 33                                   # linux/rtnetlink.h
RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_RULE = 8, 19
GROUPS = sum(1 << (g - 1) for g in (RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV6_RULE))
TABLE_BYTE = 4   # rtmsg's rtm_table, fib_rule_hdr's table: the table id where it is below 256 (RT_TABLE_COMPAT else)
READS = 64       # datagrams read per wake-up of the event loop: others' route churn cannot hold it longer


def deletion_in_table(data: bytes) -> bool:
    """Whether a datagram of the kernel's tells of a rule of tunsec's table (or of the main table's: a local
    network's rule looks it up) deleted, or a route of tunsec's table deleted at a process's request."""
    off = 0
    while off + NLMSG.size <= len(data):
        size, kind, _flags, _seq, pid = NLMSG.unpack_from(data, off)
        if size < NLMSG.size:
            return False
        body = off + NLMSG.size
        asked = kind == RTM_DELRULE or (kind == RTM_DELROUTE and pid != 0)   # pid 0: a flush of the kernel's
        # a rule of the main table too: the mark's (markrule.py, review revlate15 F1), a local network's
        # (localrules.py), or the host's own (a wake-up too many costs one check)
        tables = (TABLE, RT_TABLE_MAIN) if kind == RTM_DELRULE else (TABLE,)
        if asked and body + TABLE_BYTE < min(off + size, len(data)) and data[body + TABLE_BYTE] in tables:
            return True
        off += (size + 3) & ~3
    return False


@dataclass
class Deletions:
    """A socket subscribed to the rule and route groups; ``deleted()`` on the event loop when the kernel tells
    of a deletion in tunsec's table (or may have: an overrun), until close()."""

    deleted: Callable[[], object]
    foreign: ForeignDrops = field(default_factory=lambda: ForeignDrops("route keeper's notices", log))
    _sock: socket.socket | None = None

    @classmethod
    def start(cls, deleted: Callable[[], object]) -> Deletions | None:
        """Subscribed and read from the running loop; None (said) if the kernel refused: the poll alone then."""
        notices = cls(deleted)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, GROUPS))
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), notices._readable)
        except OSError as err:
            sock.close()
            log.warning("the route keeper does not hear of deleted rules and routes (%s): it finds them at its "
                        "next check (every few seconds)", err.strerror or err)
            return None
        notices._sock = sock
        return notices

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        hit = False
        for _ in range(READS):
            try:
                data, sender = sock.recvfrom(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:   # ENOBUFS: notices lost, a deletion may be among them
                log.debug("route keeper's notices: %s", err.strerror or err)
                hit = hit or err.errno == errno.ENOBUFS
                break
            if not from_kernel(sender):
                self.foreign.dropped(sender)
                continue
            hit = hit or deletion_in_table(data)
        if hit:
            self.deleted()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):   # no loop running (closed already): nothing reads it any more
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
