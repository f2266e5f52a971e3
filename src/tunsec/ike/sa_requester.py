"""Our requests from an IKE SA: the requester side of the exchange (RFC 7296 §2.1-§2.3).

One request at a time (window of one): the next queued ``Task`` is built and sent with
the next message ID (``_Pending``; ``IkeSa.handle_timer``, sa_timers.py, retransmits it), the matching
response goes to the task, and the task's ``Outcome`` decides what follows: a retry, the
end of the IKE SA, an authenticated SA, its follow-up exchanges. Without a response after
the last retransmission we give up (``PeerUnreachable``, or the task's own ``GiveUp``), unless
the peer's new address is still unproven (MOBIKE): the IKE SA then goes back to the old one
and the request goes on there (``mobike.go_back``). The queue: follow-ups added (here or on
the heir), a Child SA's rekey dropped once obsolete, the rest aborted when the IKE SA closes.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import ExchangeType
from .events import Address, DownReason, PeerUnreachable
from .exchanges import informational, mobike
from .exchanges.base import GiveUp, Outcome, Task
from .message import DecodeError, Message, Payload
from .sk import IntegrityError, decrypt_message
from .state import SpiUnavailable, State

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """Our outstanding request (window size one)."""

    task: Task
    message_id: int
    datagrams: tuple[bytes, ...]  # one, or its fragments (each retransmission resends all)
    to: Address  # where it was first sent (Task.resend_to picks where retransmissions go)
    attempts: int = 0  # retransmissions so far
    deadline: float | None = None  # set when the datagram is handed to the caller


def start_next(self: IkeSa) -> None:
    if self._expired and self._pending is None and self._state != State.CLOSED:
        self._end_expired()  # the exchange that held the expired SA ended
        return
    # anywhere in the queue, not only at its head: one kept behind another request would go once that is
    # answered, made valid again meanwhile (review revrekeytail F2); nothing was built for any of them yet
    self._queue[:] = [t for t in self._queue if not self._obsolete(t)]
    if self._pending is not None or not self._queue or self._state == State.CLOSED:
        return
    if self._st.resolving is not None:
        return  # the gateway's address is not known yet (gateway_resolved)
    if self._state == State.CONNECTING and not self._queue[0].runs_while_connecting:
        return  # other exchanges wait until the IKE SA is authenticated
    task = self._queue.pop(0)
    if not self._send_request(task, self._next_id):
        self._start_next()   # nothing went out: the next request may


def send_request(self: IkeSa, task: Task, message_id: int) -> bool:
    """Build and send ``task``'s request; False if it could not be built (nothing is pending)."""
    try:
        payloads = task.build(self._st)
    except SpiUnavailable:
        # no inbound SPI for now (the task reported it): not sent; a rekey is re-armed and a new Child
        # SA tried again later, as if the peer had refused them for now (an exception here used to
        # escape the timer, whose IKE SA then never fired again)
        self._rearm_failed_rekey(task)
        self._delay_retry(task)
        return False
    data = self._encode(task.exchange, message_id, payloads, response=False)
    if task.exchange == ExchangeType.IKE_SA_INIT:
        self._st.init_request = data[0]
    self._pending = _Pending(task, message_id, data, self._st.remote_addr)
    self._outbox.extend((d, self._st.remote_addr) for d in data)
    return True


