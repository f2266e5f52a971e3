"""``IkeEndpoint``: routes datagrams to IKE SAs and creates responder SAs.

Still sans-I/O: its user (the IKE service, tunsec.services.ike) feeds every IKE
datagram (port 500, and port 4500 with the non-ESP marker stripped) to :meth:`IkeEndpoint.receive`, sends what
:meth:`IkeEndpoint.datagrams_to_send` returns from the given local port, calls
:meth:`IkeEndpoint.handle_timer` at :meth:`IkeEndpoint.get_timer`, and reads
``(IkeSa, Event)`` pairs from :meth:`IkeEndpoint.next_event`.

Denial-of-service protection (RFC 7296 §2.6), as strongSwan's charon does it:

- Nothing is kept for a datagram before it has been parsed as a well-formed
  IKE_SA_INIT request (message ID 0, zero SPIr, SA, KE and Nonce present, no
  trailing bytes). Anything else that names no SPI of ours is dropped (counted).
- Responder SAs that have answered IKE_SA_INIT but are not authenticated yet are
  half-open: counted in O(1), capped at ``half_open_limit`` (further requests
  are dropped, counted) and closed after the connection's ``half_open_timeout``.
- A request that made an SA is known (by a hash of it, its address and port) for as long as
  that SA exists, as strongSwan's init_hashes: a retransmission is answered from storage while
  the SA is half-open, and dropped (counted) once it is authenticated, however late it comes.
- Per source address as well (strongSwan's charon.cookie_threshold_ip and
  charon.block_threshold): half-open SAs are also counted by the address the
  request came from, so one host (spoofed source ports or not) cannot fill
  ``half_open_limit`` and lock everyone else out.  An IPv6 source counts under its prefix
  (``ipv6_source_prefix``, default /64: a host has 2^64 addresses), an IPv4-mapped one as its
  IPv4 address (``dos_source.py``; strongSwan counts per address).  The table holds only
  addresses that have half-open SAs now (an entry goes at zero): spoofed sources
  cost nothing beyond the half-open SAs they made, which are capped.
- Above ``cookie_threshold`` half-open SAs, or ``cookie_threshold_ip`` of them from
  the request's own address, a request without a valid COOKIE gets a stateless
  COOKIE response; then a request from an address that holds ``block_threshold``
  half-open SAs is dropped (counted, never logged per datagram), then one above
  ``half_open_limit``: strongSwan's order (receiver.c drop_ike_sa_init). The cookie, its
  secret and the secret's rotation: ``cookie_secret.py``.
- Calm-down (strongSwan's COOKIE_CALMDOWN_DELAY), and requests refused after work (no
  proposal, a bad KE; a half-open SA its peer ended at IKE_AUTH before authentication) counted
  towards the thresholds for a while: ``cookie_demand.py``.
- A datagram longer than MAX_IKE_MESSAGE (strongSwan's charon.max_packet) is dropped before
  anything of it is parsed (counted ``too_big``); the one IKE_SA_INIT parse (payloads bounded,
  message.MAX_INIT_PAYLOADS) is handed to the SA made for it.
- Redirect (RFC 5685, ``redirect.py``): when the connection chosen for a request
  has ``redirect_to`` (and ``redirect_on = init``) and the endpoint holds at least
  its ``redirect_when`` IKE SAs, a client that sent REDIRECT_SUPPORTED gets a
  stateless N(REDIRECT) answer, like a COOKIE: nothing is kept for it (a request's parse, its
  digest and the stateless answers: ``init_request.py``).
  (``redirect_on = auth`` is IKE_AUTH's: the SA learns the count through ``load``.)
- Work per datagram does not depend on the number of SAs: SAs report changes
  through :meth:`IkeSa.watch` and only those are visited; timers sit in a heap.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Collection, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from tunsec.loglimit import LogLimiter, internal_error, suffix
from tunsec.policy.pad import AddressMatch, Refused, address_match, check_unique_keep
from tunsec.policy.selector import IPAddress, parse_ip

from .address_role import Role, address_role
from .by_address import EstablishedByAddress
from .by_peer import SpisByPeer
from .child_refusal import swap
from .config import IkeConfig
from .constants import IKE_PORT, MAX_IKE_MESSAGE, ExchangeType, HeaderFlag, NotifyType
from .contacts import EstablishedByIdentity
from .cookie_demand import (
    COOKIE_CALMDOWN_DELAY,
    GLOBAL,
    CookieDemand,
    ProvenRefusals,
    address_slot,
    calmdown_bucket,
)
from .cookie_secret import CookieSecret
from .dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from .eap.relay import RelayReply
from .events import Address, DownReason, Event, IkeSaLimit, IkeSaUp, NegotiationFailed
from .fragments import FragmentStats
from .ike_sa_cap import IkeSaCounts
from .init_request import answer_source, find_nonce, init_digest, init_request, stateless_answer
from .link_local import refuse_link_local
from .message import DecodeError, Message, NotifyPayload, header_fields
from .peer_logs import PeerLogs
from .redirect import encode_redirect
from .sa import IkeSa, State
from .spi_book import IkeSpiBook
from .spi_tag import IkeSpiTag
from .state import AddressPool, IkeSaState, Jitter, Rng, SelectorClaims, SpiAllocator, now_utc, random_spi_allocator
from .stats import EndpointStats
from .unmarked import unmark_answers

# plain ints, tested for every datagram (an IntEnum's member lookup and ``&`` cost more)
_IKE_SA_INIT = int(ExchangeType.IKE_SA_INIT)
_RESPONSE, _INITIATOR = int(HeaderFlag.RESPONSE), int(HeaderFlag.INITIATOR)
TIMER_ERROR_BACKOFF = 1.0  # seconds an SA whose timer raised waits before its next timer fires
# (the calm-down's names are known here too, where they were before cookie_demand.py)
__all__ = ["COOKIE_CALMDOWN_DELAY", "Datagram", "DosLimits", "IkeEndpoint", "calmdown_bucket"]

log = logging.getLogger(__name__)


class Datagram(NamedTuple):
    """Send ``data`` to ``addr`` from ``local_port`` (add the non-ESP marker if neither port is 500,
    ``constants.has_marker``, unless ``unmarked``: the answer to an IKE_SA_INIT request that came
    without it, unmarked.py) and from our address ``source``: the one the peer talked to (None: not
    known, the socket's or the route's choice)."""

    data: bytes
    addr: Address
    local_port: int
    source: str | None = None
    unmarked: bool = False


@dataclass(frozen=True)
class DosLimits:
    """Thresholds for unauthenticated IKE_SA_INIT requests (strongswan.conf names in brackets).

    ``cookie_threshold`` [charon.cookie_threshold]: half-open SAs above which a
    COOKIE is demanded. ``half_open_limit`` [charon.init_limit_half_open, but 0
    is not "unlimited" here]: half-open SAs above which requests are dropped.
    ``cookie_lifetime``: seconds a cookie secret is handed out (it is accepted
    for twice as long).

    Per source address (road warriors behind one NAT share one: raise both for them):
    ``cookie_threshold_ip`` [charon.cookie_threshold_ip]: once one address holds
    this many half-open SAs, that address (only) must return a COOKIE (0: always).
    ``block_threshold`` [charon.block_threshold, but 0 is not "off" here]: once it
    holds this many, its requests are dropped, valid COOKIE or not (its requests refused after
    work that brought a valid COOKIE count too, for a while: cookie_demand.ProvenRefusals).  Keep
    cookie_threshold_ip below it, as strongSwan's defaults (3, 5) are, or an
    address is dropped before it is ever asked for a COOKIE.
    ``ipv6_source_prefix`` (not in strongSwan, which counts per address): an IPv6 source
    address counts under its prefix of this many bits (128: per address; see dos_source.py).
    ``ikesa_limit`` [charon.ikesa_limit]: IKE SAs (all, half-open too) at which further IKE_SA_INIT
    requests are dropped, as strongSwan ignores them (0: no limit).
    """

    cookie_threshold: int = 30
    half_open_limit: int = 1000
    cookie_lifetime: float = 60.0
    cookie_threshold_ip: int = 3
    block_threshold: int = 5
    ipv6_source_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX
    ikesa_limit: int = 0


@dataclass
class _HalfOpen:
    init_key: bytes                   # init_digest of the request: its key in _by_init
    source: str                       # its key in the per-source table (dos_source.source_key)


class IkeEndpoint:
    def __init__(
        self,
        configs: Sequence[IkeConfig],
        rng: Rng = os.urandom,
        *,
        spi_allocator: SpiAllocator | None = None,
        spi_tag: IkeSpiTag | None = None,
        wall_clock: Callable[[], datetime] = now_utc,
        cookie_threshold: int | None = None,
        config_selector: Callable[[Address], Sequence[IkeConfig]] | None = None,
        limits: DosLimits | None = None,
        jitter: Jitter | None = None,
        address_pool: AddressPool | None = None,
        unique_keep: Callable[[str], bool] | None = None,
        ts_claims: SelectorClaims | None = None,
    ) -> None:
        """``jitter``: see :class:`IkeSa` (how much earlier than rekey_time rekeys fire);
        ``address_pool``: where responders lease virtual IPs (``tunsec.policy.pools.AddressPools``);
        ``unique_keep(connection)``: whether the connection has ``unique = keep``: then a
        responder refuses in IKE_AUTH an identity that already has an IKE SA (_refuse_duplicate);
        ``ts_claims``: the remote selectors the gateway's Child SAs hold, by peer (no Child SA,
        whichever side asked for it, may take another peer's: exchanges/child.py _not_others,
        answer_not_others)."""
        limits = limits or DosLimits()
        if cookie_threshold is not None:
            limits = dataclasses.replace(limits, cookie_threshold=cookie_threshold)
        self.limits = limits
        self.stats = EndpointStats()
        # the lines a peer can repeat, limited per peer (peer_logs.py): shared by this endpoint's IKE SAs
        self.peer_logs = PeerLogs(limits.ipv6_source_prefix)
        self.fragment_stats = FragmentStats()  # IKE fragments (RFC 7383) of all SAs
        self._configs = {c.name: c for c in configs}
        self._rng = rng
        self._jitter = jitter
        self._address_pool = address_pool
        self._ts_claims = ts_claims
        self._unique_keep = unique_keep
        self._spi_allocator = spi_allocator or random_spi_allocator(rng)
        self._spi_tag = spi_tag   # our IKE SPIs' tags for the peer's address (spi_tag.py): the worker's key
        self._wall_clock = wall_clock
        self._select = config_selector or self._default_selector
        self._sas: dict[bytes, IkeSa] = {}
        self.spi_book = IkeSpiBook(self._sas)   # those SPIs and the ones rekeys in flight drew (spi_book.py)
        # told our SPI of each SA as it closes and is forgotten, by whatever path (deleted, expired, dead,
        # replaced, dropped, a rekeyed one that goes quietly): the service's set of the worker's trusted SPIs
        self.on_forget: Callable[[bytes, IkeSa], None] = _nothing
        self.last_registered: IkeSa | None = None   # the IKE SA made last (which a datagram opened: the service)
        # bound methods every IKE SA keeps, made once (each access to self._touch makes a new one)
        self._touch_cb, self._load_cb, self._refuse_cb = self._touch, self._load, self._refuse_duplicate
        self._by_peer = SpisByPeer()   # (connection, authenticated peer identity) -> SPIs: INITIAL_CONTACT
        self._ike_sa_counts = IkeSaCounts()   # per (connection, identity), for max_ike_sas (ike_sa_cap.py)
        # IKE_SA_INIT requests (init_digest) -> the responder SA made for each, for as long as that SA
        # exists (strongSwan's init_hashes): a retransmission, however late, makes no second SA. The key of
        # a half-open SA is in its _HalfOpen record, an authenticated one's in _init_of (local SPI -> key)
        self._by_init: dict[bytes, IkeSa] = {}
        self._init_of: dict[bytes, bytes] = {}
        self._half_open: dict[bytes, _HalfOpen] = {}  # local SPI -> how the request is found again
        # source IP (IPv6: prefix, dos_source.source_key) -> its half-open SAs (> 0: a source leaves at
        # zero, so this holds at most half_open_limit entries however many sources are spoofed)
        self._half_open_by_ip: dict[str, int] = {}
        self._by_address = EstablishedByAddress()   # for INVALID_SPI (invalid_spi)
        self._by_identity = EstablishedByIdentity()   # for INITIAL_CONTACT (_has_contact)
        # the addresses of this host's interfaces, kept by the IKE service (services/ike/host_addresses.py):
        # no REDIRECT or peer's move goes to one (address_role.refused_address, review revclient s20 F3)
        # (a live view of the service's: host_addresses.py applies each change as it comes)
        self.host_addresses: Set[IPAddress] = frozenset()
        self._events: deque[tuple[IkeSa, Event]] = deque()
        self._outbox: list[Datagram] = []
        self._dirty: dict[IkeSa, None] = {}  # SAs that changed since the last _collect (ordered)
        self._deadline: dict[bytes, float] = {}  # local SPI -> the SA's timer as last scheduled
        self._heap: list[tuple[float, int, bytes]] = []  # (deadline, seq, local SPI); stale entries skipped
        self._seq = itertools.count()
        # SAs whose timer raised, and until when their next timer is held back (no hot loop on a bug)
        self._timer_backoff: dict[bytes, float] = {}
        self.timer_errors = 0
        self._timer_error_log = LogLimiter(burst=1, period=60.0)
        self._link_local_log = LogLimiter()   # IKE_SA_INITs from link-local sources refused (link_local.py)
        self._cookies = CookieSecret(rng)   # cookie_secret.py
        self._cookie_demand = CookieDemand()
        self._proven_refusals = ProvenRefusals()   # refused after work, of proven sources (cookie_demand.py)

    # ------------------------------------------------------------------ API

    @property
    def sas(self) -> list[IkeSa]:
        return list(self._sas.values())

    def sa_by_spi(self, spi: bytes) -> IkeSa | None:
        """The IKE SA whose SPI (ours) is ``spi``."""
        return self._sas.get(spi)

    def sa_for(self, datagram: bytes) -> IkeSa | None:
        """The IKE SA ``receive`` would hand ``datagram`` to, from its header alone (nothing is
        decoded or kept); None for an IKE_SA_INIT request, a bad header or an SPI none of ours has."""
        try:
            _, exchange, flags, _ = header_fields(datagram)
        except DecodeError:
            return None
        if exchange == _IKE_SA_INIT and flags & _INITIATOR and not flags & _RESPONSE:
            return None
        return self._sas.get(_our_spi(datagram, flags))

    def invalid_spi(self, spi: int, ip: IPAddress, port: int, now: float, interval: float) -> IkeSa | None:
        """ESP from ``ip``:``port`` for an SPI the dataplane does not know (anyone's: a hint, never
        proof): an INVALID_SPI notify queued in the IKE SA established with that peer, at most one
        per ``interval`` in an IKE SA, nothing for anyone else.  The IKE SA that sends it, or None."""
        sa = self._by_address.find(ip, port)
        if sa is None or not self._by_address.may_notify(sa, now, interval) or not sa.send_invalid_spi(spi):
            return None
        self._by_address.notified_at(sa, now)
        return sa

    def peer_sas(self, name: str, peer_id: object) -> list[IkeSa]:
        """The IKE SAs of connection ``name`` whose peer authenticated as ``peer_id`` (rekeyed ones
        until they close), from the index INITIAL_CONTACT uses (_by_peer): no pass over every SA."""
        return [sa for spi in self._by_peer.spis((name, peer_id)) if (sa := self._sas.get(spi)) is not None]

    @property
    def sa_count(self) -> int:
        return len(self._sas)

    @property
    def established_count(self) -> int:
        """IKE SAs past authentication (and our own initiations): what ``redirect_when`` counts.
        Half-open ones are left out, or a flood of IKE_SA_INITs would send real clients elsewhere."""
        return len(self._sas) - len(self._half_open)

    @property
    def half_open(self) -> int:
        """Responder SAs that answered IKE_SA_INIT and are not authenticated yet."""
        return len(self._half_open)

    @property
    def half_open_addresses(self) -> int:
        """Source addresses that hold half-open SAs now (the per-address table's size)."""
        return len(self._half_open_by_ip)

    def half_open_from(self, ip: str) -> int:
        """Half-open SAs counted with ``ip``'s: from that address (IPv6: from its prefix)."""
        return self._half_open_by_ip.get(source_key(ip, self.limits.ipv6_source_prefix), 0)

    def half_open_most_from_one(self) -> int:
        """The most half-open SAs one source address holds now (0: none).  O(addresses): for
        status, not per datagram (the table holds at most half_open_limit entries)."""
        return max(self._half_open_by_ip.values(), default=0)

    def half_open_busiest(self) -> str | None:
        """The source (address, IPv6 prefix) holding the most half-open SAs now (None: none).
        O(addresses), for status."""
        return max(self._half_open_by_ip, key=self._half_open_by_ip.__getitem__, default=None)

    def set_configs(self, configs: Sequence[IkeConfig], renewed: Collection[str] = ()) -> int:
        """The connections from now on (a reload): new IKE_SA_INIT requests and initiations see
        these; established SAs keep the config they were made with.  Responders not authenticated
        yet follow (IkeSa.follow_configs: ``renewed`` names those changed in credentials only) or,
        if no connection of theirs is left, are dropped without a word (how many: returned, as
        anyone can make half-open SAs, a line each could be thousands): a peer must not prove
        itself to configuration that is gone.  Our initiations are the caller's (it knows what
        they were for)."""
        self._configs = {c.name: c for c in configs}
        dropped = 0
        for spi in list(self._half_open):
            sa = self._sas.get(spi)
            if sa is not None and not sa.follow_configs(self._configs, renewed):
                sa.drop(DownReason.NEGOTIATION_FAILED)
                dropped += 1
        return dropped

    def initiate(self, config_name: str, child_name: str | None, now: float, remote: Address | None = None) -> IkeSa:
        """``remote``: where to (None: the connection's ``remote_addr``; a lost peer's on one of %any)."""
        sa = self._new_sa(self._configs[config_name], True, now, remote, None)
        sa.initiate(child_name)
        self._collect(now)
        return sa

    def receive(self, datagram: bytes, addr: Address, now: float, local_addr: Address | None = None,
                unmarked: bool = False) -> None:
        """``unmarked``: it came without the non-ESP marker where IKE carries one (an IKE_SA_INIT
        request's answer goes back so: unmarked.py)."""
        if len(datagram) > MAX_IKE_MESSAGE:
            self.stats.too_big += 1
            return
        try:
            _, exchange, flags, message_id = header_fields(datagram)   # (no Header object: routing needs 3 fields)
        except DecodeError:
            self.stats.malformed += 1
            return
        if exchange == _IKE_SA_INIT and flags & _INITIATOR and not flags & _RESPONSE:
            start = len(self._outbox)
            self._on_init_request(message_id, datagram, addr, now, local_addr)
            if unmarked:
                self._collect(now)
                unmark_answers(self._outbox, start, datagram, addr)
        else:
            sa = self._sas.get(_our_spi(datagram, flags))
            if sa is None:
                self.stats.unknown_spi += 1
                return
            sa.receive(datagram, addr, now, local_addr)
        self._collect(now)

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, spi = heapq.heappop(heap)
            sa = self._sas.get(spi)
            if sa is None or self._deadline.get(spi) != deadline:
                continue  # stale: the SA is gone or its timer moved
            del self._deadline[spi]
            try:
                sa.handle_timer(now)
            except Exception as err:   # a bug in one SA's timer must not stop its later timers nor the others'
                self._timer_failed(sa, now, err)
            self._touch(sa)
        self._collect(now)

    def _timer_failed(self, sa: IkeSa, now: float, err: Exception) -> None:
        """Log it (once a minute, the first time with the traceback) and hold that SA's next timer
        back a little: one still due would otherwise fire again at once, and fail again."""
        self.timer_errors += 1
        self._timer_backoff[sa.local_spi] = now + TIMER_ERROR_BACKOFF
        if (held := self._timer_error_log.admit()) is not None:
            log.error("%s: internal error in the IKE SA's timer; its timers go on%s: %s", sa.name, suffix(held),
                      internal_error(err, self.timer_errors == 1))

    def get_timer(self) -> float | None:
        """The earliest timer, as of the last receive/handle_timer/datagrams_to_send (call that first
        after driving an SA directly: it is what arms a request's retransmission)."""
        heap = self._heap
        while heap and self._deadline.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        self._collect(now)
        out, self._outbox = self._outbox, []
        return out

    def copies(self, datagrams: Sequence[bytes]) -> int:
        """How many copies of ``datagrams`` (an answer: its first) are collected here, not taken yet."""
        return sum(d.data == datagrams[0] for d in self._outbox) if datagrams else 0

    def replace(self, old: Sequence[bytes], new: Sequence[bytes]) -> bool:
        """Put ``new`` in place of each collected copy of ``old`` (an answer refused after all:
        child_refusal.py); whether there was one."""
        return swap(self._outbox, old, new, lambda d: d.data, lambda d, data: d._replace(data=data))

    def relay_reply(self, sa: IkeSa, reply: RelayReply, now: float) -> bool:
        """The AAA backend's answer for ``sa``'s EAP relay (``IkeSa.relay_reply``), with its
        datagrams and events collected; False if the SA no longer waits for it."""
        done = sa.relay_reply(reply, now)
        self._touch(sa)
        self._collect(now)
        return done

    def next_event(self) -> tuple[IkeSa, Event] | None:
        return self._events.popleft() if self._events else None

    def collect(self, now: float) -> None:
        """Take the datagrams and events of SAs changed by calls made on them directly."""
        self._collect(now)

    @property
    def has_events(self) -> bool:
        """Events collected and not yet taken (``next_event``)."""
        return bool(self._events)

    def rotate_cookie_secret(self) -> None:
        """Start a new cookie secret; cookies of the previous one work until the next rotation."""
        self._cookies.rotate()

    # ------------------------------------------------------------------ internals

    def _default_selector(self, addr: Address) -> list[IkeConfig]:
        """Connections whose remote address is the peer's, then those open to any (``%any``): the PAD's order."""
        exact = [c for c in self._configs.values() if address_match(c.remote_addr, addr[0]) is AddressMatch.EXACT]
        anyone = [c for c in self._configs.values() if address_match(c.remote_addr, addr[0]) is AddressMatch.ANY]
        return exact + anyone

    def _load(self) -> int:
        return self.established_count

    def _touch(self, sa: IkeSa) -> None:
        self._dirty[sa] = None

    def _new_sa(
        self,
        config: IkeConfig,
        initiator: bool,
        now: float,
        remote: Address | None,
        local: Address | None,
        candidates: Sequence[IkeConfig] = (),
    ) -> IkeSa:
        while True:  # SPIs are random; a clash is unlikely but possible
            sa = IkeSa(
                config,
                initiator,
                now,
                self._rng,
                spi_allocator=self._spi_allocator,
                spi_tag=self._spi_tag,
                remote_addr=remote,
                local_addr=local,
                wall_clock=self._wall_clock,
                candidates=candidates,
                jitter=self._jitter,
                address_pool=self._address_pool,
                ts_claims=self._ts_claims,
                fragment_stats=self.fragment_stats,
                drop_stats=self.stats,
                load=self._load_cb,
                refuse_duplicate=None if initiator else self._refuse_cb,
                has_contact=self._has_contact if initiator else None,
                address_role=self._address_role,
                spi_book=self.spi_book,
                peer_logs=self.peer_logs,
            )
            if not self.spi_book.taken(sa.local_spi):
                self._register(sa)
                return sa
            self.spi_book.redrawn += 1   # as a rekey's draw is counted (status: ike_spis.redrawn)

    def _register(self, sa: IkeSa) -> None:
        self.spi_book.release(sa.local_spi)   # a successor's: reserved until now
        self._sas[sa.local_spi] = sa
        self.last_registered = sa
        sa.watch(self._touch_cb)
        self._touch(sa)

    def _on_init_request(
        self, message_id: int, datagram: bytes, addr: Address, now: float, local: Address | None
    ) -> None:
        if refuse_link_local(addr, self.stats, self._link_local_log):   # a %any gateway cannot serve it (link_local.py)
            return
        key = init_digest(datagram, addr)
        existing = self._by_init.get(key)
        if existing is not None and not existing.is_closed:
            if existing.is_half_open:
                existing.receive(datagram, addr, now, local)  # a retransmission: answered from storage
            else:   # answered, and IKE_AUTH done since: message ID 0 is below the window (RFC 7296 §2.3)
                self.stats.late_init_retransmits += 1
            return
        msg = init_request(message_id, datagram)
        if msg is None:
            self.stats.malformed += 1
            return
        self._cookies.rotate_if_due(now, self.limits.cookie_lifetime)
        limits = self.limits
        source = source_key(addr[0], limits.ipv6_source_prefix)   # IPv6: its prefix (a host has 2^64 addresses)
        from_ip = self._half_open_by_ip.get(source, 0)
        demand = self._cookie_demand
        proven = demand.required(GLOBAL, self.half_open, limits.cookie_threshold, now) \
            or demand.required(address_slot(source), from_ip, limits.cookie_threshold_ip, now)
        if proven and not self._cookie_ok(msg, addr):
            self._send_cookie(msg, addr, local)
            return
        # even with a valid COOKIE: it is this address's share, of half-open SAs and of the requests it
        # had refused after work with a COOKIE (cookie_demand.ProvenRefusals, review revcost F2)
        if from_ip + self._proven_refusals.count(source, now) >= limits.block_threshold:
            self.stats.block_threshold += 1
            return
        if self.half_open >= limits.half_open_limit:
            self.stats.half_open_limit += 1
            return
        if limits.ikesa_limit and len(self._sas) >= limits.ikesa_limit:
            self.stats.ikesa_limit += 1
            return
        candidates = list(self._select(addr))
        if not candidates:
            self.stats.no_connection += 1
            return
        target = self._redirect_target(candidates[0], msg)
        if target is not None:
            self._send_redirect(msg, addr, local, target)
            demand.refused(source, now)   # answered, nothing kept: a spoofed source's, too (cookie_demand)
            return
        sa = self._new_sa(candidates[0], False, now, addr, local, candidates)
        sa.receive(datagram, addr, now, local, msg)
        if sa.is_half_open:
            self._half_open[sa.local_spi] = _HalfOpen(key, source)
            self._by_init[key] = sa
            self._half_open_by_ip[source] = from_ip + 1
            return
        if sa.state is State.IDLE:
            sa.drop(DownReason.NEGOTIATION_FAILED)  # cannot happen after init_request; keep nothing anyway
            return
        # refused after work (proposal selection, the KE checked): counted as a half-open SA for a while
        self.stats.init_refused += 1
        self._refused_after_work(source, now, proven)   # proven: it brought back a valid COOKIE, a real address

    def _refused_after_work(self, source: str, now: float, proven: bool) -> None:
        """A request from ``source`` had the IKE_SA_INIT work done and nothing is kept for it: it counts
        as a half-open SA towards the COOKIE thresholds for a while, and towards ``block_threshold`` too
        if the source is ``proven`` a real address (cookie_demand.py)."""
        self._cookie_demand.refused(source, now)
        if proven:
            self._proven_refusals.refused(source, now, self.limits.half_open_limit)

    # ------------------------------------------------------------------ cookies

    def _cookie_ok(self, msg: Message, addr: Address) -> bool:
        first = msg.payloads[0]  # RFC 7296 §2.6: the COOKIE comes first
        if not isinstance(first, NotifyPayload) or first.type != NotifyType.COOKIE:
            return False
        if self._cookies.verifies(msg, first.data, addr):
            return True
        self.stats.cookie_refused += 1
        return False

    def _send_cookie(self, msg: Message, addr: Address, local: Address | None) -> None:
        self.stats.cookies_sent += 1
        self._send_stateless(msg, NotifyPayload(NotifyType.COOKIE, self._cookies.cookie(msg, addr)), addr, local)

    def _send_stateless(self, msg: Message, notify: NotifyPayload, addr: Address, local: Address | None) -> None:
        """Answer the request ``msg`` with ``notify`` alone, keeping nothing (init_request.py)."""
        data = stateless_answer(msg, notify)
        self._outbox.append(Datagram(data, addr, local[1] if local else IKE_PORT, answer_source(local)))

    # ------------------------------------------------------------------ redirect (RFC 5685)

    def _redirect_target(self, config: IkeConfig, msg: Message) -> str | None:
        """Where to send this client instead, if its connection redirects now and the client can follow."""
        if config.redirect_to is None or config.redirect_on != "init" or self.established_count < config.redirect_when:
            return None
        # RFC 5685 §3: only clients that announced support are redirected; a client already
        # redirected announces it with REDIRECTED_FROM instead (as strongSwan's does)
        support = (NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM)
        if not any(isinstance(p, NotifyPayload) and p.type in support for p in msg.payloads):
            return None
        return config.redirect_to

    def _send_redirect(self, msg: Message, addr: Address, local: Address | None, target: str) -> None:
        self.stats.redirects_sent += 1
        data = encode_redirect(target, find_nonce(msg))
        self._send_stateless(msg, NotifyPayload(NotifyType.REDIRECT, data), addr, local)

    # ------------------------------------------------------------------ bookkeeping

    def _collect(self, now: float) -> None:
        """Move datagrams and events out of the SAs that changed, reschedule them, forget closed ones."""
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            for sa in batch:
                self._collect_one(sa, now)

    def _collect_one(self, sa: IkeSa, now: float) -> None:
        spi, port, source = sa.local_spi, sa.local_port, sa.local_ip
        floor = self._timer_backoff.pop(spi, None)
        for data, addr in sa.datagrams_to_send(now):
            self._outbox.append(Datagram(data, addr, port, source))
        refused = False   # the IKE SA itself failed (not a Child SA of it)
        while (event := sa.next_event()) is not None:
            self._events.append((sa, event))
            refused = refused or (isinstance(event, NegotiationFailed) and event.child is None)
            if isinstance(event, IkeSaUp):
                self._index_peer(sa)
                if sa.peer_id is not None:
                    self._ike_sa_counts.add(spi, sa.name, sa.peer_id, sa.remote_addr[0])
                if event.initial_contact:
                    self._initial_contact(sa, event)  # the dropped SAs report themselves through watch()
        successor = sa.take_successor()
        if successor is not None:  # a rekeyed IKE SA, or one redirected in IKE_AUTH: route its new SPI
            self._succeed(spi, successor)
        if spi in self._half_open and not sa.is_half_open:
            record = self._half_open.pop(spi)
            if not sa.is_closed:
                self._init_of[spi] = record.init_key   # authenticated: late retransmissions still find it
            elif self._by_init.get(record.init_key) is sa:
                del self._by_init[record.init_key]
            self._half_open_left(record.source)
            if sa.is_closed:
                self.stats.half_open_closed += 1
                if refused:   # its peer ended it under our keys before authentication (review revlate5 F1)
                    self._refused_after_work(record.source, now, proven=True)
        if sa.is_closed:
            if self._sas.get(spi) is sa:
                del self._sas[spi]
                self._deadline.pop(spi, None)
                self._by_peer.remove(spi)
                self._ike_sa_counts.remove(spi)
                if (init := self._init_of.pop(spi, None)) is not None and self._by_init.get(init) is sa:
                    del self._by_init[init]
                self._by_address.forget(spi)
                self._by_identity.forget(spi)
                self.spi_book.release_all(spi)   # SPIs its rekeys drew that made no SA
                self.on_forget(spi, sa)
            sa.watch(None)
            return
        self._by_address.follow(sa)
        self._by_identity.follow(sa)
        when = sa.get_timer()
        if floor is not None and when is not None:
            when = max(when, floor)
        self._schedule(spi, when)

    def _succeed(self, spi: bytes, successor: IkeSa) -> None:
        """Route the successor of the IKE SA ``spi``.  Its SPI was drawn through spi_book, unused and
        reserved; were it taken all the same (a bug), it must not replace the IKE SA that has it (another
        peer's, maybe): dropped instead (its Child SAs with it), counted and logged."""
        new = successor.local_spi
        if new not in self._sas:
            self._register(successor)
            self._index_peer(successor)
            self._ike_sa_counts.succeed(spi, new, successor.state is State.REKEYED)
            return
        self.spi_book.refused += 1
        log.error("%s: internal error: the new IKE SA of a rekey or redirect has SPI %s, which another IKE SA "
                  "has: dropped", successor.name, new.hex())
        successor.drop(DownReason.NEGOTIATION_FAILED)
        while (event := successor.next_event()) is not None:   # its Child SAs' ChildSaDown, its IkeSaDown
            self._events.append((successor, event))
        if (redundant := successor.take_successor()) is not None:   # a rekey collision's loser: nothing to keep
            redundant.drop(DownReason.REKEY_COLLISION)

    def _half_open_left(self, ip: str) -> None:
        """One half-open SA from ``ip`` (a source_key) was authenticated or closed; it goes at zero."""
        left = self._half_open_by_ip[ip] - 1
        if left:
            self._half_open_by_ip[ip] = left
        else:
            del self._half_open_by_ip[ip]

    def _schedule(self, spi: bytes, when: float | None) -> None:
        if self._deadline.get(spi) == when:
            return
        if when is None:
            del self._deadline[spi]
            return
        self._deadline[spi] = when
        heapq.heappush(self._heap, (when, next(self._seq), spi))
        if len(self._heap) > 2 * len(self._deadline) + 64:
            # drop the stale entries now and then, so the heap stays proportional to the live timers
            self._heap = [(t, next(self._seq), s) for s, t in self._deadline.items()]
            heapq.heapify(self._heap)

    def _refuse_duplicate(self, st: IkeSaState) -> str | IkeSaLimit | None:
        """Why a responder's authenticated IKE SA must be refused (unique = keep; its identity's
        max_ike_sas reached: IkeSaLimit, counted), or None.  As strongSwan, INITIAL_CONTACT overrides
        both: the peer rebooted, its old SAs are replaced (not an unproven one's: it replaces none)."""
        if st.peer_id is None:
            return None
        over = self._ike_sa_counts.over(st.name, st.peer_id, st.remote_addr[0], st.config.max_ike_sas)
        if over is not None and not (st.initial_contact and st.config.initial_contact and not st.peer_id.tag):
            self.stats.ike_sa_limit += 1
            return IkeSaLimit(st.name, str(st.peer_id), st.remote_addr, *over)
        if self._unique_keep is None or st.initial_contact or not self._unique_keep(st.name):
            return None
        established = [(sa.peer_id, sa.remote_addr[0]) for sa in self._sas.values()
                       if sa.name == st.name and sa.state is State.ESTABLISHED]
        try:
            check_unique_keep(st.peer_id, st.remote_addr[0], established)
        except Refused as err:
            return str(err)
        return None

    def _has_contact(self, st: IkeSaState) -> bool:
        """strongSwan's has_contact, asked before an initiator's INITIAL_CONTACT: an established IKE
        SA (ours or the peer's) with the same identities, in the same address family; or, with our
        identity, to the same address: that peer knows us already, and taking INITIAL_CONTACT it would
        end the IKE SA we have there, of another connection whose remote identity differs (review
        revclient s20 F1).  From the indexes (by address, by identity): not a pass over every IKE SA
        (review revperf R2)."""
        local, ip = st.config.local.id, parse_ip(st.remote_addr[0])
        # by address only IKE SAs of a connection naming that gateway: a road warrior of ours behind the
        # gateway's NAT address says nothing of the gateway (review revperf F1)
        gateways = (sa for sa in self._by_address.at(ip) if sa.config.remote_addr is not None)
        return any(sa.config.local.id == local for sa in gateways) \
            or self._by_identity.any_up(local, st.config.remote.id, ip.version)

    def _address_role(self, ip: IPAddress, *, host: bool = False) -> Role | None:
        """What ``ip`` is to this host (address_role.py): asked of a client's virtual IP and REDIRECT,
        and of the address a peer moves to; ``host``: the addresses of this host's interfaces count as
        its own (a REDIRECT's, a move's; not a virtual IP's: ours are on the TUN)."""
        return address_role(self._configs.values(), self._by_address, self._address_pool, ip, self._ts_claims,
                            self.host_addresses if host else ())

    def _initial_contact(self, fresh: IkeSa, up: IkeSaUp) -> None:
        """The peer rebooted: forget our older IKE SAs with the same identities (RFC 7296 §2.4).

        Not with ``unique = never`` (``initial_contact`` off), which strongSwan also ignores it for."""
        if not fresh.config.initial_contact:
            return
        for spi in self._by_peer.spis((fresh.name, up.remote_id)):
            sa = self._sas.get(spi)
            if sa is not None and sa is not fresh and not sa.is_closed and sa.name == fresh.name \
                    and sa.peer_id == up.remote_id:
                sa.drop(DownReason.REPLACED)

    def _index_peer(self, sa: IkeSa) -> None:
        """Note an authenticated IKE SA under its connection and peer identity (see _by_peer)."""
        if sa.peer_id is not None:
            self._by_peer.add(sa.local_spi, (sa.name, sa.peer_id))


def _nothing(_: bytes, __: IkeSa) -> None:
    pass


def _our_spi(datagram: bytes, flags: int) -> bytes:
    """Our SPI in a header (RFC 7296 §3.1): the responder's in what the original initiator sends."""
    return datagram[8:16] if flags & _INITIATOR else datagram[0:8]

