"""pyroute2's IPRoute without the rest of pyroute2, the kernel's refusals of netlink requests as
OSErrors that say what was refused and why (tun.py's and blockwatch.py's routes and addresses), and
which datagrams a raw netlink socket reads are the kernel's (from_kernel, ForeignDrops)."""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
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
