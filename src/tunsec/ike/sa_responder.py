"""The peer's requests to an IKE SA: the responder side of the exchange (RFC 7296 §2.1-§2.2).

A request is served only with the message ID we expect next (window of one); a
retransmitted request is answered with the stored response, never processed twice, and only
a genuine one (``on_retransmit``: a byte-identical copy of the request answered, at most
MAX_RESENDS times), or any datagram with the right SPIs and message ID from a spoofed
source would make us send a copy of the response there (a reflector); the
row of ``exchanges/responders.py`` that serves the request builds the response, which is
encoded (maybe fragmented), kept for retransmissions and sent. An authenticated request
that does not parse is answered with an error notify (``_Refuse``); one whose answer
waits for the AAA backend is held (``_Waiting``, answered by :meth:`IkeSa.relay_reply`).

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.loglimit import suffix

from .constants import NATT_PORT, ExchangeType, NotifyType
from .events import Address, DownReason
from .exchanges.base import Awaiting, Response, Task, notify
from .exchanges.create_child_sa import rekey_spi
from .exchanges.mobike import _unacceptable
from .exchanges.responders import responder_for
from .message import DecodeError, Message, Payload, UnsupportedCriticalPayload, decode_payloads
from .peer_logs import Line
from .sk import IntegrityError, decrypt_message
from .state import State

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)

# How often one stored response is sent again. RFC 7296 §2.1 leaves the count to the requester:
# strongSwan (charon.retransmit_tries) and tunsec retransmit 5 times by default, libreswan about 7
# times; 8 answers each of them with room to spare. More copies of one request are no peer's
# retransmissions but a replay (an on-path attacker's, or a peer's own from a spoofed source) that
# uses us as a reflector: each copy would cost a response, several KiB after IKE_AUTH.
MAX_RESENDS = 8


@dataclass(slots=True)
class _Answered:
    """The response to the peer's last request, kept for its retransmissions (RFC 7296 §2.1)."""

    message_id: int
    datagrams: tuple[bytes, ...]
    # request_digest() of the request's datagram; None if it came in fragments: a retransmission
    # of those is known by its verified first fragment (sa_fragments.on_fragment)
    request: bytes | None
    addr: Address   # where the response went: before authentication, copies are answered only there
    resends: int = 0


def request_digest(datagram: bytes) -> bytes:
    """What identifies a request answered: RFC 7296 §2.1 has a retransmission bitwise identical
    from the IKE header on, so 16 bytes of hash tell a copy from anything else (as
    init_request.init_digest)."""
    return hashlib.blake2b(datagram, digest_size=16).digest()


@dataclass
class _Waiting:
    """A peer's request whose answer waits for the AAA backend (see ``Awaiting``)."""

    message_id: int
    exchange: int
    addr: Address
    awaits: Awaiting
    request: bytes | None  # see _Answered


class _Refuse(Exception):
    def __init__(self, payload: Payload) -> None:
        super().__init__("refuse request")
        self.payload = payload


def _decode_inner(first: int, plain: bytes) -> tuple[Payload, ...]:
    """The payloads of an authenticated plaintext; raises _Refuse with the error to answer."""
    try:
        return decode_payloads(first, plain)
    except UnsupportedCriticalPayload as exc:
        raise _Refuse(notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([exc.payload_type]))) from None
    except DecodeError:
        raise _Refuse(notify(NotifyType.INVALID_SYNTAX)) from None



