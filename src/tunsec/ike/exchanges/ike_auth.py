"""IKE_AUTH (RFC 7296 §1.2, §2.15): identities, AUTH, and the first Child SA.

Request order as strongSwan expects it: IDi, [CERT...], [CERTREQ], [IDr],
AUTH, [N(INITIAL_CONTACT)], SA, TSi, TSr. Response: IDr, [CERT...], AUTH, SA,
TSi, TSr (or an error notify for the Child SA, in which case the IKE SA still
comes up, RFC 7296 §1.2). Key exchange transforms are stripped from the ESP
proposals here: the first Child SA takes its keys from the IKE SA.

Redirect in IKE_AUTH (RFC 5685 §6, ``redirect.py``): a gateway with
``redirect_on = auth`` answers the request that completes the client's
authentication with IDr, AUTH and N(REDIRECT) (GW Ident only, no nonce: the AUTH
payloads protect it) instead of CP and Child SA. A client acts on N(REDIRECT) only
in the response whose AUTH it verified (the last one, with EAP); ``sa.py`` then
deletes the IKE SA and starts over at the new gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography.hazmat.primitives.serialization import Encoding

from tunsec.policy.pad import Refused, auth_allowed, check_auth_method, group_member, identity_allowed

from ..auth import AuthError, psk_auth_data, sign, signed_octets, verify_psk, verify_signature
from ..certs import MAX_CERTS, load_certificates
from ..config import ChildConfig, IkeConfig
from ..constants import AuthMethod, CertEncoding, ExchangeType, IdType, NotifyType, notify_name
from ..eap.identity import user_text
from ..events import AuthFailed, DownReason, IkeSaLimit, IkeSaUp, NegotiationFailed, PeerRedirected
from ..identity import Identity, IdentityError, certified_identity, check_peer_identity, dn_equal
from ..message import AuthPayload, CertPayload, CertReqPayload, IdPayload, Payload, SaPayload
from ..proposals import describe_all
from ..psk import PskEntry, proves_any_name
from ..redirect import RedirectError, decode_redirect, encode_gateway, not_followed
from ..state import AuthAnswer, ChildSa, IkeSaState, SpiUnavailable
from ..ts import Ts
from . import child as childmod
from . import create_child_sa, ike_config, mobike
from . import ike_auth_eap as eap
from .base import CHILD_ERRORS, Outcome, Response, Task, error_notify, find, find_all, find_id, find_notify, notify
from .ike_auth_cas import alike_by_ca, verified_key
from .ike_sa_init import certreq_payloads
from .informational import DeleteChildTask

log = logging.getLogger(__name__)


def _id_payload(st: IkeSaState, initiator: bool) -> IdPayload:
    ident = st.config.local.id
    cert = st.config.local.cert
    if cert is not None and ident.type == IdType.DER_ASN1_DN and dn_equal(ident.data, cert.subject.public_bytes()):
        # send the subject exactly as the certificate encodes it (string types included)
        return IdPayload(initiator, ident.type, cert.subject.public_bytes())
    return IdPayload(initiator, ident.type, ident.data)


def _own_auth(st: IkeSaState, id_payload: IdPayload, checked: PskEntry | None = None) -> list[Payload]:
    """[CERT...] and AUTH proving our identity.  ``checked``: the entry a responder just checked the
    peer's AUTH with (_verify_peer), which psk_for would pick again for the same identity."""
    assert st.prf is not None and st.keys is not None
    sk_p = st.keys.pi if st.is_initiator else st.keys.pr
    own_msg = st.init_request if st.is_initiator else st.init_response
    octets = signed_octets(own_msg, st.peer_nonce, st.prf, sk_p, id_payload)
    local = st.config.local
    if local.method == "psk":
        # RFC 7296 §2.15: the key we share with this peer. A responder has its identity; strongSwan's
        # AUTH, too, uses the best entry for (our id, IDi): the one the peer's AUTH was checked with
        # (``checked`` spares a second lookup per client: it is psk_for(st.peer_id) of this very call)
        entry = checked if checked is not None else \
            st.config.psk_for(st.peer_id) if not st.is_initiator and st.peer_id is not None else None
        psk = entry.secret if entry is not None else st.config.psk
        assert psk is not None    # conf/connections.py: a connection that finds no key at all responds only
        return [AuthPayload(AuthMethod.PSK, psk_auth_data(st.prf, psk, octets))]
    assert local.cert is not None and local.private_key is not None
    certs: list[Payload] = [
        CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(Encoding.DER))
        for c in (local.cert, *local.intermediates)
    ] if _sends_cert(st) else []
    return [*certs, sign(local.private_key, octets, st.peer_hashes, local.rsa_pss)]


