"""EAP in IKE_AUTH (RFC 7296 §2.16): the extra rounds of both sides.

The client's first IKE_AUTH request has no AUTH payload; the gateway answers
with IDr, CERT, AUTH (its signature) and the first EAP request. The rounds
that follow carry one EAP payload each way, until EAP-Success; then both send
AUTH = prf(prf(MSK, "Key Pad for IKEv2"), <their signed octets>) in a last
round, and the gateway builds the Child SA the first request asked for (with
eap-radius, in the connection of the user's group, ``remote.groups``, which
``ike_auth.py`` chooses once that AUTH checked out). The EAP methods themselves
are in :mod:`tunsec.ike.eap`; ``ike_auth.py`` calls in here and keeps the parts
both flows share (config selection, CP, Child SA).

Until the last AUTH checks out the peer identity stays unset, so the transport
keeps the SA in CONNECTING: an abandoned EAP exchange ends with the half-open
timeout, a failed one closes the SA at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..auth import AuthError, psk_auth_data, signed_octets, verify_psk
from ..config import IkeConfig
from ..constants import AuthMethod, IdType, NotifyType
from ..eap import identity as eap_identity
from ..eap.identity import user_text
from ..eap.mschapv2 import Account, EapAuthenticator, EapPeer, EapResult
from ..eap.packet import EapError
from ..eap.relay import EapRelay, RelayAsk, RelayOutcome, RelayReply
from ..events import Accepted, AuthFailed, DownReason, EapRelayAbandoned, EapRelayRequest, PeerEap
from ..identity import Identity
from ..message import AuthPayload, CpPayload, EapPayload, IdPayload, NotifyPayload, Payload, SaPayload, TsPayload
from ..secret import Secret
from ..state import IkeSaState
from .base import Awaiting, Outcome, Response, find, notify

if TYPE_CHECKING:   # pyOpenSSL (~1 MiB): imported where EAP-TLS is used (the daemon preloads it if configured)
    from ..eap.tls import EapTlsAuthenticator


def _msk_auth(st: IkeSaState, msk: Secret, initiator_side: bool, id_payload: IdPayload) -> bytes:
    """The AUTH data of one side keyed with the MSK (RFC 7296 §2.16)."""
    assert st.prf is not None and st.keys is not None
    if initiator_side:
        octets = signed_octets(st.init_request, st.nonce_r, st.prf, st.keys.pi, id_payload)
    else:
        octets = signed_octets(st.init_response, st.nonce_i, st.prf, st.keys.pr, id_payload)
    return psk_auth_data(st.prf, msk, octets)


def _check_msk_auth(st: IkeSaState, msk: Secret, initiator_side: bool, id_payload: IdPayload,
                    payloads: Sequence[Payload]) -> None:
    auth = find(payloads, AuthPayload)
    if auth is None:
        raise AuthError("no AUTH payload after EAP")
    assert st.prf is not None and st.keys is not None
    sk_p = st.keys.pi if initiator_side else st.keys.pr
    msg = st.init_request if initiator_side else st.init_response
    peer_nonce = st.nonce_r if initiator_side else st.nonce_i
    try:
        verify_psk(st.prf, msk, signed_octets(msg, peer_nonce, st.prf, sk_p, id_payload), auth)
    except AuthError:
        raise AuthError("AUTH from the EAP MSK does not match") from None


# --------------------------------------------------------------------------- gateway


class EapServer(Protocol):
    """A gateway's EAP method: the first request, then one answer per response until decided."""

    def start(self) -> bytes: ...

    def process(self, raw: bytes) -> tuple[bytes, EapResult | None]: ...


# the gateway's EAP methods (remote.auth) and their names in log lines
METHOD_NAMES = {"eap-mschapv2": "EAP-MSCHAPv2", "eap-tls": "EAP-TLS", "eap-radius": "EAP-RADIUS"}


