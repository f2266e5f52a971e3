"""What the engine needs to know about a connection, as frozen dataclasses.

:mod:`tunsec.conf.connections` builds these from swanctl.conf's ``connections``
(and ``secrets``/``authorities``): one :class:`IkeConfig` per connection, one
:class:`ChildConfig` per child, which the IKE service hands to the engine as
they are. Proposals are parsed with ``proposals.parse_proposals``, traffic
selectors with ``parse_ts_list`` (tunsec.policy.selector, shared with manual
tunnels), identities with ``Identity.parse``; the test helper
:func:`child_config` accepts the swanctl strings directly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509

from tunsec.policy.selector import IPAddress

from .auth import PrivateKey
from .constants import IKE_PORT, ProtocolId
from .fragments import DEFAULT_FRAGMENT_SIZE, FragmentationMode
from .identity import Identity
from .proposals import ProposalSpec, parse_proposals
from .psk import PskEntry, PskIndex
from .secret import Secret
from .ts import Ts, parse_ts_list

# Child SAs one IKE SA may hold (tunsec { max_child_sas }; strongSwan has no such limit).  Generous:
# a road warrior has one or two, a site-to-site peer one per subnet pair it was configured with
# (cloud gateways and strongSwan peers that cannot put several subnets in one Child SA send
# dozens); finite, because each costs an inbound SPI, two SAs and their policies in the worker,
# whose SPD lookup is linear and whose flow caches every policy change empties for all peers.
DEFAULT_MAX_CHILD_SAS = 64
# IKE SAs one peer identity may hold in a connection (tunsec { max_ike_sas_per_identity }; strongSwan has
# no such limit): a user with a phone, a laptop and a tablet never meets it; each IKE SA may hold
# max_child_sas Child SAs, and without it one authenticated identity could fill the SAD, the worker's
# IKE SPI table and the control process's memory (a rekey replaces one and is not counted again)
DEFAULT_MAX_IKE_SAS = 8

AuthMethodName = Literal["psk", "pubkey", "eap-mschapv2", "eap-tls", "eap-radius"]
SendCertMode = Literal["always", "ifasked", "never"]
RedirectOn = Literal["init", "auth"]  # when a gateway redirects (RFC 5685 §5 or §6)


def default_rand_time(rekey_time: float | None) -> float:
    """strongSwan's default spread: 10 % of the rekey time (life - rekey for children, over_time for IKE)."""
    return (rekey_time or 0.0) / 10


@dataclass(frozen=True)
class RetransmitConfig:
    """strongSwan's defaults: 4 s, growing by 1.8 per try, 5 retransmissions; ``limit`` caps one
    wait (strongSwan's retransmit_limit, 0: none), so that many tries of a large base end in a span
    one can wait for (base 10 and 100 tries: ~10^100 s without it)."""

    timeout: float = 4.0
    base: float = 1.8
    tries: int = 5
    limit: float = 0.0

    def delay(self, attempt: int) -> float:
        """How long to wait after send number ``attempt`` (0 = the first send)."""
        wait = self.timeout * self.base**attempt
        return min(wait, self.limit) if self.limit else wait

    def span(self) -> float:
        """How long a request is retransmitted: from its first send until it is given up."""
        return sum(self.delay(i) for i in range(self.tries + 1))


@dataclass(frozen=True)
class LocalAuth:
    """How we authenticate ourselves (swanctl ``local`` section)."""

    method: AuthMethodName
    id: Identity
    cert: x509.Certificate | None = None
    intermediates: tuple[x509.Certificate, ...] = ()
    private_key: PrivateKey | None = field(default=None, repr=False)
    rsa_pss: bool = False  # sign with RSASSA-PSS instead of PKCS#1 v1.5 (strongSwan's rsa_pss)
    eap_id: str = ""  # with eap-mschapv2: the EAP user name ("": our IKE identity)

    def __post_init__(self) -> None:
        if self.method == "pubkey" and (self.cert is None or self.private_key is None):
            raise ValueError("pubkey authentication needs a certificate and its private key")


