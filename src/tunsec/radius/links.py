"""The links of one RADIUS client (the EAP relay's, or accounting's) across reloads.

A link (:class:`~tunsec.radius.client.ServerLink`) is known by its server's full settings
(:class:`~tunsec.radius.settings.RadiusServer`: name, address, secret, ports, sockets,
preference), not by its name: a request under way holds the server it was sent to, and a reload
that changes the server (a new secret, another address) must neither close the link under it
nor have it send with the new secret. So a reload (:meth:`LinkPool.reconfigure`)

- keeps the link of every server it leaves as it was (its sockets, identifiers, health, and the
  requests under way on it); new requests use the new timers, those under way finish with theirs;
- retires the links of servers it changed or removed: each is closed once no request is under
  way on it (at once if none is). A request that began before the reload finishes with the
  settings it began with (the old server list, the old secret): one that moves on to another
  old server gets a link for it that is retired the same way.

:meth:`LinkPool.using` counts a request on a server from before it waits for anything (accounting's
slots, an identifier) to its end, so a link is never closed under a request that is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, ValuesView
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from .settings import RadiusServer, RadiusSettings

if TYPE_CHECKING:   # client.py makes its links with this pool
    from .client import ServerLink

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    link: ServerLink[T]
    users: int = 0   # requests under way on it (LinkPool.using), waiting ones included
    slots: asyncio.Semaphore | None = None   # accounting's bound on its requests at once (LinkPool.slots)


class LinkPool(Generic[T]):
    """The links by server; ``make`` opens none yet (a link opens its first socket at its first request)."""

    def __init__(self, settings: RadiusSettings, make: Callable[[RadiusServer, RadiusSettings], ServerLink[T]]) -> None:
        self.settings = settings
        self._make = make
        self._entries: dict[RadiusServer, _Entry[T]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> ValuesView[ServerLink[T]]:
        return {server: e.link for server, e in self._entries.items()}.values()

    def get(self, server: RadiusServer) -> ServerLink[T]:
        """The link of exactly this server (made now if there is none)."""
        return self._entry(server).link

    def _entry(self, server: RadiusServer) -> _Entry[T]:
        entry = self._entries.get(server)
        if entry is None:
            entry = _Entry(self._make(server, self.settings))
            if self._closed:   # a request that outlived the client (radius { } removed) opens no socket
                entry.link.close()
            else:
                self._entries[server] = entry
        return entry

    def slots(self, server: RadiusServer, capacity: int) -> asyncio.Semaphore:
        """One semaphore per link with ``capacity`` places (accounting's: the server's identifiers)."""
        entry = self._entry(server)
        if entry.slots is None:
            entry.slots = asyncio.Semaphore(capacity)
        return entry.slots

    @contextlib.contextmanager
    def using(self, server: RadiusServer) -> Iterator[ServerLink[T]]:
        """The link of ``server``, kept open until the block ends (then retired if the server is no
        longer configured as it was and nothing else is under way on it)."""
        entry = self._entry(server)
        entry.users += 1
        try:
            yield entry.link
        finally:
            entry.users -= 1
            self._sweep()

    def reconfigure(self, settings: RadiusSettings) -> None:
        """A reload: see the module docstring. The links kept take the new timers for new requests."""
        self.settings = settings
        for server, entry in self._entries.items():
            if server in settings.servers:
                entry.link.settings = settings
        self._sweep()

    def _sweep(self) -> None:
        """Close the links of servers no longer configured that nothing is under way on."""
        for server, entry in list(self._entries.items()):
            if entry.users == 0 and server not in self.settings.servers:
                del self._entries[server]
                entry.link.close()

    def close(self) -> None:
        self._closed = True
        for entry in self._entries.values():
            entry.link.close()
        self._entries.clear()
