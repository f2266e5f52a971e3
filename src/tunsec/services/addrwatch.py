"""The host's IP addresses from rtnetlink: a dump (RTM_GETADDR) and a watch of the changes
(RTM_NEWADDR / RTM_DELADDR), read by one parser with bounds checks.

A MOBIKE client (RFC 4555) tells its gateway when it moved; strongSwan learns of its own
address changes the same way (kernel-netlink's roam events). A plain rtnetlink socket
subscribed to the address groups, read from the event loop: no privilege needed, and
pyroute2's synchronous API (which runs a loop of its own) stays out of the asyncio thread.
Bursts (an address deleted and another added) are reported once, ``settle`` seconds after
the last message.  The changes themselves go to a listener as they are read (the IKE service's
list of the host's addresses, services/ike/host_addresses.py): it applies each, and lists every
address again only when the watch missed some (the socket overflowed, ENOBUFS) or a message did
not parse (review revperf R1: a full listing per burst was 0.3 s of CPU at 5,000 addresses).
Only the kernel's datagrams count (source port id 0): any netlink socket with CAP_NET_ADMIN in the
namespace may unicast to ours, and a notice applied as read would then take a host address out of
the list or put a stranger's in (review revlate6 F1); those are dropped, counted, and cost no dump.
Each of the kernel's datagrams also goes, as read, to ``on_read`` (services/addr_feed.py: the
addresses added, for the dataplane worker, which holds no netlink socket of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from tunsec.dataplane.netlink import ForeignDrops, from_kernel
from tunsec.policy.selector import IPAddress

log = logging.getLogger(__name__)

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_OPTIMISTIC, IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x04, 0x08, 0x40
_NLMSG_HDR = struct.Struct("=IHHII")    # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")    # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")          # length, type
_ERRNO = struct.Struct("=i")
_U32 = struct.Struct("=I")
_ADDR_BYTES = {socket.AF_INET: 4, socket.AF_INET6: 16}
MAX_BURSTS = 4   # a burst of changes is reported after at most this many settle periods from its first
DUMP_TRIES = 5   # dumps the kernel marks interrupted (the list changed while read) before giving up
DUMP_TIMEOUT = 5.0


class Malformed(ValueError):
    """A netlink message that does not parse: what it said is lost (the listener lists all again)."""


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """One address of an interface, as the kernel tells it from the others: IPv4 by interface, local
    address, prefix length and IFA_ADDRESS (the other end on a point-to-point link); IPv6 by interface
    and address (the kernel has one of each address per interface; its prefix length may change)."""

    index: int
    local: IPAddress   # the host's own: IFA_LOCAL where the link has one, else IFA_ADDRESS
    prefixlen: int = 0
    peer: IPAddress | None = None


AddressChange = tuple[bool, InterfaceAddress]   # (added, which): an RTM_NEWADDR or RTM_DELADDR


class AddressListener(Protocol):
    def apply(self, changes: Sequence[AddressChange]) -> None:
        """The changes just read, in the kernel's order."""

    def resync(self) -> None:
        """Some changes were missed or did not parse: every address is to be listed again."""


def messages(data: bytes) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, sequence, body) of each netlink message in ``data``; Malformed at a length that
    does not fit."""
    view = memoryview(data)
    off = 0
    while off < len(data):
        if off + _NLMSG_HDR.size > len(data):
            raise Malformed(f"{len(data) - off} bytes after the last message")
        length, mtype, flags, seq, _pid = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size or off + length > len(data):
            raise Malformed(f"message length {length} at {off} of {len(data)}")
        yield mtype, flags, seq, view[off + _NLMSG_HDR.size:off + length]
        off += (length + 3) & ~3


def interface_address(body: memoryview) -> InterfaceAddress | None:
    """The address an RTM_NEWADDR/RTM_DELADDR body names (None: not IPv4 or IPv6); Malformed if its
    attributes overrun it, an address attribute has the wrong size, or it names no address."""
    read = _address_attributes(body)
    if read is None:
        return None
    family, prefixlen, index, _flags, found = read
    local = ipaddress.ip_address(_local(found))
    if family == socket.AF_INET6:
        return InterfaceAddress(index, local)
    peer = found.get(IFA_ADDRESS)
    return InterfaceAddress(index, local, prefixlen, None if peer is None else ipaddress.ip_address(peer))


def added_address(body: memoryview) -> IPAddress | None:
    """The host's address an RTM_NEWADDR body adds, if it is one yet: None for a tentative address
    (IFA_F_TENTATIVE without IFA_F_OPTIMISTIC, which the kernel lets be a source already, or
    IFA_F_DADFAILED; its end of DAD comes as a notice of its own) or one not IPv4 or IPv6; Malformed
    as interface_address."""
    read = _address_attributes(body)
    if read is None:
        return None
    flags, found = read[3], read[4]
    if flags & IFA_F_DADFAILED or (flags & IFA_F_TENTATIVE and not flags & IFA_F_OPTIMISTIC):
        return None
    return ipaddress.ip_address(_local(found))


def _address_attributes(body: memoryview) -> tuple[int, int, int, int, dict[int, bytes]] | None:
    """(family, prefix length, interface index, flags, {IFA_ADDRESS/IFA_LOCAL: bytes}) of an address
    message's body, every length checked (None: not IPv4 or IPv6); the flags IFA_FLAGS's where there
    is one (ifa_flags holds the low 8 bits only)."""
    if len(body) < _IFADDRMSG.size:
        raise Malformed(f"address message of {len(body)} bytes")
    family, prefixlen, flags, _scope, index = _IFADDRMSG.unpack_from(body)
    size = _ADDR_BYTES.get(family)
    if size is None:
        return None
    found: dict[int, bytes] = {}
    pos = _IFADDRMSG.size
    while pos + _RTATTR.size <= len(body):
        alen, atype = _RTATTR.unpack_from(body, pos)
        if alen < _RTATTR.size or pos + alen > len(body):
            raise Malformed(f"attribute length {alen} at {pos} of {len(body)}")
        if atype in (IFA_ADDRESS, IFA_LOCAL):
            if alen - _RTATTR.size != size:
                raise Malformed(f"address attribute of {alen - _RTATTR.size} bytes, not {size}")
            found[atype] = bytes(body[pos + _RTATTR.size:pos + alen])
        elif atype == IFA_FLAGS and alen - _RTATTR.size == _U32.size:
            flags = _U32.unpack_from(body, pos + _RTATTR.size)[0]
        pos += (alen + 3) & ~3
    return family, prefixlen, index, flags, found


def _local(found: dict[int, bytes]) -> bytes:
    """The host's own: IFA_LOCAL where the message has one (IFA_ADDRESS is then a point-to-point
    link's far end), else IFA_ADDRESS."""
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if raw is None:
        raise Malformed("address message without an address")
    return raw


