"""Name lookups of the IKE service (a gateway a REDIRECT named by FQDN, RFC 5685) on threads of
their own.

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
import socket
from collections.abc import Callable
from typing import Any

MAX_THREADS = 2

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

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
