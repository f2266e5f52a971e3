"""Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 §1.3.2, §2.18).

Request SA (IKE proposals carrying the initiator's new SPI), Ni, KEi; response
SA (with the responder's new SPI), Nr, KEr. The rekey initiator becomes the
initiator of the new IKE SA, which takes over the Child SAs; it then deletes
the old IKE SA. Both sides record the outcome in ``st.rekey`` and ``sa.py``
builds the new ``IkeSa`` from it.

Simultaneous rekeying (RFC 7296 §2.8.2): a side whose own rekey request is out
answers the peer's as usual and keeps the result in ``RekeyIkeTask.collision``.
When its own response arrives, both sides hold the same two new IKE SAs and the
same four nonces: the one created by the exchange with the lowest nonce is
redundant (``redundant_is_ours``, shared with Child SA rekey collisions) and is
deleted by the side that initiated that exchange; the other one takes over, and
its initiator deletes the old IKE SA. No retry, no TEMPORARY_FAILURE.

A rekey that crosses our own request to create, rekey or delete a Child SA is refused with
TEMPORARY_FAILURE (RFC 7296 §2.25.1, as strongSwan): were it answered, the answer to our request
could arrive after the DELETE of the old IKE SA and be lost with it.  The peer tries again soon
(``Task.try_again``, ``IkeSa._rearm_failed_rekey``); so do we when the peer refuses ours.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..constants import ExchangeType, NotifyType, ProtocolId, notify_name
from ..dh import DhError, KeyExchange, generate_key_exchange
from ..events import NegotiationFailed
from ..message import KePayload, NoncePayload, Payload, Proposal, SaPayload
from ..proposals import Suite, accepts, describe_all, select_proposal
from ..spi_tag import make_ike_spi
from ..state import IkeRekey, IkeSaState
from .base import KeGroups, KeRetry, Outcome, Response, Task, error_notify, find, notify

NONCE_LEN = 32


def redundant_is_ours(our_min: bytes, their_min: bytes) -> bool:
    """RFC 7296 §2.8.1/§2.8.2: of two SAs made by simultaneous exchanges, the one
    whose exchange had the lowest of the four nonces is redundant.  ``our_min`` and
    ``their_min``: the lower nonce of our exchange and of the peer's."""
    return our_min < their_min


def new_ike_spi(st: IkeSaState) -> bytes:
    """A new IKE SPI of ours for the peer (random and tagged, spi_tag.py), not yet checked for use."""
    return make_ike_spi(st.rng, st.spi_tag, st.remote_addr[0])


def reserve_ike_spi(st: IkeSaState) -> bytes:
    """The new IKE SPI of our side of a rekey: one no IKE SA of the endpoint has and no other rekey in
    flight reserved (spi_book.py); held until the successor is registered or the rekey fails."""
    book = st.spi_book
    return new_ike_spi(st) if book is None else book.reserve(st.local_spi, lambda: new_ike_spi(st))


def release_ike_spi(st: IkeSaState, spi: bytes) -> None:
    """``spi``, reserved for a rekey that failed, will make no IKE SA."""
    if st.spi_book is not None:
        st.spi_book.release(spi)


def usable_ike_spi(spi: bytes) -> bool:
    """The peer's new IKE SPI: 8 bytes, never zero (RFC 7296 §3.1: the initiator's "MUST NOT be zero"; a
    responder's is zero only in the first IKE_SA_INIT message, which no rekey's SA ever sends)."""
    return len(spi) == 8 and any(spi)


