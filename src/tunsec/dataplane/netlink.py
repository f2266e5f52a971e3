"""pyroute2's IPRoute without the rest of pyroute2, the kernel's refusals of netlink requests as
OSErrors that say what was refused and why (tun.py's and blockwatch.py's routes and addresses), a route dump
the kernel filters (route_dump), and which datagrams a raw netlink socket reads are the kernel's (from_kernel,
ForeignDrops)."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from tunsec.loglimit import LogLimiter, suffix


def _import_iproute() -> Any:
    """pyroute2's IPRoute without the rest of pyroute2.

    pyroute2's package ``__init__`` imports every part of the library (NDB with sqlite3, IPDB,
    nl80211, conntrack, IPVS, plan9, ...): ~200 modules, ~6 MiB of the control process's RSS
    and a quarter of a second of its start, for the one class tunsec uses.  So the package
    module is made without running its ``__init__`` and IPRoute comes from its own module; the
    ``__init__`` runs the first time anyone asks the package for a name it does not have
    (``from pyroute2 import NDB`` elsewhere in the process still works).  Already imported, or
    laid out differently: the plain import."""
    spec = importlib.util.find_spec("pyroute2") if "pyroute2" not in sys.modules else None
    if spec is not None and spec.loader is not None and spec.submodule_search_locations is not None:
        loader = spec.loader
        package = importlib.util.module_from_spec(spec)
        # netlink calls run in threads: the __init__ runs once, and whoever asks meanwhile waits for it
        once = threading.RLock()
        running: list[bool] = []

        def complete(name: str) -> Any:
            # ``from pyroute2 import config`` (a submodule) asks for the name before importing it
            if importlib.util.find_spec(f"pyroute2.{name}") is not None:
                raise AttributeError(name)
            with once:
                if "__getattr__" in package.__dict__ and not running:   # not yet, nor in this thread now
                    running.append(True)
                    try:
                        loader.exec_module(package)
                    finally:
                        del package.__dict__["__getattr__"]
            try:
                return package.__dict__[name]
            except KeyError:
                raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

        package.__dict__["__getattr__"] = complete
        sys.modules["pyroute2"] = package
        try:
            from pyroute2.iproute.linux import IPRoute as light
            return light
        except ImportError:
            complete("__name__")   # another layout: the whole package after all
    from pyroute2 import IPRoute as full
    return full


IPRoute = _import_iproute()
# pyroute2's own error for a request the kernel refused: an Exception with the errno in .code, not an
# OSError (pyroute2 0.9), so it would pass every ``except OSError``; netlink_failure turns it into one
from pyroute2.netlink.exceptions import NetlinkError as NetlinkError  # noqa: E402 (re-exported)


def _errno(exc: NetlinkError) -> int:
    return int(exc.code) if isinstance(exc.code, int) and exc.code > 0 else errno.EIO


def _reason(exc: NetlinkError) -> str:
    """The errno's text, and the kernel's own words where it gave any."""
    reason = os.strerror(_errno(exc))
    said = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else ""
    return f"{reason} ({said})" if said and said != reason else reason


def netlink_failure(exc: NetlinkError, operation: str, fix: str = "") -> OSError:
    """A refused netlink request as an OSError with the kernel's errno, whose strerror says what was
    being done, why the kernel refused and, where known, what to do about it."""
    return OSError(_errno(exc), f"{operation}: {_reason(exc)}" + (f"; {fix}" if fix else ""))


def reason(exc: NetlinkError) -> str:
    """The errno's text, and the kernel's own words where it gave any (the public name of _reason)."""
    return _reason(exc)


def as_oserror(operation: str, fix: Callable[[], str] = lambda: "") -> AbstractContextManager[None]:
    """The netlink requests of the block: a refusal raises netlink_failure's OSError (the public name of
    _netlink)."""
    return _netlink(operation, fix)


@contextmanager
def _netlink(operation: str, fix: Callable[[], str] = lambda: "") -> Iterator[None]:
    """The netlink requests of the block: a refusal raises netlink_failure's OSError."""
    try:
        yield
    except NetlinkError as exc:
        raise netlink_failure(exc, operation, fix()) from exc


def from_kernel(sender: object) -> bool:
    """Whether a netlink datagram's source address (port id, groups) is the kernel's: port id 0.  Any
    netlink socket with CAP_NET_ADMIN in the namespace may unicast to ours, with whatever header it
    likes (the port id and sequence number in it are the sender's to write): only the source address
    the kernel fills in says who sent it (reviews revlate6 F1, revlate7 R1)."""
    return isinstance(sender, tuple) and len(sender) >= 1 and sender[0] == 0


@dataclass
class ForeignDrops:
    """The datagrams a netlink reader dropped as not the kernel's: counted, said rate-limited."""

    what: str                       # the reader, as its lines name it
    log: logging.Logger
    count: int = 0
    _said: LogLimiter = field(default_factory=lambda: LogLimiter(burst=1, period=300.0))

    def dropped(self, sender: object) -> None:
        self.count += 1
        if (held := self._said.admit()) is not None:
            self.log.warning("%s: a datagram from netlink port %s, not the kernel, dropped (%d so far)%s", self.what,
                             sender[0] if isinstance(sender, tuple) and sender else sender, self.count, suffix(held))


# linux/netlink.h, linux/rtnetlink.h
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSG = struct.Struct("=IHHII")
RTMSG = struct.Struct("=BBBBBBBBI")


def route_dump(family: int, foreign: ForeignDrops, table: int = 0, proto: int = 0, kind: int = 0) -> list[bytes]:
    """The route messages (each after its netlink header) of one dump of family's routes, the kernel filtering
    them by table, proto and type (NETLINK_GET_STRICT_CHK; 0: any): a few routes rather than the host's whole
    routing table (pyroute2 filters dumps in Python, seconds for a full table).  A kernel without dump filtering
    sends every route: the caller checks each.  Only the kernel's datagrams are read (from_kernel; others counted
    in foreign): a route another netlink socket unicast to the dump's socket would be taken for the kernel's.
    A refusal (ENOENT: the table of a filter holds no route of family) raises OSError with its errno."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as s:
        with contextlib.suppress(OSError):   # an old kernel: no filter, every route comes (checked by the caller)
            s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        body = RTMSG.pack(family, 0, 0, 0, table, proto, 0, kind, 0)
        s.sendto(NLMSG.pack(NLMSG.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body, (0, 0))
        found: list[bytes] = []
        while True:
            data, sender = s.recvfrom(1 << 16)
            if not from_kernel(sender):   # review revlate7 R1: a forged route would hide a missing one
                foreign.dropped(sender)
                continue
            if not data:
                raise OSError("netlink: the route dump ended early")
            off = 0
            while off + NLMSG.size <= len(data):
                size, msg_kind, _flags, _seq, _pid = NLMSG.unpack_from(data, off)
                if size < NLMSG.size:
                    raise OSError("netlink: malformed message in the route dump")
                if msg_kind == NLMSG_DONE:
                    return found
                if msg_kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + NLMSG.size)[0]
                    raise OSError(code, f"netlink route dump: {os.strerror(code)}")
                if msg_kind == RTM_NEWROUTE:
                    found.append(data[off + NLMSG.size:off + size])
                off += (size + 3) & ~3