def _sends_cert(st: IkeSaState) -> bool:
    """strongSwan's send_cert: ``ifasked`` answers a CERTREQ of the peer (in its IKE_SA_INIT or IKE_AUTH)."""
    mode = st.config.send_cert
    return mode == "always" or (mode == "ifasked" and st.peer_certreq)


def _check_ids(payloads: Sequence[Payload]) -> None:
    """AuthError unless each identity the peer sent (its own, and ours it wants) has a size its type
    allows: before anything compares, parses or logs one (a DN in a 64 KiB datagram is not read)."""
    for p in find_all(payloads, IdPayload):
        try:
            check_peer_identity(p.id_type, p.data)
        except IdentityError as exc:
            raise AuthError(str(exc)) from None


def _peer_certs(payloads: Sequence[Payload]) -> list[bytes]:
    ders = [c.data for c in find_all(payloads, CertPayload) if c.encoding == CertEncoding.X509_SIGNATURE]
    if len(ders) > MAX_CERTS:
        raise AuthError(f"peer sent {len(ders)} certificates (at most {MAX_CERTS})")
    return ders


def _verify_peer(st: IkeSaState, payloads: Sequence[Payload], peer_id_payload: IdPayload,
                 by_ca: Sequence[IkeConfig] = (), ids_checked: bool = False) -> PskEntry | None:
    """Check the peer's identity and AUTH; raises AuthError. ``by_ca``: a responder's connections
    that its certificate's CA may choose among, ``st.config`` first (ike_auth_cas.py).
    ``ids_checked``: _check_ids passed these payloads already (a responder's respond).  Returns the
    PSK entry the AUTH was checked with if ``st.peer_id`` is the identity it was looked up for (our
    own AUTH uses it: _own_auth), else None."""
    assert st.prf is not None and st.keys is not None
    if not ids_checked:
        _check_ids(payloads)
    peer_id = Identity(peer_id_payload.id_type, peer_id_payload.data)
    remote = st.config.remote
    if not identity_allowed(remote.id, peer_id):
        raise AuthError(f"peer identity {peer_id} is not the configured {remote.id}")
    auth = find(payloads, AuthPayload)
    if auth is None:
        raise AuthError("no AUTH payload")
    try:
        check_auth_method(remote.method, auth.method)
    except Refused as err:
        raise AuthError(str(err)) from None
    sk_p = st.keys.pr if st.is_initiator else st.keys.pi
    peer_msg = st.init_response if st.is_initiator else st.init_request
    octets = signed_octets(peer_msg, st.own_nonce, st.prf, sk_p, peer_id_payload)
    checked = None
    if remote.method == "psk":
        checked = _verify_psk(st, peer_id, octets, auth)
        # one DN, one peer, however the key holder spells it (review revsweep2 F1): else each string
        # type and length of it was an IKE SA cap, a lease, a log share and a reserve of its own
        named = _named_dn(st.config, peer_id)
        if named is not None and named != peer_id:
            st.peer_sent_id, peer_id, checked = peer_id, named, None   # psk_for(named) may be another entry
    else:
        chain = load_certificates(_peer_certs(payloads))
        verified = verified_key(st, chain, peer_id, by_ca)
        verify_signature(verified.key, octets, auth)
        st.peer_anchor = verified.anchor   # a reload that stops trusting it logs the peer out (services/ike/revoked.py)
        # one certificate, one peer, whichever of its identities it sent (certified_identity)
        try:
            proven = certified_identity(chain[0])
        except IdentityError as exc:
            raise AuthError(str(exc)) from None
        if proven != peer_id:
            if proven.type != peer_id.type or not dn_equal(proven.data, peer_id.data):   # not a mere re-encoding
                log.info("%s: peer sent identity %s, known by its certificate as %s", st.name, peer_id, proven)
            st.peer_sent_id, peer_id = peer_id, proven
    st.peer_id = peer_id
    return checked


