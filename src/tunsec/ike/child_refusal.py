"""Refusing the peer's Child SA after all, in the answer that created it (review revrekey F1, the
responder's half).

We answered the peer's CREATE_CHILD_SA (a new Child SA, or a rekey) with success, and our install of
that Child SA failed in the worker while the answer had not left yet (the service's barrier holds
it until the install is answered).  Sending success and then a DELETE loses a rekeyed child on both
sides: the initiator deletes the old Child SA on our success, and the new one to our DELETE.  So the
answer becomes TEMPORARY_FAILURE (RFC 7296 §1.3, §2.25: the initiator keeps the old Child SA and tries
again; our own rekey timer for the old one is restored, not set to seconds: sa_timers.own_rekey_at).
strongSwan installs before it answers and so refuses in the answer too (child_create's build_r:
NO_PROPOSAL_CHOSEN for a failed SAD install, TS_UNACCEPTABLE for a failed SPD one); TEMPORARY_FAILURE
here, as the install failed for now (memory, a full SAD, a worker slow to answer) and both tunsec and
strongSwan initiators try that rekey again soon.  The refusal is encoded for the answer's message ID
and replaces the stored response (a retransmitted request gets it), the Child SA is dropped here
without a DELETE, and the old one is no longer rekeyed.

Not once the peer sent a later request (it has our answer), nor while a rekey collision is being
settled (our own rekey of the old Child SA is out or answered: the collision's rules decide what
lives).

IKE_AUTH's Child SA (fixauthchild): its answer also carries the IKE SA (IDr, AUTH, CP), which comes up
either way (RFC 7296 §1.2); the answer is rebuilt from what ike_auth.py kept of it (AuthAnswer) with
an error notify in place of SA, TSi and TSr.  TEMPORARY_FAILURE is none of those §2.21.2 lists for
IKE_AUTH, so, as strongSwan's child_create does when its install fails in IKE_AUTH or CREATE_CHILD_SA
(install_child_sa: FAILED for the SAD, NOT_FOUND for the SPD), NO_PROPOSAL_CHOSEN if its SAs were
not installed and TS_UNACCEPTABLE if its policies were not; the client keeps the IKE SA, and the
virtual IP our CP gave it, without that Child SA (strongSwan's handle_child_sa_failure: "keeping
IKE_SA"; its lease goes with the IKE SA, as the virtual IP strongSwan assigned stays with its IKE_SA).

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from .constants import ExchangeType, NotifyType
from .events import DownReason
from .exchanges import informational
from .exchanges.base import notify
from .state import ChildSa, IkeSaState, State

if TYPE_CHECKING:
    from .sa import IkeSa

T = TypeVar("T")

REFUSED = "its install failed: refused in our answer ({})"


def answer_of(self: IkeSa, unique_id: int) -> tuple[bytes, ...] | None:
    """The datagrams of our stored answer that created Child SA ``unique_id``, if that answer may
    still be turned into a refusal (refuse_child); None otherwise."""
    last = self._last_response
    return last.datagrams if last is not None and _refusable(self, unique_id) is not None else None


def answer_copies(self: IkeSa) -> int:
    """How many copies of our last stored answer the caller took (datagrams_to_send): the answer and
    its resends, less those still in this SA's outbox.  A refusal is safe only if the caller still
    holds that many (install_failed.refused_answer): any other copy may have left with the success."""
    last = self._last_response
    if last is None or not last.datagrams:
        return 0
    return 1 + last.resends - sum(item[0] == last.datagrams[0] for item in self._outbox)


def refusal(self: IkeSa, unique_id: int, policies: bool = False) -> NotifyType:
    """The error notify refuse_child puts in the answer that created Child SA ``unique_id``:
    TEMPORARY_FAILURE to a CREATE_CHILD_SA; in IKE_AUTH, NO_PROPOSAL_CHOSEN, or TS_UNACCEPTABLE if
    ``policies`` (its SAs went in, its policies did not), as strongSwan."""
    auth = self._st.auth_answer
    if auth is None or auth.unique_id != unique_id:
        return NotifyType.TEMPORARY_FAILURE
    return NotifyType.TS_UNACCEPTABLE if policies else NotifyType.NO_PROPOSAL_CHOSEN


def refuse_child(self: IkeSa, unique_id: int, policies: bool = False) -> tuple[bytes, ...]:
    """Turn the answer that created Child SA ``unique_id`` (answer_of) into its refusal (``refusal``):
    the new answer's datagrams (also put in place of the old ones in this SA's outbox).  The Child SA is
    reported down (ChildSaDown: what it holds in the worker is the caller's) and no DELETE is sent."""
    child = _refusable(self, unique_id)
    last = self._last_response
    if child is None or last is None:
        raise KeyError(f"no Child SA {unique_id} answered in {self.name}'s last response")
    error = refusal(self, unique_id, policies)
    st = self._st
    auth = st.auth_answer
    if auth is not None and auth.unique_id == unique_id:   # the IKE SA in it stays: the rest is kept
        new = self._encode(ExchangeType.IKE_AUTH, last.message_id, [*auth.before, notify(error), *auth.after],
                           response=True)
        st.auth_answer = None
    else:
        new = self._encode(ExchangeType.CREATE_CHILD_SA, last.message_id, [notify(error)], response=True)
    swap(self._outbox, last.datagrams, new, lambda item: item[0], lambda item, data: (data, item[1]))
    last.datagrams = new   # a retransmission of the request gets the refusal (its resends count on)
    _confirmed(st, child)
    # the peer never hears of this rekey: the old Child SA is not rekeyed (its next rekey of it is
    # answered), nor is the peer's DELETE of it the end of a rekey; our own rekey timer runs for it
    # again, not in seconds: the peer retries its rekey (sa_timers.own_rekey_at, review revresp R1)
    old = informational.unrekey(st, child)
    self._rearm((old,) if old is not None else (), self._own_rekey_at)
    informational.child_down(st, child, DownReason.DELETED, REFUSED.format(error.name))
    return new


def child_installed(self: IkeSa, unique_id: int) -> None:
    """The worker took Child SA ``unique_id``: if our IKE_AUTH answer created it, that answer is no longer
    refused (what was kept to rebuild it goes: a gateway holds thousands of IKE SAs)."""
    st = self._st
    auth = st.auth_answer
    if auth is None or auth.unique_id != unique_id:
        return
    st.auth_answer = None
    for child in st.unconfirmed:   # (a loop: an unfinished generator is closed with a GeneratorExit)
        if child.unique_id == unique_id:
            _confirmed(st, child)   # an IKE_AUTH Child SA is refusable only with its AuthAnswer
            return


def _confirmed(st: IkeSaState, child: ChildSa) -> None:
    child.unconfirmed = False
    st.unconfirmed = tuple(c for c in st.unconfirmed if c is not child)


def _refusable(self: IkeSa, unique_id: int) -> ChildSa | None:
    """Child SA ``unique_id`` if our last stored answer created it and it may still be refused.

    ``unconfirmed`` is set only by the CREATE_CHILD_SA responder and cleared by the peer's next request
    served; a later request answered without being served (one that does not decode after its ICV
    checked) leaves it set, so the last response must also carry the message ID of the request that
    created the Child SA (``answered_in``; review revresp F2).  An IKE SA rekey of ours hands it to the
    new IKE SA, which has answered nothing: no last response there.

    The caller refuses only while it holds every copy of the answer taken from us (answer_copies: a
    retransmission is answered from the stored response, also at another port; review revresp F1).
    A retransmission of the request after the refusal gets the refusal."""
    st = self._st
    last = self._last_response
    if self._state is not State.ESTABLISHED or self._heir is not None or last is None:
        return None
    child = next((c for c in st.children.values() if c.unique_id == unique_id), None)
    if child is None or not child.unconfirmed or not child.installed or child.deleting:
        return None
    if child.answered_in != last.message_id:
        return None   # a later request answered unserved (INVALID_SYNTAX): ours to it is the last
    if child.peer_rekey_of is not None:
        old = next((c for c in st.children.values() if c.unique_id == child.peer_rekey_of), None)
        ours = self._pending.task.rekeying if self._pending is not None else None
        if old is None or old.rekeyed_by_us is not None or ours is old:
            return None   # a collision (or the old one gone): settled as before (a DELETE)
    return child


def swap(items: list[T], old: Sequence[bytes], new: Sequence[bytes], data: Callable[[T], bytes],
         remake: Callable[[T, bytes], T]) -> bool:
    """Put ``new``'s datagrams in place of each copy of ``old``'s in ``items`` (each copy at its first
    datagram's place, keeping its address); whether there was one."""
    if not old:
        return False
    gone = set(old)
    out: list[T] = []
    found = False
    for item in items:
        got = data(item)
        if got == old[0]:
            found = True
            out.extend(remake(item, d) for d in new)
        elif got not in gone:
            out.append(item)
    if found:
        items[:] = out
    return found
