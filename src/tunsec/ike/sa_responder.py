"""The peer's requests to an IKE SA: the responder side of the exchange (RFC 7296 §2.1-§2.2).

A request is served only with the message ID we expect next (window of one); a
retransmitted request is answered with the stored response, never processed twice; the
row of ``exchanges/responders.py`` that serves the request builds the response, which is
encoded (maybe fragmented), kept for retransmissions and sent. An authenticated request
that does not parse is answered with an error notify (``_Refuse``); one whose answer
waits for the AAA backend is held (``_Waiting``, answered by :meth:`IkeSa.relay_reply`).

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import ExchangeType, NotifyType
from .events import Address, DownReason
from .exchanges.base import Awaiting, Response, Task, notify
from .exchanges.responders import responder_for
from .message import DecodeError, Message, Payload, UnsupportedCriticalPayload, decode_payloads
from .sk import IntegrityError, decrypt_message
from .state import State

if TYPE_CHECKING:
    from .sa import IkeSa


@dataclass
class _Waiting:
    """A peer's request whose answer waits for the AAA backend (see ``Awaiting``)."""

    message_id: int
    exchange: int
    addr: Address
    awaits: Awaiting


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
    if self._last_response is not None and msg.message_id == self._last_response[0]:
        if msg.message_id + 1 == self._peer_id:
            self._outbox.extend((d, addr) for d in self._last_response[1])  # retransmitted request
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
        self._respond(msg, Response([refusal.payload]), addr)
        return
    if payloads is None:
        return
    self._serve(msg, payloads, addr, local)


def serve(self: IkeSa, msg: Message, payloads: tuple[Payload, ...], addr: Address, local: Address | None) -> None:
    """Answer an authenticated request (whole or reassembled)."""
    if self._waiting is not None:
        return  # a retransmission of the request whose answer waits for the backend
    self._last_heard = self._now
    if not self._st.mobike:
        self._float(addr, local)  # with MOBIKE only UPDATE_SA_ADDRESSES moves the SA (exchanges/mobike.py)
    self._st.request_path = (addr, local)
    try:
        response = self._dispatch(msg.exchange, payloads)
    finally:
        self._st.request_path = None
    if response is None:
        # an authenticated request we cannot serve here still gets an answer,
        # or the peer would retransmit it and its window would stall
        response = Response([notify(NotifyType.INVALID_SYNTAX)])
    if response.awaits is not None:
        self._waiting = _Waiting(msg.message_id, msg.exchange, addr, response.awaits)
        return
    self._answer(msg.message_id, msg.exchange, response, addr)


def answer(self: IkeSa, message_id: int, exchange: int, response: Response, addr: Address) -> None:
    """Send the response to an authenticated request and act on what it started."""
    if self._state == State.CONNECTING and self._st.peer_id is not None and not response.close:
        self._state = State.ESTABLISHED  # IKE_AUTH authenticated the peer
        self._st.forget_setup()          # the response is built: AUTH and the Child SA's keys are done
    if response.close and response.reason is DownReason.DELETED_BY_PEER and self._adopt_peer_rekey():
        response = Response(response.payloads)   # the peer's new IKE SA carries on: see _adopt_peer_rekey
    self._respond_to(message_id, exchange, response, addr)
    if self._st.redirected_to is not None and self._redirect_deadline is None and self._state == State.ESTABLISHED:
        # RFC 5685 §6: the client deletes the SA; if it does not, we do (as strongSwan, after half_open_timeout)
        self._redirect_deadline = self._now + self._st.config.half_open_timeout
    self._queue_followups(response.followups)
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
    data = self._respond(msg, response, addr)
    self._st.init_response = data[0]


def dispatch(self: IkeSa, exchange: int, payloads: tuple[Payload, ...]) -> Response | None:
    responder = responder_for(exchange, self._state, self._st.is_initiator, payloads)
    if responder is None:
        return None
    return responder.respond(self._st, payloads, self._pending.task if self._pending else None)


def respond(self: IkeSa, msg: Message, response: Response, addr: Address) -> tuple[bytes, ...]:
    return self._respond_to(msg.message_id, msg.exchange, response, addr)


def respond_to(self: IkeSa, message_id: int, exchange: int, response: Response, addr: Address) -> tuple[bytes, ...]:
    data = self._encode(exchange, message_id, response.payloads, response=True)
    self._last_response = (message_id, data)
    self._peer_id = message_id + 1
    self._reassembly.pop(False, None)
    self._outbox.extend((d, addr) for d in data)
    if response.close:
        self._close(response.reason)
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
