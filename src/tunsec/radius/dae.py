"""RADIUS Dynamic Authorization (RFC 5176) of the gateway, as strongSwan's eap-radius ``dae``:
a RADIUS server (a Dynamic Authorization Client) tells the gateway to end a user's session.

One UDP socket on ``radius.dae.listen``:``port`` (bound by the IKE service before it drops
privilege; :class:`DaeServer` only reads it). A datagram is acted on only when

1. its source address is one of ``clients`` (else dropped, counted ``unknown_client``);
2. it decodes (pyrad) as a Disconnect-Request or CoA-Request (else ``bad``, or ``unsupported``
   for another RADIUS code);
3. its Request Authenticator verifies with the shared secret (RFC 5176 §3.3: MD5 over the
   packet with a zero authenticator and the secret), and so does its Message-Authenticator if
   it carries one (else ``bad``);
4. it is no replay: a request whose authenticator is in the answer cache is answered again from
   it if it comes from the same source (a retransmission, RFC 5080 §2.2.2: not acted on twice,
   ``duplicates``) and dropped if from another one; one whose Event-Timestamp is more than
   REPLAY_WINDOW seconds (``radius.dae.window``) behind our clock, or more than MAX_AHEAD seconds
   ahead of it, is dropped
   (RFC 5176 §3.3; all three ``replayed``). The Request Authenticator has no randomness (it is a
   hash of the packet), so an eavesdropper's copy is the same bytes: the cache catches it as long
   as its Event-Timestamp would pass, the Event-Timestamp after that. So an answer is kept
   REPLAY_WINDOW + MAX_AHEAD seconds (the latest a timestamp it passed can pass until), and a
   timestamp may not be far ahead: one 240 s ahead would pass for 540 s (hostapd's DAS takes
   its window either side, and keeps no cache at all). A reload that re-creates the listener with
   the same secret hands it the cache (:meth:`DaeServer.adopt`); a restart starts with an empty
   one, and refuses an Event-Timestamp from before it started, and from the very second it started
   (Event-Timestamp has whole seconds: a request captured in that second, before the restart, would
   pass once more), counted ``replayed``. The cost: a legitimate request stamped in the listener's
   first second is dropped too, with its retransmissions (they carry the same stamp); the DAC sees a
   timeout and a new request passes. Keeping the answers in state_dir instead would need a durable
   write (fsync) before each request is acted on to survive a crash, a file parsed at start, and
   would still leave requests without Event-Timestamp open after the window;
5. with ``require_event_timestamp`` (the default), a request without Event-Timestamp gets a NAK
   with Error-Cause 402 Missing-Attribute (one not 4 bytes long: 407 Invalid-Attribute-Value) and
   is not acted on (``unstamped``): the cache is its only
   replay check, and it forgets after the window, so a captured one could be replayed every
   REPLAY_WINDOW + MAX_AHEAD seconds, and after every restart (RFC 5176 §3.3: a NAS SHOULD be
   configurable to discard such requests). The NAK is no action and the same for every copy, so
   answering a replay is harmless, and the DAC's operator sees why (strongSwan checks no
   Event-Timestamp at all, and keeps only the last answer per client). With it off, such a
   request replayed after the cache forgot it is taken again.

Then (:func:`decide`): the session is named by User-Name (the EAP identity, as accounting's
User-Name, compared as identities are: without regard to case, as strongSwan's; strongSwan matches
only this one), Acct-Session-Id (accounting's id of the IKE SA),
Framed-IP-Address/Framed-IPv6-Address (a virtual IP leased to it), and the station attributes
accounting sent for it (:class:`~tunsec.radius.messages.Station`: NAS-Port, NAS-Port-Id,
Called-Station-Id, Calling-Station-Id, compared exactly; a server copies them from the Start); all
given must match (an address or NAS-Port of the wrong length: 407 Invalid-Attribute-Value). A
NAS-Identifier, NAS-IP-Address or NAS-IPv6-Address, if present, must be ours (our
``nas_identifier``; an address of ours, ``ours``), else Error-Cause 403
NAS-Identification-Mismatch; NAS-Port-Type is Virtual for every session. A session attribute
tunsec cannot match (Acct-Multi-Session-Id, Chargeable-User-Identity...) gets a NAK with 401
Unsupported-Attribute rather than being ignored, which would close more sessions than asked; none
at all, 402 Missing-Attribute.

- Disconnect-Request: the matching IKE SAs are deleted (the peer is told) as ``tunsec terminate``
  deletes them, so their accounting Stop says Admin-Reset (an administrator's action; strongSwan
  sends User-Request, its cause for every DELETE it starts);
  Disconnect-ACK; none matches: Disconnect-NAK with Error-Cause 503 Session-Context-Not-Found.
- CoA-Request: a CoA-NAK, 503 if no session matches, else 406 Unsupported-Extension: tunsec
  changes nothing of a session while it runs (strongSwan takes a Session-Timeout as a new
  reauthentication time, which tunsec has no notion of).

A request whose decision fails unexpectedly (a bug: no request should) is still answered, with a
NAK and Error-Cause 506 Resources-Unavailable (RFC 5176 §3.5: the 5xx causes are errors on the NAS,
the 4xx ones the client's; the request itself may well be valid), counted ``bad`` and logged once,
without a traceback; a retransmission gets the same answer from the cache.

Answers carry a Message-Authenticator (computed with the request's authenticator, RFC 5176
§3.3) and the request's Proxy-State. No secret, packet or authenticator goes into a log line;
user names are shown printable and short.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pyrad import packet as rp

from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.selector import IPAddress

from .limits import MAX_PACKET
from .messages import DICTIONARY, Station, _printable
from .settings import DAE_WINDOW, DaeSettings

log = logging.getLogger("tunsec.radius")

DISCONNECT_REQUEST, DISCONNECT_ACK, DISCONNECT_NAK = rp.DisconnectRequest, rp.DisconnectACK, rp.DisconnectNAK
COA_REQUEST, COA_NAK = rp.CoARequest, rp.CoANAK
USER_NAME, NAS_IDENTIFIER, ACCT_SESSION_ID, EVENT_TIMESTAMP, ERROR_CAUSE = 1, 32, 44, 55, 101
NAS_IP_ADDRESS, NAS_IPV6_ADDRESS, FRAMED_IP_ADDRESS, FRAMED_IPV6_ADDRESS = 4, 95, 8, 168
NAS_PORT, CALLED_STATION_ID, CALLING_STATION_ID, NAS_PORT_ID = 5, 30, 31, 87
# session identification attributes of RFC 5176 §3 tunsec does not match on: a request naming
# one is refused, it asks for fewer sessions than its User-Name alone would close
UNMATCHED = {50: "Acct-Multi-Session-Id", 89: "Chargeable-User-Identity", 96: "Framed-Interface-Id",
             97: "Framed-IPv6-Prefix"}
NAS_PORT_TYPE, VIRTUAL = 61, 5   # every session's NAS-Port-Type (as accounting sends it)
# RFC 5176 §3.5 Error-Cause values
UNSUPPORTED_ATTRIBUTE, MISSING_ATTRIBUTE, NAS_MISMATCH, INVALID_ATTRIBUTE = 401, 402, 403, 407
UNSUPPORTED_EXTENSION, SESSION_NOT_FOUND, RESOURCES_UNAVAILABLE = 406, 503, 506
REPLAY_WINDOW = DAE_WINDOW   # by default: radius.dae.window (DaeSettings.window)
# seconds an Event-Timestamp may be ahead of our clock: clocks NTP keeps agree far closer; a
# larger allowance would keep a captured request acceptable (and cached) that much longer
MAX_AHEAD = 10.0
MAX_ANSWERS = 4096   # answers kept for retransmissions and replay checks (a flood evicts the oldest)
CODE_NAMES = {DISCONNECT_REQUEST: "Disconnect-Request", DISCONNECT_ACK: "Disconnect-ACK",
              DISCONNECT_NAK: "Disconnect-NAK", COA_REQUEST: "CoA-Request", COA_NAK: "CoA-NAK"}


@dataclass
class DaeStats:
    """Counters for ``tunsec status`` (``radius.dae``)."""

    requests: int = 0   # authentic requests acted on (each answered)
    disconnect_acks: int = 0
    disconnect_naks: int = 0
    coa_naks: int = 0
    sessions_closed: int = 0   # IKE SAs Disconnect-Requests deleted
    duplicates: int = 0   # retransmissions answered again from the cache
    unknown_client: int = 0   # from an address not in clients: dropped
    bad: int = 0   # undecodable, or the authenticator does not verify: dropped; or its decision failed: NAK 506
    replayed: int = 0   # an answered request from another source, or a stale Event-Timestamp: dropped
    unstamped: int = 0   # without Event-Timestamp (require_event_timestamp): NAK 402, not acted on
    unsupported: int = 0   # another RADIUS code: dropped

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SessionQuery:
    """The sessions a request names: every non-empty part must match (several values: any)."""

    users: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    vips: tuple[IPAddress, ...] = ()   # Framed-IP-Address, Framed-IPv6-Address: a virtual IP leased to it
    # the station attributes, as accounting sent them for the session (Station)
    nas_ports: tuple[int, ...] = ()
    nas_port_ids: tuple[str, ...] = ()
    called: tuple[str, ...] = ()
    calling: tuple[str, ...] = ()

    def names(self) -> bool:
        """Whether it names any session at all (else 402 Missing-Attribute)."""
        return any(getattr(self, f.name) for f in fields(self))

    def station_matches(self, station: Station) -> bool:
        """Whether ``station`` (what accounting sent for a session) has every station attribute asked for."""
        return ((not self.nas_ports or station.nas_port & 0xFFFFFFFF in self.nas_ports)
                and (not self.nas_port_ids or station.nas_port_id in self.nas_port_ids)
                and (not self.called or station.called in self.called)
                and (not self.calling or station.calling in self.calling))


@dataclass(frozen=True)
class Verdict:
    """What a request gets: the answer's code, its Error-Cause (None: none) and the sessions to close."""

    code: int
    cause: int | None = None
    close: tuple[Hashable, ...] = ()