def _named_dn(config: IkeConfig, peer_id: Identity) -> Identity | None:
    """The DN the configuration names (``remote.id``, else an id of the PSK entry ``peer_id`` picks)
    that ``peer_id`` spells, maybe in other string types or lengths (dn_equal); None if it is no DN or
    none names it.  Only a name an administrator wrote: a group key's entry names none, so its peers'
    names stay what they sent (refusal_log.chosen_name)."""
    if peer_id.type != IdType.DER_ASN1_DN:
        return None
    entry = config.psk_for(peer_id)
    owners = entry.ids if entry is not None and not proves_any_name(entry, config.local.id) else ()
    for ident in (config.remote.id, *owners):
        if ident.type == IdType.DER_ASN1_DN and dn_equal(ident.data, peer_id.data):
            return ident
    return None


def _verify_psk(st: IkeSaState, peer_id: Identity, octets: bytes, auth: AuthPayload) -> PskEntry | None:
    """The peer's AUTH made with the key of (our id, its id): on a connection of %any, the entry
    the peer's identity chooses (psk.py), never another user's; AuthError (counted) if none is its.
    An initiator checks the responder's with the key it proved itself with: the IDr of a %any
    connection is the responder's choice, and must not pick another entry of the file (another
    gateway's key, or a user's own: review revpsk F1)."""
    assert st.prf is not None
    if st.is_initiator:
        entry = PskEntry((), st.config.psk) if st.config.psk is not None else None
    else:
        entry = st.config.psk_for(peer_id)
    if entry is None:
        raise AuthError(f"no pre-shared key in secrets for {st.config.local.id} and peer identity {peer_id}")
    try:
        verify_psk(st.prf, entry.secret, octets, auth)
    except AuthError as exc:
        raise AuthError(f"{exc} (secrets.{entry.name})" if entry.name else str(exc)) from None
    return None if st.is_initiator else entry   # (an initiator's own AUTH uses its psk: _own_auth)


def _ike_up(st: IkeSaState) -> None:
    assert st.peer_id is not None and st.proposal is not None
    st.emit(
        IkeSaUp(
            st.name,
            st.spi_i,
            st.spi_r,
            st.config.local.id,
            st.peer_id,
            st.remote_addr,
            st.local_port,
            describe_all([st.proposal]),
            st.initial_contact,
            st.own_vips,
            st.own_dns,
            tuple(lease.address for lease in st.peer_vips),
            eap.peer_eap(st),
            st.peer_sent_id,
            st.config.lease_proof,
            eap.accepted(st),
            st.peer_anchor,
        )
    )
    # only the AUTH payloads sign the IKE_SA_INIT messages, and both sides' are done: not kept for
    # the SA's lifetime (a KiB or more per client on a gateway)
    st.init_request = st.init_response = b""


def _peer_ids(idi: IdPayload, payloads: Sequence[Payload]) -> tuple[Identity, Identity | None]:
    """The identity the peer claims (IDi) and ours it wants (IDr, if it sent one)."""
    idr = find_id(payloads, False)
    return Identity(idi.id_type, idi.data), Identity(idr.id_type, idr.data) if idr is not None else None


def _fits(cfg: IkeConfig, peer: Identity, wanted: Identity | None) -> bool:
    return identity_allowed(cfg.remote.id, peer) and (wanted is None or cfg.local.id.matches(wanted))


def _select_config(st: IkeSaState, idi: IdPayload, payloads: Sequence[Payload]) -> list[IkeConfig]:
    """Switch a responder to the connection that fits IDi (and IDr, if the peer sent one); the
    candidates that fit, best first (the chosen one is the first, if any fits)."""
    peer, wanted = _peer_ids(idi, payloads)
    auth = find(payloads, AuthPayload)

    def proves(cfg: IkeConfig) -> bool:
        """The peer authenticates as the connection wants: its AUTH's method, or EAP if it sent none."""
        return auth_allowed(cfg.remote.method, auth.method) if auth is not None else \
            cfg.remote.method in eap.METHOD_NAMES
    # one the peer's way of authenticating fits first (strongSwan moves on to the next candidate
    # whose constraints it meets), and of those one that names the peer's identity before one of
    # %any, whatever their order (strongSwan ranks a perfect identity match above %any): a site's
    # own connection, not the road warriors'; else the first that fits, and its check refuses
    fitting = [cfg for cfg in st.candidates if _fits(cfg, peer, wanted)]
    if len(fitting) > 1:   # (one, a gateway's usual, is in order: no generator, no key per candidate)
        fitting.sort(key=lambda cfg: (not proves(cfg), cfg.remote.id.is_any))
    if fitting:
        st.config = fitting[0]
    return fitting