@dataclass(frozen=True)
class RemoteAuth:
    """What we require of the peer (swanctl ``remote`` section)."""

    method: AuthMethodName
    id: Identity = field(default_factory=Identity.any)
    cas: tuple[x509.Certificate, ...] = ()  # trust anchors for pubkey (and eap-tls) authentication
    # with eap-mschapv2: the EAP identity to authenticate ("": the peer's IKE identity,
    # "%any": ask for it with EAP-Identity), as swanctl's remote.eap_id
    eap_id: str = ""
    # swanctl's remote.groups: the peer must be a member of one of these (compared as identities
    # are, a name regardless of case); only RADIUS says who is (eap-radius, its Access-Accept)
    groups: tuple[Identity, ...] = ()

    def __post_init__(self) -> None:
        if self.method in ("pubkey", "eap-tls") and not self.cas:
            raise ValueError(f"{self.method} authentication of the peer needs at least one CA")
        if self.groups and self.method != "eap-radius":
            raise ValueError("group memberships come only from RADIUS: groups needs auth = eap-radius")
        if any(g.is_any for g in self.groups):
            raise ValueError("%any is no group")


@dataclass(frozen=True)
class EapSecret:
    """A swanctl ``secrets.eap<suffix>`` entry: a password and the EAP user names it is for."""

    ids: tuple[str, ...]
    secret: Secret = field(repr=False)


@dataclass(frozen=True)
class ChildConfig:
    name: str
    local_ts: tuple[Ts, ...] = (Ts.parse("dynamic"),)
    remote_ts: tuple[Ts, ...] = (Ts.parse("dynamic"),)
    esp_proposals: tuple[ProposalSpec, ...] = field(default_factory=lambda: parse_proposals("default", ProtocolId.ESP))
    mode: Literal["tunnel"] = "tunnel"
    rekey_time: float | None = None  # seconds; strongSwan's default is 3600 (swanctl rekey_time)
    # the rekey fires at rekey_time minus a random 0..rand_time (None: 10 % of rekey_time)
    rand_time: float | None = None
    # the hard lifetime (swanctl life_time) the worker ends each of its SAs at, from the install; the
    # engine only keeps a rekey it re-arms before it (sa_timers.own_rekey_at). None: none
    life_time: float | None = None

    @property
    def wants_pfs(self) -> bool:
        return any(p.dh_groups for p in self.esp_proposals)