@dataclass
class GatewayEap:
    # a method run here, or the relay to the AAA backend: out of the repr, as it holds a conversation's
    # key material (MSK, TLS state) and the half-open IKE SA's state shows this in its own
    authenticator: EapServer | EapRelay = field(repr=False)
    idi: IdPayload
    request: tuple[Payload, ...]  # what the last round answers of the first IKE_AUTH request (answered_last)
    msk: Secret | None = None
    relayed: bool = False  # the backend holds state of this conversation (until its final answer)
    # what the backend's Access-Accept said of the session (Session-Timeout, Class...), for IkeSaUp:
    # kept here, with the half-open IKE SA, not at the edge (set with msk)
    accepted: Accepted | None = None
    peer: Identity | None = None  # the identity EAP proved (set with msk)
    anchor: bytes | None = None  # EAP-TLS: the CA the peer's certificate verified to (set with msk)
    user: bytes = b""  # the EAP identity, for log lines (set with msk)
    groups: tuple[str, ...] = ()  # the user's groups, as the backend's Accept said (set with msk)
    refusals_counted: int = 0  # the relay's refusals_in_challenge already told as AuthFailed


# notifies of the first request the last round reads (ike_auth._authenticated: mobike.answer)
_LATER_NOTIFIES = frozenset({NotifyType.MOBIKE_SUPPORTED})


def answered_last(payloads: Sequence[Payload]) -> tuple[Payload, ...]:
    """What ike_auth answers after EAP of the first request: IDr (the connection switch), CP, the
    Child SA's SA and TS, MOBIKE_SUPPORTED. Its certificates, CERTREQs, vendor IDs and other
    notifies were read at once: they are not kept while the (half-open) SA waits on EAP."""
    return tuple(p for p in payloads
                 if isinstance(p, (SaPayload, TsPayload, CpPayload))
                 or (isinstance(p, IdPayload) and not p.initiator)
                 or (isinstance(p, NotifyPayload) and p.type in _LATER_NOTIFIES))


def wanted(st: IkeSaState, payloads: Sequence[Payload]) -> bool:
    """The client asks for EAP: our connection authenticates it with EAP and it sent no AUTH."""
    return st.config.remote.method in METHOD_NAMES and find(payloads, AuthPayload) is None


def start(st: IkeSaState, idi: IdPayload, payloads: Sequence[Payload], own: list[Payload]) -> Response:
    """Answer the first request: our IDr/CERT/AUTH (``own``) and the first EAP request."""
    cfg = st.config

    def lookup(user: bytes) -> Account | None:
        # st.config when the client answers, not cfg: a reload meanwhile may have renewed the
        # users (sa_configs.py), and a removed one must not log in with the old password
        found = st.config.eap_account(user.decode("utf-8", "replace"))
        if found is None:
            return None
        name, secret = found   # the login proves the account's name (review reveapid F1)
        return Account(name.encode("utf-8", "surrogateescape"), secret.reveal().decode("utf-8", "surrogateescape"))

    eap_id = cfg.remote.eap_id
    first_id = None if eap_id == "%any" else (eap_id.encode() if eap_id else idi.data)
    if cfg.remote.method == "eap-radius":
        if not eap_id:
            _relayable_idi(idi.data, idi.id_type)
        return _start_relay(st, EapRelay(first_id, rand=st.rng), idi, payloads, own)
    session: EapServer
    if cfg.remote.method == "eap-tls":
        session = _tls_server(st, idi)
    else:
        session = EapAuthenticator(lookup, first_id, rand=st.rng)
    st.eap = GatewayEap(session, idi, answered_last(payloads))
    return Response([*own, EapPayload(session.start())])


# IDi types whose data is binary (an address's bytes, DER): no EAP identity, whatever bytes they hold
_BINARY_IDS: dict[int, str] = {IdType.IPV4_ADDR: "an IPv4 address", IdType.IPV6_ADDR: "an IPv6 address",
                               IdType.DER_ASN1_DN: "a distinguished name", IdType.DER_ASN1_GN: "a general name"}


def _relayable_idi(data: bytes, id_type: int | None = None) -> None:
    """AuthError unless IDi can be the EAP identity whole, by the one rule of an EAP identity
    (eap_identity.fault): the relay's User-Name holds 253 bytes, and the server would check only the
    first 253 of a longer one while an Access-Accept without a User-Name of its own proves the EAP
    identity (review revradius); a server may read ``alice\\0x`` as alice, whose password then makes a
    user of its own here (review reveap F2).  Only eap-radius without ``eap_id`` relays IDi: eap-tls and
    eap-mschapv2 take any IDi (a DN, a binary KEY_ID) as before, and ``eap_id = %any`` serves such a client.
    An address or DN is binary, no user name: said so (review revlate8; Windows' IDi is its IP address),
    rather than "holds a NUL byte" for some addresses and a User-Name no server knows for the rest."""
    if id_type is not None and (kind := _BINARY_IDS.get(id_type)) is not None:
        raise AuthError(f"EAP-RADIUS: IDi is {kind} ({Identity(id_type, data)}), binary, which cannot be an EAP "
                        f"identity (the RADIUS User-Name) as it is without eap_id: refused; set eap_id = %any "
                        f"so that the client is asked for its EAP identity")
    if why := eap_identity.fault(data):
        raise AuthError(f"EAP-RADIUS: IDi {user_text(data)} {why}, and without eap_id it is the EAP identity, "
                        f"the RADIUS User-Name: refused (eap_id = %any asks the client for its EAP identity)")


