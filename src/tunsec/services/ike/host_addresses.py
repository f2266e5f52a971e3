"""This host's IP addresses, for the IKE engine's address roles (ike/address_role.py).

A client must not follow a REDIRECT to an address of its own host, nor take a DNS server there,
and no peer's IKE SA may move to one (review revclient s20 F3): a REDIRECT in IKE_SA_INIT needs
only the request's nonce, and sent to ourselves our IKE_SA_INIT (and with a gateway connection of
ours on the host, our identity and AUTH) meets our own responder.  The engine knows the host only
by the connections' ``local_addrs``, so the service gives it every address of every interface:
a netlink dump (RTM_GETADDR, services/addrwatch.py) at start, then each change the address watch
reads (RTM_NEWADDR, RTM_DELADDR) applied as it comes, and a dump again only when the watch missed
some (its socket overflowed) or one did not parse (review revperf R1: a dump per burst held the
event loop's GIL 0.3 s at 5,000 addresses).  Dumps run on a thread of their own, one at a time:
asyncio's default executor, which the daemon's TUN, route and virtual IP jobs share, neither waits
for a dump nor gets an idle thread of ours.  The watch is opened before the first dump, and the
changes read while a dump runs are applied again on top of its result: a change the dump did not
see is not lost, and one it saw is applied twice to the same effect (each sets an address present
or absent).  The TUN's addresses (our virtual IPs) are in it: nothing of ours is to be sent there
either; the virtual IP check itself does not ask for them (a reauthentication is given the address
it has: address_role.py).

A dump that fails leaves the addresses it had (logged, limited): the configured ``local_addrs``
and the IKE SA's own address are checked still.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from tunsec.loglimit import LogLimiter, suffix
from tunsec.services.address_count import AddressCount
from tunsec.services.addrwatch import AddressChange, InterfaceAddress, dump_addresses

if TYPE_CHECKING:
    from tunsec.ike.endpoint import IkeEndpoint

log = logging.getLogger("tunsec.ike")

_NAMED = 8   # addresses a change's debug line names; more are counted

dump = dump_addresses   # what HostAddresses lists with unless told otherwise (tests race it)


class HostAddresses:
    """Keeps ``endpoint.host_addresses`` the host's addresses: :meth:`refresh` once, then
    :meth:`apply` for each change the address watch reads and :meth:`resync` when it missed some
    (addrwatch.AddressListener)."""

    def __init__(self, endpoint: IkeEndpoint,
                 source: Callable[[], frozenset[InterfaceAddress]] = dump_addresses) -> None:
        self._endpoint = endpoint
        self._source = source
        self._table = AddressCount()
        endpoint.host_addresses = self._table.count.keys()   # a live view: each change is seen at once
        self._running: asyncio.Task[None] | None = None
        self._again = False   # a resync was asked while a dump ran: one more after it
        self._meanwhile: list[AddressChange] | None = None   # the changes read while a dump runs
        self._failed_log = LogLimiter(burst=1, period=300.0)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None   # made on the first dump

    def apply(self, changes: Sequence[AddressChange]) -> None:
        """Changes the watch read, in order: applied now, and again on the result of a dump running."""
        if self._meanwhile is not None:
            self._meanwhile += changes
        moved: list[str] = []
        for added, which in changes:
            if self._table.one(added, which) and log.isEnabledFor(logging.DEBUG):
                moved.append(f"{'+' if added else '-'}{which.local}")
        if moved:
            self._log_moved(moved)

    def resync(self) -> None:
        """List every address again (the watch missed changes, or it started late): a dump, or one more
        after the one running (one at a time: an older dump never overwrites a newer one)."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.ensure_future(self._dumps())

    async def refresh(self) -> None:
        """Dump the addresses now (the service's start: before its first IKE SA) and wait for them."""
        self.resync()
        assert self._running is not None
        await self._running

    async def _dumps(self) -> None:
        """Dump the addresses and take them, the changes read meanwhile on top; again while resyncs
        were asked meanwhile."""
        while True:
            self._again = False
            self._meanwhile = []
            try:
                if self._thread is None:
                    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tunsec-hostaddr")
                found = await asyncio.get_running_loop().run_in_executor(self._thread, self._source)
            except OSError as err:
                if (held := self._failed_log.admit()) is not None:
                    log.warning("cannot list this host's addresses (netlink: %s): REDIRECTs and peers' moves "
                                "are checked against %d known ones%s", err, len(self._table.count), suffix(held))
            else:
                self._take(found, self._meanwhile)
            finally:
                self._meanwhile = None
            if not self._again:
                return

    def _take(self, found: Iterable[InterfaceAddress], meanwhile: Sequence[AddressChange]) -> None:
        before = frozenset(self._table.count) if log.isEnabledFor(logging.DEBUG) else None
        self._table = AddressCount(found)
        for added, which in meanwhile:
            self._table.one(added, which)
        self._endpoint.host_addresses = self._table.count.keys()
        if before is not None:
            now = self._table.count.keys()
            moved = [f"+{a}" for a in sorted(now - before, key=str)] + \
                [f"-{a}" for a in sorted(before - now, key=str)]
            if moved:
                self._log_moved(moved)

    def _log_moved(self, moved: list[str]) -> None:
        more = f" and {len(moved) - _NAMED} more" if len(moved) > _NAMED else ""
        log.debug("this host's addresses: %s%s (%d in all)", " ".join(moved[:_NAMED]), more, len(self._table.count))

    def renew(self) -> None:
        """The next dump on a new thread: this one was started before CAP_NET_ADMIN was given up, and
        capabilities are per thread (netadmin.py replaces the pools started before the drop)."""
        if self._thread is not None:
            self._thread.shutdown(wait=False)   # a dump running finishes; its thread ends then
            self._thread = None

    def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            self._running = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)   # a dump running is left to finish, its answer dropped
            self._thread = None