def _values(pkt: Any, code: int) -> list[bytes]:
    values: list[bytes] = collections.OrderedDict.get(pkt, code, [])
    return values


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _texts(pkt: Any, code: int) -> tuple[str, ...]:
    """A text attribute's non-empty values (an empty one names nothing)."""
    return tuple(_text(v) for v in _values(pkt, code) if v)


def _nas_addresses(pkt: Any) -> list[IPAddress | None]:
    """NAS-IP-Address and NAS-IPv6-Address (None: one of the wrong length)."""
    out: list[IPAddress | None] = []
    for code, size in ((NAS_IP_ADDRESS, 4), (NAS_IPV6_ADDRESS, 16)):
        out += [ipaddress.ip_address(v) if len(v) == size else None for v in _values(pkt, code)]
    return out


def decide(pkt: Any, nas_identifier: str, ours: Callable[[IPAddress], bool],
           find: Callable[[SessionQuery], Sequence[Hashable]]) -> Verdict:
    """The answer to an authentic Disconnect- or CoA-Request ``pkt``; ``ours``: whether an address
    is one of the gateway's (NAS-IP-Address), ``find``: the sessions a query names."""
    disconnect = pkt.code == DISCONNECT_REQUEST
    nak = DISCONNECT_NAK if disconnect else COA_NAK
    if any(_text(v) != nas_identifier for v in _values(pkt, NAS_IDENTIFIER)) or \
            any(a is None or not ours(a) for a in _nas_addresses(pkt)):
        return Verdict(nak, NAS_MISMATCH)
    if any(code in UNMATCHED for code in collections.OrderedDict.keys(pkt)):
        return Verdict(nak, UNSUPPORTED_ATTRIBUTE)
    vips: list[IPAddress] = []
    for code, size in ((FRAMED_IP_ADDRESS, 4), (FRAMED_IPV6_ADDRESS, 16)):
        for v in _values(pkt, code):
            if len(v) != size:
                return Verdict(nak, INVALID_ATTRIBUTE)
            vips.append(ipaddress.ip_address(v))
    ports = _values(pkt, NAS_PORT)
    if any(len(v) != 4 for v in ports):
        return Verdict(nak, INVALID_ATTRIBUTE)
    query = SessionQuery(_texts(pkt, USER_NAME), _texts(pkt, ACCT_SESSION_ID), tuple(vips),
                         tuple(int.from_bytes(v, "big") for v in ports), _texts(pkt, NAS_PORT_ID),
                         _texts(pkt, CALLED_STATION_ID), _texts(pkt, CALLING_STATION_ID))
    if not query.names():
        return Verdict(nak, MISSING_ATTRIBUTE)
    virtual = all(v == VIRTUAL.to_bytes(4, "big") for v in _values(pkt, NAS_PORT_TYPE))
    found = tuple(dict.fromkeys(find(query))) if virtual else ()
    if not found:
        return Verdict(nak, SESSION_NOT_FOUND)
    if not disconnect:
        return Verdict(nak, UNSUPPORTED_EXTENSION)
    return Verdict(DISCONNECT_ACK, None, found)