def on_request(self: IkeSa, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
    if foreign(self, addr):
        return
    last = self._last_response
    if last is not None and msg.message_id == last.message_id:
        if msg.message_id + 1 == self._peer_id:
            self._on_retransmit(last, datagram, addr)
        return
    if msg.message_id != self._peer_id:
        return
    if msg.exchange == ExchangeType.IKE_SA_INIT:
        self._respond_init(msg, datagram, addr)
        return
    if self._st.rx is None:
        return
    try:
        payloads = self._decrypt_request(msg, datagram)
    except _Refuse as refusal:
        self._respond(msg, Response([refusal.payload]), addr, request_digest(datagram))
        return
    if payloads is None:
        return
    self._serve(msg, payloads, addr, local, request_digest(datagram))


def on_retransmit(self: IkeSa, last: _Answered, datagram: bytes, addr: Address) -> None:
    """A whole request with the message ID last answered: the response again if it is a copy of
    the request answered. Its ICV is not checked again: a copy verifies as the original did (and an
    IKE_SA_INIT has none), and anything else is refused before any cryptography."""
    if last.request is None or request_digest(datagram) != last.request:
        self._drops.retransmit_not_identical += 1
        log.debug("%s: request %d is no copy of the one answered: not answered", self.name, last.message_id)
        return
    # from any address: RFC 7296 §2.1 has only the bytes from the IKE header on identical (a NAT may
    # have given the peer a new port since), and only a copy of a request the peer sent gets here
    # (replayed by whoever saw it, from wherever: MAX_RESENDS bounds what that reflects)
    self._resend(last, addr)


def foreign(self: IkeSa, addr: Address) -> bool:
    """Whether a request comes from an IP address other than the IKE_SA_INIT exchange's before the
    peer is authenticated: dropped (and counted), before any cryptography.  Anyone who ran
    IKE_SA_INIT holds the keys, so its "IKE_AUTH" (or a copy of it) from a victim's address would aim
    our answers (IDr, CERT, AUTH, EAP: KiB) there; the peer's IP cannot change before IKE_AUTH is
    through (a float keeps it: _follows), only its port (500 to 4500, a NAT's new mapping)."""
    if self._state != State.CONNECTING or addr[0] == self._st.remote_addr[0]:
        return False
    self._drops.preauth_elsewhere += 1
    # anyone who ran IKE_SA_INIT can cause the line: its source's share (peer_logs.py)
    if self._peer_id == 1 and (held := self._st.peer_logs.admit(Line.ELSEWHERE, self._st)) is not None:
        # a client behind a NAT that maps ports 500 and 4500 to different IPs (some CGNATs) never
        # gets through: the operator must be able to tell it from a lost client
        log.info("%s: first IKE_AUTH from another IP than its IKE_SA_INIT: not answered (%s, IKE_SA_INIT "
                 "from %s; a NAT mapping ports 500 and 4500 to different IPs?)%s", self.name, addr[0],
                 self._st.remote_addr[0], suffix(held))
    else:
        log.debug("%s: request from %s before authentication, not from the peer's %s: dropped", self.name,
                  addr[0], self._st.remote_addr[0])
    return True


def resend(self: IkeSa, last: _Answered, addr: Address) -> None:
    """The stored response to a genuine retransmission, unless it was sent MAX_RESENDS times again,
    or (before authentication) the copy comes from elsewhere than the request answered."""
    if self._state == State.CONNECTING and addr != last.addr:
        # whoever holds a copy (the initiator itself) must not aim the answer at another port or host
        self._drops.preauth_elsewhere += 1
        log.debug("%s: copy of request %d from %s[%d] before authentication, answered at %s[%d]: not answered",
                  self.name, last.message_id, *addr, *last.addr)
        return
    if last.resends >= MAX_RESENDS:
        self._drops.retransmit_limit += 1
        log.debug("%s: request %d retransmitted more than %d times: not answered", self.name,
                  last.message_id, MAX_RESENDS)
        return
    last.resends += 1
    self._outbox.extend((d, addr) for d in last.datagrams)


def serve(
    self: IkeSa, msg: Message, payloads: tuple[Payload, ...], addr: Address, local: Address | None,
    request: bytes | None,
) -> None:
    """Answer an authenticated request (whole or reassembled; ``request``: see _Answered)."""
    if self._waiting is not None:
        return  # a retransmission of the request whose answer waits for the backend
    if _follows(self, msg):
        if not _acceptable(self, addr):
            return   # neither served nor answered there: see _acceptable
        self._float(addr, local)
    self._last_heard = self._now
    self._st.peer_has_answers()   # (a window of one: it sent this after our last answer came)
    self._st.request_path = (addr, local)
    try:
        response = self._dispatch(msg.exchange, payloads)
    finally:
        self._st.request_path = None
    for child in self._st.unconfirmed:   # created by this request (peer_has_answers emptied it above)
        child.answered_in = msg.message_id
    if response is None:
        # an authenticated request we cannot serve here still gets an answer,
        # or the peer would retransmit it and its window would stall
        response = Response([notify(NotifyType.INVALID_SYNTAX)])
    self._drops.delete_spis_ignored += response.spis_ignored
    self._drops.child_sas_refused_for_now += response.refused_for_now
    if response.awaits is not None:
        self._waiting = _Waiting(msg.message_id, msg.exchange, addr, response.awaits, request)
        return
    self._answer(msg.message_id, msg.exchange, response, addr, request)


def _follows(self: IkeSa, msg: Message) -> bool:
    """Whether the IKE SA (and its Child SAs' ESP) moves to where this authenticated request came from
    (RFC 7296 §2.23), as strongSwan's update_hosts: a responder's first IKE_AUTH request always (the
    initiator floated to port 4500 after IKE_SA_INIT); later ones only from a peer behind a NAT, whose
    mapping may change.  A peer seen without one never moves: one request of its own from a spoofed
    source (or an on-path attacker's copy of one, sent first) would point its ESP at any host, and
    nothing short of MOBIKE's return routability check can tell.  "The first IKE_AUTH" is the state's,
    not the header's: message IDs start at 0 again on an IKE SA made by a rekey, and for the peer's
    requests on one we initiated, so any peer can send an "IKE_AUTH" numbered 1 there.  Before
    authentication only the port moves (``foreign`` drops a request from another IP).  With MOBIKE
    only UPDATE_SA_ADDRESSES moves the SA (exchanges/mobike.py)."""
    st = self._st
    if st.mobike:
        return False
    if self._state == State.CONNECTING:
        first_auth = msg.exchange == ExchangeType.IKE_AUTH and msg.message_id == 1
        return not st.is_initiator and (first_auth or st.nat_peer)
    return st.nat_peer


def _acceptable(self: IkeSa, addr: Address) -> bool:
    """A float stays within the connection's remote_addrs and the Child SAs' address family, as a
    MOBIKE update must (mobike._unacceptable).  A refused request is counted and dropped unserved and
    unanswered, its message ID still expected (review revmobfix F1): answered at the refused address,
    the peer's requests (its DPD) would succeed there while its ESP goes to the address it left, and
    it would never notice; unanswered, its DPD fails and it connects again from where it is (a new IKE
    SA, checked as any other), and the genuine copy of a request sent ahead of it from a spoofed source
    is served and answered at the peer's address.  RFC 7296 §2.23 has an SA follow only an address it
    accepts; §2.11 sends a response only where the request came from, so none at the old address."""
    if addr[0] == self._st.remote_addr[0]:
        return True   # a NAT's new port (or our end): the connection took this IP already
    refusal = _unacceptable(self._st, addr)
    if not refusal:
        return True
    self._drops.floats_refused += 1
    log.debug("%s: not following the peer to %s[%d]: %s", self.name, *addr, refusal)
    return False


def answer(
    self: IkeSa, message_id: int, exchange: int, response: Response, addr: Address, request: bytes | None
) -> None:
    """Send the response to an authenticated request and act on what it started."""
    if self._state == State.CONNECTING and self._st.peer_id is not None and not response.close:
        self._state = State.ESTABLISHED  # IKE_AUTH authenticated the peer
        self._st.forget_setup()          # the response is built: AUTH and the Child SA's keys are done
    if response.close and response.reason is DownReason.DELETED_BY_PEER and self._adopt_peer_rekey():
        response = Response(response.payloads)   # the peer's new IKE SA carries on: see _adopt_peer_rekey
    self._respond_to(message_id, exchange, response, addr, request)
    if self._st.redirected_to is not None and self._redirect_deadline is None and self._state == State.ESTABLISHED:
        # RFC 5685 §6: the client deletes the SA; if it does not, we do (as strongSwan, after half_open_timeout)
        self._redirect_deadline = self._now + self._st.config.half_open_timeout
    self._queue_followups(response.followups)
    # in a few seconds (retry_at): it was due at the peer when it rekeyed, and the peer, which retries
    # its own, may not (informational._withdrawn)
    self._rearm(response.rearm, lambda _: self._retry_at())
    if self._st.rekey is not None and self._state == State.ESTABLISHED:
        self._spawn_successor()


def queue_followups(self: IkeSa, tasks: Sequence[Task]) -> None:
    kept = [
        task for task in tasks
        # a liveness check on its way already, or moot, is not asked for again
        if not (task.coalesces and (self._state != State.ESTABLISHED or self._queued(type(task))))
    ]
    self._enqueue(kept)


def respond_init(self: IkeSa, msg: Message, datagram: bytes, addr: Address) -> None:
    responder = responder_for(msg.exchange, self._state, self._st.is_initiator, msg.payloads)
    if responder is None:
        return
    self._st.spi_i = msg.spi_i
    self._st.init_request = datagram
    self._state = State.CONNECTING
    response = responder.respond(self._st, msg.payloads, None)
    data = self._respond(msg, response, addr, request_digest(datagram))
    self._st.init_response = data[0]


def dispatch(self: IkeSa, exchange: int, payloads: tuple[Payload, ...]) -> Response | None:
    responder = responder_for(exchange, self._state, self._st.is_initiator, payloads)
    if responder is None:
        return None
    if self._rekey_refused(exchange, payloads) or rekey_of_deleted(self, exchange, payloads):
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    return responder.respond(self._st, payloads, self._pending.task if self._pending else None)


def rekey_of_deleted(self: IkeSa, exchange: int, payloads: Sequence[Payload]) -> bool:
    """The peer rekeys a Child SA whose DELETE of ours is queued or not answered yet: refused for now
    (TEMPORARY_FAILURE, RFC 7296 §2.25.1), as create_child_sa.respond refuses one it finds ``deleting``.
    This also holds for one we took down at once (``terminate --child``: IkeSa.delete_child at_once),
    which no longer is among the IKE SA's Child SAs: CHILD_SA_NOT_FOUND to it made a peer whose DELETE
    of it had not come yet create the child again, a child we are ending (review revrekey2 R1).  Once our
    DELETE is answered the peer has none to rekey."""
    if exchange != ExchangeType.CREATE_CHILD_SA or (spi := rekey_spi(payloads)) is None:
        return False
    tasks = (*self._queue, *((self._pending.task,) if self._pending is not None else ()))
    child = next((c for t in tasks for c in t.deletes if c.installed and c.spi_out == spi), None)
    if child is None:
        return False
    log.debug("%s: refusing the peer's rekey of Child SA %s: our DELETE of it is not answered yet",
              self.name, child.name)
    return True


def respond(
    self: IkeSa, msg: Message, response: Response, addr: Address, request: bytes | None
) -> tuple[bytes, ...]:
    return self._respond_to(msg.message_id, msg.exchange, response, addr, request)


def respond_to(
    self: IkeSa, message_id: int, exchange: int, response: Response, addr: Address, request: bytes | None
) -> tuple[bytes, ...]:
    """Send and keep the response to request ``message_id`` (``request``: see _Answered)."""
    data = self._encode(exchange, message_id, response.payloads, response=True)
    self._last_response = _Answered(message_id, data, request, addr)
    self._peer_id = message_id + 1
    self._reassembly.pop(False, None)
    self._outbox.extend([(d, addr) for d in data])
    if response.close:
        # the peer's DELETE crossing ours (a terminate, a reload): ended by us, not lost (a close_action
        # would start what was just ended)
        deleting = self._state is State.DELETING and response.reason is DownReason.DELETED_BY_PEER
        self._close(self._delete_reason if deleting else response.reason)
    return data


def decrypt_request(self: IkeSa, msg: Message, datagram: bytes) -> tuple[Payload, ...] | None:
    """The inner payloads; None to drop silently; raises _Refuse to answer with an error."""
    assert self._st.rx is not None
    try:
        return decrypt_message(datagram, msg, self._st.rx)
    except IntegrityError:
        return None
    except UnsupportedCriticalPayload as exc:
        raise _Refuse(notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([exc.payload_type]))) from None
    except DecodeError:
        raise _Refuse(notify(NotifyType.INVALID_SYNTAX)) from None


def float_to(self: IkeSa, addr: Address, local: Address | None) -> None:
    """Follow the peer to the address of its latest authenticated request (RFC 7296 §2.23)."""
    self._st.remote_addr = addr
    if local is not None:
        self._st.local_addr = local
        self._st.local_port = local[1]
    else:
        self._st.local_port = NATT_PORT  # after IKE_SA_INIT everything is on 4500