@dataclass(frozen=True)
class IkeConfig:
    """One IKE connection.

    Timers are off unless set: the swanctl.conf mapping should apply strongSwan's
    defaults (``rekey_time`` 4 h here and 1 h for children). The engine rekeys at
    ``rekey_time`` minus a random 0..``rand_time`` (default 10 % of rekey_time), as
    strongSwan does, so that both peers rarely rekey at once; an IKE SA whose rekey
    has not succeeded ``over_time`` after that (default 10 % of rekey_time) is
    deleted (its hard lifetime, strongSwan's over_time) once the exchange in flight, if
    any, ends: a late answer to the rekey still saves it (sa_timers.expire).

    ``send_cert`` (with ``pubkey`` authentication): ``ifasked`` sends our certificate
    only if the peer sent a CERTREQ, ``always`` always, ``never`` never.

    ``fragmentation`` (swanctl's, RFC 7383; see ``fragments.py``): ``yes`` announces
    support and sends messages that exceed ``fragment_size`` (the whole IP datagram,
    strongswan.conf's ``charon.fragment_size``; 0: 576 for IPv4, 1280 for IPv6) in fragments if the peer supports them;
    ``accept`` only announces; ``force`` fragments even if the peer did not announce;
    ``no`` does not announce. Fragments from the peer are reassembled in every mode.

    ``psk`` is the shared secret used in both directions when either side
    authenticates with ``psk`` (swanctl ``secrets { ike { ... } }``). A connection of
    ``remote.id = %any`` also carries ``peer_psks``, every entry, of which the identity a peer
    sends chooses its own for both AUTH payloads (:meth:`psk_for`, psk.py); ``psk`` is then only
    what we prove ourselves with as an initiator, and what the responder must prove, whatever IDr
    it sends (a group key, conf/secrets.find_own_psk; None: the connection only responds).
    ``local_addr`` is our IP address for ``dynamic`` selectors (the IKE service may
    instead pass the receiving address to ``IkeSa.receive``); ``remote_addr``
    is where an initiator sends IKE_SA_INIT, from ``local_port`` (swanctl ``local_port``).
    """

    name: str
    local: LocalAuth
    remote: RemoteAuth
    proposals: tuple[ProposalSpec, ...] = field(default_factory=lambda: parse_proposals("default"))
    children: tuple[ChildConfig, ...] = ()
    psk: Secret | None = None
    peer_psks: tuple[PskEntry, ...] = ()
    # the secrets entry ``psk`` is (its section's name): a reload tells a removed entry (the peer it
    # proved is logged out) from a rotated key (services/ike/revoked.py)
    psk_name: str = ""
    eap_secrets: tuple[EapSecret, ...] = ()  # EAP passwords (ours as a client, users' as a gateway)
    local_addr: str | None = None
    remote_addr: str | None = None
    local_port: int = IKE_PORT
    remote_port: int = IKE_PORT
    retransmit: RetransmitConfig = RetransmitConfig()
    send_certreq: bool = True
    initial_contact: bool = True
    half_open_timeout: float = 30.0
    rekey_time: float | None = None  # seconds; strongSwan's default is 14400 (swanctl rekey_time)
    dpd_delay: float | None = None  # seconds of silence before a liveness check (swanctl dpd_delay)
    rand_time: float | None = None  # None: 10 % of rekey_time
    over_time: float | None = None  # None: 10 % of rekey_time
    send_cert: SendCertMode = "ifasked"
    # virtual IPs (RFC 7296 §3.15): a client's ``vips`` to request (0.0.0.0 / :: for any of that
    # family); a gateway's ``pools`` to lease them from (names in the service's AddressPools)
    vips: tuple[IPAddress, ...] = ()
    pools: tuple[str, ...] = ()
    fragmentation: FragmentationMode = "yes"
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    # a peer's CREATE_CHILD_SA for a further Child SA is refused with NO_ADDITIONAL_SAS (RFC 7296 §3.10.1)
    # once the IKE SA holds this many; a rekey replaces one and is not counted (exchanges/create_child_sa.py)
    max_child_sas: int = DEFAULT_MAX_CHILD_SAS
    # a responder refuses a peer's IKE_AUTH with AUTHENTICATION_FAILED once that identity holds this
    # many IKE SAs of the connection (IkeEndpoint._refuse_duplicate, ike_sa_cap.py)
    max_ike_sas: int = DEFAULT_MAX_IKE_SAS
    # Redirect (RFC 5685, see redirect.py): as a gateway, send new clients to this address or
    # FQDN once the endpoint holds at least ``redirect_when`` IKE SAs, answering their
    # IKE_SA_INIT (``redirect_on = init``) or, after authenticating them, their IKE_AUTH (``auth``)
    redirect_to: str | None = None
    redirect_when: int = 0
    redirect_on: RedirectOn = "init"
    # MOBIKE (RFC 4555, see exchanges/mobike.py): announce MOBIKE_SUPPORTED in IKE_AUTH and, once both
    # did, move the IKE SA and its Child SAs only on UPDATE_SA_ADDRESSES (strongSwan's mobike, default yes)
    mobike: bool = True
    # a client follows a gateway's REDIRECT (RFC 5685) and announces REDIRECT_SUPPORTED; strongSwan's
    # charon.follow_redirects, global there too: tunsec { follow_redirects } sets it for every connection
    follow_redirects: bool = True
    # RFC 7296 §2.23: our NAT_DETECTION_SOURCE_IP is random, so the peer sees a NAT and uses UDP
    # encapsulation (strongSwan's encap = yes).  False sends the genuine hash when our address is
    # known (``local_addr``), as a strongSwan peer with encap = no does: tests play such a peer (the
    # configuration refuses encap = no, since the dataplane carries ESP only in UDP)
    force_encap: bool = True

    def __post_init__(self) -> None:
        if "psk" in (self.local.method, self.remote.method) and self.psk is None and \
                (not self.peer_psks or self.remote_addr is not None):
            raise ValueError(f"connection {self.name}: psk authentication needs a shared secret")
        if self.remote.method.startswith("eap-") and self.local.method != "pubkey":
            # RFC 7296 §2.16: the gateway proves itself with a certificate; EAP only proves the client
            raise ValueError(f"connection {self.name}: remote auth = {self.remote.method} needs local auth = pubkey")
        if self.local.method.startswith("eap-") and not self.gateway_proves_certificate:
            # RFC 7296 §2.16 again, as a client: our EAP response (MSCHAPv2's lets its receiver test
            # password guesses offline) goes only to the gateway named by its certificate
            raise ValueError(f"connection {self.name}: local auth = {self.local.method} needs remote auth = pubkey "
                             "and a remote id that is not %any")
        if self.local.method == "eap-radius":
            raise ValueError(f"connection {self.name}: eap-radius authenticates clients (remote), not us")
        if self.peer_psks:
            # built with the configuration (the daemon loads it off the event loop: daemon.reload), not
            # at the first IKE_AUTH on the loop (10,000 entries took ~70 ms there, 100,000 ~0.8 s)
            _ = self._psk_index
        if self.local.method == "eap-mschapv2" and self.eap_password(self.local.eap_id or self.local.id.user) is None:
            raise ValueError(f"connection {self.name}: no EAP secret for {self.local.eap_id or self.local.id}")

    @property
    def gateway_proves_certificate(self) -> bool:
        """The peer authenticates with a certificate that must name ``remote.id``, one identity."""
        return self.remote.method == "pubkey" and not self.remote.id.is_any

    @functools.cached_property   # (asked ~4 times per client's set-up; the configuration does not change)
    def names_its_peer(self) -> bool:
        """It admits one peer identity only: ``remote.id`` is set and EAP asks for no other
        (``eap_id`` is not %any).  Such peers the administrator named one by one; a connection
        of %any (road warriors, a CA's certificates, EAP users) admits whoever proves an identity."""
        return not self.remote.id.is_any and self.remote.eap_id != "%any"

    @functools.cached_property   # (asked ~4 times per client's set-up: a text made each time)
    def lease_proof(self) -> str:
        """How this connection proves its peers' identities, which with the identity keys a peer's
        virtual IP lease (policy/pools.py, review reveapid F4): the method, which says who vouches
        for the identity (the EAP back end's accounts, the CAs' certificates); for a PSK the
        connection itself, since a group PSK (remote.id %any) lets its every holder name itself as
        it likes: that identity means something among that connection's clients only."""
        return f"psk {self.name}" if self.remote.method == "psk" else self.remote.method

    def assigns(self, child: str, remote: Sequence[Ts]) -> bool:
        """The administrator gave the peer exactly these remote selectors by name: the connection
        names its peer, and its child's ``remote_ts`` is ``remote`` as written (not a range the peer
        chose a part of: a hub's spokes, each named, with remote_ts = 10.0.0.0/8, choose)."""
        if not self.names_its_peer:
            return False
        for cfg in self.children:   # (a loop: an unfinished generator is closed with a GeneratorExit)
            if cfg.name == child:
                return tuple(remote) == tuple(cfg.remote_ts)
        return False

    def psk_for(self, peer: Identity) -> PskEntry | None:
        """The shared key of us and ``peer`` (the identity it sent): ``psk``, or with ``peer_psks``
        the entry ``peer`` chooses (None: no entry is the peer's, and no group key)."""
        if self.peer_psks:
            return self._psk_index.lookup(peer)
        return PskEntry((), self.psk) if self.psk is not None else None

    @functools.cached_property
    def _psk_index(self) -> PskIndex:
        return PskIndex(self.peer_psks, self.local.id)

    def eap_password(self, user: str) -> Secret | None:
        """The EAP secret of ``user`` (a gateway's users, or a client's own): eap_account's secret."""
        found = self.eap_account(user)
        return None if found is None else found[1]

    def eap_account(self, user: str) -> tuple[str, Secret] | None:
        """The EAP account ``user`` logs in to: the name its secret's ids give it, and the secret.
        One whose ids name it as it is, else one naming it as an identity, a name regardless of
        ASCII case (strongSwan finds EAP secrets by identity, and FQDN and RFC822 identities compare
        so).  The name is what a login proves (Identity.of_user: one client for leases, unique and
        INITIAL_CONTACT), whatever the case and IDi type the client used; two entries whose names
        are one identity are refused at load (conf/secrets.py), so a name is one account's."""
        exact, by_identity = self._eap_index
        found = exact.get(user)
        if found is None and by_identity:
            found = by_identity.get(Identity.of_user(user.encode("utf-8", "surrogateescape")))
        return found

    @functools.cached_property
    def _eap_index(self) -> tuple[dict[str, tuple[str, Secret]], dict[Identity, tuple[str, Secret]]]:
        """The EAP secrets by user name as written and as an identity, the first of each in the
        file: built once, so that a client's unknown name costs two dict look-ups, not a pass."""
        exact: dict[str, tuple[str, Secret]] = {}
        by_identity: dict[Identity, tuple[str, Secret]] = {}
        for s in self.eap_secrets:
            for name in s.ids:
                exact.setdefault(name, (name, s.secret))
                by_identity.setdefault(Identity.of_user(name.encode("utf-8", "surrogateescape")), (name, s.secret))
        return exact, by_identity

    def child(self, name: str) -> ChildConfig:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"connection {self.name} has no child {name!r}")


def child_config(
    name: str,
    local_ts: str | Sequence[str] = "dynamic",
    remote_ts: str | Sequence[str] = "dynamic",
    esp_proposals: str | Sequence[str] = "default",
) -> ChildConfig:
    """A ChildConfig from swanctl-style strings."""
    return ChildConfig(
        name,
        parse_ts_list(local_ts),
        parse_ts_list(remote_ts),
        parse_proposals(esp_proposals, ProtocolId.ESP),
    )
