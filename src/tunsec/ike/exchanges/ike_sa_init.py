"""IKE_SA_INIT (RFC 7296 §1.2): proposals, key exchange, nonces, NAT detection.

Payload order as strongSwan sends and expects it: [N(COOKIE)], SA, KE, Nonce,
N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP),
[N(IKEV2_FRAGMENTATION_SUPPORTED)], N(SIGNATURE_HASH_ALGORITHMS), [CERTREQ].

UDP encapsulation is forced (RFC 7296 §2.23, strongSwan's ``encap=yes``): the
source hash we send is random, so the peer always believes we are behind a NAT
and the initiator floats after this exchange (the responder follows it). The
peer's source hashes are checked all the same (``st.nat_peer``): only a peer
behind a NAT (or one that forces encapsulation too) is followed to a new address
later (sa_responder.serve).
Where the initiator floats to is strongSwan's ``float_ports`` (ike_sa.c): the
peer's port becomes 4500 if it was 500 or ours was 500, else it stays (a custom
``remote_port``); ours becomes 4500 (the worker's ESP socket: ESP in UDP goes
between the ports IKE ends up on, as strongSwan's Child SAs take the IKE SA's).

INVALID_KE_PAYLOAD: the initiator retries with the group the responder asks
for, if it is one we would accept and have not tried. COOKIE: the initiator repeats its request
with the cookie first, keeping its SPI, nonce and KE value (RFC 7296 §2.6). Both together at
most ``MAX_RETRIES`` times (strongSwan's ike_init gives up after 5 as well): the answers are
unauthenticated, and anyone who saw our request could keep us at it for ever.

Redirect (RFC 5685, ``redirect.py``): the initiator sends N(REDIRECT_SUPPORTED),
or N(REDIRECTED_FROM) once redirected; on N(REDIRECT) it sends a new request
(fresh nonce) to the named gateway, at most ``MAX_REDIRECTS`` times; a gateway
named by an FQDN is looked up first (``sa.py`` waits for the address). The
responder's side (a stateless REDIRECT answer) is in ``endpoint.py``; a responder
notes here whether the client could follow a REDIRECT in IKE_AUTH.
"""

from __future__ import annotations

import functools
import hmac
import struct
from collections.abc import Sequence

from ..auth import SUPPORTED_HASHES
from ..certs import certreq_data
from ..config import IkeConfig
from ..constants import (
    IKE_PORT,
    NATT_PORT,
    CertEncoding,
    ExchangeType,
    HashAlgorithm,
    NotifyType,
    ProtocolId,
    notify_name,
)
from ..dh import DhError, KeyExchange, check_public, init_key_exchange
from ..events import NegotiationFailed, Redirected
from ..message import CertReqPayload, KePayload, NoncePayload, NotifyPayload, Payload, Proposal, SaPayload
from ..proposals import ProposalSpec, Suite, accepts, describe_all, select_proposal
from ..redirect import MAX_REDIRECTS, RedirectError, decode_redirect, encode_gateway, not_followed
from ..state import NO_HASHES, IkeSaState, nat_hash
from .base import (
    KeGroups,
    KeRetry,
    Outcome,
    Response,
    Task,
    error_notify,
    find,
    find_all,
    find_notify,
    notify,
)

NONCE_LEN = 32
# COOKIE and INVALID_KE_PAYLOAD answers followed per IKE_SA_INIT, together (strongSwan's ike_init
# MAX_RETRIES): a legitimate responder needs at most one of each, two if its cookie secret changed
MAX_RETRIES = 5


def _hash_algorithms() -> bytes:
    return b"".join(struct.pack("!H", h) for h in SUPPORTED_HASHES)


# the same in every IKE_SA_INIT we send (payloads are immutable: one object serves all)
_SIGNATURE_HASHES = notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, _hash_algorithms())
_FRAGMENTATION_SUPPORTED = notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
# either announces that the initiator can follow a REDIRECT (RFC 5685 §3)
_REDIRECT_ANNOUNCED = frozenset({NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM})