def _after_eap(st: IkeSaState, ge: eap.GatewayEap) -> list[IkeConfig]:
    """The connections a peer EAP authenticated may end in, the one in use first: those that fit
    its identities and are alike in what is done already, the EAP method and ``eap_id`` (the
    conversation) and our identity and certificate (the IDr and AUTH it has); they may differ in
    ``remote.groups`` and in what comes after (pools, children), as in strongSwan's "group
    selection", where the responder moves on to the next candidate whose constraints the
    completed authentication satisfies (ike_auth.c, update_cfg_candidates)."""
    current = st.config
    peer, wanted = _peer_ids(ge.idi, ge.request)

    def alike(cfg: IkeConfig) -> bool:
        mine, theirs = cfg.local, current.local
        return (cfg.remote.method, cfg.remote.eap_id, mine.id, mine.cert) == \
            (current.remote.method, current.remote.eap_id, theirs.id, theirs.cert)
    return [current, *(c for c in st.candidates if c is not current and alike(c) and _fits(c, peer, wanted))]


def _select_by_groups(st: IkeSaState, ge: eap.GatewayEap) -> Response | None:
    """The connection of the first group (``remote.groups``) the peer is a member of, by the
    groups its EAP-RADIUS Access-Accept gave; AUTHENTICATION_FAILED if there is none."""
    if not st.config.remote.groups:
        return None   # the one in use takes anyone: it is the first of _after_eap's, and chosen
    fitting = _after_eap(st, ge)
    chosen = next((c for c in fitting if group_member(c.remote.groups, ge.groups)), None)
    if chosen is None:
        return eap.refused_for_groups(st, ge, fitting)   # each requires groups: else it was chosen
    if chosen is not st.config:
        log.info("%s: switching to connection %s: user %s is a member of %s", st.name, chosen.name,
                 user_text(ge.user), ", ".join(repr(g) for g in ge.groups))
        st.config = chosen
    return None


