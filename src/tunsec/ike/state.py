"""The negotiated state of one IKE SA, shared by the exchange tasks.

``IkeSa`` (sa.py) owns the transport (message IDs, retransmission, SK
sealing); the exchanges read and write this state. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from tunsec.immutable import immutable

from .config import ChildConfig, IkeConfig
from .constants import IKE_PORT
from .crypto import IkeKeys, Prf, derive_ike_keys, rekey_skeyseed, skeyseed
from .events import Address, Event, IkeSaLimit
from .identity import Identity
from .keymat_seeds import KeymatSeeds
from .message import Payload, Proposal
from .peer_logs import PeerLogs
from .proposals import Suite
from .redirect import Redirect
from .secret import Secret
from .sk import SkCrypter
from .spi_tag import IkeSpiTag
from .ts import Ts

if TYPE_CHECKING:
    from tunsec.policy.claims import Claim
    from tunsec.policy.pools import Lease
    from tunsec.policy.selector import IPAddress, IPNetwork

    from .address_role import Role
    from .exchanges.ike_auth_eap import GatewayEap
    from .spi_book import IkeSpiBook

Rng = Callable[[int], bytes]
SpiAllocator = Callable[[], int]
# a random amount in [0, bound] subtracted from a rekey time (strongSwan's rand_time);
# injectable so that tests on a fake clock know when a rekey fires
Jitter = Callable[[float], float]


def random_jitter(rng: Rng = os.urandom) -> Jitter:
    if rng is os.urandom:
        return _urandom_jitter   # one for all IKE SAs, not a closure (~200 bytes) each

    def jitter(bound: float) -> float:
        return bound * int.from_bytes(rng(2), "big") / 0xFFFF

    return jitter


def _urandom_jitter(bound: float) -> float:
    return bound * int.from_bytes(os.urandom(2), "big") / 0xFFFF


class State(Enum):
    """The life of an IKE SA (``IkeSa.state``)."""

    IDLE = "idle"
    CONNECTING = "connecting"  # IKE_SA_INIT / IKE_AUTH in progress
    ESTABLISHED = "established"
    DELETING = "deleting"
    REKEYED = "rekeyed"  # replaced by a successor; only waits for the old SA's DELETE
    CLOSED = "closed"


class SpiUnavailable(Exception):
    """The SPI allocator has no SPI to give (e.g. its GETSPI pool is empty)."""


class AddressPool(Protocol):
    """Where a responder gets virtual IPs (``tunsec.policy.pools.AddressPools``).

    Leases outlive an IKE SA (the same identity gets its address back), so the
    service keeps them; the engine asks for one per requested address family in
    IKE_AUTH and gives them back when the IKE SA is gone for good.
    """

    def holding(self, names: Sequence[str], address: str) -> str | None: ...

    def acquire(self, names: Sequence[str], peer: Identity, family: int, source: str | None = None,
                proof: str = "") -> Lease | None: ...

    def release(self, lease: Lease, peer: Identity) -> None: ...

    def spans(self, names: Sequence[str]) -> tuple[Ts, ...]: ...


class SelectorClaims(Protocol):
    """The remote selectors every Child SA of the gateway holds, toward which local ones, and whose
    they are (``tunsec.policy.claims.TsClaims``): a peer may not claim another peer's."""

    def overlaps(self, peer: object, selectors: Sequence[Ts], local: Sequence[Ts],
                 named: bool = False, by_name: bool | None = None) -> list[tuple[Claim, Ts]]: ...

    def containing(self, ip: IPAddress) -> list[tuple[Claim, list[Ts], set[IPNetwork]]]: ...


def random_spi_allocator(rng: Rng = os.urandom) -> SpiAllocator:
    """A stand-alone allocator for tests; the IKE service uses GETSPI-backed SPIs."""

    def allocate() -> int:
        while True:
            spi = int.from_bytes(rng(4), "big")
            if spi >= 256:  # 1..255 are reserved by IANA (RFC 4303 §2.1)
                return spi

    return allocate