def _nat_notifies(st: IkeSaState, spi_r: bytes) -> list[Payload]:
    # a random source hash never matches: the peer sees a NAT and we both float to 4500
    own = st.local_addr[0] if st.local_addr else st.config.local_addr
    genuine = None if st.config.force_encap or own is None else nat_hash(st.spi_i, spi_r, (own, st.local_port))
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, genuine or st.rng(20)),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(st.spi_i, spi_r, st.remote_addr)),
    ]


def _peer_behind_nat(st: IkeSaState, payloads: Sequence[Payload], spi_r: bytes) -> bool:
    """RFC 7296 §2.23: the peer's address is translated (or it forces UDP encapsulation, whose
    random hash says so): none of its NAT_DETECTION_SOURCE_IP hashes is that of the address its
    IKE_SA_INIT came from.  Only then does the IKE SA follow the peer to the source of its later
    requests (sa_responder.serve, as strongSwan's update_hosts with COND_NAT_THERE).  A peer that
    sends none does not do NAT traversal: no NAT."""
    sources = [n.data for n in find_all(payloads, NotifyPayload) if n.type == NotifyType.NAT_DETECTION_SOURCE_IP]
    return _translated(st, sources, spi_r)


def _translated(st: IkeSaState, sources: Sequence[bytes], spi_r: bytes) -> bool:
    """_peer_behind_nat of the peer's NAT_DETECTION_SOURCE_IP hashes."""
    if not sources:
        return False
    seen = nat_hash(st.spi_i, spi_r, st.remote_addr)
    for h in sources:   # noqa: SIM110 (a loop, not any(genexpr): no generator made per IKE_SA_INIT)
        if hmac.compare_digest(h, seen):
            return False
    return True


def _certreq(st: IkeSaState) -> list[Payload]:
    remote = st.config.remote
    if remote.method != "pubkey" or not st.config.send_certreq:
        return []
    return [CertReqPayload(CertEncoding.X509_SIGNATURE, certreq_data(remote.cas))]


def _fragmentation(st: IkeSaState, answering: bool) -> list[Payload]:
    """IKEV2_FRAGMENTATION_SUPPORTED unless fragmentation = no; a responder (``answering``) sends
    it only in answer to the initiator's (``st.peer_fragmentation``, read from the request)."""
    if st.config.fragmentation == "no" or (answering and not st.peer_fragmentation):
        return []
    return [_FRAGMENTATION_SUPPORTED]


def _peer_hashes(payloads: Sequence[Payload]) -> frozenset[int]:
    return _hashes_of(find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS))


def _hashes_of(sig: NotifyPayload | None) -> frozenset[int]:
    """The hash algorithms a SIGNATURE_HASH_ALGORITHMS notify announces (none without one)."""
    if sig is None:
        return NO_HASHES
    if len(sig.data) <= _HASHES_CACHE_MAX:
        return _hashes(sig.data)
    return _hashes.__wrapped__(sig.data)   # a peer's outsized notify is not kept


_HASHES_CACHE_MAX = 32   # strongSwan sends 4 or 5 algorithms: 10 bytes


