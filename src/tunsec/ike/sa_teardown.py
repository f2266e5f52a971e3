"""An IKE SA closed (``close``), and its Child SAs and virtual IP leases taken down: when it closes,
and as soon as we decide to delete it (``IkeSa.delete``), not only once the peer answers our DELETE.

The IKE SA we delete stays (DELETING) until its DELETE is answered or given up on, which takes
the retransmission timeout (~165 s with the defaults) with a peer that stays silent.  Its Child
SAs do not wait for that (review revreload F1): a connection a reload removed, a peer an operator
terminated, replaced (``unique = replace``), logged out or disconnected (RADIUS DAE) must stop
carrying traffic at once, and their selector claims must let a replacement peer in.  Their
``ChildSaDown`` events go out then (the service takes their SAs and policies out of the worker,
runs updown's down, books the final counters, releases the claims), as for a Child SA the peer
deleted; the DELETE answer that comes later ends only the IKE SA.  RFC 7296 §1.4.1 lets us stop
using our outbound SAs when we send the DELETE; deleting the IKE SA deletes every Child SA with it,
so nothing we could still receive on them is of use to us.

A Child SA whose CREATE_CHILD_SA was in flight then (ours: a new one, or a rekey) never comes up
(``exchanges/child.install``: it is no longer registered); the peer drops its half with the IKE SA.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .events import ChildSaDown, DownReason, IkeSaDeleting, IkeSaDown, SpiUnused
from .exchanges import ike_auth_eap
from .exchanges.base import Task
from .exchanges.create_child_sa import CreateChildTask
from .state import State

if TYPE_CHECKING:
    from .sa import IkeSa
    from .state import ChildSa

log = logging.getLogger(__name__)


def end_children(self: IkeSa, reason: DownReason, deleting: bool = False) -> None:
    """Report every Child SA down (the installed ones; the SPIs of those being set up as unused) and
    give the peer's leases back.  Nothing to do for an IKE SA a rekey replaced: its Child SAs live on
    in the heir.  ``deleting``: we began to delete the IKE SA (``IkeSa.delete``), which then says so
    (IkeSaDeleting: its accounting session ends now, not at IkeSaDown)."""
    if self._heir is not None:
        return
    st = self._st
    pending = self._pending
    if pending is not None and isinstance(pending.task, CreateChildTask):
        pending.task.let_old_go(st, DownReason.DELETED_BY_PEER)   # the one the peer deleted, held for our rekey
    for child in list(st.children.values()):
        if child.installed:
            st.emit(ChildSaDown(self.name, child.name, child.unique_id, child.spi_in, child.spi_out, reason))
        else:
            st.emit(SpiUnused(child.spi_in))
    st.children.clear()
    # the leases stay bound to the peer's identity while it is offline (policy/pools.py)
    if st.address_pool is not None and st.peer_id is not None:
        for lease in st.peer_vips:
            st.address_pool.release(lease, st.peer_id)
    st.peer_vips = ()
    if deleting:
        st.emit(IkeSaDeleting(self.name, reason))


def held_children(self: IkeSa) -> list[ChildSa]:
    """The Child SA the peer deleted while our rekey of it is out (CreateChildTask.takes_peer_delete):
    no longer in ``children`` and not reported down yet, it is still this IKE SA's until the rekey
    ends, so the service keeps what it stands for (its claim across a worker restart, its counters'
    owner at its EXPIRE).  Empty for an IKE SA a rekey replaced (the heir holds its Child SAs)."""
    pending = self._pending
    if self._heir is not None or pending is None or not isinstance(pending.task, CreateChildTask):
        return []
    held = pending.task.held
    return [] if held is None else [held]


def abandon_requests(self: IkeSa, child: ChildSa) -> None:
    """``child`` is deleted at once (terminate --child): our rekey of it that is out installs nothing
    when answered, and the peer is asked to delete its half (review revdelete F2; a queued one is
    dropped unsent by ``start_next``: its Child SA is gone)."""
    pending = self._pending
    if pending is not None and isinstance(pending.task, CreateChildTask) and pending.task.rekeying is child:
        pending.task.abandon()


def abandon_creating(self: IkeSa, child_name: str) -> int:
    """``terminate --child``: new Child SAs of config ``child_name`` not up yet do not come up.  Queued
    and delayed requests go unsent; the one out installs nothing when answered (the peer is asked to
    delete its half), nor does our rekey of one the peer deleted meanwhile.  How many there were."""
    def creates(task: Task) -> bool:
        return isinstance(task, CreateChildTask) and task.creates == child_name   # (abandoned: None)
    n = 0
    for task in [t for t in self._queue if creates(t)]:
        self._queue.remove(task)
        task.abort(self._st)
        n += 1
    delayed = [(when, t) for when, t in self._delayed if not creates(t)]
    n += len(self._delayed) - len(delayed)
    self._delayed = tuple(delayed)
    pending = self._pending
    if pending is not None and creates(pending.task):
        assert isinstance(pending.task, CreateChildTask)
        pending.task.abandon()
        n += 1
    elif pending is not None and isinstance(pending.task, CreateChildTask) and pending.task.holds_old(child_name):
        # our rekey of a Child SA the peer deleted meanwhile (held until the answer, not in ``children``,
        # so terminate_child does not see it): down now, and the answer brings nothing up
        pending.task.abandon()
        pending.task.let_old_go(self._st, DownReason.DELETED)
        n += 1
    return n


def close(self: IkeSa, reason: DownReason) -> None:
    """Close the IKE SA for ``reason``: its request and queue ended, its Child SAs reported down
    (unless they live on in its heir), IkeSaDown if it was up."""
    if self._state == State.CLOSED:
        return
    was_up = self._state in (State.ESTABLISHED, State.DELETING)  # a REKEYED SA goes quietly
    if self._state == State.REKEYED and self._undeleted is not None:
        self._undeleted.count -= 1   # deleted (or given up on): its lineage may rekey again
    if self._pending is not None:
        task, self._pending = self._pending.task, None
        self._end_pending(task)
    self._abort_queue()
    self._delayed = ()  # never built: nothing to undo
    self._reassembly.clear()
    self._waiting = None
    ike_auth_eap.closing(self._st)  # an EAP relay conversation the backend still holds
    if self._heir is not None:  # the Child SAs live on in the heir
        self._state = State.CLOSED
        log.debug("%s: replaced IKE SA closed: %s", self.name, reason)
        return
    self._end_children(reason)
    if was_up:
        self._st.emit(IkeSaDown(self.name, reason))
    self._state = State.CLOSED
    log.debug("%s: IKE SA closed: %s", self.name, reason)