class IkeAuthTask(Task):
    """The initiator's IKE_AUTH, optionally with the first Child SA."""

    exchange = ExchangeType.IKE_AUTH
    runs_while_connecting = True

    def __init__(self, child_cfg: ChildConfig | None) -> None:
        self._child_cfg = child_cfg
        self._child: ChildSa | None = None
        self._proposed: tuple[tuple[Ts, ...], tuple[Ts, ...]] = ((), ())
        self._followups: list[Task] = []
        self._eap: eap.ClientEap | None = None  # we authenticate with EAP (RFC 7296 §2.16)
        self._vip_refused: str | None = None  # why a virtual IP of the CFG_REPLY was refused

    def followups(self) -> list[Task]:
        return self._followups

    @property
    def creates(self) -> str | None:
        return self._child_cfg.name if self._child_cfg is not None else None

    def build(self, st: IkeSaState) -> list[Payload]:
        if self._eap is not None and self._eap.started:
            return self._eap.request(st)  # a later EAP round
        idi = _id_payload(st, True)
        payloads: list[Payload] = [idi]
        self._eap = eap.new_client(st, idi)
        own = _own_auth(st, idi) if self._eap is None else []  # with EAP: no AUTH yet
        payloads += own[:-1] + certreq_payloads(st)
        if not st.config.remote.id.is_any:
            payloads.append(IdPayload(False, st.config.remote.id.type, st.config.remote.id.data))
        payloads += own[-1:]
        # as strongSwan (ike_auth.c build_i): not while another IKE SA with the peer is up, which
        # the peer would drop on INITIAL_CONTACT (RFC 7296 §2.4: it says we have none left)
        if st.config.initial_contact and not (st.has_contact is not None and st.has_contact(st)):
            payloads.append(notify(NotifyType.INITIAL_CONTACT))
        payloads += ike_config.request_payloads(st)
        payloads += self._child_payloads(st)
        payloads += mobike.announce(st)  # after the Child SA's payloads, where strongSwan puts it
        return payloads

    def _child_payloads(self, st: IkeSaState) -> list[Payload]:
        cfg = self._child_cfg
        if cfg is None:
            return []
        tsi, tsr = childmod.initiator_ts(st, cfg, requesting_vips=bool(st.config.vips))
        if not tsi or not tsr:
            st.emit(NegotiationFailed(st.name, "TS_UNACCEPTABLE", "dynamic selector without a local address", cfg.name))
            return []
        try:
            self._child = childmod.new_child(st, cfg)
        except SpiUnavailable as exc:
            st.emit(NegotiationFailed(st.name, "TEMPORARY_FAILURE", f"no inbound SPI: {exc}", cfg.name))
            return []
        self._proposed = (tsi, tsr)
        return childmod.sa_payloads(self._child, cfg.esp_proposals, tsi, tsr, strip_dh=True)

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        err = error_notify(payloads)
        if err is not None and err.type == NotifyType.AUTHENTICATION_FAILED:
            said = self._eap.peer.failure if self._eap is not None else None  # its MSCHAPv2 Failure, if any
            st.emit(AuthFailed(st.name, "peer refused our authentication (AUTHENTICATION_FAILED)"
                               + (f": EAP-MSCHAPv2 {said}" if said else ""), by_peer=True))
            return Outcome.CLOSE
        if err is not None and err.type not in CHILD_ERRORS:
            st.emit(NegotiationFailed(st.name, notify_name(err.type), "IKE_AUTH refused by peer"))
            return Outcome.CLOSE
        if self._eap is None or not self._eap.started:
            idr = find_id(payloads, False)
            try:
                if idr is None:
                    raise AuthError("response has no IDr")
                _verify_peer(st, payloads, idr)
                if self._eap is not None:
                    eap.gateway_verified(st, self._eap, idr)
            except AuthError as exc:
                st.emit(AuthFailed(st.name, str(exc), by_peer=False))
                return Outcome.AUTH_FAILED
        if self._eap is not None:
            outcome = eap.client_step(st, self._eap, payloads)
            if outcome is not Outcome.DONE:
                return outcome
        redirect = find_notify(payloads, NotifyType.REDIRECT)
        if redirect is not None:  # the gateway's AUTH checked out: we may follow it
            return self._redirected(st, redirect.data)
        self._vip_refused = ike_config.process_reply(st, payloads)
        mobike.accept(st, payloads)
        _ike_up(st)
        self._finish_child(st, payloads, err.type if err is not None else None)
        return Outcome.DONE

    def _redirected(self, st: IkeSaState, data: bytes) -> Outcome:
        """N(REDIRECT) in the authenticated response: no Child SA here; ``sa.py`` deletes this
        IKE SA and follows ``st.auth_redirect`` (left None if the notify is malformed)."""
        self.abort(st)  # the gateway built no Child SA for us: our inbound SPI goes back
        self._child = None
        try:
            redirect = decode_redirect(data)
        except RedirectError as exc:
            st.emit(NegotiationFailed(st.name, "INVALID_SYNTAX", f"IKE_AUTH: {exc}"))
        else:
            why = not_followed(st, redirect, authenticated=True)
            if why is None:
                st.auth_redirect = redirect
            else:
                st.emit(NegotiationFailed(st.name, "REDIRECT", f"IKE_AUTH: {why}"))
        st.auth_redirect_child = self._child_cfg.name if self._child_cfg is not None else None
        return Outcome.REDIRECT

    def _finish_child(self, st: IkeSaState, payloads: Sequence[Payload], err: int | None) -> None:
        child = self._child
        if child is None:
            return
        if err == NotifyType.TEMPORARY_FAILURE:
            # refused for now (e.g. the peer is out of SPIs): as strongSwan, a CREATE_CHILD_SA asks
            # for it again a few seconds later (``retry``), the IKE SA is up meanwhile
            log.info("%s: peer refused Child SA %s for now (TEMPORARY_FAILURE): trying again soon (retry 1 of %d)",
                     st.name, child.name, create_child_sa.MAX_RETRIES)
            childmod.drop_child(st, child)
            self.try_again = True
            return
        if err is not None:
            ours = describe_all(child.config.esp_proposals)
            refusal = childmod.Refusal(NotifyType(err), f"peer refused Child SA {child.name} (we proposed {ours})",
                                       child.name)
            childmod.fail(st, child, refusal)
            return
        sa, ts = find(payloads, SaPayload), childmod.received_ts(payloads)
        if sa is None or ts is None:
            refusal = childmod.Refusal(NotifyType.NO_PROPOSAL_CHOSEN, "response has no SA/TS", child.name)
            childmod.fail(st, child, refusal)
            return
        result = childmod.check_response(child, sa, ts[0], ts[1], self._proposed, strip_dh=True)
        if not isinstance(result, childmod.Refusal) and st.config.vips:
            result = _check_vip_ts(st, child.name, ts[0], self._vip_refused) or result
        if not isinstance(result, childmod.Refusal):
            result = childmod.answer_not_others(st, child, ts[0], ts[1]) or result
        if isinstance(result, childmod.Refusal):
            childmod.fail(st, child, result)
            # the peer installed its half: ask it to delete that (by our inbound SPI, its outbound one)
            self._followups.append(DeleteChildTask([child], DownReason.REFUSED, result.notify.name))
            return
        spi_out = int.from_bytes(result.spi, "big")
        childmod.install(st, child, result, spi_out, ts[0], ts[1], True, (st.nonce_i, st.nonce_r))

    def retry(self) -> Task | None:
        if not self.try_again or self._child_cfg is None:
            return None
        return create_child_sa.CreateChildTask(self._child_cfg, retries=1)

    def abort(self, st: IkeSaState) -> None:
        if self._child is not None:
            childmod.drop_child(st, self._child)


