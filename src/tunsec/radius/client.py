"""The RADIUS client of the EAP relay: asyncio UDP, up to ``sockets`` sockets per server.

Each server gets UDP sockets connected to it (the kernel then drops datagrams from anyone
else), each with its own source port and so its own 256 identifiers (RFC 2865 §3): strongSwan's
``servers.NAME.sockets``. The first is opened at the first request, another only when every
identifier of those open is in use, up to ``sockets``; they stay open until the client is
closed. A request is sent, and retransmitted unchanged (same identifier and authenticator, RFC
5080 §2.2.1) after ``RadiusSettings.wait(n)`` seconds, ``retransmit_tries`` times; then
:class:`NoAnswer`.

When every identifier of every socket of a server is in use, a request waits for one, first
come first served (strongSwan waits for a free socket), as long as its round would have lasted
(``RadiusSettings.round_seconds``) at most, and then has what is left of it for its sends; at
most MAX_WAITERS wait per server. Beyond either bound: :class:`Busy`. Anyone may start an EAP
conversation, so an attacker can fill the identifiers: waiting, legitimate users still get
their turn as the server answers, and the bound keeps what the attacker queues finite.

A datagram is used only if it authenticates as the answer to an outstanding request
(:func:`~tunsec.radius.messages.read_reply`). Everything else is dropped and counted:
an answer to a request we no longer wait for (timed out, or its IKE SA is gone) as
``late``, one that does not verify as ``bad``, one for no request at all as ``unmatched``.
A reply that does not verify does not end the wait: the real answer may still come.

An identifier whose request was given up is parked before it is used again (a timer on the
loop, :meth:`ServerLink.park_seconds`: the longest wait of a round, by default): the server may
still be working on the old request or hold it in its duplicate cache (FreeRADIUS 3 abandons the
old one for the new, with an error in its log while the old one still runs; servers that match
duplicates by source and identifier alone, as Radiator within its ``DupInterval``, drop the new
one), and a late answer to it is told apart (``late``) only until the identifier is reused.
Waiting requests meanwhile take identifiers answered requests give back. At most PARK_MAX of a
socket's identifiers are parked at once (the oldest parked is freed early beyond that), so that
requests given up in bulk (an attacker starting EAP conversations and dropping their IKE SAs)
cannot take a socket's identifiers out of use.

Accounting (:mod:`tunsec.radius.accounting`) uses the same links to each server's ``acct_port``,
with its Accounting-Response reader and its own counters (:class:`AccountingStats`).

Each socket asks for a receive buffer that holds an answer of the largest size to every one of
its identifiers (RCVBUF): answers to a burst of requests come at once. The sockets are opened
after the daemon gave up root, so the kernel caps the buffer at ``net.core.rmem_max`` unless the
process kept CAP_NET_ADMIN for other reasons (SO_RCVBUFFORCE; none is kept for this); an answer the
kernel drops for want of room is counted (``rcvbuf_drops``, read from the sockets when status is
asked) and recovered by the request's retransmission.

Each link keeps its server port's health (:class:`~tunsec.radius.health.ServerHealth`, ``health``):
an authentic answer to a request under way makes it up (a late one, to a request given up, does
not: ServerHealth.answered), a request given up (or one that cannot be sent) down. The
relay and accounting read it to pass a dead server by (:func:`~tunsec.radius.health.in_order`),
``tunsec status`` to show it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar, cast

from tunsec.loglimit import LogLimiter, suffix

from .health import ServerHealth
from .links import LinkPool
from .messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, Answer, BadReply, read_reply, verifies
from .settings import IDS, RadiusServer, RadiusSettings

__all__ = ["IDS", "MAX_WAITERS", "PARK_MAX", "AccountingStats", "Busy", "NoAnswer", "RadiusClient", "RadiusStats",
           "ServerLink"]

log = logging.getLogger("tunsec.radius")

# requests that may wait for an identifier of one server port: enough for a burst of logins
# (four sockets' worth of identifiers) to wait out a slow answer rather than fail, few enough
# that a flood of unauthenticated EAP conversations cannot queue without bound (each waiter
# holds its IKE SA's request and a task); beyond it a request is refused (Busy) at once
MAX_WAITERS = 1024
# identifiers of one socket that may be parked at once: half, so that the other half always serves
# (each parked one was an exchange's; see the module docstring)
PARK_MAX = IDS // 2
# a socket's receive buffer: an answer to each of its identifiers at once, each of the largest size
# (4096 bytes, RFC 2865 §3); the kernel doubles it for its bookkeeping (skb overhead)
RCVBUF = IDS * 4096
_SO_RCVBUFFORCE, _SO_MEMINFO, _SK_MEMINFO_DROPS = 33, 55, 8   # linux/socket.h, linux/sock_diag.h


class NoAnswer(Exception):
    """The server did not answer a request and its retransmissions."""


class Busy(Exception):
    """Every identifier of the server's sockets in use, and no turn for this request (too many
    waiting, or none freed in time)."""


@dataclass
class RadiusStats:
    """Counters for ``tunsec status`` (``radius``)."""

    requests: int = 0
    retransmissions: int = 0
    timeouts: int = 0  # requests no server answered
    accepts: int = 0
    rejects: int = 0
    challenges: int = 0
    bad: int = 0  # did not decode or authenticate: dropped
    late: int = 0  # authentic answers to requests given up (timed out, IKE SA gone): dropped
    unmatched: int = 0  # answers to no request we sent: dropped
    waits: int = 0  # requests that waited for an identifier: all of the server's sockets' in use
    busy: int = 0  # refused: MAX_WAITERS waiting already, or no identifier freed in time
    rcvbuf_drops: int = 0  # datagrams the kernel dropped, a socket's receive buffer full (ServerLink.count_drops)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class AccountingStats:
    """Counters of RADIUS accounting for ``tunsec status`` (``radius.accounting``)."""

    requests: int = 0
    retransmissions: int = 0
    timeouts: int = 0  # requests a server did not answer (the next one is tried)
    responses: int = 0  # authentic Accounting-Responses
    failed: int = 0  # Accounting-Requests no server answered: that record is lost
    bad: int = 0
    late: int = 0
    unmatched: int = 0
    waits: int = 0
    busy: int = 0
    rcvbuf_drops: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


T = TypeVar("T")


@dataclass
class _Outstanding(Generic[T]):
    request: Any  # the pyrad AuthPacket or AcctPacket
    answer: asyncio.Future[T]


class _Socket(asyncio.DatagramProtocol, Generic[T]):
    """One connected UDP socket of a link: its own source port, so its own IDS identifiers."""

    def __init__(self, link: ServerLink[T]) -> None:
        self.link = link
        self.transport: asyncio.DatagramTransport | None = None
        self.free: collections.deque[int] = collections.deque(range(IDS))  # least recently used first
        self.outstanding: dict[int, _Outstanding[T]] = {}
        # requests given up, by identifier, until the identifier is reused: to tell a late answer
        # from junk (at most IDS entries)
        self.given_up: dict[int, Any] = {}
        # identifiers given up and not free yet, oldest first, with the timer that frees each
        self.parked: dict[int, asyncio.TimerHandle] = {}
        self._drops_counted = 0   # of the kernel's count of datagrams dropped at this socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the retransmissions go on (the server may be restarting)
        log.debug("RADIUS server %s: %s", self.link.label, exc)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.link.received(self, data)

    def new_drops(self) -> int:
        """Datagrams the kernel dropped at this socket (receive buffer full) since the last call."""
        raw = self.transport.get_extra_info("socket") if self.transport is not None else None
        if raw is None:
            return 0
        try:
            meminfo = raw.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
            total: int = struct.unpack_from("=9I", meminfo)[_SK_MEMINFO_DROPS]
        except (OSError, struct.error):   # an old kernel, without SK_MEMINFO_DROPS: not counted
            return 0
        new, self._drops_counted = total - self._drops_counted, total
        return new

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


_Slot = tuple[_Socket[T], int]   # an identifier of a socket, held by one request


class ServerLink(Generic[T]):
    """The sockets, identifiers, outstanding and waiting requests and health of one server: its
    ``auth_port`` with the Access-Request answer reader by default, or another port with another
    reader (accounting). ``what``: its requests, for the log; ``clock``: the health's."""

    def __init__(self, server: RadiusServer, settings: RadiusSettings, stats: RadiusStats | AccountingStats,
                 port: int | None = None, read: Callable[[Any, bytes], T] = read_reply,  # type: ignore[assignment]
                 verify: Callable[[Any, bytes], bool] = verifies, what: str = "Access-Requests",
                 clock: Callable[[], float] = time.monotonic, park: float | None = None) -> None:
        self.server = server
        self.settings = settings
        self.stats = stats
        self.port = server.auth_port if port is None else port
        self.label = server.at(self.port)   # the server in log lines and errors
        self._read = read
        self._verify = verify
        self.health = ServerHealth(self.label, server.endpoint(self.port), what, clock)
        self.sockets: list[_Socket[T]] = []   # opened as load needs them, up to server.sockets
        # requests waiting for an identifier, first come first served: an identifier given back is
        # handed to the first of them, not put back, so a newcomer never overtakes one waiting
        self._waiters: collections.deque[asyncio.Future[_Slot[T]]] = collections.deque()
        self._log = LogLimiter()
        # one socket at a time even if several exchanges need one at once (each would open one,
        # beyond ``sockets``); ``_closed``: one opened after close() is closed at once
        self._opening = asyncio.Lock()
        self._closed = False
        # exchanges begun and not ended, waiting ones and the socket's opening included: the load
        # the choice of a server weighs (tunsec.radius.health.score); ``outstanding`` counts those sent
        self.under_way = 0
        self._small_buffer_noted = False   # logged once per link: the same for each of its sockets
        self._rest = park   # seconds a given-up identifier rests; None: park_seconds() from the settings

    def park_seconds(self) -> float:
        """How long an identifier given up rests before reuse: the longest we wait for an answer to
        one send (the last of a round; 7.7 s with the defaults). A server that answers at all answers
        within it, or we would take it for dead; it covers the duplicate caches of FreeRADIUS
        (cleanup_delay, 5 s) and Radiator (DupInterval, 2 s) at their defaults."""
        if self._rest is not None:
            return self._rest
        return self.settings.wait(self.settings.retransmit_tries)

    @property
    def parked(self) -> int:
        return sum(len(s.parked) for s in self.sockets)

    @property
    def outstanding(self) -> int:
        return sum(len(s.outstanding) for s in self.sockets)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def _connect(self, sock: _Socket[T]) -> asyncio.BaseTransport:
        """Open ``sock``, connected to the server's port (a test connects a fake one instead)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: sock, remote_addr=(str(self.server.address),
                                                                                       self.port))
        self._size_buffer(transport.get_extra_info("socket"))
        return transport

    def _size_buffer(self, raw: Any) -> None:
        """RCVBUF for a socket just opened; a note the first time the kernel gives less."""
        try:
            try:
                raw.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
            except PermissionError:   # no CAP_NET_ADMIN: capped at net.core.rmem_max
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            got = raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2   # the kernel reports it doubled
        except OSError as exc:
            log.debug("RADIUS server %s: receive buffer left as it is: %s", self.label, exc)
            return
        if got < RCVBUF and not self._small_buffer_noted:
            self._small_buffer_noted = True
            log.info("RADIUS server %s: socket receive buffer %d KiB, not the %d KiB asked (net.core.rmem_max "
                     "caps it): a burst of answers beyond it is dropped (rcvbuf_drops) and retransmitted",
                     self.label, got >> 10, RCVBUF >> 10)

    def count_drops(self) -> None:
        """Adds to ``stats.rcvbuf_drops`` the datagrams the kernel dropped at the sockets since the
        last count (asked by status, and as the sockets close)."""
        for sock in self.sockets:
            self.stats.rcvbuf_drops += sock.new_drops()

    async def _open(self) -> _Slot[T] | None:
        """An identifier of a socket opened now, if fewer than ``sockets`` are (another exchange
        may have opened one meanwhile: an identifier of that); None when all are open and full."""
        async with self._opening:
            slot = self._take_free()
            if slot is not None or len(self.sockets) >= self.server.sockets:
                return slot
            sock: _Socket[T] = _Socket(self)
            if not self._closed:   # after close() it stays without a transport: no answer comes
                await self._connect(sock)
                if self._closed:   # close() came (a reload) while it was being opened: it had none to close
                    sock.close()
            self.sockets.append(sock)
            slot = self._take_free()
            while self._waiters and sock.free:   # requests that waited while another socket failed to open
                self._give_back(*self._claim(sock, sock.free.popleft()))
            return slot

    def close(self) -> None:
        """The sockets closed; requests waiting for an identifier fail now (Busy), those sent get no answer."""
        self._closed = True
        self.count_drops()
        for sock in self.sockets:
            sock.close()
            for timer in sock.parked.values():
                timer.cancel()
            sock.parked.clear()
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(Busy(f"RADIUS server {self.label}: the client was closed"))

    def received(self, sock: _Socket[T], data: bytes) -> None:
        """A datagram on one of the sockets."""
        ident = data[1] if len(data) >= 20 else -1
        waiting = sock.outstanding.get(ident)
        if waiting is None:
            given_up = sock.given_up.get(ident)
            if given_up is not None and self._verify(given_up, data):
                self.stats.late += 1
                log.debug("RADIUS server %s: answer to request %d came after we gave up on it; dropped",
                          self.label, ident)
            else:
                self.stats.unmatched += 1
                self._warn("answer to no request we sent dropped")
            return
        try:
            answer = self._read(waiting.request, data)
        except BadReply as exc:
            self.stats.bad += 1
            self._warn(f"reply dropped: {exc}")
            return
        self.health.answered()
        if not waiting.answer.done():
            waiting.answer.set_result(answer)

    def _warn(self, what: str) -> None:
        if (held := self._log.admit()) is not None:
            log.warning("RADIUS server %s: %s%s", self.label, what, suffix(held))

    # --- identifiers -------------------------------------------------------------------
    def _take_free(self) -> _Slot[T] | None:
        """A free identifier of the first open socket that has one (the others may stay unopened)."""
        for sock in self.sockets:
            if sock.free:
                return self._claim(sock, sock.free.popleft())
        return None

    @staticmethod
    def _claim(sock: _Socket[T], ident: int) -> _Slot[T]:
        sock.given_up.pop(ident, None)   # reused: an answer to the old request is no longer told apart
        return sock, ident

    def _park(self, sock: _Socket[T], ident: int) -> None:
        """An identifier given up: free again only after park_seconds() (PARK_MAX bounds how many)."""
        if self._closed:   # nothing will use it again
            return
        if len(sock.parked) >= PARK_MAX:
            self._unpark(sock, next(iter(sock.parked)))
        loop = asyncio.get_running_loop()
        sock.parked[ident] = loop.call_later(self.park_seconds(), self._unpark, sock, ident)

    def _unpark(self, sock: _Socket[T], ident: int) -> None:
        timer = sock.parked.pop(ident, None)
        if timer is not None:
            timer.cancel()
            self._give_back(sock, ident)

    def _give_back(self, sock: _Socket[T], ident: int) -> None:
        """An identifier free again: the first request waiting takes it, else it is free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result((sock, ident))
                return
        sock.free.append(ident)

    async def _acquire(self, deadline: float) -> tuple[_Slot[T], bool]:
        """An identifier for a request, and whether it had to wait for it; raises Busy, OSError."""
        slot = None if self._waiters else self._take_free()
        if slot is None and len(self.sockets) < self.server.sockets:
            try:
                slot = await self._open()
            except OSError:
                if not self.sockets:   # no socket at all: the server cannot be reached (no route, family)
                    self.health.missed()
                    raise
                log.debug("RADIUS server %s: cannot open another socket; the request waits", self.label)
        if slot is not None:
            return slot, False
        return await self._wait(deadline), True

    async def _wait(self, deadline: float) -> _Slot[T]:
        """Wait for an identifier given back, at most until ``deadline``; raises Busy."""
        if self._closed:   # close() failed the waiters already: nobody would wake this one
            raise Busy(f"RADIUS server {self.label}: the client was closed")
        if len(self._waiters) >= MAX_WAITERS:
            self.stats.busy += 1
            raise Busy(f"all {self.server.capacity} identifiers of RADIUS server {self.label} are in use "
                       f"and {MAX_WAITERS} requests wait for one")
        waiter: asyncio.Future[_Slot[T]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.stats.waits += 1
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException as exc:
            # gone without a trace (timed out, cancelled, the link closed): out of the queue, and
            # an identifier handed to it just now goes to the next one
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(*waiter.result())
            if isinstance(exc, TimeoutError):
                self.stats.busy += 1
                raise Busy(f"all {self.server.capacity} identifiers of RADIUS server {self.label} stayed "
                           f"in use for {self.settings.round_seconds():.1f} s") from None
            raise

    # --- requests ----------------------------------------------------------------------
    async def exchange(self, build: Callable[[int], Any]) -> T:
        """Send the request ``build(identifier)`` until it is answered; raises NoAnswer, Busy,
        and whatever ``build`` raises, OSError when the socket cannot be opened (no route to the
        server, no address of its family). Cancelling gives the identifier back."""
        self.under_way += 1
        try:
            return await self._exchange(build)
        finally:
            self.under_way -= 1

    async def _exchange(self, build: Callable[[int], Any]) -> T:
        loop = asyncio.get_running_loop()
        settings = self.settings   # a reload's new timers are for the requests to come (links.py)
        deadline = loop.time() + settings.round_seconds()
        (sock, ident), waited = await self._acquire(deadline)
        try:
            request = build(ident)
            raw = request.RequestPacket()
        except BaseException:
            self._give_back(sock, ident)
            raise
        waiting: _Outstanding[T] = _Outstanding(request, loop.create_future())
        sock.outstanding[ident] = waiting
        self.stats.requests += 1
        tries = 0
        try:
            for attempt in range(settings.retransmit_tries + 1):
                # one that waited has what is left of its round (but at least its first send)
                wait = settings.wait(attempt)
                if waited:
                    wait = min(wait, deadline - loop.time())
                    if attempt and wait <= 0:
                        break
                if attempt:
                    self.stats.retransmissions += 1
                tries += 1
                if sock.transport is not None:
                    sock.transport.sendto(raw)
                try:
                    return await asyncio.wait_for(asyncio.shield(waiting.answer), max(wait, 0.0))
                except TimeoutError:
                    continue
            self.stats.timeouts += 1
            if not waited:
                # one that waited may have had but a moment: only a full round says the server
                # is dead (an attacker filling the identifiers must not make it look so)
                self.health.missed()
            raise NoAnswer(f"no answer from RADIUS server {self.label} after {tries} tries"
                           + (" (it waited for an identifier first)" if waited else ""))
        finally:
            del sock.outstanding[ident]
            if waiting.answer.done():
                self._give_back(sock, ident)
            else:
                waiting.answer.cancel()
                sock.given_up[ident] = request
                self._park(sock, ident)


class RadiusClient:
    """Requests to the configured servers; a server's first socket is opened at its first request.
    ``clock``: the servers' health's (a test's fake one). A reload (:meth:`reconfigure`) closes no
    link a request is under way on (:mod:`tunsec.radius.links`)."""

    def __init__(self, settings: RadiusSettings, stats: RadiusStats | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats if stats is not None else RadiusStats()
        self._clock = clock
        self._links: LinkPool[Answer] = LinkPool(settings, self._make)

    @property
    def settings(self) -> RadiusSettings:
        return self._links.settings

    def _make(self, server: RadiusServer, settings: RadiusSettings) -> ServerLink[Answer]:
        return ServerLink(server, settings, self.stats, clock=self._clock)

    def link(self, server: RadiusServer) -> ServerLink[Answer]:
        return self._links.get(server)

    def reconfigure(self, settings: RadiusSettings) -> None:
        self._links.reconfigure(settings)

    async def exchange(self, server: RadiusServer, build: Callable[[int], Any]) -> Answer:
        with self._links.using(server) as link:
            answer = await link.exchange(build)
        if answer.code == ACCESS_CHALLENGE:
            self.stats.challenges += 1
        elif answer.code == ACCESS_ACCEPT:
            self.stats.accepts += 1
        else:
            self.stats.rejects += 1
        return answer

    def outstanding(self) -> int:
        return sum(link.outstanding for link in self._links.values())

    def waiting(self) -> int:
        """Requests waiting for an identifier now (every one of their server's sockets in use)."""
        return sum(link.waiting for link in self._links.values())

    def parked(self) -> int:
        """Identifiers given up that are not used again yet (ServerLink.park_seconds)."""
        return sum(link.parked for link in self._links.values())

    def count_drops(self) -> None:
        for link in self._links.values():
            link.count_drops()

    def health(self) -> dict[str, dict[str, Any]]:
        """Each configured server's health (``unknown`` for one not asked yet), by name."""
        return {s.name: self.link(s).health.status() for s in self.settings.servers}

    def close(self) -> None:
        self._links.close()