class RekeyIkeTask(Task):
    exchange = ExchangeType.CREATE_CHILD_SA
    rekeys_ike_sa = True

    def __init__(self, st: IkeSaState) -> None:
        assert st.suite is not None and st.suite.dh_group is not None
        self._groups = KeGroups((g for spec in st.config.proposals for g in spec.dh_groups), st.suite.dh_group)
        self._spi = reserve_ike_spi(st)
        self._nonce = st.rng(NONCE_LEN)
        self._ke: KeyExchange | None = None
        # the peer's rekey of the same IKE SA, answered while this request was out
        self.collision: IkeRekey | None = None

    def build(self, st: IkeSaState) -> list[Payload]:
        group = self._groups.group
        assert group is not None
        self._ke = generate_key_exchange(group)
        proposals = tuple(spec.to_wire(i + 1, self._spi) for i, spec in enumerate(st.config.proposals))
        return [SaPayload(proposals), NoncePayload(self._nonce), KePayload(group, self._ke.public)]

    def yield_to_peer_rekey(self) -> IkeRekey | None:
        rekey, self.collision = self.collision, None
        return rekey

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        outcome = self._process(st, payloads)
        if outcome == Outcome.DONE and self.collision is not None:
            settle_collision(st, self.collision)
        if outcome == Outcome.DONE and self._spi not in (r.spi_i for r in (st.rekey, st.redundant) if r is not None):
            release_ike_spi(st, self._spi)   # our rekey failed (or lost a collision it did not make)
        return outcome

    def abort(self, st: IkeSaState) -> None:
        release_ike_spi(st, self._spi)

    def _process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        if self._groups.follow(payloads) is KeRetry.RETRY:
            return Outcome.RETRY
        err = error_notify(payloads)
        if err is not None and err.type == NotifyType.TEMPORARY_FAILURE:
            self.try_again = True   # the peer is busy with a Child SA (RFC 7296 §2.25.1): soon again
            return Outcome.DONE
        if err is not None:
            st.emit(NegotiationFailed(st.name, notify_name(err.type), "peer refused to rekey the IKE SA"))
            return Outcome.DONE
        sa, nonce, ke = find(payloads, SaPayload), find(payloads, NoncePayload), find(payloads, KePayload)
        chosen = sa.proposals[0] if sa is not None and len(sa.proposals) == 1 else None
        if chosen is None or nonce is None or ke is None or len(chosen.spi) != 8:
            st.emit(NegotiationFailed(st.name, "INVALID_SYNTAX", "IKE rekey response lacks SA, Nonce or KE"))
            return Outcome.DONE
        if not usable_ike_spi(chosen.spi):
            st.emit(NegotiationFailed(st.name, "INVALID_SYNTAX", "IKE rekey response: the peer's new SPI is zero"))
            return Outcome.DONE
        if chosen.protocol != ProtocolId.IKE or not accepts(st.config.proposals, chosen):
            st.emit(NegotiationFailed(st.name, "NO_PROPOSAL_CHOSEN", f"peer chose {describe_all([chosen])}"))
            return Outcome.DONE
        assert self._ke is not None
        try:
            if ke.group != self._groups.group or Suite.of(chosen).dh_group != self._groups.group:
                raise DhError("KE group differs from the chosen one")
            shared = self._ke.shared_secret(ke.data)
        except DhError as exc:
            st.emit(NegotiationFailed(st.name, "INVALID_KE_PAYLOAD", f"IKE rekey: {exc}"))
            return Outcome.DONE
        st.rekey = IkeRekey(True, self._spi, chosen.spi, chosen, self._nonce, nonce.data, shared)
        return Outcome.DONE


def settle_collision(st: IkeSaState, theirs: IkeRekey) -> None:
    """Our rekey ended (``st.rekey`` is set if it succeeded) while the peer's had
    succeeded too: keep one new IKE SA in ``st.rekey``, the other in ``st.redundant``."""
    ours = st.rekey
    if ours is None:   # ours failed: the peer's is the only one
        st.rekey = theirs
        return
    if redundant_is_ours(min(ours.nonce_i, ours.nonce_r), min(theirs.nonce_i, theirs.nonce_r)):
        st.rekey, st.redundant = theirs, ours
    else:
        st.rekey, st.redundant = ours, theirs


def is_rekey_request(payloads: Sequence[Payload]) -> bool:
    """A CREATE_CHILD_SA request that rekeys the IKE SA: its proposals are for IKE."""
    sa = find(payloads, SaPayload)
    return sa is not None and bool(sa.proposals) and all(p.protocol == ProtocolId.IKE for p in sa.proposals)


def respond(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None = None) -> Response:
    """Answer the peer's IKE SA rekey request; ``pending``: our own request, if one is out.

    If that is a rekey of the IKE SA too, the new IKE SA is kept in ``pending.collision``
    until our response arrives (RFC 7296 §2.8.2), instead of replacing the IKE SA at once.
    """
    ours_out = pending if isinstance(pending, RekeyIkeTask) else None
    if pending is not None and pending.changes_children:
        # RFC 7296 §2.25.1: not while our request to create, rekey or delete a Child SA is out: its
        # answer could be lost when this SA is replaced and deleted (both sides lost the Child SA)
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    if ours_out is not None and ours_out.collision is not None:
        # the peer rekeyed this IKE SA already (answered, kept until our answer): one more would
        # reserve another SPI (and make another key pair) per request
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    sa, nonce, ke = find(payloads, SaPayload), find(payloads, NoncePayload), find(payloads, KePayload)
    if sa is None or nonce is None or ke is None:
        return Response([notify(NotifyType.INVALID_SYNTAX)])
    theirs = [p for p in sa.proposals if p.protocol == ProtocolId.IKE and usable_ike_spi(p.spi)]
    chosen = select_proposal(st.config.proposals, theirs, prefer_group=ke.group)
    if chosen is None:
        detail = f"IKE rekey: received {describe_all(sa.proposals)}; configured {describe_all(st.config.proposals)}"
        st.emit(NegotiationFailed(st.name, "NO_PROPOSAL_CHOSEN", detail, peer_request=True))
        return Response([notify(NotifyType.NO_PROPOSAL_CHOSEN)])
    group = Suite.of(chosen).dh_group
    if group is None or group != ke.group:
        return Response([notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", group or 0))])
    try:
        ours = generate_key_exchange(group)
        shared = ours.shared_secret(ke.data)
    except DhError:
        return Response([notify(NotifyType.INVALID_SYNTAX)])
    spi_r, nonce_r = reserve_ike_spi(st), st.rng(NONCE_LEN)
    rekey = IkeRekey(False, chosen.spi, spi_r, chosen, nonce.data, nonce_r, shared)
    if ours_out is not None:
        ours_out.collision = rekey
    else:
        st.rekey = rekey
    reply = Proposal(chosen.num, chosen.protocol, spi_r, chosen.transforms)
    return Response([SaPayload((reply,)), NoncePayload(nonce_r), KePayload(group, ours.public)])