def respond(st: IkeSaState, payloads: Sequence[Payload]) -> Response:
    """The responder's IKE_AUTH."""
    idi = find_id(payloads, True)
    try:
        if st.eap is not None:
            return _respond_eap_round(st, payloads)
        if mobike.translated(st, payloads):
            # RFC 4555 §3.9: the initiator allows no NAT and there is one; it starts anew
            st.emit(NegotiationFailed(st.name, "UNEXPECTED_NAT_DETECTED",
                                      "NO_NATS_ALLOWED in IKE_AUTH, and a NAT changed the request's addresses"))
            return Response([notify(NotifyType.UNEXPECTED_NAT_DETECTED)], close=True)
        if idi is None:
            raise AuthError("request has no IDi")
        _check_ids(payloads)
        fitting = _select_config(st, idi, payloads)
        st.initial_contact = find_notify(payloads, NotifyType.INITIAL_CONTACT) is not None
        st.peer_certreq = st.peer_certreq or find(payloads, CertReqPayload) is not None
        if eap.wanted(st, payloads):
            peer_id = Identity(idi.id_type, idi.data)
            if not identity_allowed(st.config.remote.id, peer_id):
                raise AuthError(f"peer identity {peer_id} is not the configured {st.config.remote.id}")
            idr = _id_payload(st, False)
            return eap.start(st, idi, payloads, [idr, *_own_auth(st, idr)])
        checked = _verify_peer(st, payloads, idi, alike_by_ca(st, fitting), ids_checked=True)
    except AuthError as exc:
        st.emit(AuthFailed(st.name, str(exc), by_peer=False))
        return Response([notify(NotifyType.AUTHENTICATION_FAILED)], close=True, reason=DownReason.AUTH_FAILED)
    idr = _id_payload(st, False)
    return _authenticated(st, payloads, [idr, *_own_auth(st, idr, checked)])


def _respond_eap_round(st: IkeSaState, payloads: Sequence[Payload]) -> Response:
    """A later round of an EAP IKE_AUTH; the last one answers the first request's SA/TS/CP."""
    step = eap.respond(st, payloads)
    if isinstance(step, Response):
        return step
    refused = _select_by_groups(st, step)
    if refused is not None:
        return refused
    response = _authenticated(st, step.request, [eap.gateway_auth(st, step, _id_payload(st, False))])
    if not response.close:
        st.eap = None   # up: IkeSaUp took what it keeps of EAP (peer_eap, accepted)
    return response


