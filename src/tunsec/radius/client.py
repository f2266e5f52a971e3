"""The RADIUS client of the EAP relay: asyncio UDP, one socket per server.

Each server gets a UDP socket connected to it (the kernel then drops datagrams from
anyone else) and its own 256 identifiers (RFC 2865 §3). A request is sent, and
retransmitted unchanged (same identifier and authenticator, RFC 5080 §2.2.1) after
``RadiusSettings.wait(n)`` seconds, ``retransmit_tries`` times; then :class:`NoAnswer`.
At most 256 requests per server are outstanding: beyond that :class:`Busy`, at once.

A datagram is used only if it authenticates as the answer to an outstanding request
(:func:`~tunsec.radius.messages.read_reply`). Everything else is dropped and counted:
an answer to a request we no longer wait for (timed out, or its IKE SA is gone) as
``late``, one that does not verify as ``bad``, one for no request at all as ``unmatched``.
A reply that does not verify does not end the wait: the real answer may still come.

Accounting (:mod:`tunsec.radius.accounting`) uses the same links to each server's ``acct_port``,
with its Accounting-Response reader and its own counters (:class:`AccountingStats`).

Each link keeps its server port's health (:class:`~tunsec.radius.health.ServerHealth`, ``health``):
an authentic answer makes it up, a request given up (or one that cannot be sent) down. The
relay and accounting read it to pass a dead server by (:func:`~tunsec.radius.health.in_order`),
``tunsec status`` to show it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar, cast

from tunsec.loglimit import LogLimiter, suffix

from .health import ServerHealth
from .messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, Answer, BadReply, read_reply, verifies
from .settings import RadiusServer, RadiusSettings

log = logging.getLogger("tunsec.radius")

IDS = 256  # the Identifier is one octet


class NoAnswer(Exception):
    """The server did not answer a request and its retransmissions."""


class Busy(Exception):
    """All 256 identifiers of the server are in use."""


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
    busy: int = 0  # refused at once: 256 requests to the server outstanding

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
    busy: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


T = TypeVar("T")


@dataclass
class _Outstanding(Generic[T]):
    request: Any  # the pyrad AuthPacket or AcctPacket
    answer: asyncio.Future[T]


class ServerLink(asyncio.DatagramProtocol, Generic[T]):
    """The socket, identifiers, outstanding requests and health of one server: its ``auth_port``
    with the Access-Request answer reader by default, or another port with another reader
    (accounting). ``what``: its requests, for the log; ``clock``: the health's."""

    def __init__(self, server: RadiusServer, settings: RadiusSettings, stats: RadiusStats | AccountingStats,
                 port: int | None = None, read: Callable[[Any, bytes], T] = read_reply,  # type: ignore[assignment]
                 verify: Callable[[Any, bytes], bool] = verifies, what: str = "Access-Requests",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.settings = settings
        self.stats = stats
        self.port = server.auth_port if port is None else port
        self.label = server.at(self.port)   # the server in log lines and errors
        self._read = read
        self._verify = verify
        self.health = ServerHealth(self.label, server.endpoint(self.port), what, clock)
        self.transport: asyncio.DatagramTransport | None = None
        self._free: collections.deque[int] = collections.deque(range(IDS))  # least recently used first
        self._outstanding: dict[int, _Outstanding[T]] = {}
        # requests given up, by identifier, until the identifier is reused: to tell a late answer
        # from junk (at most IDS entries)
        self._given_up: dict[int, Any] = {}
        self._log = LogLimiter()
        # one socket even if several exchanges open it at once (each would create one, the last
        # kept, the others never closed); ``_closed``: one opened after close() is closed at once
        self._opening = asyncio.Lock()
        self._closed = False
        # exchanges begun and not ended, the socket's opening included: the load the choice of a
        # server weighs (tunsec.radius.health.score); ``outstanding`` counts those sent only
        self.under_way = 0

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    async def open(self) -> None:
        """The socket, once (not again after close(): the exchange then gets no answer)."""
        async with self._opening:
            if self.transport is None and not self._closed:
                loop = asyncio.get_running_loop()
                addr = (str(self.server.address), self.port)
                transport, _ = await loop.create_datagram_endpoint(lambda: self, remote_addr=addr)
                if self._closed:   # close() came (a reload) while it was being opened: it had none to close
                    transport.close()
                    self.transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the retransmissions go on (the server may be restarting)
        log.debug("RADIUS server %s: %s", self.label, exc)

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        ident = data[1] if len(data) >= 20 else -1
        waiting = self._outstanding.get(ident)
        if waiting is None:
            given_up = self._given_up.get(ident)
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

    def _take_id(self) -> int:
        if not self._free:
            self.stats.busy += 1
            raise Busy(f"{IDS} requests to RADIUS server {self.label} are outstanding")
        ident = self._free.popleft()
        self._given_up.pop(ident, None)
        return ident

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
        try:
            await self.open()
        except OSError:
            self.health.missed()
            raise
        ident = self._take_id()
        try:
            request = build(ident)
            raw = request.RequestPacket()
        except BaseException:
            self._free.append(ident)
            raise
        waiting: _Outstanding[T] = _Outstanding(request, asyncio.get_running_loop().create_future())
        self._outstanding[ident] = waiting
        self.stats.requests += 1
        try:
            for attempt in range(self.settings.retransmit_tries + 1):
                if attempt:
                    self.stats.retransmissions += 1
                if self.transport is not None:
                    self.transport.sendto(raw)
                try:
                    return await asyncio.wait_for(asyncio.shield(waiting.answer), self.settings.wait(attempt))
                except TimeoutError:
                    continue
            self.stats.timeouts += 1
            self.health.missed()
            raise NoAnswer(f"no answer from RADIUS server {self.label} after "
                           f"{self.settings.retransmit_tries + 1} tries")
        finally:
            del self._outstanding[ident]
            if not waiting.answer.done():
                waiting.answer.cancel()
                self._given_up[ident] = request
            self._free.append(ident)


class RadiusClient:
    """Requests to the configured servers; sockets are opened at the first request. ``clock``:
    the servers' health's (a test's fake one)."""

    def __init__(self, settings: RadiusSettings, stats: RadiusStats | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else RadiusStats()
        self._clock = clock
        self._links: dict[str, ServerLink[Answer]] = {}

    def link(self, server: RadiusServer) -> ServerLink[Answer]:
        found = self._links.get(server.name)
        if found is None or found.server != server:
            if found is not None:
                found.close()
            found = self._links[server.name] = ServerLink(server, self.settings, self.stats, clock=self._clock)
        return found

    async def exchange(self, server: RadiusServer, build: Callable[[int], Any]) -> Answer:
        answer = await self.link(server).exchange(build)
        if answer.code == ACCESS_CHALLENGE:
            self.stats.challenges += 1
        elif answer.code == ACCESS_ACCEPT:
            self.stats.accepts += 1
        else:
            self.stats.rejects += 1
        return answer

    def outstanding(self) -> int:
        return sum(link.outstanding for link in self._links.values())

    def health(self) -> dict[str, dict[str, Any]]:
        """Each configured server's health (``unknown`` for one not asked yet), by name."""
        return {s.name: self.link(s).health.status() for s in self.settings.servers}

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
