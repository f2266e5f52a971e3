"""``IkeSa``: one IKE SA as a sans-I/O state machine (in the manner of aioquic).

Feed it datagrams with :meth:`IkeSa.receive`, call :meth:`IkeSa.handle_timer`
when :meth:`IkeSa.get_timer` says so, send what :meth:`IkeSa.datagrams_to_send`
returns, and act on :meth:`IkeSa.next_event`. It never touches a socket and
keeps time only by ``now``, any monotonic float the caller supplies (the wall
clock for certificate validity is the ``wall_clock`` parameter).

Transport rules implemented here (RFC 7296 §2.1-§2.3): message IDs with a
window of one in each direction; our requests (all fragments) are retransmitted with
exponential back-off (strongSwan's 4 s x 1.8^n, 5 retransmissions) until a
response arrives or we give up (:class:`PeerUnreachable`); a retransmitted
request of the peer is answered with the stored response, never processed twice.

IKE fragmentation (RFC 7383, ``fragments.py``) lives in the encode/decode path:
:meth:`IkeSa._encode` returns a message as one datagram or as Encrypted Fragment
datagrams, and :meth:`IkeSa._on_fragment` verifies each fragment as it arrives and
hands a reassembled message to the same code as an unfragmented one.

Exchanges live in ``exchanges/``: our requests are :class:`~.exchanges.base.Task`
objects, known here only by what they declare (never by their class); the peer's
requests are answered by the row of ``exchanges/responders.RESPONDERS`` that
serves them. ``exchanges/__init__.py`` says where a new exchange goes.

A request may be answered later: a responder that returns ``Response(awaits=...)`` (a
gateway relaying EAP to RADIUS, ``auth = eap-radius``) has emitted an ``EapRelayRequest``;
the request is held, its retransmissions are dropped, and :meth:`IkeSa.relay_reply` with
the backend's answer sends the response. A held request counts towards the half-open
timeout like any unauthenticated IKE SA; closing emits ``EapRelayAbandoned``.

Ports: the caller sends every datagram from :attr:`IkeSa.local_port` (the
connection's local_port until IKE_SA_INIT is done, then 4500, because tunsec
forces UDP encapsulation; the peer's port per strongSwan's float_ports, see
exchanges/ike_sa_init.py). Where neither port is 500 the caller adds and strips
the 4-byte non-ESP marker (``constants.has_marker``); the engine only ever sees
bare IKE messages.

Inbound Child SA SPIs: ``spi_allocator`` is a synchronous ``() -> int``. The
IKE service (tunsec.services.ike) backs it with SPIs it obtained from the
dataplane beforehand (GETSPI creates the larval SAs; it keeps a small pool
topped up). If it has none, it
raises :class:`~tunsec.ike.state.SpiUnavailable` and the Child SA fails with
TEMPORARY_FAILURE. Every SPI the engine took but will not use is handed back
as a :class:`~tunsec.ike.events.SpiUnused` event, so the IKE service can
DELETE the larval SA; a used one shows up in :class:`~tunsec.ike.events.ChildSaUp`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from .config import IkeConfig, default_rand_time
from .constants import NATT_PORT, ExchangeType, HeaderFlag, NotifyType
from .eap.relay import RelayReply
from .events import (
    Address,
    ChildSaDown,
    ChildSaInfo,
    DownReason,
    Event,
    IkeSaDown,
    IkeSaInfo,
    IkeSaRekeyed,
    NegotiationFailed,
    PeerUnreachable,
    Redirected,
    ResolveGateway,
    SpiUnused,
)
from .exchanges import create_child_sa, ike_auth, ike_auth_eap, ike_sa_init, informational, mobike, rekey_ike
from .exchanges.base import Awaiting, GiveUp, Outcome, Response, Task, notify
from .exchanges.responders import responder_for
from .fragments import FragmentRejected, FragmentStats, Reassembly, max_message_len
from .identity import Identity
from .message import (
    DecodeError,
    Message,
    Payload,
    SkfPayload,
    UnsupportedCriticalPayload,
    decode_message,
    decode_payloads,
    encode_payloads,
)
from .proposals import Suite, describe_all
from .redirect import MAX_REDIRECTS, REDIRECT_PERIOD, RESOLVE_TIMEOUT, Redirect, usable_gateway
from .sk import (
    IntegrityError,
    decrypt_message,
    encrypt_fragments,
    encrypt_message,
    fragment_content_len,
    open_sealed,
    sealed_len,
)
from .state import (
    AddressPool,
    ChildSa,
    DuplicateCheck,
    IkeRekey,
    IkeSaState,
    Jitter,
    Rng,
    SpiAllocator,
    SpiUnavailable,
    State,
    now_utc,
    random_jitter,
    random_spi_allocator,
)

__all__ = ["REKEYED_LINGER", "IkeSa", "State"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _notifies(method: Callable[Concatenate[IkeSa, _P], _R]) -> Callable[Concatenate[IkeSa, _P], _R]:
    """Tell the SA's watcher after a call that may change its output, timer or state."""

    @functools.wraps(method)
    def wrapper(self: IkeSa, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._watcher is not None:
                self._watcher(self)

    return wrapper


REKEYED_LINGER = 60.0  # how long a replaced IKE SA waits for the peer to delete it


@dataclass
class _Pending:
    """Our outstanding request (window size one)."""

    task: Task
    message_id: int
    datagrams: tuple[bytes, ...]  # one, or its fragments (each retransmission resends all)
    attempts: int = 0  # retransmissions so far
    deadline: float | None = None  # set when the datagram is handed to the caller


@dataclass
class _Waiting:
    """A peer's request whose answer waits for the AAA backend (see ``Awaiting``)."""

    message_id: int
    exchange: int
    addr: Address
    awaits: Awaiting


class IkeSa:
    # one per client on a gateway, for hours: no per-instance dict
    __slots__ = (
        "__weakref__",
        "_created",
        "_delayed",
        "_delete_reason",
        "_established_at",
        "_expire_at",
        "_frag_stats",
        "_heir",
        "_last_heard",
        "_last_response",
        "_linger_until",
        "_next_id",
        "_now",
        "_outbox",
        "_peer_id",
        "_pending",
        "_queue",
        "_reassembly",
        "_redirect_deadline",
        "_redirect_history",
        "_rekey_at",
        "_resolve_deadline",
        "_st",
        "_state",
        "_successor",
        "_waiting",
        "_watcher",
    )

    def __init__(
        self,
        config: IkeConfig,
        is_initiator: bool,
        now: float,
        rng: Rng = os.urandom,
        *,
        spi_allocator: SpiAllocator | None = None,
        remote_addr: Address | None = None,
        local_addr: Address | None = None,
        wall_clock: Callable[[], datetime] = now_utc,
        candidates: Sequence[IkeConfig] = (),
        jitter: Jitter | None = None,
        address_pool: AddressPool | None = None,
        fragment_stats: FragmentStats | None = None,
        load: Callable[[], int] | None = None,
        refuse_duplicate: DuplicateCheck | None = None,
        has_contact: Callable[[IkeSaState], bool] | None = None,
    ) -> None:
        """``address_pool``: where a responder leases virtual IPs (connections with ``pools``).
        ``candidates``: for a responder, the connections this peer may be using (the
        endpoint passes all that match its address); IKE_SA_INIT and IKE_AUTH pick one.
        ``jitter(bound)``: how much earlier than rekey_time a rekey fires, in [0, bound]
        (random by default; tests pass a fixed one). ``fragment_stats``: counters to add
        this SA's IKE fragments to (the endpoint shares one among its SAs). ``load()``: how
        many established IKE SAs the endpoint holds (a gateway's ``redirect_when`` in IKE_AUTH).
        ``refuse_duplicate``: a responder asks it in IKE_AUTH once the peer is authenticated
        (the endpoint's ``unique = keep``). ``has_contact``: an initiator asks it before its
        INITIAL_CONTACT (the endpoint: another IKE SA with the same identities is up).
        """
        if remote_addr is None:
            if config.remote_addr is None:
                raise ValueError(f"connection {config.name}: no remote address to initiate to")
            remote_addr = (config.remote_addr, config.remote_port)
        self._st = IkeSaState(
            config,
            is_initiator,
            rng,
            spi_allocator or random_spi_allocator(rng),
            wall_clock,
            remote_addr,
            local_addr,
        )
        self._st.candidates = tuple(candidates)
        self._st.jitter = jitter or random_jitter(rng)
        self._st.address_pool = address_pool
        self._st.load = load
        self._st.original_initiator = is_initiator  # a rekeyed SA takes its predecessor's (_rekeyed_sa)
        self._st.refuse_duplicate = refuse_duplicate
        self._st.has_contact = has_contact
        if is_initiator:
            self._st.spi_i = _nonzero_spi(rng)
        else:
            self._st.spi_r = _nonzero_spi(rng)
        # an initiator's IKE_SA_INIT leaves from the connection's local_port (swanctl), as strongSwan's
        self._st.local_port = local_addr[1] if local_addr else config.local_port
        self._state = State.IDLE
        self._created = now
        self._now = now
        self._successor: IkeSa | None = None
        # after a rekey: the IKE SA that took our Child SAs (it shares the children dict),
        # so exchanges still finishing here act on them and their follow-ups run there
        self._heir: IkeSa | None = None
        self._rekey_at: float | None = None  # IKE SA rekey timer
        self._expire_at: float | None = None  # hard lifetime: rekey time + over_time
        self._delete_reason = DownReason.DELETED  # why we sent (or will send) our DELETE
        self._last_heard = now  # last authenticated message from the peer (for DPD)
        self._established_at: float | None = None
        self._linger_until = 0.0  # a REKEYED SA closes by then if the peer never deletes it
        self._next_id = 0  # message ID of our next request
        self._peer_id = 0  # message ID we expect in the peer's next request
        self._pending: _Pending | None = None
        # a list, not a deque: a deque keeps a 0.5 KiB block even when empty, which is what an
        # established IKE SA's queue is nearly all the time (its few tasks are popped from the front)
        self._queue: list[Task] = []
        # requests the peer refused for now (Task.retry), each to be queued at its time: a tuple,
        # empty (and shared) nearly always
        self._delayed: tuple[tuple[float, Task], ...] = ()
        self._last_response: tuple[int, tuple[bytes, ...]] | None = None
        self._waiting: _Waiting | None = None  # the peer's request we answer once the backend has
        self._frag_stats = fragment_stats if fragment_stats is not None else FragmentStats()
        # fragments of the peer's request [False] and of the response to ours [True], only
        # while some are held (most IKE SAs never see one: no memory for them)
        self._reassembly: dict[bool, Reassembly] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._watcher: Callable[[IkeSa], None] | None = None
        # Redirect (RFC 5685): when we give up waiting for an FQDN gateway's address; when a
        # gateway deletes a client it redirected in IKE_AUTH that did not delete the SA itself;
        # when this client was redirected in IKE_AUTH lately (loop detection, carried to the new SA)
        self._resolve_deadline: float | None = None
        self._redirect_deadline: float | None = None
        self._redirect_history: tuple[float, ...] = ()

    def watch(self, watcher: Callable[[IkeSa], None] | None) -> None:
        """Have ``watcher(self)`` called after each public call that may change this SA.

        The endpoint uses it to visit only the SAs that changed, never all of them.
        """
        self._watcher = watcher

    # ------------------------------------------------------------------ inspection

    @property
    def name(self) -> str:
        return self._st.name

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_initiator(self) -> bool:
        return self._st.is_initiator

    @property
    def is_closed(self) -> bool:
        return self._state == State.CLOSED

    @property
    def is_half_open(self) -> bool:
        """A responder SA that answered IKE_SA_INIT but is not authenticated yet."""
        return not self._st.is_initiator and self._state == State.CONNECTING

    @property
    def spi_i(self) -> bytes:
        return self._st.spi_i

    @property
    def spi_r(self) -> bytes:
        return self._st.spi_r

    @property
    def local_spi(self) -> bytes:
        return self._st.spi_i if self._st.is_initiator else self._st.spi_r

    @property
    def remote_addr(self) -> Address:
        return self._st.remote_addr

    @property
    def esp_remote(self) -> Address:
        """Where this SA's Child SAs send ESP: ``remote_addr``, unless a MOBIKE update of it
        still waits for its return routability check (exchanges/mobike.py)."""
        return self._st.esp_remote

    @property
    def mobike(self) -> bool:
        """Both sides announced MOBIKE (RFC 4555) in IKE_AUTH."""
        return self._st.mobike

    @property
    def local_port(self) -> int:
        return self._st.local_port

    @property
    def local_ip(self) -> str | None:
        """Our address, the one the peer talks to: the connection's local_addrs, else where its requests
        arrived if the socket said (IP_PKTINFO on a wildcard socket); None if neither is known."""
        return self._st.local_ip

    @property
    def config(self) -> IkeConfig:
        """The connection in use (a responder may switch candidates during IKE_AUTH)."""
        return self._st.config

    @property
    def peer_id(self) -> Identity | None:
        """The authenticated identity of the peer, once IKE_AUTH succeeded."""
        return self._st.peer_id

    def info(self) -> IkeSaInfo:
        """A snapshot for status displays; contains no key material."""
        st = self._st
        children = tuple(
            ChildSaInfo(
                c.name, c.unique_id, c.spi_in, c.spi_out, c.suite.esp_name if c.suite else "", c.local_ts, c.remote_ts
            )
            for c in self.children
        )
        return IkeSaInfo(
            self.name,
            self._state.value,
            st.is_initiator,
            st.spi_i,
            st.spi_r,
            st.config.local.id,
            st.peer_id,
            st.remote_addr,
            st.local_port,
            describe_all([st.proposal]) if st.proposal else None,
            self._established_at if self._established_at is not None else self._created,
            children,
        )

    @property
    def children(self) -> list[ChildSa]:
        if self._heir is not None:
            return []  # they belong to the IKE SA that replaced this one
        return [c for c in self._st.children.values() if c.installed]

    # ------------------------------------------------------------------ API

    @_notifies
    def initiate(self, child_name: str | None = None) -> None:
        """Start the IKE SA (initiator), or add a Child SA to an established one."""
        child_cfg = self._st.config.child(child_name) if child_name else None
        if self._state == State.IDLE and self._st.is_initiator:
            self._state = State.CONNECTING
            self._queue.append(ike_sa_init.IkeSaInitTask(self._st))
            self._queue.append(ike_auth.IkeAuthTask(child_cfg))
        elif self._state in (State.CONNECTING, State.ESTABLISHED) and child_cfg is not None:
            self._queue.append(create_child_sa.CreateChildTask(child_cfg))
        else:
            raise RuntimeError(f"cannot initiate on an IKE SA in state {self._state.value}")
        self._start_next()

    @_notifies
    def rekey_child(self, unique_id: int) -> None:
        """Replace a Child SA with a new one (CREATE_CHILD_SA with REKEY_SA).

        Does nothing while a rekey of it is under way or after either side replaced it.
        """
        child = self._child_by_id(unique_id)
        if child.rekey_at == float("inf"):
            return
        child.rekey_at = float("inf")
        self._queue.append(create_child_sa.CreateChildTask(child.config, rekey=child))
        self._start_next()

    @_notifies
    def delete_child(self, unique_id: int, reason: DownReason = DownReason.DELETED) -> None:
        """Delete one Child SA with an INFORMATIONAL DELETE."""
        child = self._child_by_id(unique_id)
        self._queue.append(informational.DeleteChildTask([child], reason))
        self._start_next()

    @_notifies
    def rekey(self) -> None:
        """Replace the IKE SA with a new one (CREATE_CHILD_SA); see ``take_successor``."""
        if self._state == State.ESTABLISHED and not self._rekeying():
            self._queue.append(rekey_ike.RekeyIkeTask(self._st))
            self._start_next()

    @property
    def heir(self) -> IkeSa | None:
        """The IKE SA that replaced this one by a rekey; it shares this one's Child SAs."""
        return self._heir

    def take_successor(self) -> IkeSa | None:
        """The IKE SA that replaced this one after a rekey (handed out once)."""
        successor, self._successor = self._successor, None
        return successor

    @_notifies
    def send_liveness(self) -> None:
        """Queue an empty INFORMATIONAL (dead peer detection)."""
        if self._state == State.ESTABLISHED:
            self._queue.append(informational.LivenessTask())
            self._start_next()

    @_notifies
    def update_addresses(self, local: Address | None = None) -> bool:
        """We moved (MOBIKE, RFC 4555 §3.5): send UPDATE_SA_ADDRESSES so that the peer moves the
        IKE SA and its Child SAs to the address this request leaves from. ``local``: our new
        (address, port), for NAT detection. False if MOBIKE was not negotiated, the SA is not up
        or we are not its original initiator."""
        if self._state != State.ESTABLISHED or not self._st.mobike or not self._st.original_initiator:
            return False  # RFC 4555 §3.1: the original initiator decides which addresses are used
        if local is not None:
            self._st.local_addr = local
        pending = self._pending
        if pending is not None and isinstance(pending.task, mobike.UpdateSaAddressesTask):
            # one is out (maybe sent while we had no address): its retransmission leaves from
            # the address we have now, so send it again at once rather than after the backoff
            if pending.deadline is not None:
                pending.deadline = min(pending.deadline, self._now)
            return True
        if not self._queued(mobike.UpdateSaAddressesTask):
            self._queue.append(mobike.UpdateSaAddressesTask(local))
        self._start_next()
        return True

    @_notifies
    def send_invalid_spi(self, spi: int) -> bool:
        """Queue an INFORMATIONAL with an INVALID_SPI notify for ``spi`` (established SAs only)."""
        if self._state != State.ESTABLISHED:
            return False
        self._queue.append(informational.InvalidSpiTask(spi))
        self._start_next()
        return True

    @_notifies
    def delete(self, now: float | None = None, reason: DownReason = DownReason.DELETED) -> None:
        """Delete the IKE SA and its Child SAs (INFORMATIONAL DELETE if established)."""
        if self._state == State.ESTABLISHED:
            self._state = State.DELETING
            self._delete_reason = reason
            self._abort_queue()
            self._queue.append(informational.DeleteIkeTask())
            self._start_next()
        elif self._state not in (State.DELETING, State.REKEYED):
            self._close(reason)

    @_notifies
    def drop(self, reason: DownReason) -> None:
        """Forget the IKE SA and its Child SAs without telling the peer (it is gone or replaced)."""
        self._close(reason)

    @_notifies
    def receive(self, datagram: bytes, addr: Address, now: float, local_addr: Address | None = None) -> None:
        """Process one IKE message (without non-ESP marker) from ``addr``.

        ``local_addr`` is the (IP, port) it arrived on, if the caller knows it.
        """
        self._now = now
        if self._state == State.CLOSED:
            return
        try:
            msg = decode_message(datagram)
        except DecodeError as exc:
            log.debug("%s: dropping undecodable message from %s: %s", self.name, addr, exc)
            return
        if not self._addressed_to_us(msg):
            return
        if msg.payloads and isinstance(msg.payloads[-1], SkfPayload):
            self._on_fragment(msg, datagram, addr, local_addr)
        elif msg.is_response:
            self._on_response(msg, datagram, addr, local_addr)
        else:
            self._on_request(msg, datagram, addr, local_addr)
        self._schedule()
        self._start_next()

    @_notifies
    def relay_reply(self, reply: RelayReply, now: float) -> bool:
        """The AAA backend's answer to the last ``EapRelayRequest``: the held request is answered.
        False if nothing waits for it any more (the SA closed meanwhile): the caller drops it."""
        self._now = now
        waiting = self._waiting
        if waiting is None or self._state == State.CLOSED:
            return False
        self._waiting = None
        response = waiting.awaits.resume(self._st, reply)
        self._answer(waiting.message_id, waiting.exchange, response, waiting.addr)
        self._schedule()
        self._start_next()
        return True

    @_notifies
    def handle_timer(self, now: float) -> None:
        self._now = now
        if self._state == State.CLOSED:
            return
        self._expire_reassembly(now)
        if self._resolve_deadline is not None and now >= self._resolve_deadline:
            self._resolve_failed(f"no address for gateway {self._st.resolving} within {RESOLVE_TIMEOUT:.0f} s")
            return
        if self._redirect_deadline is not None and now >= self._redirect_deadline:
            self._redirect_deadline = None
            log.debug("%s: the client we redirected did not delete its IKE SA; deleting it", self.name)
            self.delete(now, DownReason.REDIRECTED)
        if self._state == State.ESTABLISHED:
            self._fire_maintenance(now)
        if self._state == State.REKEYED and now >= self._linger_until:
            self._close(DownReason.REKEYED)
            return
        if self.is_half_open and now >= self._created + self._st.config.half_open_timeout:
            self._close(DownReason.HALF_OPEN_TIMEOUT)
            return
        pending = self._pending
        if pending is None or pending.deadline is None or now < pending.deadline:
            return
        if pending.attempts >= self._st.config.retransmit.tries:
            self._give_up(pending)
            return
        pending.attempts += 1
        pending.deadline = None
        log.debug("%s: retransmit %d of message %d", self.name, pending.attempts, pending.message_id)
        self._outbox.extend((data, self._st.remote_addr) for data in pending.datagrams)

    def get_timer(self) -> float | None:
        timers = [t for t in (r.deadline for r in self._reassembly.values()) if t is not None]
        if self._pending is not None and self._pending.deadline is not None:
            timers.append(self._pending.deadline)
        if self.is_half_open:
            timers.append(self._created + self._st.config.half_open_timeout)
        if self._state == State.REKEYED:
            timers.append(self._linger_until)
        for deadline in (self._resolve_deadline, self._redirect_deadline):
            if deadline is not None:
                timers.append(deadline)
        if self._state == State.ESTABLISHED:
            timers += self._maintenance_timers()
        return min(timers) if timers else None

    # ------------------------------------------------------------------ rekey and DPD timers

    def _jittered(self, period: float, rand_time: float | None) -> float:
        """``now + period`` minus a random 0..rand_time (strongSwan's rand_time) against collisions."""
        bound = default_rand_time(period) if rand_time is None else min(rand_time, period)
        assert self._st.jitter is not None
        return self._now + period - min(max(self._st.jitter(bound), 0.0), bound)

    def _schedule(self) -> None:
        """Arm the IKE and Child SA rekey timers that are not armed yet."""
        heir = self._heir
        if heir is not None and not heir.is_closed:  # a child that came up here lives there
            heir._now = max(heir._now, self._now)
            heir._schedule()
            heir._changed()
        if self._state != State.ESTABLISHED:
            return
        if self._established_at is None:
            self._established_at = self._now
        cfg = self._st.config
        if self._rekey_at is None and cfg.rekey_time:
            self._rekey_at = self._jittered(cfg.rekey_time, cfg.rand_time)
            # strongSwan deletes an IKE SA whose rekey did not succeed over_time after it was due
            over = default_rand_time(cfg.rekey_time) if cfg.over_time is None else cfg.over_time
            self._expire_at = self._rekey_at + over
        for child in self._st.children.values():
            if child.installed and child.rekey_at is None and child.config.rekey_time:
                child.rekey_at = self._jittered(child.config.rekey_time, child.config.rand_time)

    def _rearm_failed_rekey(self, task: Task) -> None:
        """A refused rekey (e.g. TEMPORARY_FAILURE after a collision) is tried again soon."""
        retry = self._retry_at()
        # a rekey asked for by hand (no timer armed) is tried again too if the peer was only busy
        if task.rekeys_ike_sa and (self._rekey_at == float("inf") or (task.try_again and self._rekey_at is None)):
            if self._expire_at is not None:   # before the hard lifetime (a short over_time)
                retry = min(retry, self._now + max(self._expire_at - self._now, 0.0) / 2)
            self._rekey_at = retry
        old = task.rekeying
        if old is not None and old.installed and old.rekeyed_by_us is None and old.rekey_at == float("inf"):
            old.rekey_at = retry

    def _retry_at(self) -> float:
        """When a request the peer refused for now goes again: 2-10 s from now, at random, so that
        two sides that refused each other do not cross again."""
        return self._now + 2.0 + 8.0 * int.from_bytes(self._st.rng(2), "big") / 0xFFFF

    def _delay_retry(self, task: Task) -> None:
        """Send what ``task.retry()`` asks for again a little later, on the heir once this SA is replaced."""
        again = task.retry()
        if again is not None:
            at = self._retry_at()
            log.debug("%s: trying the refused request again in %.1f s", self.name, at - self._now)
            self._delay(at, again)

    def _delay(self, at: float, task: Task) -> None:
        heir = self._heir
        if heir is None:
            self._delayed += ((at, task),)
        elif not heir.is_closed:
            heir._delay(at, task)
            heir._changed()

    def _dpd_at(self) -> float | None:
        delay = self._st.config.dpd_delay
        if not delay or self._pending is not None or self._queue:
            return None  # an exchange in flight proves liveness (or its retransmits will fail)
        return self._last_heard + delay

    def _maintenance_timers(self) -> list[float]:
        timers = [c.rekey_at for c in self._st.children.values() if c.installed and c.rekey_at is not None]
        if self._rekey_at is not None:
            timers.append(self._rekey_at)
        if self._expire_at is not None:
            timers.append(self._expire_at)
        timers += [at for at, _ in self._delayed]
        dpd = self._dpd_at()
        if dpd is not None:
            timers.append(dpd)
        return [t for t in timers if t != float("inf")]

    def _fire_maintenance(self, now: float) -> None:
        if self._expire_at is not None and now >= self._expire_at:
            self._expire()
            return
        if self._rekey_at is not None and now >= self._rekey_at:
            self._rekey_at = float("inf")  # the successor arms its own timer
            self.rekey()
        for child in list(self._st.children.values()):
            if child.installed and child.rekey_at is not None and now >= child.rekey_at:
                self.rekey_child(child.unique_id)
        if any(now >= at for at, _ in self._delayed):
            self._queue += [task for at, task in self._delayed if now >= at]
            self._delayed = tuple(d for d in self._delayed if now < d[0])
            self._start_next()
        dpd = self._dpd_at()
        if dpd is not None and now >= dpd:
            self.send_liveness()

    def _expire(self) -> None:
        """The hard lifetime (rekey time + over_time): gone now. The peer hears a DELETE once if the
        window is free; an exchange stuck in retransmission does not hold the SA any longer.
        strongSwan differs: its delete_ike_sa_job queues the DELETE behind the active exchange,
        so a late answer to a rekey still saves the SA (the service re-initiates an expired SA's
        children, see services/ike/ikesas.py)."""
        log.debug("%s: IKE SA reached its hard lifetime (rekey_time + over_time)", self.name)
        if self._pending is None:
            self._send_once(informational.DeleteIkeTask())
        self._close(DownReason.EXPIRED)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        pending = self._pending
        if pending is not None and pending.deadline is None and out:
            pending.deadline = now + self._st.config.retransmit.delay(pending.attempts)
        return out

    def next_event(self) -> Event | None:
        return self._st.events.pop(0) if self._st.events else None

    # ------------------------------------------------------------------ requests we send

    def _start_next(self) -> None:
        while self._queue and self._obsolete(self._queue[0]):
            self._queue.pop(0)  # nothing was built for it yet: nothing to undo
        if self._pending is not None or not self._queue or self._state == State.CLOSED:
            return
        if self._st.resolving is not None:
            return  # the gateway's address is not known yet (gateway_resolved)
        if self._state == State.CONNECTING and not self._queue[0].runs_while_connecting:
            return  # other exchanges wait until the IKE SA is authenticated
        task = self._queue.pop(0)
        if not self._send_request(task, self._next_id):
            self._start_next()   # nothing went out: the next request may

    def _send_request(self, task: Task, message_id: int) -> bool:
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
        self._pending = _Pending(task, message_id, data)
        self._outbox.extend((d, self._st.remote_addr) for d in data)
        return True

    def _encode(self, exchange: int, message_id: int, payloads: list[Payload], response: bool) -> tuple[bytes, ...]:
        """The message as one datagram, or as its fragments (RFC 7383) if it does not fit."""
        flags = HeaderFlag.INITIATOR if self._st.is_initiator else HeaderFlag.NONE
        if response:
            flags |= HeaderFlag.RESPONSE
        msg = Message(self._st.spi_i, self._st.spi_r, exchange, int(flags), message_id, tuple(payloads))
        if exchange == ExchangeType.IKE_SA_INIT:
            return (msg.encode(),)  # never fragmented: there are no keys yet
        tx = self._st.tx
        assert tx is not None
        limit = self._fragment_limit()
        inner = encode_payloads(msg.payloads)  # once, for the size check and the encryption
        if limit is None or sealed_len(len(inner), tx) <= limit:
            return (encrypt_message(msg, tx, inner),)
        fragments = encrypt_fragments(msg, tx, fragment_content_len(tx, limit), inner)
        self._frag_stats.messages_fragmented += 1
        self._frag_stats.fragments_sent += len(fragments)
        log.debug("%s: splitting IKE message %d into %d fragments of at most %d bytes",
                  self.name, message_id, len(fragments), limit)
        return tuple(fragments)

    def _fragment_limit(self) -> int | None:
        """The largest IKE message we send whole; None if we send no fragments (fragments.py)."""
        st = self._st
        mode = st.config.fragmentation
        if mode == "force" or (mode == "yes" and st.peer_fragmentation):
            return max_message_len(st.config.fragment_size, st.remote_addr[0], st.local_port, st.remote_addr[1])
        return None

    def _on_response(self, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
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
            self._last_heard = self._now
        self._accept_response(pending, payloads)

    def _accept_response(self, pending: _Pending, payloads: tuple[Payload, ...]) -> None:
        self._pending = None
        self._reassembly.pop(True, None)
        outcome = pending.task.process(self._st, payloads)
        self._after(pending, outcome)

    def _after(self, pending: _Pending, outcome: Outcome) -> None:
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

    def _send_once(self, task: Task) -> None:
        """A request that is never retransmitted (an error report just before closing)."""
        data = self._encode(task.exchange, self._next_id, task.build(self._st), response=False)
        self._next_id += 1
        self._outbox.extend((d, self._st.remote_addr) for d in data)

    def _give_up(self, pending: _Pending) -> None:
        tries = self._st.config.retransmit.tries
        if pending.task.on_give_up is GiveUp.CLOSE:
            self._close(self._delete_reason)
            return
        if self._heir is not None:  # the peer is done with the replaced SA; the heir carries on
            self._close(DownReason.REKEYED)
            return
        log.debug("%s: giving up after %d retransmissions", self.name, tries)
        self._st.emit(PeerUnreachable(self.name, tries))
        dead = pending.task.on_give_up is GiveUp.DEAD_PEER
        self._close(DownReason.DEAD_PEER if dead else DownReason.PEER_UNREACHABLE)

    # ------------------------------------------------------------------ redirect (RFC 5685)

    @_notifies
    def gateway_resolved(self, gateway: str, addresses: Sequence[str], now: float) -> None:
        """The addresses ``gateway`` (from :class:`ResolveGateway`) resolved to, best first;
        none if the lookup failed. The IKE SA sends its IKE_SA_INIT to the first usable one."""
        st = self._st
        if st.resolving != gateway or self._state == State.CLOSED:
            return  # an answer for a lookup we no longer wait for
        self._now = now
        usable = [a for a in addresses if usable_gateway(a)]
        if not usable:
            self._resolve_failed(f"gateway {gateway} has no usable address")
            return
        st.resolving, self._resolve_deadline = None, None
        st.remote_addr = (usable[0], st.config.remote_port)
        log.debug("%s: gateway %s is at %s", self.name, gateway, usable[0])
        self._start_next()

    def _await_address(self) -> None:
        st = self._st
        assert st.resolving is not None
        self._resolve_deadline = self._now + RESOLVE_TIMEOUT
        st.emit(ResolveGateway(self.name, st.resolving))

    def _resolve_failed(self, why: str) -> None:
        self._st.emit(NegotiationFailed(self.name, "REDIRECT", why))
        self._st.resolving, self._resolve_deadline = None, None
        self._close(DownReason.NEGOTIATION_FAILED)

    def _follow_auth_redirect(self, redirect: Redirect) -> None:
        """Start a new IKE SA at the gateway the IKE_AUTH response named (RFC 5685 §6), unless
        that makes more than MAX_REDIRECTS within REDIRECT_PERIOD (a loop between gateways)."""
        st, now = self._st, self._now
        history = (*(t for t in self._redirect_history if now - t < REDIRECT_PERIOD), now)
        if len(history) > MAX_REDIRECTS:
            st.emit(NegotiationFailed(self.name, "REDIRECT", f"redirected more than {MAX_REDIRECTS} times within "
                                      f"{REDIRECT_PERIOD:.0f} s, last to {redirect.gateway}: not followed"))
            return
        old = st.remote_addr[0]
        st.emit(Redirected(self.name, old, redirect.gateway, in_auth=True))
        remote = st.remote_addr if redirect.fqdn else (redirect.gateway, st.config.remote_port)
        new = IkeSa(
            st.config,
            True,
            now,
            st.rng,
            spi_allocator=st.spi_allocator,
            remote_addr=remote,
            local_addr=None,  # as a fresh initiation: from local_port, the address the route picks
            wall_clock=st.wall_clock,
            jitter=st.jitter,
            fragment_stats=self._frag_stats,
        )
        new._redirect_history = history
        new._st.redirected_from = old
        if redirect.fqdn:
            new._st.resolving = redirect.gateway
            new._await_address()
        new.initiate(st.auth_redirect_child)
        self._successor = new  # the endpoint routes its SPI (it is no heir: nothing is shared)

    # ------------------------------------------------------------------ requests we answer

    def _on_request(self, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
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

    def _serve(self, msg: Message, payloads: tuple[Payload, ...], addr: Address, local: Address | None) -> None:
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

    def _answer(self, message_id: int, exchange: int, response: Response, addr: Address) -> None:
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

    def _adopt_peer_rekey(self) -> bool:
        """The peer deletes this IKE SA while our rekey request is still out and we have answered
        its rekey (a collision, RFC 7296 §2.8.2): its new SA won, and its DELETE overtook the
        answer to ours.  Take its SA as the successor and drop our request (the peer holds our
        SA as the redundant one and lets it go) instead of closing with the Child SAs."""
        pending = self._pending.task if self._pending else None
        theirs = pending.yield_to_peer_rekey() if pending is not None else None
        if pending is None or theirs is None:
            return False
        self._st.rekey = theirs
        self._pending = None
        pending.abort(self._st)
        log.debug("%s: IKE SA rekey collision: the peer's SA won; its DELETE came before our answer", self.name)
        return True

    def _queue_followups(self, tasks: Sequence[Task]) -> None:
        kept = [
            task for task in tasks
            # a liveness check on its way already, or moot, is not asked for again
            if not (task.coalesces and (self._state != State.ESTABLISHED or self._queued(type(task))))
        ]
        self._enqueue(kept)

    def _queued(self, kind: type[Task]) -> bool:
        """A task of this kind waits or is in flight."""
        tasks = [*self._queue, *([self._pending.task] if self._pending else [])]
        return any(type(t) is kind for t in tasks)

    def _respond_init(self, msg: Message, datagram: bytes, addr: Address) -> None:
        responder = responder_for(msg.exchange, self._state, self._st.is_initiator, msg.payloads)
        if responder is None:
            return
        self._st.spi_i = msg.spi_i
        self._st.init_request = datagram
        self._state = State.CONNECTING
        response = responder.respond(self._st, msg.payloads, None)
        data = self._respond(msg, response, addr)
        self._st.init_response = data[0]

    def _dispatch(self, exchange: int, payloads: tuple[Payload, ...]) -> Response | None:
        responder = responder_for(exchange, self._state, self._st.is_initiator, payloads)
        if responder is None:
            return None
        return responder.respond(self._st, payloads, self._pending.task if self._pending else None)

    def _rekeying(self) -> bool:
        tasks = [*self._queue, *([self._pending.task] if self._pending else [])]
        return any(t.rekeys_ike_sa for t in tasks)

    def _respond(self, msg: Message, response: Response, addr: Address) -> tuple[bytes, ...]:
        return self._respond_to(msg.message_id, msg.exchange, response, addr)

    def _respond_to(self, message_id: int, exchange: int, response: Response, addr: Address) -> tuple[bytes, ...]:
        data = self._encode(exchange, message_id, response.payloads, response=True)
        self._last_response = (message_id, data)
        self._peer_id = message_id + 1
        self._reassembly.pop(False, None)
        self._outbox.extend((d, addr) for d in data)
        if response.close:
            self._close(response.reason)
        return data

    def _decrypt_request(self, msg: Message, datagram: bytes) -> tuple[Payload, ...] | None:
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

    # ------------------------------------------------------------------ fragments (RFC 7383)

    def _on_fragment(self, msg: Message, datagram: bytes, addr: Address, local: Address | None) -> None:
        """An Encrypted Fragment message: verified before it is kept (§2.6); the message
        it completes goes where an unfragmented one would."""
        skf = msg.payloads[-1]
        assert isinstance(skf, SkfPayload)
        if self._st.rx is None or msg.exchange == ExchangeType.IKE_SA_INIT:
            return
        pending = self._pending
        if msg.is_response:
            if pending is None or msg.message_id != pending.message_id or msg.exchange != pending.task.exchange:
                return
            buffer = self._reassembly.setdefault(True, Reassembly())
        else:
            last = self._last_response
            if last is not None and msg.message_id == last[0]:
                # a retransmitted request: only its first fragment, once verified, gets the response again
                # (§2.6.1), so neither each fragment nor a forged one multiplies our answer
                if msg.message_id + 1 == self._peer_id and skf.number == 1 and self._verified(msg, datagram):
                    self._outbox.extend((d, addr) for d in last[1])
                return
            if msg.message_id != self._peer_id:
                return
            buffer = self._reassembly.setdefault(False, Reassembly())
        whole = self._store_fragment(buffer, msg, skf, datagram)
        if whole is None:
            return
        first, plain = whole
        if msg.is_response:
            assert pending is not None
            try:
                payloads = decode_payloads(first, plain)
            except DecodeError:
                return  # as an unfragmented response that does not parse: keep retransmitting
            self._last_heard = self._now
            self._accept_response(pending, payloads)
            return
        try:
            payloads = _decode_inner(first, plain)
        except _Refuse as refusal:
            self._respond(msg, Response([refusal.payload]), addr)
            return
        self._serve(msg, payloads, addr, local)

    def _store_fragment(
        self, buffer: Reassembly, msg: Message, skf: SkfPayload, datagram: bytes
    ) -> tuple[int, bytes] | None:
        """Verify and keep one fragment; the whole message's (first payload type, plaintext) once complete."""
        assert self._st.rx is not None
        stats = self._frag_stats
        try:
            plain = open_sealed(datagram, msg, self._st.rx)
        except IntegrityError:
            stats.fragments_dropped += 1
            log.debug("%s: fragment %d/%d of message %d failed verification", self.name, skf.number, skf.total,
                      msg.message_id)
            return None
        try:
            whole = buffer.add(msg.message_id, skf, plain, self._now)
        except FragmentRejected as exc:
            stats.fragments_dropped += 1
            log.debug("%s: fragment %d/%d of message %d dropped: %s", self.name, skf.number, skf.total,
                      msg.message_id, exc)
            return None
        stats.fragments_received += 1
        if whole is not None:
            stats.messages_reassembled += 1
            log.debug("%s: reassembled message %d from %d fragments", self.name, msg.message_id, skf.total)
        return whole

    def _verified(self, msg: Message, datagram: bytes) -> bool:
        assert self._st.rx is not None
        try:
            open_sealed(datagram, msg, self._st.rx)
        except IntegrityError:
            self._frag_stats.fragments_dropped += 1
            return False
        return True

    def _expire_reassembly(self, now: float) -> None:
        """Drop an incomplete message once REASSEMBLY_TIMEOUT passed since its first fragment."""
        for key, buffer in list(self._reassembly.items()):
            deadline = buffer.deadline
            if deadline is not None and now >= deadline:
                dropped = buffer.clear()
                del self._reassembly[key]
                self._frag_stats.fragments_dropped += dropped
                log.debug("%s: incomplete fragmented message dropped after its timeout", self.name)

    def _open(self, msg: Message, datagram: bytes) -> tuple[Payload, ...] | None:
        """Decrypt a response; anything wrong with it means drop (and keep retransmitting)."""
        if self._st.rx is None:
            return None
        try:
            return decrypt_message(datagram, msg, self._st.rx)
        except (IntegrityError, DecodeError):
            return None

    def _float(self, addr: Address, local: Address | None) -> None:
        """Follow the peer to the address of its latest authenticated request (RFC 7296 §2.23)."""
        self._st.remote_addr = addr
        if local is not None:
            self._st.local_addr = local
            self._st.local_port = local[1]
        else:
            self._st.local_port = NATT_PORT  # after IKE_SA_INIT everything is on 4500

    def _rekeyed_sa(self, rekey: IkeRekey) -> IkeSa:
        """A new IKE SA keyed by a rekey exchange of this one (RFC 7296 §2.18)."""
        old = self._st
        assert old.prf is not None and old.keys is not None
        new = IkeSa(
            old.config,
            rekey.we_initiated,
            self._now,
            old.rng,
            spi_allocator=old.spi_allocator,
            remote_addr=old.remote_addr,
            local_addr=old.local_addr,
            wall_clock=old.wall_clock,
            jitter=old.jitter,
            address_pool=old.address_pool,
            fragment_stats=self._frag_stats,
        )
        st = new._st
        st.spi_i, st.spi_r, st.local_port = rekey.spi_i, rekey.spi_r, old.local_port
        st.proposal, st.suite = rekey.proposal, Suite.of(rekey.proposal)
        st.nonce_i, st.nonce_r = rekey.nonce_i, rekey.nonce_r
        st.peer_id, st.peer_hashes = old.peer_id, old.peer_hashes
        st.peer_fragmentation = old.peer_fragmentation
        st.mobike, st.esp_hold, st.nat_peer, st.nat_here = old.mobike, old.esp_hold, old.nat_peer, old.nat_here
        st.original_initiator = old.original_initiator
        st.install_keys(rekey.shared, (old.prf, old.keys.d))
        st.forget_setup()
        return new

    def _spawn_successor(self) -> None:
        """Build the IKE SA that replaces this one; it takes the Child SAs and queued work."""
        old, rekey = self._st, self._st.rekey
        assert rekey is not None
        old.rekey = None
        new = self._rekeyed_sa(rekey)
        st = new._st
        st.children = old.children  # shared: see _heir
        # the virtual IPs move with the Child SAs; the old SA must not release them
        st.peer_vips, st.own_vips, st.own_dns = old.peer_vips, old.own_vips, old.own_dns
        old.peer_vips = ()
        st.next_child_id = old.next_child_id
        new._state = State.ESTABLISHED
        # a rekey of ours still queued is moot: the IKE SA was just replaced
        new._queue = [t for t in self._queue if not t.rekeys_ike_sa]
        self._queue = []
        new._delayed, self._delayed = self._delayed, ()  # retries of refused requests go there too
        if st.esp_hold is not None and not new._queued(mobike.ReturnRoutabilityTask):
            # a MOBIKE return routability check was under way here: the successor, which holds
            # the Child SAs now, checks again (an answer on this SA would not release them there)
            new._queue.append(mobike.ReturnRoutabilityTask())
        # what was queued goes now: nothing else would start it before the next exchange there.  A
        # collision's DELETE of our redundant Child SA that waited there for the peer's rekey of that
        # Child SA left both Child SAs up for good (the rekey replaced it before the DELETE came)
        new._start_next()
        new._schedule()
        self._successor = self._heir = new
        self._state = State.REKEYED
        self._linger_until = self._now + REKEYED_LINGER
        old.emit(IkeSaRekeyed(self.name, old.spi_i, old.spi_r, st.spi_i, st.spi_r))
        if rekey.we_initiated:
            self._queue.append(informational.DeleteIkeTask())
        if old.redundant is not None:
            new._successor = self._redundant_sa(old.redundant)
            old.redundant = None
        log.debug("%s: IKE SA rekeyed", self.name)

    def _redundant_sa(self, rekey: IkeRekey) -> IkeSa:
        """The loser of a rekey collision (RFC 7296 §2.8.2): no Child SAs, deleted by the
        side that initiated its exchange; the other side keeps it only to answer that
        DELETE.  It goes quietly, like a rekeyed IKE SA (the endpoint finds it as the
        successor's successor, so that its SPI is routed)."""
        sa = self._rekeyed_sa(rekey)
        sa._state = State.REKEYED
        sa._linger_until = self._now + REKEYED_LINGER
        if rekey.we_initiated:
            sa._queue.append(informational.DeleteIkeTask())
            sa._start_next()
        log.debug("%s: IKE SA rekey collision: %s redundant SA deleted by %s", self.name,
                  "our" if rekey.we_initiated else "the peer's", "us" if rekey.we_initiated else "the peer")
        return sa

    def _addressed_to_us(self, msg: Message) -> bool:
        st = self._st
        if msg.from_initiator == st.is_initiator:
            return False
        if not st.is_initiator and self._state == State.IDLE:
            return msg.exchange == ExchangeType.IKE_SA_INIT and not msg.is_response  # adopts SPIi
        if msg.spi_i != st.spi_i:
            return False
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            # responses to IKE_SA_INIT bring SPIr (or zero with COOKIE/errors); requests have zero
            return st.is_initiator or msg.spi_r == bytes(8)
        return msg.spi_r == st.spi_r

    # ------------------------------------------------------------------ teardown

    def _child_by_id(self, unique_id: int) -> ChildSa:
        for child in self.children:
            if child.unique_id == unique_id:
                return child
        raise KeyError(f"no Child SA {unique_id} in {self.name}")

    def _obsolete(self, task: Task) -> bool:
        """A queued rekey of a Child SA that the peer rekeyed, that we are deleting, or that went away, meanwhile."""
        old = task.rekeying
        return old is not None and (old.rekeyed_by_peer or old.deleting or self._st.children.get(old.spi_in) is not old)

    def _enqueue(self, tasks: Sequence[Task]) -> None:
        """Start follow-up exchanges here, or on the heir once this SA is replaced."""
        heir = self._heir
        if heir is None:
            self._queue.extend(tasks)
        elif tasks and not heir.is_closed:
            heir._enqueue(tasks)
            heir._start_next()
            heir._changed()

    def _changed(self) -> None:
        """Tell the watcher of a change made from outside this SA's API (by the SA it replaced)."""
        if self._watcher is not None:
            self._watcher(self)

    def _abort_queue(self) -> None:
        while self._queue:
            self._queue.pop(0).abort(self._st)

    def _close(self, reason: DownReason) -> None:
        if self._state == State.CLOSED:
            return
        was_up = self._state in (State.ESTABLISHED, State.DELETING)  # a REKEYED SA goes quietly
        if self._pending is not None:
            task, self._pending = self._pending.task, None
            self._end_pending(task)
        self._abort_queue()
        self._delayed = ()  # never built: nothing to undo
        self._reassembly.clear()
        self._waiting = None
        ike_auth_eap.closing(self._st)  # an EAP relay conversation the backend still holds
        if self._heir is not None:  # the Child SAs live on in the heir
            self._state = State.CLOSED
            log.debug("%s: replaced IKE SA closed: %s", self.name, reason)
            return
        for child in list(self._st.children.values()):
            if child.installed:
                self._st.emit(ChildSaDown(self.name, child.name, child.unique_id, child.spi_in, child.spi_out, reason))
            else:
                self._st.emit(SpiUnused(child.spi_in))
        self._st.children.clear()
        self._release_vips()
        if was_up:
            self._st.emit(IkeSaDown(self.name, reason))
        self._state = State.CLOSED
        log.debug("%s: IKE SA closed: %s", self.name, reason)


    def _release_vips(self) -> None:
        """Give the peer's leases back (they stay bound to its identity while it is offline)."""
        st = self._st
        if st.address_pool is not None and st.peer_id is not None:
            for lease in st.peer_vips:
                st.address_pool.release(lease, st.peer_id)
        st.peer_vips = ()

    def _end_pending(self, task: Task) -> None:
        """Our request will never be answered here: abort it, or hand what it leaves to the heir."""
        if self._heir is None:
            task.abort(self._st)
            return
        instead = task.handover(self._st)
        if task.rekeying is not None:
            self._rearm_failed_rekey(task)
        self._enqueue(instead)


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


def _nonzero_spi(rng: Rng) -> bytes:
    while True:
        spi = rng(8)
        if any(spi):
            return spi