def _authenticated(st: IkeSaState, payloads: Sequence[Payload], response: list[Payload]) -> Response:
    """The rest of the answer once the peer is authenticated: CP and the Child SA, or a REDIRECT;
    or AUTHENTICATION_FAILED for a duplicate the connection refuses (unique = keep, as strongSwan) or
    an identity that holds max_ike_sas IKE SAs already, before any virtual IP or Child SA is made for it."""
    if st.refuse_duplicate is not None and (why := st.refuse_duplicate(st)) is not None:
        if isinstance(why, IkeSaLimit):   # counted and logged rate-limited: the peer may try again and again
            st.emit(why)
            return Response([notify(NotifyType.AUTHENTICATION_FAILED)], close=True, reason=DownReason.IKE_SA_LIMIT)
        st.emit(AuthFailed(st.name, why, by_peer=False, refused=True))   # its credentials were right: not counted
        return Response([notify(NotifyType.AUTHENTICATION_FAILED)], close=True, reason=DownReason.DUPLICATE)
    target = _redirect_target(st)
    if target is not None:
        assert st.peer_id is not None
        st.redirected_to = target
        st.emit(PeerRedirected(st.name, st.peer_id, target))
        return Response([*response, notify(NotifyType.REDIRECT, encode_gateway(target))])
    cp = ike_config.respond(st, payloads)
    response += cp.payloads
    supported = mobike.answer(st, payloads)  # last in the response, where strongSwan puts it
    _ike_up(st)
    if cp.failure is not None:
        # as strongSwan: the IKE SA comes up, the Child SA is not built
        hint = _child_hint(st) if find(payloads, SaPayload) is not None else None
        st.emit(NegotiationFailed(st.name, "INTERNAL_ADDRESS_FAILURE", cp.failure, hint))
        return Response(response + supported)
    child, child_payloads = _respond_child(st, payloads)
    if child is not None and child.installed:
        # until the worker took it (or the peer's next request): a failed install is refused in this
        # answer, rebuilt with an error notify in place of the Child SA (child_refusal.py), not
        # answered and then deleted (the client would see its first child come up and go)
        st.unconfirmed_child(child)
        st.auth_answer = AuthAnswer(child.unique_id, tuple(response), tuple(supported))
    return Response(response + child_payloads + supported)


def _redirect_target(st: IkeSaState) -> str | None:
    """Where this authenticated client goes instead (``redirect_on = auth``), if anywhere: only a
    client that announced support, and only once we hold ``redirect_when`` other IKE SAs."""
    cfg = st.config
    if cfg.redirect_to is None or cfg.redirect_on != "auth" or not st.peer_redirect_support:
        return None
    others = st.load() if st.load is not None else 0   # established ones: this SA is still half-open
    return cfg.redirect_to if others >= cfg.redirect_when else None


def _child_hint(st: IkeSaState) -> str | None:
    """The child a failed CP request stopped (the first configured; the request did not get that far)."""
    return st.config.children[0].name if st.config.children else None


def _check_vip_ts(st: IkeSaState, child: str, tsi: Sequence[Ts], refused: str | None) -> childmod.Refusal | None:
    """With ``vips`` our TSi must be our assigned address: a gateway may not make us source other ones.
    ``refused``: why an address of its CFG_REPLY was not taken."""
    if not st.own_vips:
        why = refused or "the gateway assigned no virtual IP"
        return childmod.Refusal(NotifyType.FAILED_CP_REQUIRED, f"{why} (we requested "
                                f"{', '.join(map(str, st.config.vips))})", child)
    hosts = [Ts.host(a) for a in st.own_vips]
    if not all(any(h.contains(t) for h in hosts) for t in tsi):
        return childmod.Refusal(NotifyType.TS_UNACCEPTABLE, f"gateway narrowed TSi to {', '.join(map(str, tsi))}, "
                                f"not our virtual IP {', '.join(map(str, st.own_vips))}", child)
    return None


def _respond_child(st: IkeSaState, payloads: Sequence[Payload]) -> tuple[ChildSa | None, list[Payload]]:
    """The Child SA the request asks for (None if none is made) and its payloads in our answer."""
    sa, ts = find(payloads, SaPayload), childmod.received_ts(payloads)
    if sa is None or ts is None:
        return None, []  # an IKE SA without a Child SA
    result = childmod.responder_select(st, sa, ts[0], ts[1], strip_dh=True)
    if isinstance(result, childmod.Refusal):
        childmod.fail(st, None, result)
        return None, [notify(result.notify)]
    try:
        child = childmod.new_child(st, result.config)
    except SpiUnavailable as exc:
        st.emit(NegotiationFailed(st.name, "TEMPORARY_FAILURE", f"no inbound SPI: {exc}", result.config.name))
        return None, [notify(NotifyType.TEMPORARY_FAILURE)]
    spi_out = int.from_bytes(result.proposal.spi, "big")
    childmod.install(st, child, result.proposal, spi_out, result.tsr, result.tsi, False, (st.nonce_i, st.nonce_r))
    return child, childmod.response_payloads(result, child)
