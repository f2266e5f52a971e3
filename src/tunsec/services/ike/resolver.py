"""Looking up a gateway a REDIRECT (RFC 5685) named by FQDN, on threads of the service's own.

getaddrinfo blocks, so it runs on a thread. asyncio's default executor is shared with the
daemon's other blocking work (TUN and route setup, ...): lookups a slow or unreachable DNS
server holds there for seconds each would leave that work waiting. A small pool of its own
(``MAX_THREADS``) bounds how many threads lookups can hold, and keeps them out of everyone
else's way; a lookup beyond that waits its turn (the caller bounds the whole wait in time).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from tunsec.ike.sa import IkeSa

log = logging.getLogger("tunsec.ike")

MAX_THREADS = 2
RESOLVE_WAIT = 5.0  # seconds a lookup of a gateway named by FQDN (RFC 5685 REDIRECT) may take


AddrInfo = tuple[Any, ...]   # (family, type, proto, canonname, sockaddr) as socket.getaddrinfo gives it


class Resolver:
    """``lookup(host)`` is ``loop.getaddrinfo(host, None, type=SOCK_DGRAM)`` on our own threads;
    ``close()`` ends them (a lookup still running is left to finish, its answer dropped)."""

    def __init__(self, getaddrinfo: Callable[..., list[AddrInfo]] = socket.getaddrinfo) -> None:
        self._getaddrinfo = getaddrinfo
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None   # made on first use

    async def lookup(self, host: str) -> list[AddrInfo]:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="tunsec-resolve")
        call = functools.partial(self._getaddrinfo, host, None, type=socket.SOCK_DGRAM)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def resolve_gateway(self, sa: IkeSa, gateway: str) -> None:
        """Look up the gateway a REDIRECT named by FQDN with the system resolver, on the resolver's
        own threads (getaddrinfo blocks) and bounded in time; the engine gives up by itself too.
        The caller pumps."""
        family = ipaddress.ip_address(sa.remote_addr[0]).version
        try:
            infos = await asyncio.wait_for(self.lookup(gateway), RESOLVE_WAIT)
        except (OSError, UnicodeError, TimeoutError) as exc:
            log.error("%s: cannot resolve gateway %s we were redirected to: %s", sa.name, gateway,
                      str(exc) or "no answer in time")  # an exception is true even with no message
            infos = []
        addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
        # addresses of the family we reached the redirecting gateway in first (a route for it exists)
        addrs.sort(key=lambda a: ipaddress.ip_address(a.split("%")[0]).version != family)
        sa.gateway_resolved(gateway, addrs, time.monotonic())

    def renew(self) -> None:
        """Threads made from now on for lookups; those there are end once idle (a lookup running finishes
        and is answered).  The control process's capabilities are per thread (netadmin.py)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