def on_response(self: IkeSa, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
    pending = self._pending
    if pending is None or msg.message_id != pending.message_id or msg.exchange != pending.task.exchange:
        return
    if msg.exchange == ExchangeType.IKE_SA_INIT:
        payloads = msg.payloads
        self._st.init_response = datagram
        self._st.spi_r = msg.spi_r  # the keys are derived from it
    else:
        decrypted = self._open(msg, datagram)
        if decrypted is None:
            return
        payloads = decrypted
        heard_response(self, local)
    self._accept_response(pending, payloads)


def heard_response(self: IkeSa, local: Address | None) -> None:
    """An authenticated response arrived (whole, or the last of its fragments) at ``local``."""
    self._last_heard = self._now
    if local is not None and self._st.local_ip is None:
        # an initiator on a wildcard socket: where the peer's first authenticated answer arrived
        # is our address (the Child SAs are installed on it, status shows it); not from
        # IKE_SA_INIT's answer, which anyone could send
        self._st.local_addr = local


def accept_response(self: IkeSa, pending: _Pending, payloads: tuple[Payload, ...]) -> None:
    self._pending = None
    self._reassembly.pop(True, None)
    outcome = pending.task.process(self._st, payloads)
    self._after(pending, outcome)


def after(self: IkeSa, pending: _Pending, outcome: Outcome) -> None:
    if outcome == Outcome.RETRY and self._expired:
        self._next_id += 1   # not again: past the hard lifetime nothing new starts (sa_timers.expire)
        self._end_pending(pending.task)
        return
    if outcome == Outcome.RETRY:
        if pending.task.exchange == ExchangeType.IKE_SA_INIT:
            # IKE_SA_INIT is retried with message ID 0; the responder kept no state
            self._st.spi_r = bytes(8)
            if self._st.resolving is not None:  # redirected to an FQDN: look it up first
                self._queue.insert(0, pending.task)
                self._await_address()
                return
            self._send_request(pending.task, pending.message_id)
        else:  # any other exchange is retried as a new exchange (RFC 7296 §1.3)
            self._next_id += 1
            self._send_request(pending.task, self._next_id)
        return
    self._next_id += 1
    if outcome == Outcome.CLOSE:
        closing = self._state in (State.DELETING, State.REKEYED)
        self._close(self._delete_reason if closing else DownReason.NEGOTIATION_FAILED)
    elif outcome == Outcome.AUTH_FAILED:
        self._send_once(informational.AuthFailedTask())
        self._close(DownReason.AUTH_FAILED)
    elif outcome == Outcome.REDIRECT:
        self._state = State.ESTABLISHED  # authenticated: the gateway hears our DELETE
        redirect, self._st.auth_redirect = self._st.auth_redirect, None
        if redirect is not None:
            self._follow_auth_redirect(redirect)
        self.delete(self._now, DownReason.REDIRECTED)
    else:
        self._enqueue(pending.task.followups())
        if self._state == State.CONNECTING and self._st.peer_id is not None:
            self._state = State.ESTABLISHED
            self._st.forget_setup()
        if self._st.rekey is not None:
            self._spawn_successor()
        else:
            self._rearm_failed_rekey(pending.task)
            self._delay_retry(pending.task)


def send_once(self: IkeSa, task: Task) -> None:
    """A request that is never retransmitted (an error report just before closing)."""
    data = self._encode(task.exchange, self._next_id, task.build(self._st), response=False)
    self._next_id += 1
    self._outbox.extend((d, self._st.remote_addr) for d in data)


def give_up(self: IkeSa, pending: _Pending) -> None:
    tries = self._st.config.retransmit.tries
    if pending.task.on_give_up is GiveUp.CLOSE:
        self._close(self._delete_reason)
        return
    if self._heir is not None:  # the peer is done with the replaced SA; the heir carries on
        self._close(DownReason.REKEYED)
        return
    if self._state is State.DELETING:
        # we were deleting it (a terminate, a reload, a replacement): the request out before our
        # DELETE finds no peer, which ends the SA as the DELETE would have, not as a dead peer (whose
        # dpd_action would start what the operator just ended)
        self._close(self._delete_reason)
        return
    if self._expired:
        # the SA ends by its hard lifetime, which this exchange could only have saved it from: the
        # service reestablishes an expired SA (services/ike/ikesas.py _after_expiry), not a dead peer
        log.debug("%s: giving up after %d retransmissions past the hard lifetime", self.name, tries)
        self._close(DownReason.EXPIRED)
        return
    if mobike.go_back(self._st):
        # whichever request it was (the check, or one already out when an update, maybe an injected
        # copy, moved the SA): back where the Child SAs stayed, the request goes on there (from the
        # first try, same message ID), so that the peer's window and ours stay in step
        self._drops.mobike_checks_failed += 1
        pending.attempts, pending.deadline = 0, None
        pending.to = pending.task.resend_to(self._st, pending.to)
        self._outbox.extend((d, pending.to) for d in pending.datagrams)
        return
    log.debug("%s: giving up after %d retransmissions", self.name, tries)
    tasks = (pending.task, *self._queue, *(t for _, t in self._delayed))
    creating = tuple(dict.fromkeys(t.creates for t in tasks if t.creates is not None))
    self._st.emit(PeerUnreachable(self.name, tries, creating))
    dead = pending.task.on_give_up is GiveUp.DEAD_PEER
    self._close(DownReason.DEAD_PEER if dead else DownReason.PEER_UNREACHABLE)


def queued(self: IkeSa, kind: type[Task]) -> bool:
    """A task of this kind waits or is in flight."""
    tasks = [*self._queue, *([self._pending.task] if self._pending else [])]
    return any(type(t) is kind for t in tasks)


def rekeying(self: IkeSa) -> bool:
    tasks = [*self._queue, *([self._pending.task] if self._pending else [])]
    return any(t.rekeys_ike_sa for t in tasks)


def open_response(self: IkeSa, msg: Message, datagram: bytes) -> tuple[Payload, ...] | None:
    """Decrypt a response; anything wrong with it means drop (and keep retransmitting)."""
    if self._st.rx is None:
        return None
    try:
        return decrypt_message(datagram, msg, self._st.rx)
    except (IntegrityError, DecodeError):
        return None


def obsolete(self: IkeSa, task: Task) -> bool:
    """A queued rekey of a Child SA that the peer rekeyed, that we are deleting, or that went away, meanwhile."""
    old = task.rekeying
    return old is not None and (old.rekeyed_by_peer or old.deleting or self._st.children.get(old.spi_in) is not old)


def enqueue(self: IkeSa, tasks: Sequence[Task]) -> None:
    """Start follow-up exchanges here, or on the heir once this SA is replaced."""
    heir = self._heir
    if heir is None:
        self._queue[:0] = [t for t in tasks if t.jumps_queue]
        self._queue.extend(t for t in tasks if not t.jumps_queue)
    elif tasks and not heir.is_closed:
        heir._enqueue(tasks)
        heir._start_next()
        heir._changed()


def changed(self: IkeSa) -> None:
    """Tell the watcher of a change made from outside this SA's API (by the SA it replaced)."""
    if self._watcher is not None:
        self._watcher(self)


def abort_queue(self: IkeSa) -> None:
    while self._queue:
        self._queue.pop(0).abort(self._st)