def _tls_server(st: IkeSaState, idi: IdPayload) -> EapTlsAuthenticator:
    """EAP-TLS with our IKE certificate; the client's must certify the EAP identity: ``eap_id``,
    the one EAP-Identity gives (``%any``), or else its IKE identity (as strongSwan)."""
    from ..eap.tls import EapTlsAuthenticator, TlsServerCredentials

    local, remote = st.config.local, st.config.remote
    assert local.cert is not None and local.private_key is not None  # IkeConfig: EAP needs local pubkey
    creds = TlsServerCredentials(local.cert, local.private_key, local.intermediates, remote.cas)
    if remote.eap_id == "%any":
        peer: Identity | None = None
    elif remote.eap_id:
        peer = Identity.parse(remote.eap_id)
    else:
        peer = Identity(idi.id_type, idi.data)
    return EapTlsAuthenticator(creds, peer, st.wall_clock, rand=st.rng)


def respond(st: IkeSaState, payloads: Sequence[Payload]) -> Response | GatewayEap:
    """A later round: the next EAP request, or (after EAP-Success and a good AUTH) the
    finished session, whose first request ``ike_auth`` then answers. Raises AuthError."""
    ge = st.eap
    assert ge is not None
    if ge.msk is None:
        eap = find(payloads, EapPayload)
        if eap is None:
            raise AuthError("IKE_AUTH request without the EAP payload the exchange is at")
        if isinstance(ge.authenticator, EapRelay):
            step = ge.authenticator.process(eap.data)
            if isinstance(step, RelayAsk):
                return _ask_backend(st, ge, step, [])
            return _conclude(st, ge, *step, ge.authenticator.label)
        out, result = ge.authenticator.process(eap.data)
        return _conclude(st, ge, out, result, METHOD_NAMES[st.config.remote.method])
    _check_msk_auth(st, ge.msk, True, ge.idi, payloads)
    st.peer_id, st.peer_anchor = ge.peer, ge.anchor
    return ge


def _conclude(st: IkeSaState, ge: GatewayEap, out: bytes, result: EapResult | None, method: str,
              backend: bool = False, counted: bool = False) -> Response:
    """Send the method's next packet; on failure also AUTHENTICATION_FAILED, and close.  ``backend``:
    a failure is our back end's (no verdict on the client's credentials: AuthFailed.backend); ``counted``:
    the back end's refusal was told already (AuthFailed.counted)."""
    if result is None:
        return Response([EapPayload(out)])
    if not result.ok:
        st.emit(AuthFailed(st.name, f"{method} authentication of {user_text(result.identity)} failed: "
                           f"{result.reason}", by_peer=False, backend=backend, counted=counted))
        return Response([EapPayload(out), notify(NotifyType.AUTHENTICATION_FAILED)], close=True,
                        reason=DownReason.AUTH_FAILED)
    ge.msk, ge.peer = Secret(result.msk), _proven_identity(result)
    ge.user, ge.groups, ge.anchor = result.identity, result.groups, result.anchor
    return Response([EapPayload(out)])


def refused_for_groups(st: IkeSaState, ge: GatewayEap, required: Sequence[IkeConfig]) -> Response:
    """AUTHENTICATION_FAILED for a user EAP authenticated who is a member of none of the groups
    its connections (``required``: those it could end in) require: the log line names the user,
    the groups each connection requires and those the backend gave (printable names only)."""
    wanted = "; ".join(f"{c.name}: {', '.join(map(str, c.remote.groups))}" for c in required)
    had = ", ".join(repr(g) for g in ge.groups) if ge.groups else "none"
    method = METHOD_NAMES[st.config.remote.method]
    st.emit(AuthFailed(st.name, f"{method} user {user_text(ge.user)} is a member of no group its connections "
                       f"require ({wanted}); its groups from RADIUS: {had}", by_peer=False, refused=True))
    return Response([notify(NotifyType.AUTHENTICATION_FAILED)], close=True, reason=DownReason.AUTH_FAILED)


