"""CREATE_CHILD_SA (RFC 7296 §1.3): additional Child SAs and Child SA rekeying.

Request: [N(REKEY_SA)], SA, Ni, [KEi], TSi, TSr; response: SA, Nr, [KEr], TSi,
TSr. With PFS (a key exchange in the ESP proposal) KEYMAT is
prf+(SK_d, g^ir(new) | Ni | Nr). A rekeyed Child SA is deleted by its
initiator once the new one is up. Requests to rekey the IKE SA itself
go to ``rekey_ike``. A rekey keeps the old Child SA's traffic selectors (RFC 7296 §2.8):
``child.rekey_select`` as responder, ``child.rekey_answer`` for the answer to ours.

Collisions (RFC 7296 §2.8.1, §2.25): two rekeys of one Child SA are settled by the nonces
(``_settle_rekey``, ``_collision``); the peer's rekey of a Child SA we are deleting, or of one of
an IKE SA we are rekeying, is refused with TEMPORARY_FAILURE (CHILD_SA_NOT_FOUND once it is gone),
and ours is tried again a few seconds later when the peer refuses it so. A new Child SA the
peer refuses so (strongSwan does while it rekeys the IKE SA) is asked for again too, a few
seconds later (on the new IKE SA if ours was rekeyed meanwhile), at most ``MAX_RETRIES`` times;
and we refuse the peer's new Child SA while our rekey of the IKE SA is out, as strongSwan does.

Limit: the peer's new Child SAs beyond the connection's ``max_child_sas`` are refused with
NO_ADDITIONAL_SAS (``_over_limit``), before a proposal is chosen, a key computed or an SPI taken.

Nonces: without PFS the nonces alone tell two Child SAs' keys apart (KEYMAT = prf+(SK_d, Ni | Nr)).
While our request is out the peer has seen our Ni, and the Nr of each of its requests we answer
(``CreateChildTask.seen``).  A request of the peer's with our Ni, answered with a fresh Nr that the
peer then sent back as the Nr of its answer to ours, made one KEYMAT for two Child SAs, whose keys
both sides use from sequence number 1 (review revrekey F3): such a request is refused
(TEMPORARY_FAILURE: a peer that drew our nonce by chance asks again with another).  An answer whose
Nr is one of those Nr installs nothing either: it would tie the nonces a collision is settled by.
The peer may also split the nonces otherwise (its Ni = our Ni | Z, its Nr = Z | our Nr: review revrekey3
F1), or move a PFS exchange's shared secret into its Ni (review revrekey4 F1): what is compared is
KEYMAT's whole seed [g^ir |] Ni | Nr, and a Child SA whose seed repeats one of the IKE SA's under its
SK_d is refused in either role (keymat_seeds.py; the peer's requests answered while ours is out are
capped at SHOWN_NONCES, so that the seeds kept hold all that could be repeated).
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Sequence

from tunsec.loglimit import suffix

from ..config import ChildConfig
from ..constants import ExchangeType, NotifyType, ProtocolId, notify_name
from ..crypto import child_seed
from ..dh import DhError, KeyExchange, generate_key_exchange
from ..events import ChildSaLimit, DownReason, NegotiationFailed
from ..message import KePayload, NoncePayload, NotifyPayload, Payload, SaPayload
from ..peer_logs import Line
from ..proposals import Suite, describe_all
from ..state import ChildSa, IkeSaState, SpiUnavailable
from ..ts import Ts
from . import child as childmod
from . import informational, rekey_ike
from .base import KeGroups, KeRetry, Outcome, Response, Task, error_notify, find, find_notify, notify
from .informational import DeleteChildTask

NONCE_LEN = 32
# how often a new Child SA the peer refuses with TEMPORARY_FAILURE is asked for again: strongSwan
# retries for ever, but a peer that always refuses (e.g. out of SPIs) must not keep us at it for ever
MAX_RETRIES = 5
# the Nr of the peer's requests answered while ours is out, kept to refuse them back (see above); more
# of its requests are refused for now (TEMPORARY_FAILURE) until ours is answered: an honest peer asks
# one at a time, a round trip each, and a peer that made and deleted Child SAs on and on would push the
# seeds a repeat must be found among out of keymat_seeds.RECENT
SHOWN_NONCES = 8

log = logging.getLogger(__name__)


class CreateChildTask(Task):
    """The initiator's CREATE_CHILD_SA for a new Child SA or to rekey ``rekey``."""

    exchange = ExchangeType.CREATE_CHILD_SA
    changes_children = True

    def __init__(self, cfg: ChildConfig, rekey: ChildSa | None = None, *, retries: int = 0) -> None:
        self._cfg = cfg
        self._rekey = rekey
        self._retries = retries  # how often the peer refused this new Child SA for now already
        self._child: ChildSa | None = None
        self._ke: KeyExchange | None = None
        self._nonce = b""
        self._proposed: tuple[tuple[Ts, ...], tuple[Ts, ...]] = ((), ())
        self._followups: list[Task] = []
        # the peer rekeyed the same Child SA while our request was out: (its lowest nonce, its SA)
        self.collision: tuple[bytes, ChildSa] | None = None
        self._groups = KeGroups(g for p in cfg.esp_proposals for g in p.dh_groups)
        # the Child SA this rekeys, or this new one's child, was deleted at once (terminate --child)
        # while the request was out: its answer installs nothing (abandon)
        self.abandoned = False
        # the peer deleted the Child SA this rekeys while the request was out (takes_peer_delete): it
        # is unregistered, and reported down when the answer comes, after the new one is up
        self._old_held = False
        # outbound SPIs the peer's DELETEs named while this request was out that matched no Child SA
        # (the last few): an answer choosing one of them is not installed (review revrekey F1)
        self._deleted: collections.deque[int] = collections.deque(maxlen=informational.SPARE_SPIS)
        self._shown: tuple[bytes, ...] = ()   # our Nr in answers to the peer while this is out (shown)
        # the peer had the Child SA this rekeys when the request left (_gone_at_peer)
        self._peer_had_old = False

    def build(self, st: IkeSaState) -> list[Payload]:
        if self._child is None:
            try:
                self._child = childmod.new_child(st, self._cfg)
            except SpiUnavailable as exc:
                self._no_spi(st, exc)
                raise   # nothing is sent: the IKE SA moves on (sa.py _send_request)
            self._nonce = st.rng(NONCE_LEN)
        if self._rekey is not None:
            self._proposed = (self._rekey.local_ts, self._rekey.remote_ts)
        else:
            self._proposed = childmod.initiator_ts(st, self._cfg)
        payloads: list[Payload] = []
        if self._rekey is not None:
            self._peer_had_old = not self._rekey.unconfirmed
            spi = childmod.spi_bytes(self._rekey.spi_in)
            payloads.append(NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, spi))
        sa, tsi, tsr = childmod.sa_payloads(self._child, self._cfg.esp_proposals, *self._proposed, strip_dh=False)
        payloads += [sa, NoncePayload(self._nonce)]
        group = self._groups.group
        if group is not None:
            self._ke = generate_key_exchange(group)
            payloads.append(KePayload(group, self._ke.public))
        return [*payloads, tsi, tsr]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        if self._groups.follow(payloads) is KeRetry.RETRY:
            return Outcome.RETRY
        outcome = self._answered(st, payloads)
        # the old Child SA the peer deleted ends here unless the new one came up as its rekey
        self.let_old_go(st, DownReason.DELETED_BY_PEER)
        return outcome

    def _answered(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        child = self._child
        assert child is not None
        err = error_notify(payloads)
        old = self._rekey
        if err is not None and old is not None and (err.type == NotifyType.TEMPORARY_FAILURE
                                                     or st.children.get(old.spi_in) is not old):
            # a collision the peer refused (RFC 7296 §2.25: the old Child SA stays, the rekey is tried
            # again), or the peer deleted the old one while our request was out: nothing went wrong
            log.debug("%s: peer answered our rekey of Child SA %s with %s", st.name, child.name, notify_name(err.type))
            childmod.drop_child(st, child)
            self.try_again = err.type == NotifyType.TEMPORARY_FAILURE
            return Outcome.DONE
        if self.abandoned or (old is not None and st.children.get(old.spi_in) is not old and not self._old_held):
            # we deleted it at once (terminate --child), or the peer did after its rekey of it won a
            # collision (its new Child SA carries the lineage on): ours is not wanted
            return self._discard(st, child, answered=err is None)
        if err is not None and old is None and err.type == NotifyType.TEMPORARY_FAILURE:
            return self._busy(st, child)
        if err is not None and old is not None and err.type == NotifyType.CHILD_SA_NOT_FOUND \
                and self._gone_at_peer(old):
            return self._lost_by_peer(st, child, old)
        if err is not None:
            ours = describe_all(child.config.esp_proposals)
            self._refuse(st, notify_name(err.type), f"peer refused Child SA {child.name} (we proposed {ours})")
            return Outcome.DONE
        sa, nonce, ts = find(payloads, SaPayload), find(payloads, NoncePayload), childmod.received_ts(payloads)
        if sa is None or nonce is None or ts is None:
            self._refuse(st, "INVALID_SYNTAX", "response lacks SA, Nonce or TS")
            return Outcome.DONE
        result = childmod.check_response(child, sa, ts[0], ts[1], self._proposed, strip_dh=False)
        if not isinstance(result, childmod.Refusal) and int.from_bytes(result.spi, "big") in self._deleted:
            return self._deleted_before_answer(st, child)
        if not isinstance(result, childmod.Refusal) and nonce.data in self._shown:
            # (our own Ni sent back as Nr makes a pair no other Child SA has: its keys are its own)
            result = childmod.Refusal(NotifyType.INVALID_SYNTAX, "the peer's Nr is a nonce of our answers", child.name)
        if not isinstance(result, childmod.Refusal) and old is not None:
            result = childmod.rekey_answer(child, ts[0], ts[1], old) or result
            ts = self._proposed   # the same selectors (or refused): in the order the lineage has them
        if not isinstance(result, childmod.Refusal):
            result = childmod.answer_not_others(st, child, ts[0], ts[1]) or result
        if isinstance(result, childmod.Refusal):
            return self._refused(st, child, result)
        shared = self._pfs_secret(find(payloads, KePayload), Suite.of(result).dh_group)
        if shared is None:
            self._refuse(st, "INVALID_KE_PAYLOAD", "peer's KE does not match the chosen group")
            return Outcome.DONE
        if st.keymat_seeds.repeats(child_seed(shared, self._nonce, nonce.data)):
            # the whole seed, the new shared secret too (keymat_seeds.py, review revrekey4 F1)
            return self._refused(st, child, childmod.Refusal(NotifyType.INVALID_SYNTAX,
                                                             "g^ir | Ni | Nr is another Child SA's", child.name))
        spi_out = int.from_bytes(result.spi, "big")
        rekey_of = self._rekey.unique_id if self._rekey else None
        nonces = (self._nonce, nonce.data)
        childmod.install(st, child, result, spi_out, ts[0], ts[1], True, nonces, shared or None, rekey_of)
        if self._rekey is not None:
            self._settle_rekey(st, child, min(nonces))
        return Outcome.DONE

    def _refused(self, st: IkeSaState, child: ChildSa, refusal: childmod.Refusal) -> Outcome:
        """The peer's answer is not installed: the peer installed its half, so it is asked to delete
        that (by our inbound SPI, its outbound one)."""
        childmod.fail(st, child, refusal)
        self._followups.append(DeleteChildTask([child], DownReason.REFUSED, refusal.notify.name))
        return Outcome.DONE

    def peer_withdrew(self, child: ChildSa) -> None:
        # its rekey's Child SA, which our nonces would have settled against ours, is gone: ours alone
        # replaces the old one (else, ours the redundant one, both new ones were gone and the old one
        # left waiting for a DELETE that no side sends; review revrekey4 F3)
        if self.collision is not None and self.collision[1] is child:
            self.collision = None

    def peer_deleted_unknown(self, spi: int) -> None:
        if spi not in self._deleted:
            self._deleted.append(spi)

    def _deleted_before_answer(self, st: IkeSaState, child: ChildSa) -> Outcome:
        """The peer deleted the Child SA its answer chose before the answer reached us (its install
        failed there, or its operator's terminate; the answer was lost and came again for our
        retransmission): installed here it would be ours alone.  A rekey keeps the old Child SA (the
        peer keeps it too: it deleted the new one) and is tried again (sa_timers.rearm_failed_rekey);
        a new Child SA failed (a re-creation tries again: services/ike/recreate.py)."""
        log.debug("%s: peer deleted Child SA %s before its answer came: not installing it", st.name, child.name)
        what = "rekey of Child SA" if self._rekey is not None else "Child SA"
        self._refuse(st, "DELETED_BY_PEER", f"peer deleted the {what} {child.name} it had answered before "
                     "the answer reached us")
        return Outcome.DONE

    def _gone_at_peer(self, old: ChildSa) -> bool:
        """Whether CHILD_SA_NOT_FOUND to our rekey of ``old`` means the peer lost it.  Not if the peer
        rekeyed it (its DELETE of it is on its way), nor if we are deleting it; nor if the peer created
        it and had sent no request since our answer when ours left: it may not have our answer yet
        (review revrekey2 F2).  Then it is a refusal, and the rekey is tried again
        (sa_timers.rearm_failed_rekey)."""
        return not (old.rekeyed_by_peer or old.deleting) and self._peer_had_old

    def _lost_by_peer(self, st: IkeSaState, child: ChildSa, old: ChildSa) -> Outcome:
        """The peer has no Child SA ``old`` (RFC 7296 §3.10.1 CHILD_SA_NOT_FOUND): it deleted it and the
        DELETE was lost, its answer to our rekey was lost before it deleted the new one (review revrekey
        F1), or it lost its state.  Kept, it would carry our traffic into nothing until its hard lifetime
        while the rekey was tried again and again: it ends here, and the child is created again (the
        IKE service holds its lineage's policies meanwhile: services/ike/recreate.py).  A DELETE of it
        follows, in case the peer does hold it (a tunsec peer that answered an earlier rekey of it whose
        answer we never got refuses a second one so): else it would wait for our DELETE until its hard
        lifetime.  A peer that has it not answers that with an empty Delete payload."""
        log.debug("%s: peer has no Child SA %s (CHILD_SA_NOT_FOUND to our rekey of it): creating the child again",
                  st.name, old.name)
        childmod.drop_child(st, child)
        informational.child_down(st, old, DownReason.LOST_BY_PEER)   # now: its DELETE's answer reports nothing
        self._followups += [CreateChildTask(old.config), DeleteChildTask([old], DownReason.LOST_BY_PEER)]
        return Outcome.DONE

    def abandon(self) -> None:
        """What this request asks for must not come up (sa_teardown.abandon_child_requests)."""
        self.abandoned = True

    def takes_peer_delete(self, st: IkeSaState, child: ChildSa) -> bool:
        """The peer deletes the Child SA we are rekeying.  It may have answered our rekey already and
        deleted the old one itself (its hard lifetime; RFC 7296 lets either end delete a rekeyed SA),
        its DELETE overtaking the answer: the new Child SA is up there, the lineage's only one.  So
        the old one is unregistered now (the DELETE is answered as usual) but reported down only when
        our request ends: after the new one is up as its rekey, as when our own DELETE of it is
        answered, or as deleted by the peer if no new one comes up (strongSwan's child_rekey keeps
        the new one too: "peer sent an incorrect delete ... after responding to our rekeying").  Not
        once abandoned (terminate --child), nor after the peer rekeyed it too (a collision: the
        peer's new Child SA carries the lineage on)."""
        if child is not self._rekey or self.abandoned or child.rekeyed_by_peer:
            return False
        st.children.pop(child.spi_in, None)
        self._old_held = True
        log.info("%s: peer deleted Child SA %s while our rekey of it is out: reported down when answered",
                 st.name, child.name)
        return True

    @property
    def held(self) -> ChildSa | None:
        """The old Child SA the peer deleted, held until the answer (takes_peer_delete), if any."""
        return self._rekey if self._old_held else None

    def holds_old(self, child_name: str) -> bool:
        """The old Child SA of config ``child_name`` the peer deleted is held until the answer."""
        return self._old_held and self._rekey is not None and self._rekey.name == child_name

    def let_old_go(self, st: IkeSaState, reason: DownReason) -> None:
        """Report the old Child SA the peer deleted down (once), if this request holds it."""
        if self._old_held:
            self._old_held = False
            assert self._rekey is not None
            informational.report_down(st, self._rekey, reason)

    def _discard(self, st: IkeSaState, child: ChildSa, answered: bool) -> Outcome:
        """The Child SA our rekey replaces went away while the request was out (deleted at once, or by
        the peer whose own rekey of it won), or the request was abandoned: the new Child SA never comes
        up here (else a terminated child came back as a lineage of its own, review revdelete F2); the
        peer that installed its half is asked to delete it, as strongSwan's child_rekey does.  Not when
        the peer deleted the old one after answering us (takes_peer_delete, review revdel3 F1)."""
        log.info("%s: Child SA %s was deleted while our %s was out: not installing the new one", st.name,
                 child.name, "rekey of it" if self._rekey is not None else "request for a new one")
        childmod.drop_child(st, child)
        if answered:   # by our inbound SPI, its outbound one
            self._followups.append(DeleteChildTask([child], DownReason.DELETED))
        return Outcome.DONE

    def _busy(self, st: IkeSaState, child: ChildSa) -> Outcome:
        """The peer refused our new Child SA for now (RFC 7296 §2.25): ask again soon (``retry``)."""
        if self._retries >= MAX_RETRIES:
            log.warning("%s: peer refused Child SA %s with TEMPORARY_FAILURE %d times: giving up",
                        st.name, child.name, self._retries + 1)
            self._refuse(st, "TEMPORARY_FAILURE",
                         f"peer refused Child SA {child.name} for now {self._retries + 1} times; not trying again")
            return Outcome.DONE
        log.info("%s: peer refused Child SA %s for now (TEMPORARY_FAILURE): trying again soon (retry %d of %d)",
                 st.name, child.name, self._retries + 1, MAX_RETRIES)
        childmod.drop_child(st, child)
        self.try_again = True
        return Outcome.DONE

    def _no_spi(self, st: IkeSaState, exc: SpiUnavailable) -> None:
        """No inbound SPI for now (the worker refused GETSPI): like a peer's TEMPORARY_FAILURE, a rekey
        is tried again by its timer (sa.py _rearm_failed_rekey), a new Child SA at most MAX_RETRIES times."""
        name = self._rekey.name if self._rekey is not None else self._cfg.name
        what = "rekey of Child SA" if self._rekey is not None else "Child SA"
        self.try_again = self._rekey is not None or self._retries < MAX_RETRIES
        later = "trying again soon" if self.try_again else "not trying again"
        st.emit(NegotiationFailed(st.name, "TEMPORARY_FAILURE", f"no inbound SPI for {what} {name}: {exc}; {later}",
                                  self._cfg.name))

    def retry(self) -> Task | None:
        if not self.try_again or self._rekey is not None:
            return None  # a rekey is re-armed by its timer (sa.py _rearm_failed_rekey)
        return CreateChildTask(self._cfg, retries=self._retries + 1)

    @property
    def rekeying(self) -> ChildSa | None:
        return self._rekey

    def seen(self, nonce: bytes) -> bool:
        """``nonce`` is one of ours the peer has seen while this request is out: our Ni (once sent),
        or the Nr of an answer of ours since."""
        return (nonce == self._nonce and bool(nonce)) or nonce in self._shown

    def shown(self, nonce_r: bytes) -> None:
        """We answered a request of the peer's with ``nonce_r`` while this one is out."""
        self._shown = (*self._shown[1 - SHOWN_NONCES:], nonce_r)

    @property
    def answered_enough(self) -> bool:
        """The peer's requests answered while this one is out reached SHOWN_NONCES: no more until it is."""
        return len(self._shown) >= SHOWN_NONCES

    @property
    def creates(self) -> str | None:
        """The child config this request creates a new Child SA of (not once abandoned: none comes up)."""
        return self._cfg.name if self._rekey is None and not self.abandoned else None

    @property
    def proposed(self) -> ChildSa | None:
        """The Child SA our request offered (None before it was built)."""
        return self._child

    def _settle_rekey(self, st: IkeSaState, new: ChildSa, our_min: bytes) -> None:
        """Delete what our rekey replaced, or, after a collision, whichever SA is redundant.

        RFC 7296 §2.8.1: of two rekeys of one Child SA, the one whose exchange had
        the lowest nonce is redundant and is deleted by the side that created it;
        the other side deletes the old SA.  One the peer deleted already (takes_peer_delete)
        is reported down now, after the new one's up: the new one carries its lineage on.
        """
        old = self._rekey
        assert old is not None
        old.rekeyed_by_us = (our_min, new)
        if self.collision is not None and rekey_ike.redundant_is_ours(our_min, self.collision[0]):
            self._followups.append(DeleteChildTask([new], DownReason.REKEY_COLLISION))
            return
        if self._old_held:
            if st.children.get(new.spi_in) is new:   # (not if the IKE SA's delete took it: child.install)
                log.info("%s: peer deleted Child SA %s after answering our rekey of it: the new one replaces it",
                         st.name, old.name)
                self.let_old_go(st, DownReason.REKEYED)
            return
        self._followups.append(DeleteChildTask([old], DownReason.REKEYED))

    def _pfs_secret(self, ke: KePayload | None, group: int | None) -> bytes | None:
        """g^ir of the new key exchange; b"" without PFS; None when the KE is wrong."""
        if group is None:
            return b""
        if ke is None or self._ke is None or ke.group != group or self._ke.group != group:
            return None
        try:
            return self._ke.shared_secret(ke.data)
        except DhError:
            return None

    def _refuse(self, st: IkeSaState, reason: str, detail: str) -> None:
        assert self._child is not None
        st.emit(NegotiationFailed(st.name, reason, detail, self._cfg.name))
        childmod.drop_child(st, self._child)

    def followups(self) -> list[Task]:
        return self._followups

    def abort(self, st: IkeSaState) -> None:
        self.let_old_go(st, DownReason.DELETED_BY_PEER)   # no answer here: no new Child SA replaces it
        if self._child is not None:
            childmod.drop_child(st, self._child)

    def handover(self, st: IkeSaState) -> list[Task]:
        self.abort(st)
        if self._child is None:
            return []
        # the peer may have installed it and lost only its answer: its outbound SPI
        # is our inbound one, so a DELETE naming that SPI removes it there
        return [DeleteChildTask([self._child], DownReason.UNANSWERED)]


def respond(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None = None) -> Response:
    """Answer a CREATE_CHILD_SA request for a Child SA (new or rekeyed; an IKE SA rekey is
    rekey_ike's); ``pending`` is our own outstanding request, if any."""
    sa, nonce, ts = find(payloads, SaPayload), find(payloads, NoncePayload), childmod.received_ts(payloads)
    if sa is None or nonce is None or ts is None:
        return Response([notify(NotifyType.INVALID_SYNTAX)])
    out = pending if isinstance(pending, CreateChildTask) else None   # ours, whose nonces the peer has seen
    if out is not None and out.seen(nonce.data):
        return _for_now(st, "its Ni is a nonce of ours (sent while our request is out)")
    if out is not None and out.answered_enough:
        return _for_now(st, f"{SHOWN_NONCES} of its Child SAs answered while our request is out")
    rekey = _rekeyed_child(st, payloads)
    if rekey is None and find_notify(payloads, NotifyType.REKEY_SA) is not None:
        return Response([notify(NotifyType.CHILD_SA_NOT_FOUND)])
    if rekey is None and pending is not None and pending.rekeys_ike_sa:
        # nor a new Child SA while we rekey the IKE SA (strongSwan's reading of §2.25.2): our DELETE of
        # the old IKE SA could overtake the answer and the peer drop a Child SA we installed; it asks
        # again on the new IKE SA
        log.debug("%s: refusing the peer's new Child SA: we are rekeying the IKE SA", st.name)
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    if rekey is not None and (rekey.deleting or (pending is not None and pending.rekeys_ike_sa)):
        # RFC 7296 §2.25.1: a Child SA we are deleting is not rekeyed (its successor would outlive our
        # DELETE); §2.25.2: nor one of an IKE SA we are rekeying (the answer may be lost in the switch)
        log.debug("%s: refusing the peer's rekey of Child SA %s: we are %s", st.name, rekey.name,
                  "deleting it" if rekey.deleting else "rekeying the IKE SA")
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    refusal = _over_limit(st, rekey)
    if refusal is not None:
        return refusal
    ke = find(payloads, KePayload)
    group = ke.group if ke else None
    result = childmod.rekey_select(st, sa, *ts, rekey, group) if rekey is not None \
        else childmod.responder_select(st, sa, *ts, strip_dh=False, prefer_group=group)
    if isinstance(result, childmod.Refusal):
        childmod.fail(st, None, result, peer_request=True)
        return Response([notify(result.notify)])
    group = Suite.of(result.proposal).dh_group
    if group is not None and (ke is None or ke.group != group):
        return Response([notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", group))])
    try:
        dh = generate_key_exchange(group) if group is not None else None
        shared = dh.shared_secret(ke.data) if dh is not None and ke is not None else None
    except DhError:
        return Response([notify(NotifyType.INVALID_SYNTAX)])
    try:
        child = childmod.new_child(st, result.config)
    except SpiUnavailable as exc:
        st.emit(NegotiationFailed(st.name, "TEMPORARY_FAILURE", f"no inbound SPI: {exc}", result.config.name))
        return Response([notify(NotifyType.TEMPORARY_FAILURE)])
    nonce_r = st.rng(NONCE_LEN)
    if st.keymat_seeds.repeats(child_seed(shared, nonce.data, nonce_r)):
        # our fresh Nr (and key pair) end a seed the peer's Ni begins (by chance only: both are drawn
        # now): asked again, the peer sends another Ni and gets another Nr
        childmod.drop_child(st, child)
        return _for_now(st, "g^ir | Ni | Nr is another Child SA's")
    if out is not None:
        out.shown(nonce_r)
    spi_out = int.from_bytes(result.proposal.spi, "big")
    rekey_of = rekey.unique_id if rekey else None
    nonces = (nonce.data, nonce_r)
    childmod.install(st, child, result.proposal, spi_out, result.tsr, result.tsi, False, nonces, shared, rekey_of)
    sa_out, tsi_out, tsr_out = childmod.response_payloads(result, child)
    response: list[Payload] = [sa_out, NoncePayload(nonce_r)]
    if dh is not None:
        response.append(KePayload(dh.group, dh.public))
    followups: list[Task] = []
    st.unconfirmed_child(child)   # until the peer's next request: it may not get this answer (_gone_at_peer)
    if rekey is not None:
        rekey.rekey_at = float("inf")  # replaced: the peer deletes it, we must not rekey it again
        rekey.rekeyed_by_peer = True
        child.peer_rekey_of = rekey.unique_id
        followups = _collision(rekey, child, min(nonces), pending)
    return Response([*response, tsi_out, tsr_out], followups=followups)


def _for_now(st: IkeSaState, why: str) -> Response:
    """TEMPORARY_FAILURE to the peer's request while ours is out; the peer may ask again at once, so
    its lines are limited per peer (review revrekey4 F2), as child.py's narrowed requests are, and
    each is counted (EndpointStats.child_sas_refused_for_now: ``tunsec status``, a metric)."""
    held = st.peer_logs.admit(Line.FOR_NOW, st)
    if held is not None:
        log.info("%s: refusing the peer's CREATE_CHILD_SA for now: %s%s", st.name, why, suffix(held))
    return Response([notify(NotifyType.TEMPORARY_FAILURE)], refused_for_now=True)


def _over_limit(st: IkeSaState, rekey: ChildSa | None) -> Response | None:
    """NO_ADDITIONAL_SAS (RFC 7296 §3.10.1) if the peer's request would take the IKE SA past
    ``max_child_sas``, checked before anything is selected, computed or allocated.

    A new Child SA counts against the Child SAs not replaced. A rekey replaces one and is not
    counted; the peer is to delete what it replaced (RFC 7296 §2.8), so a rekey is refused only
    once the peer has left ``max_child_sas`` of those undeleted, and a Child SA it rekeyed already
    is not rekeyed again (each such rekey would add a Child SA): either would let it grow the SAD
    without bound while the live count stays put."""
    limit = st.config.max_child_sas
    if rekey is not None and rekey.rekeyed_by_peer:
        log.debug("%s: the peer rekeys Child SA %s a second time: refused", st.name, rekey.name)
        return Response([notify(NotifyType.CHILD_SA_NOT_FOUND)])
    if rekey is not None:
        held = sum(1 for c in st.children.values() if c.rekeyed_by_peer)
    else:
        held = sum(1 for c in st.children.values() if not _replaced(c))
    if held < limit:
        return None
    st.emit(ChildSaLimit(st.name, str(st.peer_id), st.remote_addr, held, limit, rekey is not None))
    return Response([notify(NotifyType.NO_ADDITIONAL_SAS)])


def _replaced(child: ChildSa) -> bool:
    """A Child SA on its way out: rekeyed (by either side) or being deleted by us."""
    return child.rekeyed_by_peer or child.rekeyed_by_us is not None or child.deleting


def _collision(old: ChildSa, theirs: ChildSa, their_min: bytes, pending: Task | None) -> list[Task]:
    """The peer rekeyed ``old``; if we did too, note or settle the collision (RFC 7296 §2.8.1)."""
    if isinstance(pending, CreateChildTask) and pending.rekeying is old:
        pending.collision = (their_min, theirs)  # settled when our response arrives
        return []
    if old.rekeyed_by_us is not None:
        our_min, ours = old.rekeyed_by_us
        if rekey_ike.redundant_is_ours(our_min, their_min):
            return [DeleteChildTask([ours], DownReason.REKEY_COLLISION)]
    return []


def rekey_spi(payloads: Sequence[Payload]) -> int | None:
    """The SPI a REKEY_SA notify for ESP names (the peer's inbound one, our outbound), if any."""
    rekey = find_notify(payloads, NotifyType.REKEY_SA)
    if rekey is None or rekey.protocol != ProtocolId.ESP or len(rekey.spi) != 4:
        return None
    return int.from_bytes(rekey.spi, "big")


def _rekeyed_child(st: IkeSaState, payloads: Sequence[Payload]) -> ChildSa | None:
    """The Child SA a REKEY_SA notify names by the peer's inbound SPI, if any."""
    spi = rekey_spi(payloads)
    if spi is None:
        return None
    for child in st.children.values():
        if child.installed and child.spi_out == spi:
            return child
    return None
