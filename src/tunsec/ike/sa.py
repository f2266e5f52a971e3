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

This file holds the public API, the state and the receive path (which SA a message is for,
request or response). Methods with a concern of their own live beside it, one concern per
file, and are assigned into the class body (so ``self._x()`` reads the same everywhere):
``sa_requester.py`` (our requests: their queue, window, sending, the response's outcome,
giving up), ``sa_responder.py`` (the peer's requests: serving, the stored response for
retransmissions, refusals, following the peer's address), ``sa_timers.py`` (every timer:
``get_timer``, ``handle_timer``; retransmission, rekey, DPD and lifetime timers),
``sa_fragments.py`` (the RFC 7383 glue above), ``sa_successor.py`` (rekey hand-over to the
new IKE SA), ``sa_redirect.py`` (RFC 5685), ``sa_configs.py`` (a reload), ``sa_teardown.py``
(closing; its Child SAs and leases ended, at close and as soon as we delete it).

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
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from . import (
    child_refusal,
    sa_configs,
    sa_fragments,
    sa_redirect,
    sa_requester,
    sa_responder,
    sa_successor,
    sa_teardown,
    sa_timers,
    state,
)
from .config import IkeConfig
from .constants import ExchangeType
from .eap.relay import RelayReply
from .events import Address, ChildSaInfo, DownReason, Event, IkeSaInfo
from .exchanges import create_child_sa, ike_auth, ike_sa_init, informational, mobike, rekey_ike
from .exchanges.base import Task
from .fragments import FragmentStats, Reassembly
from .identity import Identity
from .message import DecodeError, Message, SkfPayload, decode_message
from .peer_logs import PeerLogs
from .proposals import describe_all
from .redirect import canonical_gateway, refused_target
from .sa_requester import _Pending
from .sa_responder import _Answered, _Waiting
from .sa_successor import REKEYED_LINGER
from .spi_book import IkeSpiBook
from .spi_tag import IkeSpiTag, make_ike_spi
from .state import (
    AddressPool,
    ChildSa,
    DuplicateCheck,
    IkeSaState,
    Jitter,
    Rng,
    SelectorClaims,
    SpiAllocator,
    State,
    now_utc,
    random_jitter,
    random_spi_allocator,
)
from .stats import EndpointStats

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


