"""This host's IP addresses, for the IKE engine's address roles (ike/address_role.py).

A client must not follow a REDIRECT to an address of its own host, nor take a DNS server there,
and no peer's IKE SA may move to one (review revclient s20 F3): a REDIRECT in IKE_SA_INIT needs
only the request's nonce, and sent to ourselves our IKE_SA_INIT (and with a gateway connection of
ours on the host, our identity and AUTH) meets our own responder.  The engine knows the host only
by the connections' ``local_addrs``, so the service gives it every address of every interface:
a netlink dump (RTM_GETADDR, as Tun.address_elsewhere asks for a virtual IP), at start and again
after each burst of address changes (services/addrwatch.py), on a thread of its own: pyroute2's
synchronous API stays out of the event loop, and asyncio's default executor, which the daemon's
TUN, route and virtual IP jobs share, neither waits for a dump nor gets an idle thread of ours.
The TUN's addresses (our virtual IPs) are in it: nothing of ours is to be sent there either; the
virtual IP check itself does not ask for them (a reauthentication is given the address it has:
address_role.py).

A dump that fails leaves the addresses of the last one (logged, limited): the configured
``local_addrs`` and the IKE SA's own address are checked still.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from tunsec.dataplane.netlink import IPRoute
from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.selector import IPAddress

if TYPE_CHECKING:
    from tunsec.ike.endpoint import IkeEndpoint

log = logging.getLogger("tunsec.ike")

_NAMED = 8   # addresses a change's debug line names; more are counted


def dump() -> frozenset[IPAddress]:
    """Every IPv4 and IPv6 address of this host's interfaces (the network namespace's); OSError if
    netlink refuses."""
    with IPRoute() as ipr:
        return frozenset(a for msg in ipr.get_addr() if (a := _local(msg)) is not None)


def _local(msg: Any) -> IPAddress | None:
    """The local address of an RTM_NEWADDR message: IFA_LOCAL where the link has one (on a
    point-to-point link IFA_ADDRESS is the other end's), else IFA_ADDRESS."""
    if msg.get("family") not in (socket.AF_INET, socket.AF_INET6):
        return None
    text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    try:
        return ip_address(text) if text else None
    except ValueError:
        return None


class HostAddresses:
    """Keeps ``endpoint.host_addresses`` the host's addresses: :meth:`refresh` once, then
    :meth:`changed` for each burst of changes the address watch reports."""

    def __init__(self, endpoint: IkeEndpoint, source: Callable[[], frozenset[IPAddress]] = dump) -> None:
        self._endpoint = endpoint
        self._source = source
        self._running: asyncio.Task[None] | None = None
        self._again = False   # a change came while a dump ran: one more after it
        self._failed_log = LogLimiter(burst=1, period=300.0)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None   # made on the first dump

    def changed(self) -> None:
        """The host's addresses changed (the watch's callback): a dump, or one more after the one running
        (one at a time: an older dump never overwrites a newer one)."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.ensure_future(self._dumps())

    async def refresh(self) -> None:
        """Dump the addresses now (the service's start: before its first IKE SA) and wait for them."""
        self.changed()
        assert self._running is not None
        await self._running

    async def _dumps(self) -> None:
        """Dump the addresses and hand them to the engine; again while changes came meanwhile."""
        while True:
            self._again = False
            try:
                if self._thread is None:
                    self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tunsec-hostaddr")
                found = await asyncio.get_running_loop().run_in_executor(self._thread, self._source)
            except OSError as err:
                if (held := self._failed_log.admit()) is not None:
                    log.warning("cannot list this host's addresses (netlink: %s): REDIRECTs and peers' moves "
                                "are checked against %d known ones%s", err, len(self._endpoint.host_addresses),
                                suffix(held))
            else:
                self._take(found)
            if not self._again:
                return

    def _take(self, found: frozenset[IPAddress]) -> None:
        before = self._endpoint.host_addresses
        if found == before:
            return
        self._endpoint.host_addresses = found
        if log.isEnabledFor(logging.DEBUG):
            moved = [f"+{a}" for a in sorted(found - before, key=str)] + \
                [f"-{a}" for a in sorted(before - found, key=str)]
            more = f" and {len(moved) - _NAMED} more" if len(moved) > _NAMED else ""
            log.debug("this host's addresses: %s%s (%d in all)", " ".join(moved[:_NAMED]), more, len(found))

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