# ----------------------------------------------------------- gateway: relay to the AAA backend


@dataclass
class _BackendRound(Awaiting):
    """An IKE_AUTH request held until the backend answers (``auth = eap-radius``)."""

    ge: GatewayEap
    prefix: list[Payload]  # our IDr/CERT/AUTH, when it is the first request that waits

    def resume(self, st: IkeSaState, reply: RelayReply) -> Response:
        relay = self.ge.authenticator
        assert isinstance(relay, EapRelay)
        out, result = relay.reply(reply)
        while self.ge.refusals_counted < relay.refusals_in_challenge:   # the back end's verdict, told now
            self.ge.refusals_counted += 1
            st.emit(AuthFailed(st.name, f"{relay.label} authentication of {user_text(relay.user)} failed: "
                               f"{reply.reason}: EAP-MSCHAPv2 Failure request in an Access-Challenge, "
                               f"{relay.refusal_reason}", by_peer=False))
        if result is not None:
            self.ge.relayed = False  # a final answer: the backend is done with it, the edge keeps nothing of it
            if result.ok:
                self.ge.accepted = reply.accepted
        # only an Access-Reject judged the client's credentials: no answer (an outage, all identifiers
        # busy, no server, a reload that removed it) or one we cannot use is ours (review revban F1)
        response = _conclude(st, self.ge, out, result, relay.label, backend=reply.outcome is not RelayOutcome.REJECT,
                             counted=relay.refusal_pending)
        response.payloads[:0] = self.prefix
        return response


def _start_relay(st: IkeSaState, relay: EapRelay, idi: IdPayload, payloads: Sequence[Payload],
                 own: list[Payload]) -> Response:
    ge = st.eap = GatewayEap(relay, idi, answered_last(payloads))
    first = relay.start()
    if isinstance(first, RelayAsk):  # we know the identity: the backend sends the first request
        return _ask_backend(st, ge, first, own)
    return Response([*own, EapPayload(first)])


def _ask_backend(st: IkeSaState, ge: GatewayEap, ask: RelayAsk, prefix: list[Payload]) -> Response:
    st.emit(EapRelayRequest(st.name, ask.identity, ask.eap, st.remote_addr, first=not ge.relayed))
    ge.relayed = True
    return Response(awaits=_BackendRound(ge, prefix))


def closing(st: IkeSaState) -> None:
    """The IKE SA closes (``st.eap`` is set only until it is up): tell the edge to forget a relay
    conversation the backend still holds.  What an Access-Accept said (``accepted``) goes with the SA."""
    ge = st.eap
    if ge is not None and ge.relayed:
        ge.relayed = False   # told once
        st.emit(EapRelayAbandoned(st.name))


def _proven_identity(result: EapResult) -> Identity:
    """The peer's identity once EAP succeeded: the EAP user, never IDi as sent.  With ``eap_id``
    (a name, or %any: EAP-Identity) EAP proves nothing about IDi, so leases, ``unique`` and
    INITIAL_CONTACT must go by the EAP identity (as strongSwan's), or a client with credentials for
    one name could claim another's IDi and take over its address and SAs.  Without it the EAP user
    is IDi's data, but still only as a user name: IDi's type (KEY_ID "bob", FQDN "bob", RFC822
    "bob") and, for a KEY_ID, its case are the client's choice, and one password must not make
    as many peers, each with a lease of its own, as it has spellings (review reveapid F1).  The
    method names the account when it knows it (the secret's entry, the back end's User-Name,
    the certificate's identity); else it is the EAP identity as a user name.
    An unproven one (eap-radius, no User-Name in the Accept) is this IKE SA's alone: equal to
    no other SA's identity, the same name or not (Identity.unproven)."""
    if result.peer is not None:
        return result.peer
    named = Identity.of_user(result.identity)
    return named.unproven() if result.unproven else named


