"""Events the engine reports through ``IkeSa.next_event()``.

Keys travel as :class:`Secret` so that printing an event never prints a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tunsec.immutable import immutable
from tunsec.policy.selector import IPAddress

from .identity import Identity
from .secret import Secret
from .ts import Ts

Address = tuple[str, int]


class DownReason(Enum):
    """Why an IKE or Child SA went down (:class:`IkeSaDown`, :class:`ChildSaDown`).

    Consumers decide on the member (close_action runs on ``DELETED_BY_PEER`` only,
    dpd_action on ``PEER_UNREACHABLE``...); the value is the text logs show.
    """

    DELETED_BY_PEER = "deleted by peer"
    DELETED = "deleted locally"  # terminated by us (API call, shutdown)
    EXPIRED = "expired (hard lifetime)"
    REKEYED = "rekeyed"  # replaced by a rekey; its successor carries on
    REKEY_COLLISION = "redundant (rekey collision)"  # the losing SA of simultaneous rekeys
    REPLACED = "replaced by a new IKE SA of the same peer"  # INITIAL_CONTACT or unique = replace
    DUPLICATE = "duplicate of an existing IKE SA (unique = keep)"
    IKE_SA_LIMIT = "its identity holds max_ike_sas_per_identity IKE SAs"
    AUTH_FAILED = "authentication failed"
    PEER_UNREACHABLE = "peer unreachable"  # retransmissions of a request exhausted
    DEAD_PEER = "dead peer detection: no answer to a liveness check"
    NEGOTIATION_FAILED = "negotiation failed"
    REFUSED = "refused by the peer"  # the peer refused a Child SA we had already installed
    # the peer answered our rekey of it CHILD_SA_NOT_FOUND: ended, and the child is created again
    LOST_BY_PEER = "the peer no longer has it (CHILD_SA_NOT_FOUND): created again"
    HALF_OPEN_TIMEOUT = "half-open timeout"
    REDIRECTED = "redirected to another gateway (RFC 5685)"
    UNANSWERED = "request never answered"
    VIP_REFUSED = "the virtual IP the gateway assigned cannot be used here"  # services/ike/vip_refused.py

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ChildSaInfo:
    """A Child SA as ``tunsec status`` shows it (no keys)."""

    name: str
    unique_id: int
    spi_in: int
    spi_out: int
    alg: str
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]


@dataclass(frozen=True)
class IkeSaInfo:
    """An IKE SA as ``tunsec status`` shows it (no keys); from ``IkeSa.info()``."""

    name: str
    state: str
    is_initiator: bool
    spi_i: bytes
    spi_r: bytes
    local_id: Identity
    remote_id: Identity | None
    remote_addr: Address
    local_port: int
    proposal: str | None
    created: float
    children: tuple[ChildSaInfo, ...]


@dataclass(frozen=True, slots=True)
class PeerEap:
    """How a peer authenticated to us (a gateway) with EAP, for ``tunsec status``: nothing secret.

    A gateway keeps one per EAP client for the SA's life: the values are the ones the exchange
    already holds (the IDi payload's bytes, the EAP user name, the backend's group tuple), not copies."""

    ike_id: Identity             # the IDi it sent (with eap_id, EAP proved another: IkeSaUp.remote_id)
    user: bytes                  # the EAP identity it authenticated with (eap-radius: the Accept's User-Name, if any)
    groups: tuple[str, ...] = ()  # its group memberships, as the AAA backend's Access-Accept gave them

    @property
    def user_text(self) -> str:
        """The EAP identity as text: UTF-8, other bytes escaped (a peer's name, not ours to choose)."""
        return self.user.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Accepted:
    """What an AAA backend's Access-Accept says of the session (eap-radius): its Class attributes
    (echoed in every accounting record), its Acct-Interim-Interval (as the server sent it; accounting
    bounds it) and its Session-Timeout (the most seconds the IKE SA may last; the service bounds it).

    It travels with its IKE SA (RelayReply -> GatewayEap -> IkeSaUp.accepted), not in a table at the
    edge: what one login's Accept says cannot be pushed out by other logins before its IKE SA is up,
    and it is held as long as the half-open IKE SA is, and no longer (review revradius F2)."""

    classes: tuple[bytes, ...] = ()
    interim_interval: int | None = None
    session_timeout: int | None = None


# kept as the status record of each IKE SA (IkeService.ike_up); immutable: one per client set-up, made
# without a frozen dataclass's object.__setattr__ per field (17 of them)
@immutable(slots=True)
class IkeSaUp:
    name: str
    spi_i: bytes
    spi_r: bytes
    local_id: Identity
    remote_id: Identity
    remote_addr: Address
    local_port: int
    proposal: str
    initial_contact: bool = False  # the peer says it has no other SAs with us (RFC 7296 §2.4)
    # virtual IPs (RFC 7296 §3.15): the ones the peer assigned us, with its DNS servers (a client),
    # and the ones we leased the peer (a gateway; released by the engine when the IKE SA goes)
    own_vips: tuple[IPAddress, ...] = ()
    dns: tuple[IPAddress, ...] = ()
    peer_vips: tuple[IPAddress, ...] = ()
    peer_eap: PeerEap | None = None  # a gateway's client that authenticated with EAP
    # the identity the peer sent, when its certificate proved it as remote_id, or its PSK's DN is
    # configured in another spelling (ike_auth._named_dn)
    remote_sent_id: Identity | None = None
    # how remote_id was proven (IkeConfig.lease_proof): with it the peer as leases, selector claims
    # and the worker's reserve tell peers apart (a group-PSK client's "alice" is not EAP user alice)
    proof: str = ""
    # eap-radius: what the client's Access-Accept said of the session (None: none of it), for its
    # Session-Timeout and accounting (services/ike/radius_edge.py)
    accepted: Accepted | None = None
    # the CA (certs.ca_fingerprint) the peer's certificate verified to, pubkey or EAP-TLS: a reload that
    # takes it out of the connection's CAs logs the peer out (services/ike/revoked.py); 32 bytes shared
    # by the CA's clients, not the peer's chain (tunsec never reauthenticates, nothing else reads it)
    peer_anchor: bytes | None = None


@dataclass(frozen=True)
class IkeSaRekeyed:
    """The IKE SA was replaced by a new one with new SPIs; its Child SAs moved along.

    No IkeSaDown follows for the old SA; the new one reports from now on.
    """

    name: str
    old_spi_i: bytes
    old_spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes


@dataclass(frozen=True)
class IkeSaDown:
    name: str
    reason: DownReason


@dataclass(frozen=True)
class IkeSaDeleting:
    """We began to delete the established IKE SA (``IkeSa.delete``): its Child SAs went down and its
    peer's leases back to the pool just before (their events came first), while the IKE SA waits for
    its DELETE's answer (IkeSaDown then, with the same reason).  The session ends here for those who
    account for it: its address may be another peer's from now on (review revdelete F1)."""

    name: str
    reason: DownReason


@immutable   # one per Child SA set up: no object.__setattr__ per field (18 of them)
class ChildSaUp:
    """A Child SA to install: UPDATE the larval inbound SA ``spi_in``, ADD ``spi_out``.

    ``key_in``/``key_out`` are the ESP keys of each direction; for AES-GCM
    (``alg`` ``aes128gcm16``/``aes256gcm16``) each is key || 4-byte salt.
    ESP is carried in UDP between ``local_ip``, ``local_port`` and ``remote_addr``.
    ``name`` is the connection (as in every event), ``child`` the child config.
    """

    name: str
    child: str
    unique_id: int
    spi_in: int
    spi_out: int
    alg: str
    key_in: Secret
    key_out: Secret
    esn: bool
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    remote_addr: Address
    local_port: int
    mode: str = "tunnel"
    rekey_of: int | None = None  # unique_id of the Child SA this one replaces
    initiator: bool = False  # we sent the request of the exchange that created it (a rekey: we started it)
    local_ip: str | None = None  # our address the peer talks to (IkeSa.local_ip); None: not known


@dataclass(frozen=True)
class ChildSaDown:
    name: str  # the connection
    child: str
    unique_id: int
    spi_in: int
    spi_out: int
    reason: DownReason
    detail: str = ""  # more words for the log (e.g. the notify a refusal carried)

    def describe(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


@dataclass(frozen=True)
class AuthFailed:
    """Authentication failed. ``by_peer``: the peer rejected us (it sent AUTHENTICATION_FAILED);
    ``backend``: our AAA back end gave no verdict on the peer (no RADIUS server answered, all busy, none
    configured, an answer we cannot use); ``refused``: the peer proved its identity and was refused after
    (``unique = keep``, none of the groups required).  Only the rest count towards a source's ban
    (auth_ban.py): an outage of ours or our policy must not ban users with right credentials (review revban F1, F2)."""

    name: str
    reason: str
    by_peer: bool
    backend: bool = False
    refused: bool = False
    # the conversation's end after a refusal told already (an EAP-MSCHAPv2 Failure request the back end
    # sent in an Access-Challenge, its own AuthFailed): not counted again
    counted: bool = False

    @property
    def counts(self) -> bool:
        """Whether the peer failed OUR check of its credentials (what a failed-authentication ban counts)."""
        return not (self.by_peer or self.backend or self.refused or self.counted)


@dataclass(frozen=True)
class NegotiationFailed:
    """An IKE or Child SA could not be negotiated.

    ``reason`` is the notify name (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, ...);
    ``detail`` says why in words (both proposal lists for NO_PROPOSAL_CHOSEN);
    ``child`` names the Child SA, or is None when the IKE SA itself failed;
    ``claims``: refused because its selectors overlap another peer's (policy/claims.py);
    ``rekey_ts``: a rekey refused because its selectors are not the rekeyed Child SA's (RFC 7296 §2.8);
    ``peer_request``: we refused a request of the (authenticated) peer's, which it may send again at
    will (the daemon rate-limits the line), not a negotiation of ours that failed;
    ``ts_limit``: its selectors narrow to (or an answer holds) more than a Child SA holds
    (exchanges/child.py side_limit, MAX_SELECTORS pairs): counted, logged rate-limited with the peer's address.
    """

    name: str
    reason: str
    detail: str
    child: str | None = None
    claims: bool = False
    rekey_ts: bool = False
    peer_request: bool = False
    ts_limit: bool = False


@dataclass(frozen=True)
class ChildSaLimit:
    """We refused the peer's CREATE_CHILD_SA with NO_ADDITIONAL_SAS: its IKE SA holds ``held`` Child
    SAs and ``max_child_sas`` is ``limit`` (``rekey``: a rekey refused, the peer having left that many
    replaced Child SAs undeleted).  The peer is authenticated: ``peer`` names it."""

    name: str
    peer: str
    remote_addr: Address
    held: int
    limit: int
    rekey: bool = False


@dataclass(frozen=True)
class IkeSaLimit:
    """We refused an authenticated peer's IKE_AUTH with AUTHENTICATION_FAILED: its identity ``peer``
    (an unproven one: its name) holds ``held`` IKE SAs of the connection and ``max_ike_sas_per_identity``
    is ``limit``."""

    name: str
    peer: str
    remote_addr: Address
    held: int
    limit: int


@dataclass(frozen=True)
class PeerUnreachable:
    """Retransmissions were exhausted; the IKE SA is gone (an IkeSaDown follows if it was up).

    ``children``: the Child SA configs it was still creating (in IKE_AUTH, a CREATE_CHILD_SA out,
    queued or waiting to be asked again), which a keyingtries retry asks for again."""

    name: str
    tries: int
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirected:
    """The gateway redirected us (RFC 5685) to ``to_addr`` (an address or an FQDN). In IKE_SA_INIT
    the same IKE SA tries there; in IKE_AUTH (``in_auth``) this IKE SA is deleted and a new one
    (the endpoint's next, with the same connection and child) starts there."""

    name: str
    from_addr: str
    to_addr: str
    in_auth: bool = False


@dataclass(frozen=True)
class PeerRedirected:
    """As a gateway we authenticated ``peer`` and redirected it to ``to`` in IKE_AUTH (RFC 5685 §6)."""

    name: str
    peer: Identity
    to: str


@dataclass(frozen=True)
class ResolveGateway:
    """The IKE SA needs the addresses of ``gateway``, an FQDN a REDIRECT named: look it up
    (without blocking) and hand the result to :meth:`IkeSa.gateway_resolved`."""

    name: str
    gateway: str


@dataclass(frozen=True)
class SpiUnused:
    """An inbound SPI from the allocator will not be used: DELETE its larval SA."""

    spi: int


@dataclass(frozen=True)
class EapRelayRequest:
    """A gateway's IKE_AUTH waits for the AAA backend (``auth = eap-radius``): send ``eap``, the
    client's EAP response, for user ``identity`` and answer with ``IkeSa.relay_reply``. One at
    a time per IKE SA; ``first`` starts a conversation (no backend state to echo yet)."""

    name: str
    identity: bytes
    eap: bytes = field(repr=False)
    peer: Address
    first: bool


@dataclass(frozen=True)
class EapRelayAbandoned:
    """The IKE SA went away while its EAP relay conversation was open (waiting or between
    rounds), or after the backend accepted the user but before the IKE SA was up (refused for
    its groups, its AUTH, a duplicate): forget the backend state and what its answer said, and
    drop an answer still to come."""

    name: str


Event = (
    IkeSaUp
    | IkeSaRekeyed
    | IkeSaDown
    | IkeSaDeleting
    | ChildSaUp
    | ChildSaDown
    | AuthFailed
    | NegotiationFailed
    | ChildSaLimit
    | IkeSaLimit
    | PeerUnreachable
    | Redirected
    | PeerRedirected
    | ResolveGateway
    | SpiUnused
    | EapRelayRequest
    | EapRelayAbandoned
)
