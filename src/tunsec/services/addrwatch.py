"""Notice when the host's IP addresses change (rtnetlink RTM_NEWADDR / RTM_DELADDR).

A MOBIKE client (RFC 4555) tells its gateway when it moved; strongSwan learns of its own
address changes the same way (kernel-netlink's roam events). A plain rtnetlink socket
subscribed to the address groups, read from the event loop: no privilege needed, and
pyroute2's synchronous API (which runs a loop of its own) stays out of the asyncio thread.
Bursts (an address deleted and another added) are reported once, ``settle`` seconds after
the last message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR, RTM_DELADDR = 20, 21
_NLMSG_HDR = struct.Struct("=IHHII")
MAX_BURSTS = 4   # a burst of changes is reported after at most this many settle periods from its first


def address_events(data: bytes) -> int:
    """How many address messages a datagram from the socket holds (malformed tails ignored)."""
    count, off = 0, 0
    while off + _NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, off)
        if length < _NLMSG_HDR.size:
            break
        count += mtype in (RTM_NEWADDR, RTM_DELADDR)
        off += (length + 3) & ~3
    return count


class AddressWatch:
    """Calls ``changed()`` once after each burst of address changes, until ``close()``; and
    ``on_read(data)`` with each read as it comes (None: notices were lost), for the addresses added
    (services/addr_feed.py: the worker's, which holds no netlink socket of its own)."""

    def __init__(self, changed: Callable[[], object], settle: float = 0.1,
                 on_read: Callable[[bytes | None], object] | None = None) -> None:
        self._changed = changed
        self._on_read = on_read
        self._settle = settle
        self._timer: asyncio.TimerHandle | None = None
        self._first: float | None = None   # when the burst the timer waits out began
        self._sock: socket.socket | None = None

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
        seen = 0
        for _ in range(64):
            try:
                data: bytes | None = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:   # ENOBUFS: we missed some; an address changed all the same
                log.debug("address watch: %s", err)
                data = None
            seen += 1 if data is None else address_events(data)
            if self._on_read is not None:
                self._on_read(data)
            if data is None:
                break
        if seen:
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