def peer_eap(st: IkeSaState) -> PeerEap | None:
    """What status shows of a client's EAP (a gateway's, once EAP succeeded): its IDi, EAP identity, groups."""
    ge = st.eap
    if ge is None or ge.msk is None:
        return None
    peer, idi = st.peer_id, ge.idi
    if peer is None or (peer.type, peer.data) != (idi.id_type, idi.data):
        peer = Identity(idi.id_type, idi.data)
    # else (no eap_id) the peer's identity is IDi itself: the SA's record holds it once
    return PeerEap(peer, ge.user, ge.groups)


def accepted(st: IkeSaState) -> Accepted | None:
    """What a client's Access-Accept said of its session (eap-radius), for IkeSaUp."""
    return st.eap.accepted if st.eap is not None else None


def gateway_auth(st: IkeSaState, ge: GatewayEap, idr: IdPayload) -> AuthPayload:
    assert ge.msk is not None
    return AuthPayload(AuthMethod.PSK, _msk_auth(st, ge.msk, False, idr))


# --------------------------------------------------------------------------- client

MAX_ROUNDS = 8  # Identity, Challenge, Success and some slack; more is a gateway stringing us along


@dataclass
class ClientEap:
    peer: EapPeer = field(repr=False)
    idi: IdPayload
    idr: IdPayload | None = None  # the gateway's, once its certificate AUTH checked out
    gateway_id: Identity | None = None
    out: bytes = b""  # our next EAP response
    msk: Secret | None = None
    rounds: int = 0

    @property
    def started(self) -> bool:
        return self.idr is not None

    def request(self, st: IkeSaState) -> list[Payload]:
        """The payloads of the next round's request."""
        if self.msk is None:
            return [EapPayload(self.out)]
        return [AuthPayload(AuthMethod.PSK, _msk_auth(st, self.msk, True, self.idi))]


def new_client(st: IkeSaState, idi: IdPayload) -> ClientEap | None:
    local = st.config.local
    if local.method != "eap-mschapv2":
        return None
    user = local.eap_id or local.id.user
    secret = st.config.eap_password(user)
    assert secret is not None  # IkeConfig checks this
    name = user.encode("utf-8", "surrogateescape")
    peer = EapPeer(name, secret.reveal().decode("utf-8", "surrogateescape"), rand=st.rng)
    return ClientEap(peer, idi)


def gateway_verified(st: IkeSaState, ce: ClientEap, idr: IdPayload) -> None:
    """The gateway's certificate AUTH checked out; it counts as up only after EAP.  AuthError unless
    that AUTH was a certificate's for the one gateway configured: IkeConfig refuses other configs,
    this holds even for one built around it, since our EAP response is what an impostor wants."""
    if not st.config.gateway_proves_certificate:
        raise AuthError(f"no EAP response to a gateway that did not prove itself with a certificate of a named "
                        f"identity (remote auth = {st.config.remote.method}, id = {st.config.remote.id})")
    ce.idr, ce.gateway_id, st.peer_id = idr, st.peer_id, None


def client_step(st: IkeSaState, ce: ClientEap, payloads: Sequence[Payload]) -> Outcome:
    """One response: RETRY sends the next round, DONE means the gateway's MSK AUTH checked out."""
    assert ce.idr is not None
    if ce.msk is not None:
        try:
            _check_msk_auth(st, ce.msk, False, ce.idr, payloads)
        except AuthError as exc:
            st.emit(AuthFailed(st.name, str(exc), by_peer=False))
            return Outcome.AUTH_FAILED
        st.peer_id = ce.gateway_id
        return Outcome.DONE
    eap = find(payloads, EapPayload)
    try:
        if eap is None:
            raise EapError("IKE_AUTH response without an EAP payload")
        out = ce.peer.process(eap.data)
    except EapError as exc:
        st.emit(AuthFailed(st.name, f"EAP-MSCHAPv2: {exc}", by_peer=False))
        return Outcome.AUTH_FAILED
    if out is not None:
        ce.rounds += 1
        if ce.rounds > MAX_ROUNDS:  # a gateway that never ends the conversation
            st.emit(AuthFailed(st.name, f"EAP: the gateway sent more than {MAX_ROUNDS} requests", by_peer=False))
            return Outcome.AUTH_FAILED
        ce.out = out
        return Outcome.RETRY
    result = ce.peer.result
    assert result is not None
    if not result.ok:
        st.emit(AuthFailed(st.name, f"the gateway refused our EAP-MSCHAPv2 authentication: {result.reason}",
                           by_peer=True))
        return Outcome.CLOSE
    ce.msk = Secret(result.msk)
    return Outcome.RETRY