def authentic(pkt: Any) -> bool:
    """Whether a decoded request verifies with its ``secret``: the Request Authenticator, and the
    Message-Authenticator if present (RFC 5176 §3.3)."""
    if not pkt.VerifyCoARequest():
        return False
    ma = _values(pkt, 80)
    if not ma:
        return True
    return len(ma) == 1 and len(ma[0]) == 16 and bool(pkt.verify_message_authenticator())


def answer(pkt: Any, verdict: Verdict) -> bytes:
    """The encoded answer (Response Authenticator and Message-Authenticator over the request's)."""
    reply = pkt.CreateReply()
    reply.code = verdict.code
    reply.add_message_authenticator()
    if verdict.cause is not None:
        reply.AddAttribute("Error-Cause", verdict.cause)
    raw: bytes = reply.ReplyPacket()
    return raw


def _event_timestamp(pkt: Any) -> int | None:
    values = _values(pkt, EVENT_TIMESTAMP)
    if values and len(values[0]) == 4:
        return int.from_bytes(values[0], "big")
    return None


@dataclass
class _Answered:
    source: tuple[str, int]
    raw: bytes
    at: float
    stamp: int | None = None


class DaeServer(asyncio.DatagramProtocol):
    """The listener: checks each request (see the module docstring), asks ``find`` for the
    sessions it names and ``disconnect`` to close them, and answers. ``clock``: wall time (the
    Event-Timestamp's), ``monotonic``: the answer cache's."""

    def __init__(self, settings: DaeSettings, nas_identifier: str,
                 find: Callable[[SessionQuery], Sequence[Hashable]],
                 disconnect: Callable[[Sequence[Hashable]], None],
                 ours: Callable[[IPAddress], bool] = lambda _: False,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sock: socket.socket | None = None) -> None:
        self.settings = settings
        self._sock = sock   # bound, not read yet (serve)
        self.nas_identifier = nas_identifier
        self.stats = DaeStats()
        self._find = find
        self._disconnect = disconnect
        self._ours = ours
        self._clock = clock
        self._monotonic = monotonic
        self._answered: collections.OrderedDict[bytes, _Answered] = collections.OrderedDict()
        # a restart forgets the answers: an Event-Timestamp from before this listener (or the first one
        # a reload handed its answers down from) started, or from that second, may be a request
        # captured before, replayed
        self._since = clock()
        # the start on the monotonic clock: a wall clock stepped after it (NTP at boot) moves the
        # start second with it (revdae F1)
        self._since_mono = monotonic()
        # the highest Event-Timestamp of an answer forgotten (expired, evicted): a stamp at or below it
        # may be that request again (revdae F2, F4); handed down by adopt
        self._floor = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._drop_log = LogLimiter()

    async def serve(self) -> None:
        """Read the bound socket it was given until close()."""
        sock, self._sock = self._sock, None
        if sock is not None:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        log.debug("RADIUS DAE listener %s: %s", self.settings.endpoint(), exc)

    def adopt(self, old: DaeServer) -> None:
        """A reload replaced ``old`` (other clients, address or port): the requests it answered
        are still no news here if they verify with our secret (a captured one replayed to the new
        listener, a retransmission answered again)."""
        if old.settings.secret == self.settings.secret:
            self._answered = collections.OrderedDict([*old._answered.items(), *self._answered.items()])
            self._since = min(self._since, old._since)
            self._since_mono = min(self._since_mono, old._since_mono)
            self._floor = max(self._floor, old._floor)

    def close(self) -> None:
        if self._sock is not None:   # closed before it was served (startup failed)
            self._sock.close()
            self._sock = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        out = self.receive(data, (str(addr[0]), int(addr[1])))
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def receive(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The answer to send back to ``source`` for the datagram ``data``, or None (dropped)."""
        try:
            sender = ipaddress.ip_address(source[0].partition("%")[0])
        except ValueError:
            sender = None
        if sender is None or not self.settings.admits(sender):
            self.stats.unknown_client += 1
            self._drop(source, "not a configured dynamic authorization client (radius.dae.clients)")
            return None
        if len(data) > MAX_PACKET:
            return self._bad(source, f"a datagram of {len(data)} bytes (at most {MAX_PACKET})")
        try:
            pkt = rp.CoAPacket(packet=data, secret=self.settings.secret.reveal(), dict=DICTIONARY)
        except (rp.PacketError, ValueError, KeyError, TypeError):
            return self._bad(source, "undecodable RADIUS packet")
        if pkt.code not in (DISCONNECT_REQUEST, COA_REQUEST):
            self.stats.unsupported += 1
            self._drop(source, f"RADIUS code {pkt.code} is no Disconnect- or CoA-Request")
            return None
        what = CODE_NAMES[pkt.code]
        if not authentic(pkt):
            return self._bad(source, f"{what} does not verify (wrong shared secret, or forged)")
        return self._answer(pkt, source, what)

    def _answer(self, pkt: Any, source: tuple[str, int], what: str) -> bytes | None:
        now = self._monotonic()
        self._expire(now)
        seen = self._answered.get(pkt.authenticator)
        if seen is not None:
            if seen.source == source:
                self.stats.duplicates += 1
                log.debug("RADIUS DAE: %s %d from %s again: answered again", what, pkt.id, _at(source))
                return seen.raw
            self.stats.replayed += 1
            self._drop(source, f"{what} replayed (answered to {_at(seen.source)} already)")
            return None
        stamp = _event_timestamp(pkt)
        if stamp is None and self.settings.require_event_timestamp:
            # not cached: every copy gets this same NAK, and none is acted on; one not 4 bytes long
            # is the DAC's bug, not a missing attribute
            malformed = bool(_values(pkt, EVENT_TIMESTAMP))
            self.stats.unstamped += 1
            self._drop(source, f"{what} {'with a malformed' if malformed else 'without'} Event-Timestamp: "
                               f"{'Invalid-Attribute-Value' if malformed else 'Missing-Attribute'} NAK, not "
                               "acted on (nothing tells a replay of it; have the DAC send Event-Timestamp, or "
                               "set radius.dae.require_event_timestamp = no)", "refused")
            return answer(pkt, Verdict(DISCONNECT_NAK if pkt.code == DISCONNECT_REQUEST else COA_NAK,
                                       INVALID_ATTRIBUTE if malformed else MISSING_ATTRIBUTE))
        # whole seconds: a request captured in the second it started, before it started, has that stamp
        if stamp is not None and stamp <= self._refused_up_to():
            self.stats.replayed += 1
            self._drop(source, f"{what} with an Event-Timestamp from before this gateway's DAE listener started, "
                               "or from the second it started (its answers are not kept across a restart): "
                               "stale or replayed; a new request is taken")
            return None
        if stamp is not None and (why := _stale(stamp - self._clock(), self.settings.window)) is not None:
            self.stats.replayed += 1
            self._drop(source, f"{what} with an Event-Timestamp {why}")
            return None
        self.stats.requests += 1
        failure = None
        try:
            verdict = decide(pkt, self.nas_identifier, self._ours, self._find)
        except Exception as exc:   # unanswered, the DAC would retransmit into the same failure
            self.stats.bad += 1
            failure = f"{type(exc).__name__}: {exc}"[:200]
            verdict = Verdict(DISCONNECT_NAK if pkt.code == DISCONNECT_REQUEST else COA_NAK, RESOURCES_UNAVAILABLE)
        self._act(pkt, verdict, source, what, failure)
        raw = answer(pkt, verdict)
        self._answered[pkt.authenticator] = _Answered(source, raw, now, stamp)
        while len(self._answered) > MAX_ANSWERS:
            self._forget()
        return raw

    def _act(self, pkt: Any, verdict: Verdict, source: tuple[str, int], what: str, failure: str | None) -> None:
        users = ", ".join(repr(_printable(v)) for v in _values(pkt, USER_NAME)[:4]) or "-"
        if verdict.code == DISCONNECT_ACK:
            self.stats.disconnect_acks += 1
            self.stats.sessions_closed += len(verdict.close)
            log.info("RADIUS DAE: %s from %s for user %s: closing %d IKE SA(s), Disconnect-ACK", what,
                     _at(source), users, len(verdict.close))
            self._disconnect(verdict.close)
            return
        if verdict.code == DISCONNECT_NAK:
            self.stats.disconnect_naks += 1
        else:
            self.stats.coa_naks += 1
        if failure is not None:
            log.error("RADIUS DAE: %s from %s for user %s: cannot be decided (%s; a bug): %s, Error-Cause %s",
                      what, _at(source), users, failure, CODE_NAMES[verdict.code], verdict.cause)
            return
        log.info("RADIUS DAE: %s from %s for user %s: %s, Error-Cause %s", what, _at(source), users,
                 CODE_NAMES[verdict.code], verdict.cause)

    def _expire(self, now: float) -> None:
        while self._answered:
            first = next(iter(self._answered.values()))
            if now - first.at <= self.settings.window + MAX_AHEAD:
                break
            self._forget()

    def _forget(self) -> None:
        _, gone = self._answered.popitem(last=False)
        if gone.stamp is not None:
            self._floor = max(self._floor, gone.stamp)

    def _refused_up_to(self) -> int:
        """The highest Event-Timestamp refused as a replay: the listener's start second (on today's wall
        clock, or the one it read then, whichever is later), or the highest stamp of an answer
        forgotten.  Not the start plus MAX_AHEAD: that would drop an in-step DAC's requests for ~11 s
        after every start, against a request from a DAC clock ahead of ours captured within those
        seconds before a restart (docs/radius.md "Replays", revdae F3)."""
        started = max(self._since, self._clock() - (self._monotonic() - self._since_mono))
        return max(int(started), self._floor)

    def _bad(self, source: tuple[str, int], why: str) -> bytes | None:
        """Counted, logged (rate-limited) and dropped: None, to return."""
        self.stats.bad += 1
        self._drop(source, why)
        return None

    def _drop(self, source: tuple[str, int], why: str, what: str = "dropped") -> None:
        if (held := self._drop_log.admit()) is not None:
            log.warning("RADIUS DAE: datagram from %s %s: %s%s", _at(source), what, why, suffix(held))

    def status(self) -> dict[str, Any]:
        return {"listen": self.settings.endpoint(), **self.stats.as_dict()}


def _stale(ahead: float, window: float) -> str | None:
    """Why an Event-Timestamp ``ahead`` seconds ahead of our clock (negative: behind) is refused."""
    if ahead > MAX_AHEAD:
        return f"{int(ahead)} s ahead of our clock (at most {MAX_AHEAD:g} s): replayed, or the clocks disagree"
    if -ahead > window:
        return f"{int(-ahead)} s old (at most {window:g} s): stale or replayed"
    return None


def _at(source: tuple[str, int]) -> str:
    host = f"[{source[0]}]" if ":" in source[0] else source[0]
    return f"{host}:{source[1]}"
