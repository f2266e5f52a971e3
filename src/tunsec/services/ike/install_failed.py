"""A Child SA the worker did not take (its install refused, unanswered, or not installable at all).

The engine holds such a Child SA as up and the peer sends into it: its ESP would be dropped until the
next rekey (never with rekey_time = 0).  So it is deleted in the engine (an INFORMATIONAL DELETE
tells the peer, which may create it again), counted, and logged once (rate-limited: a peer can make
the worker refuse again and again, e.g. with a full SPD).  Its IKE SA stays, even without another
Child SA.  What the Child SA held in the worker is removed by the caller (installs._remove)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError, outcome
from tunsec.ike.events import DownReason
from tunsec.ike.sa import IkeSa
from tunsec.loglimit import suffix
from tunsec.services.ike.barrier import Flow
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def delete_in_engine(self: IkeService, sa: IkeSa | None, unique_id: int, conn: str, child: str,
                     what: str, removed: bool = True, flow: Flow | None = None, policies: bool = False) -> None:
    """Count and log (``what``: its SPIs, "failed: " and why) an install failure, and delete the
    Child SA ``unique_id`` in the engine if its IKE SA still holds it and is not deleting it already
    (its DELETE, a rekey that replaced it, the IKE SA going away).  ``removed``: the caller removes
    its inbound SA (installs._remove), its ChildSaDown does not (removed_already).

    ``flow`` (the worker's failure of an install sent): where the barrier parks the IKE SA's datagrams;
    if the answer that created the Child SA (the peer's CREATE_CHILD_SA) has not left, it becomes
    TEMPORARY_FAILURE instead, and no DELETE follows (ike/child_refusal.py: the peer keeps the Child SA
    its rekey would have replaced, and tries again); an IKE_AUTH answer (the peer's first Child SA)
    keeps the IKE SA and refuses the Child SA with NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE if ``policies``
    (its SAs went in, an SPDADD did not).  Without one (an ESP algorithm the fast path does not do,
    which the configuration refuses since: the peer's retry would fail alike; an install that could not
    be sent) it is deleted."""
    self.events.install_failed[(conn, child)] += 1
    refused = refused_answer(self, sa, unique_id, flow, policies) if sa is not None and flow is not None else None
    held = refused is None and sa is not None and deletable(sa, unique_id)
    if (n := self.refusals.install_failed.admit(self.log_peer(sa, conn))) is not None:
        log.error("%s: installing CHILD_SA %s %s%s%s", conn, child, what,
                  f"; refused in our answer ({refused})" if refused else "; deleting it" if held else "",
                  suffix(n))
    if sa is not None and (held or refused):
        if removed:
            self.uninstalled.add((self._ike_handle(sa), unique_id))
        if held:
            sa.delete_child(unique_id, DownReason.DELETED)
        # a turn later: this may run inside _pump's handling of the ChildSaUp (its events stay in order)
        asyncio.get_running_loop().call_soon(self._pump)


def refused_answer(self: IkeService, sa: IkeSa, unique_id: int, flow: Flow | None,
                   policies: bool = False) -> str | None:
    """Turn the answer that created Child SA ``unique_id`` into a refusal, if it may be (IkeSa.answer_of)
    and no copy of it has left: each copy taken from the engine (the answer and its resends, also to
    another port: IkeSa.answer_copies) parked by the barrier in ``flow``'s IKE SA (an install's
    failure), or collected by the endpoint and not flushed yet (the ChildSaUp's own turn: the claims
    backstop; a resend while the SPI pool's barrier is up).  If one left, the peer may have the success:
    the caller deletes the Child SA instead (review revresp F1).  The engine reports the Child SA down
    (ChildSaDown) and sends no DELETE.  The refusal's notify (IkeSa.refusal), or None if not refused."""
    old = sa.answer_of(unique_id)
    if old is None:
        return None
    parked = self.barrier.copies(flow, old) if flow is not None else 0
    collected = self.endpoint.copies(old)
    if parked + collected != sa.answer_copies():
        return None
    error = sa.refusal(unique_id, policies).name
    new = sa.refuse_child(unique_id, policies)
    if parked:
        assert flow is not None
        self.barrier.replace(flow, old, new)
    if collected:
        self.endpoint.replace(old, new)
    return error


def policies_refused(sent: Sequence[tuple[str, asyncio.Future[list[pipe.Reply]]]]) -> bool:
    """Whether the first of a Child SA's install requests that failed (``sent``, all ended) is an
    SPDADD: its SAs went in and its policies did not (strongSwan refuses such a Child SA with
    TS_UNACCEPTABLE, one whose SAs failed with NO_PROPOSAL_CHOSEN)."""
    for what, fut in sent:
        if fut.done() and isinstance(outcome(what, fut), WorkerError):
            return what == "SpdAdd"
    return False


def deletable(sa: IkeSa, unique_id: int) -> bool:
    """Whether the IKE SA still lists Child SA ``unique_id`` and is not deleting it already: only
    then may the service delete it (IkeSa.delete_child raises KeyError for one it no longer has: the
    peer's DELETE, handled in the same batch as its CREATE_CHILD_SA, may have taken it out)."""
    return any(c.unique_id == unique_id and not c.deleting for c in sa.children)


def removed_already(self: IkeService, ike: int, unique_id: int) -> bool:
    """Whether a Child SA reported down (ChildSaDown, not booked) was deleted after its install failed
    and its inbound SA removed then: a DELETE of that SPI now might hit an SA the worker has issued it
    to since, another peer's."""
    if (ike, unique_id) in self.uninstalled:
        self.uninstalled.discard((ike, unique_id))
        return True
    return False


def uninstallable(self: IkeService, state: ChildState, what: str) -> None:
    """A booked Child SA that cannot be installed (outside ``_changes``, or with it held: the removal
    is queued): unbooked, deleted in the engine, and what it holds in the worker (its inbound SA,
    any request sent for it, its lineage's policies and reqid if it was the last member) removed."""
    ended = self._forget(state)
    delete_in_engine(self, self._ike_sa(state.ike), state.unique_id, state.conn, state.child, what)
    self.scripts.expect(self._spawn(self._changes.queue(_removed(self, state, ended))))   # then its down-client


async def _removed(self: IkeService, state: ChildState, ended: bool) -> None:
    async with self._changes:
        await self._remove(state, ended)
    if ended:
        self._updown_down(state.lineage)   # a rekey's lineage may have run its up-client