class IkeSa:
    # one per client on a gateway, for hours: no per-instance dict
    __slots__ = (
        "__weakref__",
        "_created",
        "_delayed",
        "_delete_reason",
        "_drops",
        "_established_at",
        "_expire_at",
        "_expired",
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
        "_undeleted",
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
        ts_claims: SelectorClaims | None = None,
        fragment_stats: FragmentStats | None = None,
        drop_stats: EndpointStats | None = None,
        load: Callable[[], int] | None = None,
        refuse_duplicate: DuplicateCheck | None = None,
        has_contact: Callable[[IkeSaState], bool] | None = None,
        spi_tag: IkeSpiTag | None = None,
        address_role: state.AddressRole | None = None,
        spi_book: IkeSpiBook | None = None,
        peer_logs: PeerLogs | None = None,
    ) -> None:
        """``address_pool``: where a responder leases virtual IPs (connections with ``pools``).
        ``ts_claims``: the remote selectors other peers' Child SAs hold (no Child SA may take them).
        ``candidates``: for a responder, the connections this peer may be using (the
        endpoint passes all that match its address); IKE_SA_INIT and IKE_AUTH pick one.
        ``jitter(bound)``: how much earlier than rekey_time a rekey fires, in [0, bound]
        (random by default; tests pass a fixed one). ``fragment_stats``: counters to add
        this SA's IKE fragments to (the endpoint shares one among its SAs); ``drop_stats``: the
        endpoint's drop counters, where this SA counts the retransmissions it refuses. ``load()``: how
        many established IKE SAs the endpoint holds (a gateway's ``redirect_when`` in IKE_AUTH).
        ``refuse_duplicate``: a responder asks it in IKE_AUTH once the peer is authenticated
        (the endpoint's ``unique = keep``). ``has_contact``: an initiator asks it before its
        INITIAL_CONTACT (the endpoint: another IKE SA with the same identities is up).
        ``spi_tag``: the key our SPIs are tagged with for the peer's address (spi_tag.py); ``spi_book``: see state.py.
        ``peer_logs``: the endpoint's limiters of the lines a peer can repeat (peer_logs.py; None: this SA's own).
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
            peer_logs if peer_logs is not None else PeerLogs(),
        )
        self._st.candidates = tuple(candidates)
        self._st.jitter = jitter or random_jitter(rng)
        self._st.address_pool = address_pool
        self._st.ts_claims = ts_claims
        self._st.load = load
        self._st.original_initiator = is_initiator  # a rekeyed SA takes its predecessor's (_rekeyed_sa)
        self._st.refuse_duplicate = refuse_duplicate
        self._st.has_contact, self._st.address_role = has_contact, address_role  # address_role: see state.py
        self._st.spi_tag, self._st.spi_book = spi_tag, spi_book
        if is_initiator:
            self._st.spi_i = make_ike_spi(rng, spi_tag, remote_addr[0])
        else:
            self._st.spi_r = make_ike_spi(rng, spi_tag, remote_addr[0])
        # an initiator's IKE_SA_INIT leaves from the connection's local_port (swanctl), as strongSwan's
        self._st.local_port = local_addr[1] if local_addr else config.local_port
        self._state = State.IDLE
        self._created = now
        self._now = now
        self._successor: IkeSa | None = None
        # after a rekey: the IKE SA that took our Child SAs (it shares the children dict),
        # so exchanges still finishing here act on them and their follow-ups run there
        self._heir: IkeSa | None = None
        # the REKEYED IKE SAs of this lineage (shared with them), from its first rekey on (sa_successor.py)
        self._undeleted: sa_successor.Undeleted | None = None
        self._rekey_at: float | None = None  # IKE SA rekey timer
        self._expire_at: float | None = None  # hard lifetime: rekey time + over_time
        self._expired = False  # past it: ends with the exchange in flight (sa_timers.expire)
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
        self._last_response: _Answered | None = None
        self._waiting: _Waiting | None = None  # the peer's request we answer once the backend has
        self._frag_stats = fragment_stats if fragment_stats is not None else FragmentStats()
        self._drops = drop_stats if drop_stats is not None else EndpointStats()
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
        """Have ``watcher(self)`` called after each public call that may change this SA (the
        endpoint uses it to visit only the SAs that changed, never all of them)."""
        self._watcher = watcher

    # ------------------------------------------------------------------ inspection

    @property
    def name(self) -> str:
        return self._st.config.name   # (IkeSaState.name's, a frame less: ~7 reads per client's set-up)

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
    def esp_local(self) -> tuple[str | None, int]:
        """Our (IP, port) this SA's Child SAs send from: ``local_ip`` and ``local_port``, unless a
        MOBIKE update that came in elsewhere still waits for its return routability check."""
        return self._st.esp_local

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
        """The peer's authenticated identity (by a certificate: its subject, whatever it sent)."""
        return self._st.peer_id

    @property
    def peer_sent_id(self) -> Identity | None:
        """The identity the peer sent (IDi or IDr), which its connection's remote.id matched."""
        return self._st.peer_sent_id or self._st.peer_id

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

    def inbound_spis(self) -> list[int]:
        """Every inbound SPI its Child SAs hold: installed, being negotiated, now its heir's, or held for our rekey."""
        return [*self._st.children, *(c.spi_in for c in self.held_children())]

    def creating(self, child_name: str) -> bool:
        """A new Child SA of config ``child_name`` is under way here: its IKE_AUTH or CREATE_CHILD_SA
        is out or queued, or waits to be asked again after the peer refused it for now."""
        pending = (self._pending.task,) if self._pending is not None else ()
        return any(t.creates == child_name for t in (*pending, *self._queue, *(t for _, t in self._delayed)))

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
        """Replace a Child SA with a new one (CREATE_CHILD_SA with REKEY_SA); does nothing while
        a rekey of it is under way or after either side replaced it."""
        child = self._child_by_id(unique_id)
        if child.rekey_at == float("inf"):
            # the peer's rekey of it is under way: should that be withdrawn, ours is still owed (a soft
            # EXPIRE fires once; sa_timers.rearm arms it again: review revrekeytail F3)
            child.rekey_asked = child.rekey_asked or child.rekeyed_by_peer
            return
        child.rekey_asked = False
        child.rekey_at = float("inf")
        self._queue.append(create_child_sa.CreateChildTask(child.config, rekey=child))
        self._start_next()

    @_notifies
    def delete_child(self, unique_id: int, reason: DownReason = DownReason.DELETED, at_once: bool = False) -> None:
        """Delete one Child SA with an INFORMATIONAL DELETE; ``at_once``: reported down now, not when the
        peer answers (an operator's terminate: RFC 7296 §1.4.1 lets us close our SAs as we ask)."""
        child = self._child_by_id(unique_id)
        if self._pending is not None:   # a rekey collision our request noted with it settles nothing now
            self._pending.task.peer_withdrew(child)   # (ours alone replaces the old one: review revrekey5 F3)
        task, old = informational.delete_ours(self._st, child, reason)
        self._queue.append(task)
        self._rearm((old,) if old is not None else (), lambda _: self._retry_at())
        if at_once:
            informational.child_down(self._st, child, reason)   # the answer then finds it gone: no second event
            self._abandon_requests(child)   # nor does our rekey of it that is out bring it back
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
        elif not self._st.config.local_addr:
            # the address we learned from the peer's answers may be gone: the route picks the
            # source again, and the answer to this update says which it was
            self._st.local_addr = None
        pending = self._pending
        if pending is not None and isinstance(pending.task, mobike.UpdateSaAddressesTask):
            # one is out (maybe sent while we had no address): sent again at once from the address we
            # have now, not counted as a retransmission nor moving its backoff: an address that flaps
            # would otherwise spend the tries in seconds and give the IKE SA up (review revlate3 F2)
            to = pending.task.resend_to(self._st, pending.to)
            self._outbox.extend((data, to) for data in pending.datagrams)
            pending.task.moved(local)   # once answered, one more from where we are then (review revlate5 F2)
            return True
        queued = next((t for t in self._queue if isinstance(t, mobike.UpdateSaAddressesTask)), None)
        if queued is not None:
            queued.moved(local)   # not sent yet: it leaves from here, its NAT detection says so
        else:
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
        """Delete the IKE SA and its Child SAs (INFORMATIONAL DELETE if established; the Child SAs go
        down now, the IKE SA when the peer answers or the retransmissions give up: sa_teardown.py)."""
        if self._state == State.ESTABLISHED:
            self._state = State.DELETING
            self._delete_reason = reason
            self._abort_queue()
            self._end_children(reason, deleting=True)   # at once, not when the peer answers (sa_teardown.py)
            self._queue.append(informational.DeleteIkeTask())
            self._start_next()
        elif self._state not in (State.DELETING, State.REKEYED):
            self._close(reason)

    follow_configs = sa_configs.follow_configs   # a reload's connections (IkeEndpoint.set_configs)

    @_notifies
    def drop(self, reason: DownReason) -> None:
        """Forget the IKE SA and its Child SAs without telling the peer (it is gone or replaced)."""
        self._close(reason)

    @_notifies
    def receive(self, datagram: bytes, addr: Address, now: float, local_addr: Address | None = None,
                decoded: Message | None = None) -> None:
        """Process one IKE message (without non-ESP marker) from ``addr``; ``local_addr`` is the
        (IP, port) it arrived on, if the caller knows it; ``decoded`` is ``datagram`` decoded, if
        the caller has done so (the endpoint, for an IKE_SA_INIT request)."""
        self._now = now
        if self._state == State.CLOSED:
            return
        try:
            msg = decoded if decoded is not None else decode_message(datagram)
        except DecodeError as exc:   # counted as the same bytes naming no IKE SA are (review revfrag F2)
            self._drops.malformed += 1
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
        self._answer(waiting.message_id, waiting.exchange, response, waiting.addr, waiting.request)
        self._schedule()
        self._start_next()
        return True

    # ------------------------------------------------------------------ timers: rekey, DPD, lifetime... (sa_timers.py)

    handle_timer = _notifies(sa_timers.handle_timer)
    get_timer = sa_timers.get_timer
    _jittered = sa_timers.jittered
    _schedule = sa_timers.schedule
    _rearm_failed_rekey = sa_timers.rearm_failed_rekey
    _retry_at = sa_timers.retry_at
    _rearm = sa_timers.rearm
    _own_rekey_at = sa_timers.own_rekey_at
    _delay_retry = sa_timers.delay_retry
    _delay = sa_timers.delay
    _dpd_at = sa_timers.dpd_at
    _maintenance_timers = sa_timers.maintenance_timers
    _fire_maintenance = sa_timers.fire_maintenance
    _expire = sa_timers.expire
    _end_expired = sa_timers.end_expired

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        pending = self._pending
        if pending is not None and pending.deadline is None and out:
            pending.deadline = now + self._st.config.retransmit.delay(pending.attempts)
        return out

    def next_event(self) -> Event | None:
        return self._st.events.pop(0) if self._st.events else None

    # ------------------------------------------------------------------ requests we send (sa_requester.py)

    _start_next = sa_requester.start_next
    _send_request = sa_requester.send_request
    _on_response = sa_requester.on_response
    _accept_response = sa_requester.accept_response
    _after = sa_requester.after
    _send_once = sa_requester.send_once
    _give_up = sa_requester.give_up
    _queued = sa_requester.queued
    _rekeying = sa_requester.rekeying
    _open = sa_requester.open_response
    _obsolete = sa_requester.obsolete
    _enqueue = sa_requester.enqueue
    _changed = sa_requester.changed
    _abort_queue = sa_requester.abort_queue

    # ------------------------------------------------------------------ redirect (RFC 5685, sa_redirect.py)

    @_notifies
    def gateway_resolved(self, gateway: str, addresses: Sequence[str], now: float) -> None:
        """The addresses ``gateway`` (from :class:`ResolveGateway`) resolved to, best first;
        none if the lookup failed. The IKE SA sends its IKE_SA_INIT to the first usable one."""
        st = self._st
        if st.resolving != gateway or self._state == State.CLOSED:
            return  # an answer for a lookup we no longer wait for
        self._now = now
        usable = [canonical_gateway(a) for a in addresses if refused_target(st, a, st.authenticated_target) is None]
        if not usable:
            self._resolve_failed(f"gateway {gateway} has no usable address")
            return
        st.resolving, self._resolve_deadline = None, None
        st.remote_addr = (usable[0], st.config.remote_port)
        log.debug("%s: gateway %s is at %s", self.name, gateway, usable[0])
        self._start_next()

    _await_address = sa_redirect.await_address
    _resolve_failed = sa_redirect.resolve_failed
    _follow_auth_redirect = sa_redirect.follow_auth_redirect

    # ------------------------------------------------------------------ requests we answer (sa_responder.py)

    _on_request = sa_responder.on_request
    _serve = sa_responder.serve
    _answer = sa_responder.answer
    _queue_followups = sa_responder.queue_followups
    _respond_init = sa_responder.respond_init
    _dispatch = sa_responder.dispatch
    _respond = sa_responder.respond
    _respond_to = sa_responder.respond_to
    _on_retransmit = sa_responder.on_retransmit
    # the answer that created a Child SA turned into a refusal (its install failed: child_refusal.py)
    answer_of = child_refusal.answer_of
    answer_copies = child_refusal.answer_copies
    refuse_child = _notifies(child_refusal.refuse_child)
    refusal = child_refusal.refusal
    child_installed = child_refusal.child_installed
    _resend = sa_responder.resend
    _decrypt_request = sa_responder.decrypt_request
    _float = sa_responder.float_to

    # ------------------------------------------------------------------ fragments (RFC 7383, sa_fragments.py)

    _encode = sa_fragments.encode
    _fragment_limit = sa_fragments.fragment_limit
    _on_fragment = sa_fragments.on_fragment
    _store_fragment = sa_fragments.store_fragment
    _verified = sa_fragments.verified
    _expire_reassembly = sa_fragments.expire_reassembly

    # -------------------------------------------------------- rekey hand-over to the successor (sa_successor.py)

    _rekeyed_sa = sa_successor.rekeyed_sa
    _spawn_successor = sa_successor.spawn_successor
    _redundant_sa = sa_successor.redundant_sa
    _adopt_peer_rekey = sa_successor.adopt_peer_rekey
    _end_pending = sa_successor.end_pending
    _linger = sa_successor.linger
    _rekey_refused = sa_successor.rekey_refused

    # ------------------------------------------------------------------ requests we receive

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

    _close = sa_teardown.close
    _end_children = sa_teardown.end_children
    held_children = sa_teardown.held_children   # out of ``children``, held for our rekey of it
    _abandon_requests = sa_teardown.abandon_requests
    abandon_creating = _notifies(sa_teardown.abandon_creating)   # it may report a held Child SA down