@dataclass(slots=True)   # one per Child SA: no per-instance dict (a gateway holds thousands)
class ChildSa:
    """One negotiated (or being negotiated) Child SA."""

    name: str
    unique_id: int
    config: ChildConfig
    spi_in: int
    spi_out: int = 0
    suite: Suite | None = None
    local_ts: tuple[Ts, ...] = ()
    remote_ts: tuple[Ts, ...] = ()
    installed: bool = False
    rekey_at: float | None = None  # when our rekey timer fires; inf once a rekey is under way
    # when it came up here (the IKE SA's clock; sa_timers.schedule), and when our rekey timer was first
    # armed for (rekey_time from then, jittered): restored after our answer to the peer's rekey of it
    # is refused (sa_timers.own_rekey_at)
    created_at: float | None = None
    rekey_due: float | None = None
    rekey_asked: bool = False   # a rekey asked for (soft EXPIRE) while the peer's was under way (IkeSa.rekey_child)
    rekey_failures: int = 0  # our rekeys of it that failed in a row (refused, or no inbound SPI): backoff
    # after we rekeyed this SA: (lowest nonce of our exchange, the new SA), to settle a
    # collision with a rekey of the peer that crossed ours (RFC 7296 §2.8.1)
    rekeyed_by_us: tuple[bytes, ChildSa] | None = None
    rekeyed_by_peer: bool = False  # we answered the peer's rekey of it: it waits for the peer's DELETE
    # a DELETE of ours for it is queued or out: the peer's rekey of it is refused (RFC 7296 §2.25.1),
    # or its successor would outlive the delete (a rekey collision's redundant SA, both lived on)
    deleting: bool = False
    # the unique id of the Child SA the peer's rekey replaced with this one (we answered it): if we delete
    # this one, that one is no longer rekeyed (informational.delete_ours)
    peer_rekey_of: int | None = None
    # we deleted the new Child SA of the peer's rekey of this one (informational.delete_ours): the peer
    # may have that rekey done, its DELETE of this one on its way: the end of a rekey, not a close
    successor_deleted: bool = False
    # created by the peer's request, and no later request of the peer's served since: the peer may not
    # have our answer yet (IkeSaState.unconfirmed; a CHILD_SA_NOT_FOUND to our rekey of it says nothing)
    unconfirmed: bool = False
    # the message ID of the peer's request whose answer created it (sa_responder.serve): a refusal
    # replaces only that answer, not a later request's (child_refusal._refusable)
    answered_in: int | None = None


@immutable(slots=True)   # one per IKE_AUTH answered with a Child SA
class AuthAnswer:
    """Our IKE_AUTH answer that created Child SA ``unique_id``, less that Child SA's payloads (SA, TSi,
    TSr and its notifies): what child_refusal.py rebuilds it from with an error notify in their place,
    should the install fail while the answer is held.  Kept only until the install is answered
    (IkeSa.child_installed) or the peer's next request (IkeSaState.peer_has_answers)."""

    unique_id: int
    before: tuple[Payload, ...]   # IDr, [CERT...], AUTH, [CP]
    after: tuple[Payload, ...]    # what follows the Child SA's payloads (MOBIKE_SUPPORTED)


@dataclass(frozen=True)
class IkeRekey:
    """What a successful IKE SA rekey agreed on; ``sa_successor.py`` builds the new IkeSa from it."""

    we_initiated: bool
    spi_i: bytes  # SPI of the rekey initiator (the new SA's initiator)
    spi_r: bytes
    proposal: Proposal
    nonce_i: bytes
    nonce_r: bytes
    shared: bytes = field(repr=False)


NO_HASHES: frozenset[int] = frozenset()
DuplicateCheck = Callable[["IkeSaState"], "str | IkeSaLimit | None"]
class AddressRole(Protocol):
    """What an address is to the endpoint (address_role.py): "own" (this host's, as the connections say;
    ``host``: any address of its interfaces too), "peer" (an IKE peer's), "pool", "tunnel", or None."""

    def __call__(self, ip: IPAddress, /, *, host: bool = False) -> Role | None: ...