# Every client of a gateway sends the same list: one frozenset (216 bytes) for all their IKE SAs
# (they keep it until IKE_AUTH), and no parse per client.
@functools.lru_cache(maxsize=8)
def _hashes(data: bytes) -> frozenset[int]:
    """The RFC 7427 hashes the peer announced that we know of: the set is kept until IKE_AUTH, and a
    notify of 64 KiB would otherwise make one of 32,768 values (2 MiB) for each half-open IKE SA.
    (A peer that names none we know is answered with the classic AUTH method: it could verify no
    RFC 7427 signature of ours anyway.)"""
    data = data[: len(data) // 2 * 2]
    return frozenset(v for v in struct.unpack(f"!{len(data) // 2}H", data) if v in _KNOWN_HASHES) or NO_HASHES


_KNOWN_HASHES = frozenset(int(h) for h in HashAlgorithm)


class IkeSaInitTask(Task):
    """The initiator's IKE_SA_INIT."""

    exchange = ExchangeType.IKE_SA_INIT
    runs_while_connecting = True

    def __init__(self, st: IkeSaState) -> None:
        self._groups = KeGroups(g for spec in st.config.proposals for g in spec.dh_groups)
        assert self._groups.group is not None
        self._ke: KeyExchange = init_key_exchange(self._groups.group)
        self._cookie: bytes | None = None
        self._redirected_from = st.redirected_from  # the gateway that redirected us last (RFC 5685)
        self._redirects = 0
        self._retries = 0  # COOKIE and INVALID_KE_PAYLOAD answers followed (MAX_RETRIES)
        st.nonce_i = st.rng(NONCE_LEN)

    def build(self, st: IkeSaState) -> list[Payload]:
        payloads: list[Payload] = []
        if self._cookie is not None:
            payloads.append(notify(NotifyType.COOKIE, self._cookie))
        proposals = tuple(spec.to_wire(i + 1) for i, spec in enumerate(st.config.proposals))
        payloads += [
            SaPayload(proposals),
            KePayload(self._ke.group, self._ke.public),
            NoncePayload(st.nonce_i),
            *_nat_notifies(st, bytes(8)),
            *_fragmentation(st, False),
            _SIGNATURE_HASHES,
            *self._redirect_notify(st),
        ]
        return payloads

    def _redirect_notify(self, st: IkeSaState) -> list[Payload]:
        if self._redirected_from is not None:
            return [notify(NotifyType.REDIRECTED_FROM, encode_gateway(self._redirected_from))]
        # follow_redirects = no (strongSwan's charon.follow_redirects): a gateway may not redirect us
        return [notify(NotifyType.REDIRECT_SUPPORTED)] if st.config.follow_redirects else []

    def _follow_redirect(self, st: IkeSaState, data: bytes) -> Outcome:
        """Start over at the gateway N(REDIRECT) names (RFC 5685 §4), a bounded number of times."""
        try:
            redirect = decode_redirect(data)
        except RedirectError as exc:
            return self._fail(st, "INVALID_SYNTAX", str(exc))
        if redirect.nonce != st.nonce_i:
            return self._fail(st, "INVALID_SYNTAX", "REDIRECT does not carry our nonce (not an answer to our request)")
        why = not_followed(st, redirect)
        if why is not None:
            return self._fail(st, "REDIRECT", why)
        self._redirects += 1
        if self._redirects > MAX_REDIRECTS:
            return self._fail(st, "REDIRECT", f"redirected more than {MAX_REDIRECTS} times, last to {redirect.gateway}")
        old = st.remote_addr[0]
        st.authenticated_target = False   # this one is not (an exclude route's trust: exclude_trust.py)
        st.emit(Redirected(st.name, old, redirect.gateway))
        self._redirected_from = old
        self._cookie = None  # a cookie belongs to the gateway that sent it
        if redirect.fqdn:
            st.resolving = redirect.gateway  # sa.py sends the request once the name has an address
        else:
            st.remote_addr = (redirect.gateway, st.config.remote_port)
        st.nonce_i = st.rng(NONCE_LEN)
        return Outcome.RETRY

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        redirect = find_notify(payloads, NotifyType.REDIRECT)
        if redirect is not None and error_notify(payloads) is None:
            return self._follow_redirect(st, redirect.data)
        cookie = find_notify(payloads, NotifyType.COOKIE)
        if cookie is not None and error_notify(payloads) is None:
            if not 1 <= len(cookie.data) <= 64:
                return self._fail(st, "INVALID_SYNTAX", "COOKIE of invalid length")
            if self._out_of_retries():
                return self._fail(st, "COOKIE", self._gave_up("COOKIE"))
            self._cookie = cookie.data
            return Outcome.RETRY
        retry = self._groups.follow(payloads)
        if retry is KeRetry.RETRY:
            if self._out_of_retries():
                return self._fail(st, "INVALID_KE_PAYLOAD", self._gave_up(f"INVALID_KE_PAYLOAD ({self._groups.group})"))
            assert self._groups.group is not None
            self._ke = init_key_exchange(self._groups.group)
            return Outcome.RETRY
        if retry is KeRetry.REFUSED:
            wanted = KeGroups.requested(payloads)
            return self._fail(st, "INVALID_KE_PAYLOAD", f"peer asks for {wanted}, which we do not offer "
                              "or tried already")
        err = error_notify(payloads)
        if err is not None:
            detail = f"peer refused our proposals {describe_all(st.config.proposals)}"
            return self._fail(st, notify_name(err.type), detail if err.type == NotifyType.NO_PROPOSAL_CHOSEN else "")
        return self._accept(st, payloads)

    def _accept(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        sa, ke, nonce = find(payloads, SaPayload), find(payloads, KePayload), find(payloads, NoncePayload)
        if sa is None or ke is None or nonce is None:
            return self._fail(st, "INVALID_SYNTAX", "IKE_SA_INIT response lacks SA, KE or Nonce")
        if len(sa.proposals) != 1 or not accepts(st.config.proposals, sa.proposals[0]):
            return self._fail(st, "NO_PROPOSAL_CHOSEN", f"peer chose {describe_all(sa.proposals)}, not offered")
        suite = Suite.of(sa.proposals[0])
        if ke.group != suite.dh_group or ke.group != self._ke.group:
            return self._fail(st, "INVALID_KE_PAYLOAD", f"peer's KE group {ke.group} is not the chosen one")
        try:
            shared = self._ke.shared_secret(ke.data)
        except DhError as exc:
            return self._fail(st, "INVALID_SYNTAX", str(exc))
        st.proposal, st.suite, st.nonce_r = sa.proposals[0], suite, nonce.data
        st.peer_hashes = _peer_hashes(payloads)
        st.peer_certreq = find(payloads, CertReqPayload) is not None
        st.peer_fragmentation = find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        st.install_keys(shared)
        st.nat_peer = _peer_behind_nat(st, payloads, st.spi_r)   # before we float: where we sent to
        _float_ports(st)
        st.proven_addr = st.remote_addr[0]  # where we sent our request and the peer answered it
        return Outcome.DONE

    def _out_of_retries(self) -> bool:
        self._retries += 1
        return self._retries > MAX_RETRIES

    def _gave_up(self, last: str) -> str:
        return f"gave up after {MAX_RETRIES} COOKIE/INVALID_KE_PAYLOAD retries (last answer: {last})"

    def _fail(self, st: IkeSaState, reason: str, detail: str) -> Outcome:
        st.emit(NegotiationFailed(st.name, reason, detail))
        return Outcome.CLOSE


def _float_ports(st: IkeSaState) -> None:
    """The initiator's move after IKE_SA_INIT (forced UDP encapsulation), as strongSwan's
    float_ports: the peer to 4500 if either end used 500 (even if the peer's answer came from
    another port); a peer on a custom port stays there and takes IKE with the non-ESP marker and
    ESP in UDP on it (strongSwan does, on any of its sockets).  We move to 4500 from any port:
    strongSwan moves from charon.port to charon.port_nat_t, and ours are the IKE sockets and the
    worker's port 4500, the one port our ESP in UDP can use."""
    local, (addr, remote) = st.local_port, st.remote_addr
    if IKE_PORT in (local, remote):
        st.remote_addr = (addr, NATT_PORT)
    st.local_port = NATT_PORT


def respond(st: IkeSaState, payloads: Sequence[Payload]) -> Response:
    """The responder's IKE_SA_INIT: select, check the KE group, derive keys."""
    # one pass over the request for what find, find_notify and find_all asked one by one (each a
    # pass of its own, eight per IKE_SA_INIT): the first payload of each kind, the first Notify of
    # each type, the NAT_DETECTION_SOURCE_IP hashes
    first: dict[type, Payload] = {}
    notes: dict[int, NotifyPayload] = {}
    sources: list[bytes] = []
    for p in payloads:
        if type(p) is NotifyPayload:
            notes.setdefault(p.type, p)
            if p.type == NotifyType.NAT_DETECTION_SOURCE_IP:
                sources.append(p.data)
        else:
            first.setdefault(type(p), p)
    sa, ke, nonce = first.get(SaPayload), first.get(KePayload), first.get(NoncePayload)
    if sa is None or ke is None or nonce is None:
        return Response([notify(NotifyType.INVALID_SYNTAX)], close=True)
    assert isinstance(sa, SaPayload) and isinstance(ke, KePayload) and isinstance(nonce, NoncePayload)
    theirs = [p for p in sa.proposals if p.protocol == ProtocolId.IKE and not p.spi]
    candidates = st.candidates or (st.config,)
    chosen = None
    # the proposal lists that refused this request already: a gateway's %any connections mostly share
    # one ("default"), and each alike candidate would match the peer's up to 256 transforms again
    # (review revcost F1); the first candidate whose proposals match still wins
    refused: set[tuple[ProposalSpec, ...]] = set()
    for cfg in candidates:
        if cfg.proposals in refused:
            continue
        chosen = select_proposal(cfg.proposals, theirs, prefer_group=ke.group)
        if chosen is not None:
            st.config = cfg
            # IKE_AUTH may still switch to another connection that accepts this proposal (cfg does:
            # it chose it, and asking again costs a match per client on a gateway)
            st.candidates = _accepting(candidates, cfg, chosen)
            break
        refused.add(cfg.proposals)
    if chosen is None:
        # each distinct proposal once, as they were refused
        configured = describe_all(dict.fromkeys(p for c in candidates for p in c.proposals))
        st.emit(
            NegotiationFailed(
                st.name, "NO_PROPOSAL_CHOSEN", f"received {describe_all(sa.proposals)}; configured {configured}"
            )
        )
        return Response([notify(NotifyType.NO_PROPOSAL_CHOSEN)], close=True)
    suite = Suite.of(chosen)
    if suite.dh_group != ke.group:
        # stateless: the initiator comes back with a new request and a new IkeSa serves it
        assert suite.dh_group is not None
        return Response([notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", suite.dh_group))], close=True)
    try:
        check_public(ke.group, ke.data)   # before a key pair is taken (from the pool) for it
        ours = init_key_exchange(ke.group)
        shared = ours.shared_secret(ke.data)
    except DhError:
        return Response([notify(NotifyType.INVALID_SYNTAX)], close=True)
    st.proposal, st.suite = chosen, suite
    st.nonce_i, st.nonce_r = nonce.data, st.rng(NONCE_LEN)
    st.peer_hashes = _hashes_of(notes.get(NotifyType.SIGNATURE_HASH_ALGORITHMS))
    st.peer_certreq = CertReqPayload in first
    st.peer_fragmentation = NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in notes
    # RFC 5685 §6: only a client that announced support may be redirected in IKE_AUTH
    st.peer_redirect_support = not _REDIRECT_ANNOUNCED.isdisjoint(notes)
    st.nat_peer = _translated(st, sources, bytes(8))   # its request had no SPIr yet
    st.install_keys(shared)
    # where the request came from and our answer goes: the peer cannot go on without it
    st.proven_addr = st.remote_addr[0]
    return Response(
        [
            SaPayload((chosen,)),
            KePayload(ke.group, ours.public),
            NoncePayload(st.nonce_r),
            *_nat_notifies(st, st.spi_r),
            *_fragmentation(st, True),
            _SIGNATURE_HASHES,
            *_certreq(st),
        ]
    )


def _accepting(candidates: Sequence[IkeConfig], cfg: IkeConfig, chosen: Proposal) -> tuple[IkeConfig, ...]:
    """``cfg`` (which chose ``chosen``) and the candidates whose proposals accept it too, in order;
    each distinct proposal list asked once (review revcost F1), and ``cfg``'s not at all: it chose
    ``chosen`` (a gateway whose one connection serves its clients matched each one's proposal twice)."""
    if len(candidates) == 1:
        return (cfg,)
    known: dict[tuple[ProposalSpec, ...], bool] = {cfg.proposals: True}
    for c in candidates:
        if c.proposals not in known:
            known[c.proposals] = accepts(c.proposals, chosen)
    return tuple(c for c in candidates if c is cfg or known[c.proposals])


def certreq_payloads(st: IkeSaState) -> list[Payload]:
    """CERTREQ for IKE_AUTH (the initiator sends it there, as strongSwan does)."""
    return _certreq(st)
