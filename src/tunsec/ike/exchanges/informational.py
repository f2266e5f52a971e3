"""INFORMATIONAL (RFC 7296 §1.4): DELETE of the IKE SA or Child SAs, liveness, errors.

A received INVALID_SPI notify starts a liveness check and nothing else (a hint,
not proof: RFC 7296 §1.5); we send one for ESP from a peer we share an
established IKE SA with (IkeEndpoint.invalid_spi finds that IKE SA and rate-limits them).

A Delete payload for ESP lists the SPIs the *sender* receives on, i.e. our
outbound SPIs when the peer sends it; the response lists the matching SPIs of
the other direction (RFC 7296 §1.4.1). Deleting the IKE SA takes its Child SAs
with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..constants import ExchangeType, NotifyType, ProtocolId
from ..events import AuthFailed, ChildSaDown, DownReason
from ..message import DeletePayload, Payload
from ..state import ChildSa, IkeSaState
from .base import GiveUp, Outcome, Response, Task, find_all, find_notify, notify
from .child import spi_bytes

# SPIs of the peer's Delete payloads looked at beyond the IKE SA's Child SAs: one per Child SA, and a
# few of SAs gone meanwhile (both sides deleting one at once; a retried request)
SPARE_SPIS = 16


class DeleteIkeTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    on_give_up = GiveUp.CLOSE  # an unanswered DELETE still ends the IKE SA

    def build(self, st: IkeSaState) -> list[Payload]:
        return [DeletePayload(ProtocolId.IKE, 0)]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.CLOSE


class DeleteChildTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    changes_children = True

    def __init__(self, children: Sequence[ChildSa], reason: DownReason = DownReason.DELETED, detail: str = "") -> None:
        self._children = list(children)
        for child in self._children:
            child.deleting = True
        self._reason = reason
        self._detail = detail

    @property
    def deletes(self) -> Sequence[ChildSa]:
        return self._children

    def build(self, st: IkeSaState) -> list[Payload]:
        return [DeletePayload(ProtocolId.ESP, 4, tuple(spi_bytes(c.spi_in) for c in self._children))]

    def handover(self, st: IkeSaState) -> list[Task]:
        return [self]  # the peer may never have seen it; asking again on the new IKE SA is harmless

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        # the SAs are gone whatever the peer answers: we asked, and it has heard us
        for child in self._children:
            child_down(st, child, self._reason, self._detail)
        return Outcome.DONE


class LivenessTask(Task):
    """An empty INFORMATIONAL request: the peer is alive if it answers (RFC 7296 §2.4)."""

    exchange = ExchangeType.INFORMATIONAL
    coalesces = True
    on_give_up = GiveUp.DEAD_PEER

    def build(self, st: IkeSaState) -> list[Payload]:
        return []

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.DONE


class InvalidSpiTask(Task):
    """Tell the peer that ESP arrived from it for an SPI we do not know (RFC 7296 §3.10.1,
    INVALID_SPI, the SPI in the notification data), inside the IKE SA: a hint for it to
    check the SA, never proof that anything is gone."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, spi: int) -> None:
        self._spi = spi

    def build(self, st: IkeSaState) -> list[Payload]:
        return [notify(NotifyType.INVALID_SPI, self._spi.to_bytes(4, "big"))]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.DONE


class AuthFailedTask(Task):
    """Tell the responder we rejected its AUTH (RFC 7296 §2.21.2); sent once, never retried."""

    exchange = ExchangeType.INFORMATIONAL

    def build(self, st: IkeSaState) -> list[Payload]:
        return [notify(NotifyType.AUTHENTICATION_FAILED)]

    def process(self, st: IkeSaState, payloads: Sequence[Payload]) -> Outcome:
        return Outcome.CLOSE


def delete_ours(st: IkeSaState, child: ChildSa, reason: DownReason) -> tuple[DeleteChildTask, ChildSa | None]:
    """Our DELETE of ``child`` (IkeSa.delete_child), and the Child SA it replaced if it is the new Child
    SA of the peer's rekey that we answered (its install failed here, the claims backstop refused it,
    terminate --child): that one is no longer rekeyed: the peer may have missed our answer and keeps it
    (review revrekey F1), so its rekey of it again is answered (not CHILD_SA_NOT_FOUND, _over_limit) and
    the caller has our rekey timer run for it again in a few seconds (sa_timers.rearm: it was due when
    the peer rekeyed it, and its hard lifetime counts from its creation, review revrekey2 R2).  The peer
    may as well have our answer and that rekey done: its DELETE of the old one then ends a rekey, not
    the child (``successor_deleted``: no close_action on both sides, review revrekey2 F1)."""
    old = unrekey(st, child)
    if old is not None:
        old.successor_deleted = True
    return DeleteChildTask([child], reason), old


def unrekey(st: IkeSaState, child: ChildSa) -> ChildSa | None:
    """``child`` goes (delete_ours), or is refused in the answer that created it (child_refusal.py): if it
    is the new Child SA of the peer's rekey we answered, the Child SA it replaced is not rekeyed any more
    (returned, its rekey timer still at inf for the caller to re-arm: sa_timers.rearm; None if there is
    none, or we rekeyed or delete it ourselves: _replaced_by)."""
    old = _replaced_by(st, child)
    child.peer_rekey_of = None
    if old is None:
        return None
    old.rekeyed_by_peer = False
    return old