@dataclass(slots=True)   # one per IKE SA: ~40 fields, no per-instance dict (a gateway holds thousands)
class IkeSaState:
    config: IkeConfig
    is_initiator: bool
    rng: Rng
    spi_allocator: SpiAllocator
    wall_clock: Callable[[], datetime]
    remote_addr: Address
    local_addr: Address | None
    # the endpoint's limiters of lines its peers can repeat (peer_logs.py), shared by its IKE SAs
    peer_logs: PeerLogs
    spi_i: bytes = b"\0" * 8
    spi_r: bytes = b"\0" * 8
    local_port: int = IKE_PORT
    proposal: Proposal | None = None
    suite: Suite | None = None
    prf: Prf | None = None
    keys: IkeKeys | None = None
    tx: SkCrypter | None = None
    rx: SkCrypter | None = None
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    init_request: bytes = b""
    init_response: bytes = b""
    peer_hashes: frozenset[int] = NO_HASHES
    peer_id: Identity | None = None
    # the identity the peer sent (IDi/IDr) when its certificate proved it as another, peer_id
    # (identity.certified_identity): what the connection's remote.id matched, and what logs show
    peer_sent_id: Identity | None = None
    peer_anchor: bytes | None = None   # the CA its certificate verified to (IkeSaUp.peer_anchor)
    children: dict[int, ChildSa] = field(default_factory=dict)
    # the last few Ni | Nr its Child SAs' keys came from under SK_d: none is used twice (keymat_seeds.py)
    keymat_seeds: KeymatSeeds = field(default_factory=KeymatSeeds)
    # a list, not a deque: empty nearly all the time, when a list holds no buffer (a deque a 0.5 KiB block)
    events: list[Event] = field(default_factory=list)
    rekey: IkeRekey | None = None  # set when a CREATE_CHILD_SA produced a new IKE SA
    # after a rekey collision (RFC 7296 §2.8.2): the other new IKE SA, to delete or be deleted
    redundant: IkeRekey | None = None
    # a responder's possible connections; IKE_AUTH picks one by the peer's identity
    candidates: tuple[IkeConfig, ...] = ()
    initial_contact: bool = False  # the peer sent INITIAL_CONTACT in IKE_AUTH
    peer_certreq: bool = False  # the peer sent a CERTREQ (send_cert = ifasked answers it)
    peer_fragmentation: bool = False  # the peer announced IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
    next_child_id: int = 1
    # Child SAs created by the peer's requests since it last sent one (ChildSa.unconfirmed): our window
    # of one lets it send the next only once it has our answer, so that request confirms them all
    # (sa_responder.serve); at most one between two requests, kept here not to walk every Child SA
    unconfirmed: tuple[ChildSa, ...] = ()
    # the IKE_AUTH answer that created an unconfirmed Child SA (one of ``unconfirmed``), to refuse it in
    auth_answer: AuthAnswer | None = None
    jitter: Jitter | None = None  # None: random_jitter(rng)
    spi_tag: IkeSpiTag | None = None  # the key of our IKE SPIs' tags (spi_tag.py); None: untagged
    # the endpoint's IKE SPIs in use and reserved: a rekey's or redirect's new SPI is drawn through it
    # (spi_book.py); None: a stand-alone SA (tests), whose SPIs nobody else routes
    spi_book: IkeSpiBook | None = None
    address_pool: AddressPool | None = None  # a responder's virtual IP leases (connections.X.pools)
    ts_claims: SelectorClaims | None = None  # the selectors every peer holds (checked on every Child SA)
    peer_vips: tuple[Lease, ...] = ()  # leases we gave the peer in IKE_AUTH (released when the SA goes)
    own_vips: tuple[IPAddress, ...] = ()  # virtual IPs the peer assigned to us (CFG_REPLY)
    own_dns: tuple[IPAddress, ...] = ()  # DNS servers that came with them
    eap: GatewayEap | None = None  # a gateway's EAP rounds of IKE_AUTH in progress (RFC 7296 §2.16)
    # Redirect (RFC 5685, redirect.py). A gateway's: how many IKE SAs the endpoint holds (for
    # redirect_when), whether the client announced support, and where we sent it in IKE_AUTH
    load: Callable[[], int] | None = None
    peer_redirect_support: bool = False
    redirected_to: str | None = None
    # A client's: the gateway that redirected it to this one (N(REDIRECTED_FROM)), the FQDN of the
    # gateway whose address it waits for, and a REDIRECT received in IKE_AUTH (with the child it asked for)
    redirected_from: str | None = None
    resolving: str | None = None
    authenticated_target: bool = False   # remote_addr (or resolving) is what a REDIRECT in IKE_AUTH named
    auth_redirect: Redirect | None = None
    auth_redirect_child: str | None = None
    # MOBIKE (RFC 4555, exchanges/mobike.py): both sides announced MOBIKE_SUPPORTED in IKE_AUTH
    mobike: bool = False
    # we initiated the first IKE SA of this lineage (kept across IKE rekeys, which may swap the
    # roles): the side that decides on addresses and sends UPDATE_SA_ADDRESSES (RFC 4555 §3.1)
    original_initiator: bool = False
    # the (source, destination) of the authenticated request being answered (set by sa_responder.py for
    # the responders; destination None if the socket did not tell)
    request_path: tuple[Address, Address | None] | None = None
    # a MOBIKE return routability check is under way: the Child SAs stay at this address until
    # the peer answers at its new one (``esp_remote``)
    esp_hold: Address | None = None
    # and our (local_addr, local_port) then, where the Child SAs send from: the check unanswered
    # takes the IKE SA back to both (a forged copy may have come in on another of our addresses)
    esp_hold_local: tuple[Address | None, int] | None = None
    # how often a MOBIKE update (or a failed check going back) changed remote_addr: a return
    # routability check begun before the last change checks an address that is no longer the newest
    # claim, and its answer proves nothing (exchanges/mobike.py)
    mobike_moves: int = 0
    # the peer's IP address it has shown it receives at: the IKE_SA_INIT exchange's (the peer
    # needed our part of it to go on), later a MOBIKE address that passed the return routability
    # check; unlike remote_addr, never one an authenticated request merely came from (child.remote_dynamic)
    proven_addr: str | None = None
    nat_peer: bool = False  # the peer is behind a NAT, as the last NAT detection showed
    nat_here: bool = False  # we are behind a NAT, as the last NAT detection showed
    # a responder's uniqueness check once the peer is authenticated (IkeEndpoint: unique = keep, and
    # max_ike_sas per identity): why this IKE SA must be refused, or None
    refuse_duplicate: DuplicateCheck | None = None
    # an initiator's: whether we already have an established IKE SA with these identities (the
    # IKE_AUTH request then carries no INITIAL_CONTACT, which would make the peer drop it)
    has_contact: Callable[[IkeSaState], bool] | None = None
    # what an address is to the endpoint (AddressRole, address_role.py).  A client takes no such virtual IP
    # (on our TUN it would take that peer's, road warrior's or other tunnel's traffic) and follows no
    # redirect to its own address, a pool's or into another tunnel (redirect.refused_target); no peer
    # moves its SAs to such an address (mobike._unacceptable, the NAT float too)
    address_role: AddressRole | None = None

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def unconfirmed_child(self, child: ChildSa) -> None:
        """``child`` was created by the peer's request we are answering (see ``unconfirmed``)."""
        child.unconfirmed = True
        self.unconfirmed = (*self.unconfirmed, child)

    def peer_has_answers(self) -> None:
        """The peer sent a new request: it has our answers, and the Child SAs they created."""
        for child in self.unconfirmed:
            child.unconfirmed = False
        self.unconfirmed = ()
        self.auth_answer = None

    def new_child_id(self) -> int:
        self.next_child_id += 1
        return self.next_child_id - 1

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def own_nonce(self) -> bytes:
        return self.nonce_i if self.is_initiator else self.nonce_r

    @property
    def peer_nonce(self) -> bytes:
        return self.nonce_r if self.is_initiator else self.nonce_i

    @property
    def esp_remote(self) -> Address:
        """Where the Child SAs send ESP: the IKE SA's peer, unless a MOBIKE update is still
        waiting for its return routability check."""
        return self.esp_hold or self.remote_addr

    @property
    def local_ip(self) -> str | None:
        return self._our_ip(self.local_addr)

    @property
    def esp_local(self) -> tuple[str | None, int]:
        """Our (IP, port) the Child SAs send from: the IKE SA's, unless a MOBIKE update that came in
        on another of our addresses still waits for its return routability check."""
        if self.esp_hold_local is None:
            return self._our_ip(self.local_addr), self.local_port   # (local_ip's, a frame less)
        addr, port = self.esp_hold_local
        return self._our_ip(addr), port

    def _our_ip(self, local_addr: Address | None) -> str | None:
        if self.config.local_addr:
            return self.config.local_addr
        # a socket bound to the wildcard (0.0.0.0, ::) tells the port it received on, not our address
        if local_addr and local_addr[0] not in ("0.0.0.0", "::"):
            return local_addr[0]
        return None

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.is_initiator else self.spi_r

    def allocate_spi(self) -> int:
        spi = self.spi_allocator()
        if not 256 <= spi <= 0xFFFFFFFF:
            raise SpiUnavailable(f"allocator returned invalid SPI {spi:#x}")
        return spi

    def forget_setup(self) -> None:
        """Drop what only the setup needed, once the IKE SA is up (authenticated, its first Child SA
        keyed) or was made by a rekey: a gateway holds thousands for hours. The IKE_SA_INIT messages,
        the nonces and SK_pi/SK_pr only go into the AUTH payloads (and the first Child SA's keys),
        the peer's signature hash algorithms only into ours; SK_ei/SK_er/SK_ai/SK_ar live on in the
        SK crypters. SK_d stays (Child SA keys and the next IKE SA's SKEYSEED)."""
        self.init_request = self.init_response = b""
        self.nonce_i = self.nonce_r = b""
        self.peer_hashes = NO_HASHES   # frozenset() is no singleton: 216 bytes each
        if self.keys is not None and len(self.keys.pi):
            self.keys = IkeKeys.only_d(self.keys.d)

    def install_keys(self, shared: bytes, rekeyed_from: tuple[Prf, Secret] | None = None) -> None:
        """Derive SKEYSEED and the seven keys from g^ir and the nonces and SPIs.

        ``rekeyed_from`` is (PRF, SK_d) of the IKE SA this one replaces.
        """
        assert self.suite is not None and self.suite.prf_id is not None
        prf = Prf(self.suite.prf_id)
        if rekeyed_from is None:
            seed = skeyseed(prf, self.nonce_i, self.nonce_r, shared)
        else:
            seed = rekey_skeyseed(*rekeyed_from, shared, self.nonce_i, self.nonce_r)
        keys = derive_ike_keys(
            prf,
            seed,
            self.nonce_i,
            self.nonce_r,
            self.spi_i,
            self.spi_r,
            self.suite.encr_key_len,
            self.suite.integ_key_len,
        )
        self.prf, self.keys = prf, keys
        self.keymat_seeds = KeymatSeeds()   # a new SK_d: no Child SA's keys came from it yet
        ours_e, ours_a, theirs_e, theirs_a = (
            (keys.ei, keys.ai, keys.er, keys.ar) if self.is_initiator else (keys.er, keys.ar, keys.ei, keys.ai)
        )
        integ = self.suite.integ_id
        self.tx = SkCrypter(self.suite.encr_id, ours_e, integ, ours_a if integ else None, self.rng)
        self.rx = SkCrypter(self.suite.encr_id, theirs_e, integ, theirs_a if integ else None, self.rng)


def nat_hash(spi_i: bytes, spi_r: bytes, addr: Address) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port) of NAT_DETECTION_*_IP (RFC 7296 §2.23)."""
    try:   # inet_pton: ipaddress's parser costs more than the hash (twice per IKE_SA_INIT)
        ip = socket.inet_pton(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, addr[0])
    except (OSError, ValueError):
        ip = ipaddress.ip_address(addr[0]).packed   # what inet_pton does not take (a scope id) or an error
    return hashlib.sha1(spi_i + spi_r + ip + addr[1].to_bytes(2, "big")).digest()


def now_utc() -> datetime:
    """Wall clock for certificate validity only; inject another for tests."""
    return datetime.now(UTC)
