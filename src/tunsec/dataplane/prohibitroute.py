"""tunsec's prohibit routes in raw netlink messages, and the delete of one that knows which one went.

Deleting this instance's block of a network is a dump (which route is ours: its TUN's mark) then a delete.
Another tunsec instance in the namespace may block the same network in between (its replace takes the place
of ours: nothing orders two processes).  IPv4's delete of a marked block names the mark and the kernel
deletes only a route whose metrics match: theirs stays, ours is already gone (ESRCH); but the delete of an
unmarked block (an older tunsec's, adopted from our record) names none and takes whatever route is there
(review revfix F1).  IPv6's delete ignores the metrics: it takes theirs.  Their traffic would leave in
clear until their blockwatch put it back (seconds).

A lock all instances take was weighed and not chosen: after start the control process runs as tunsec's user
and each instance has its own state_dir, so the only common place would be a directory every instance's
user may write (a lock file there that one instance, or any local user able to write there, holds forever
stops every other's blocks and lifts), and an older tunsec would not take it anyway.  Instead the delete
says what it removed: the kernel's RTM_DELROUTE notification of our own request (the requester's netlink
port and sequence number in its header; only a datagram the kernel sent, as any socket with CAP_NET_ADMIN
may unicast one with that header) carries the deleted route's mark.  Not ours: it is put back at once,
with its own mark, priority and proto, with add (a route put in meanwhile is left alone).  Their traffic is
in clear for the time between our delete and that add (two netlink requests of this thread), not until a
blockwatch round."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from tunsec.dataplane.netlink import ForeignDrops, NetlinkError, from_kernel
from tunsec.dataplane.routetable import TABLE

log = logging.getLogger("tunsec.tun")

RTN_PROHIBIT = 8   # linux/rtnetlink.h
RT_TABLE_MAIN = 254
# the proto of tunsec's prohibit routes (`ip route show type prohibit proto 116`): unassigned in
# iproute2's rt_protos, so no routing daemon's; how a start knows the ones an earlier run left
RTPROT_TUNSEC = 116

RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 6, 8, 15
RTAX_REORDERING = 9
RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE = 7, 11
NLMSG = struct.Struct("=IHHII")
RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")

IPNetwork = IPv4Network | IPv6Network
# datagrams another netlink socket unicast to the deletions socket: not the kernel's notices, dropped
FOREIGN = ForeignDrops("prohibit route delete", log)


@dataclass(frozen=True)
class Prohibit:
    """One prohibit route of tunsec's (its table, or the main table: an older tunsec's; proto 116) as a message
    carries it."""

    net: IPNetwork
    mark: int | None    # its TUN's (blockrecord.block_mark); None: none (an older tunsec's)
    priority: int | None
    table: int = TABLE


def prohibit_of(msg: bytes) -> Prohibit | None:
    """The route in one route message (after the netlink header) if it is a prohibit route of tunsec's in
    its table (routetable.py) or the main table (one a tunsec of before h/fixks5 left)."""
    r = route_of(msg)
    if r is None or r.kind != RTN_PROHIBIT or r.proto != RTPROT_TUNSEC or r.table not in (TABLE, RT_TABLE_MAIN):
        return None
    return Prohibit(r.net, r.mark, r.priority, r.table)


@dataclass(frozen=True)
class Route:
    """What tunsec reads of one route in a route message."""

    net: IPNetwork
    table: int
    proto: int
    kind: int            # RTN_*
    oif: int | None      # its device's index
    priority: int | None
    mark: int | None     # RTAX_REORDERING (blockrecord.block_mark); None: none


def route_of(msg: bytes) -> Route | None:
    """The route in one route message (after the netlink header); None for one of another family or malformed."""
    if len(msg) < RTMSG.size:
        return None
    family, dst_len, _src, _tos, table, proto, _scope, kind, _flags = RTMSG.unpack_from(msg)
    dst, mark, priority, oif = b"", None, None, None
    for attr, value in attrs(msg, RTMSG.size):
        if attr == RTA_DST:
            dst = value
        elif attr == RTA_TABLE and len(value) == 4:
            table = struct.unpack("=I", value)[0]
        elif attr == RTA_PRIORITY and len(value) == 4:
            priority = struct.unpack("=I", value)[0]
        elif attr == RTA_OIF and len(value) == 4:
            oif = struct.unpack("=i", value)[0]
        elif attr == RTA_METRICS:
            mark = next((struct.unpack("=I", v)[0] for a, v in attrs(value, 0) if a == RTAX_REORDERING
                         and len(v) == 4), None) or None   # 0: none (the kernel leaves a 0 out)
    size = 4 if family == socket.AF_INET else 16
    if family not in (socket.AF_INET, socket.AF_INET6) or len(dst) not in (0, size) or dst_len > size * 8:
        return None
    address = ip_address(dst or bytes(size))
    return Route(ip_network(f"{address}/{dst_len}", strict=False), table, proto, kind, oif, priority, mark)


def attrs(msg: bytes, off: int) -> Iterator[tuple[int, bytes]]:
    """The netlink attributes (type, value) in msg from off; a malformed length ends them."""
    while off + _RTA.size <= len(msg):
        length, attr = _RTA.unpack_from(msg, off)
        if length < _RTA.size:
            return
        yield attr & 0x3FFF, msg[off + _RTA.size:off + length]   # without NLA_F_NESTED / NET_BYTEORDER
        off += (length + 3) & ~3


def delete(ipr: Any, key: dict[str, object], dst: IPNetwork, owns: Callable[[IPNetwork, int | None], bool]) -> bool:
    """Delete the prohibit route key names (tun._prohibit_key: with its mark) through ipr; owns: whether a
    route of dst with that mark is the caller's.  False if none was there (ESRCH: gone already, or, IPv4,
    another TUN's took its place and stays).  A deleted route that was not the caller's is put back (the
    module's docstring).  Other refusals raise NetlinkError."""
    with _deletions(dst.version) as events:
        try:
            acks = ipr.route("del", **key)
        except NetlinkError as exc:
            if exc.code == errno.ESRCH:
                return False
            raise
        ours = {(int(a["header"]["pid"]), int(a["header"]["sequence_number"])) for a in acks}
        gone = [p for p in _read(events, ours) if p.net == dst]
    for p in gone:
        if not owns(dst, p.mark):
            _put_back(ipr, p)
    return True


@contextlib.contextmanager
def _deletions(version: int) -> Iterator[socket.socket]:
    """A socket the kernel tells of the family's route changes, subscribed before the delete is sent."""
    group = RTNLGRP_IPV6_ROUTE if version == 6 else RTNLGRP_IPV4_ROUTE
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        s.bind((0, 1 << (group - 1)))
        yield s


def _read(s: socket.socket, ours: set[tuple[int, int]]) -> list[Prohibit]:
    """The prohibit routes of tunsec's whose deletion our request (its port and sequence number) caused: the
    kernel queued the notification before it answered the request, so what is queued now is all there is.
    A socket overrun (ENOBUFS: a flood of route changes) says nothing: [] (their blockwatch remains)."""
    found: list[Prohibit] = []
    s.setblocking(False)
    while True:
        try:
            data, sender = s.recvfrom(1 << 16)
        except (BlockingIOError, InterruptedError):
            return found
        except OSError as err:
            log.warning("which prohibit route a delete removed is not known: %s", err.strerror or err)
            return found
        if not from_kernel(sender):   # its header's (port, sequence) are the sender's to write (revlate7 R1)
            FOREIGN.dropped(sender)
            continue
        off = 0
        while off + NLMSG.size <= len(data):
            size, kind, _flags, seq, pid = NLMSG.unpack_from(data, off)
            if size < NLMSG.size:
                break
            if kind == RTM_DELROUTE and (pid, seq) in ours:
                p = prohibit_of(data[off + NLMSG.size:off + size])
                if p is not None:
                    found.append(p)
            off += (size + 3) & ~3


def _put_back(ipr: Any, p: Prohibit) -> None:
    """Another TUN's block our delete took (it had replaced ours after our dump): back, as it was."""
    kw: dict[str, object] = {"dst": str(p.net), "type": "prohibit", "proto": RTPROT_TUNSEC, "table": p.table}
    if p.mark is not None:
        kw["metrics"] = {"reordering": p.mark}
    if p.priority is not None:
        kw["priority"] = p.priority
    try:   # add: a route put in meanwhile (theirs again, by their blockwatch) is left alone
        ipr.route("add", **kw)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            log.error("prohibit route of %s (another TUN's, mark %s) removed with ours and not put back: %s; "
                      "its tunsec's blockwatch puts it back", p.net, p.mark, exc)
        return
    log.warning("prohibit route of %s: another TUN's (mark %s) had taken the place of ours; removed with it, "
                "put back", p.net, p.mark)