def _replaced_by(st: IkeSaState, child: ChildSa) -> ChildSa | None:
    """The Child SA that ``child`` replaced by the peer's rekey, if it is still waiting for the peer's
    DELETE as rekeyed by the peer only: not one we rekeyed too (a collision's, settled by the nonces:
    RFC 7296 §2.8.1) nor one we are deleting."""
    if child.peer_rekey_of is None:
        return None
    old = next((c for c in st.children.values() if c.unique_id == child.peer_rekey_of), None)
    if old is None or not old.rekeyed_by_peer or old.rekeyed_by_us is not None or old.deleting:
        return None
    return old


def _withdrawn(st: IkeSaState, child: ChildSa, pending: Task | None) -> ChildSa | None:
    """The peer deletes ``child``, the new Child SA of its own rekey we answered: it withdrew that rekey
    (its initiator refused our answer: a tunsec one for another peer's claim there, other selectors, a
    shown Nr or a repeated seed; strongSwan when its install fails) and keeps the old one, which is no
    longer rekeyed here (review revrekey4 F3): its rekey of it again (RFC 7296 §2.25) is answered, not
    CHILD_SA_NOT_FOUND (create_child_sa._over_limit, which the peer takes for a lost Child SA), and our
    rekey timer runs for it again (sa_timers.rearm, unless our rekey of it is queued or
    out).  Not ``successor_deleted``: no rekey of it is done anywhere.  Our rekey of it that is out
    settles no collision with the withdrawn one (Task.peer_withdrew)."""
    old = _replaced_by(st, child)
    if old is None:
        return None
    old.rekeyed_by_peer = False
    if pending is not None:
        pending.peer_withdrew(child)
    return old


def child_down(st: IkeSaState, child: ChildSa, reason: DownReason, detail: str = "") -> None:
    if st.children.pop(child.spi_in, None) is not None and child.installed:
        report_down(st, child, reason, detail)


def report_down(st: IkeSaState, child: ChildSa, reason: DownReason, detail: str = "") -> None:
    """ChildSaDown for ``child``, taken out of ``st.children`` already."""
    st.emit(ChildSaDown(st.name, child.name, child.unique_id, child.spi_in, child.spi_out, reason, detail))


def respond(st: IkeSaState, payloads: Sequence[Payload], pending: Task | None = None) -> Response:
    """``pending``: our request that is out, which may report a Child SA the peer deletes down itself
    (Task.takes_peer_delete: our rekey of it, answered before the peer's DELETE was sent)."""
    deletes = find_all(payloads, DeletePayload)
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        return Response([], close=True, reason=DownReason.DELETED_BY_PEER)
    if find_notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
        st.emit(AuthFailed(st.name, "peer rejected our AUTH (AUTHENTICATION_FAILED)", by_peer=True))
        return Response([], close=True, reason=DownReason.AUTH_FAILED)
    ours, ignored, withdrawn = _delete_children(st, deletes, pending)
    response: list[Payload] = []
    if ours:
        response.append(DeletePayload(ProtocolId.ESP, 4, tuple(ours)))
    # INVALID_SPI: maybe the peer lost our SA (or someone forged this in a valid
    # IKE SA); find out whether the peer is alive, delete nothing because of it
    followups: list[Task] = [LivenessTask()] if find_notify(payloads, NotifyType.INVALID_SPI) else []
    return Response(response, followups=followups, spis_ignored=ignored, rearm=tuple(withdrawn))


def _delete_children(st: IkeSaState, deletes: Sequence[DeletePayload], pending: Task | None
                     ) -> tuple[list[bytes], int, list[ChildSa]]:
    """Take down the Child SAs whose outbound SPIs the peer's ESP Delete payloads list; our inbound
    SPIs of them, how many listed SPIs were not looked at, and the Child SAs whose rekey the peer
    withdrew so (``_withdrawn``).  A request may list 16,000 SPIs (and several payloads): each is one
    lookup in a map made once, a repeated one is skipped, and past as many as the IKE SA has Child SAs
    (and SPARE_SPIS) the rest are ignored, counted."""
    by_out = {c.spi_out: c for c in st.children.values() if c.installed}
    budget = len(by_out) + SPARE_SPIS
    ours: list[bytes] = []
    ignored = 0
    withdrawn: list[ChildSa] = []
    for delete in deletes:
        if delete.protocol != ProtocolId.ESP or delete.spi_size != 4:
            continue
        spis = delete.spis[:budget]
        ignored += len(delete.spis) - len(spis)
        budget -= len(spis)
        for spi in spis:
            child = by_out.pop(int.from_bytes(spi, "big"), None)
            if child is None and pending is not None:
                # it may be the Child SA our request's answer (lost or overtaken) chose: not installed then
                pending.peer_deleted_unknown(int.from_bytes(spi, "big"))
            if child is not None:
                ours.append(spi_bytes(child.spi_in))
                # the peer ends a Child SA it rekeyed with us: its successor carries on (there, at least)
                rekeyed = child.rekeyed_by_peer or child.successor_deleted
                # a withdrawal only of a Child SA nothing rekeyed: the DELETE of one that has a successor
                # ends its own rekey, and reviving its predecessor then would give the peer a Child SA
                # beyond max_child_sas per round (review revrekey5 F1); asked before our rekey of it takes
                # the DELETE, which would hide the withdrawal (F2)
                if not rekeyed and child.rekeyed_by_us is None \
                        and (old := _withdrawn(st, child, pending)) is not None:
                    withdrawn.append(old)
                if pending is not None and pending.takes_peer_delete(st, child):
                    continue   # unregistered; reported down when our rekey of it ends
                child_down(st, child, DownReason.REKEYED if rekeyed else DownReason.DELETED_BY_PEER)
    return ours, ignored, withdrawn