def address_changes(data: bytes) -> tuple[list[AddressChange], bool]:
    """The address changes a datagram from the watch's socket holds, and whether all of it parsed
    (False: something was lost; the changes before it are given)."""
    changes: list[AddressChange] = []
    try:
        for mtype, _flags, _seq, body in messages(data):
            if mtype in (RTM_NEWADDR, RTM_DELADDR) and (which := interface_address(body)) is not None:
                changes.append((mtype == RTM_NEWADDR, which))
    except Malformed as err:
        log.debug("address watch: %s", err)
        return changes, False
    return changes, True


def dump_addresses(timeout: float = DUMP_TIMEOUT) -> frozenset[InterfaceAddress]:
    """Every address of this host's interfaces (the network namespace's): an RTM_GETADDR dump,
    again while the kernel marks it interrupted; OSError if netlink refuses, times out or answers
    what does not parse.  Blocking: run it on a thread."""
    for _ in range(DUMP_TRIES):
        found = _dump_once(timeout)
        if found is not None:
            return found
    raise OSError(errno.EAGAIN, f"the addresses changed during each of {DUMP_TRIES} dumps")


def _dump_once(timeout: float) -> frozenset[InterfaceAddress] | None:
    """One dump; None if the kernel marked it interrupted (NLM_F_DUMP_INTR)."""
    seq = 1
    request = _NLMSG_HDR.pack(_NLMSG_HDR.size + _IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) \
        + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    found: set[InterfaceAddress] = set()
    interrupted = False
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.sendto(request, (0, 0))
        while True:
            data, _anc, flags, sender = sock.recvmsg(1 << 16)
            if not from_kernel(sender):
                continue   # review revlate6 R1: another socket's "answer" to our sequence number
            if flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "a dump's datagram was cut short")
            try:
                for mtype, mflags, mseq, body in messages(data):
                    if mseq != seq:
                        continue
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    if mtype == NLMSG_DONE:
                        return None if interrupted else frozenset(found)
                    if mtype == NLMSG_ERROR:
                        code = -_ERRNO.unpack_from(body)[0] if len(body) >= _ERRNO.size else errno.EBADMSG
                        raise OSError(code, f"RTM_GETADDR: {errno.errorcode.get(code, code)}")
                    if mtype == RTM_NEWADDR and (which := interface_address(body)) is not None:
                        found.add(which)
            except Malformed as err:
                raise OSError(errno.EBADMSG, f"RTM_GETADDR answer: {err}") from None


class AddressWatch:
    """Calls ``changed()`` once after each burst of address changes, until ``close()``; hands
    ``listener`` each change as it is read, and asks it to list every address again (once the
    burst settled) if some were missed or did not parse; and ``on_read`` each of the kernel's
    datagrams as it is read (None: some were lost)."""

    def __init__(self, changed: Callable[[], object], settle: float = 0.1,
                 listener: AddressListener | None = None,
                 on_read: Callable[[bytes | None], object] | None = None) -> None:
        self._changed = changed
        self._on_read = on_read
        self._settle = settle
        self._listener = listener
        self._timer: asyncio.TimerHandle | None = None
        self._first: float | None = None   # when the burst the timer waits out began
        self._lost = False                 # this burst missed changes: the listener resyncs at its end
        self._sock: socket.socket | None = None
        self._foreign = ForeignDrops("address watch", log)   # datagrams another socket sent us

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        seen: list[AddressChange] = []
        lost = False
        for _ in range(64):
            try:
                data, sender = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:   # ENOBUFS: we missed some; an address changed all the same
                log.debug("address watch: %s", err)
                lost = True
                if self._on_read is not None:
                    self._on_read(None)
                break
            if not from_kernel(sender):
                self._foreign.dropped(sender)
                continue
            if self._on_read is not None:
                self._on_read(data)
            changes, whole = address_changes(data)
            seen += changes
            lost |= not whole
        if seen and self._listener is not None:
            self._listener.apply(seen)
        if seen or lost:
            self._lost |= lost
            self._arm()

    @property
    def foreign(self) -> int:
        """Datagrams another netlink socket sent the watch, dropped."""
        return self._foreign.count

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._first is None:
            self._first = now
        if self._timer is not None:
            self._timer.cancel()
        # each change waits the burst out, but a burst that goes on (a flapping address, SLAAC or DHCP
        # in a loop) is reported at least every MAX_BURSTS settles (review revperf F3)
        due = min(now + self._settle, self._first + MAX_BURSTS * self._settle)
        self._timer = loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._first = None
        if self._lost and self._listener is not None:
            self._lost = False
            self._listener.resync()
        self._changed()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):   # no loop any more: nothing reads it
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
