"""Trap policies (start_action = trap): installed with a reqid no SA gets, their ACQUIRE initiates."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Action, Policy
from tunsec.policy.ids import Band, priority
from tunsec.policy.selector import SelectorError, fast_selectors
from tunsec.services.ike import tries, vip_refused

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def _forget_traps(self: IkeService, conns: set[str]) -> tuple[list[int], list[int]]:
    """The trap policies of ``conns`` are no longer ours, at once (an ACQUIRE of one read while
    their SPDDELETEs are awaited must not initiate a connection a reload removed): their ids and
    reqids, for _remove_traps."""
    pids = [pid for pid, (conn, _child) in self.trap_policies.items() if conn in conns]
    for pid in pids:
        del self.trap_policies[pid]
    reqids = [self.trap_reqids.pop(k) for k in [k for k in self.trap_reqids if k[0] in conns]]
    self.trap_holds.forget(conns)   # a replaced connection's children start afresh (trap_hold.py)
    return pids, reqids


async def _remove_traps(self: IkeService, taken: tuple[list[int], list[int]]) -> None:
    """SPDDELETE the trap policies _forget_traps took; their ids and reqids are free once the
    worker has none of them (a new SA with the reqid would match a policy still there)."""
    pids, reqids = taken
    for pid in pids:
        with contextlib.suppress(WorkerError):
            await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]
        self.ids.release_policy_ids([pid])
    for reqid in reqids:
        self.ids.release_reqid(reqid)


def owns_policy(self: IkeService, policy_id: int) -> bool:
    """A trap policy, or a policy of one of our Child SAs (whatever its state)."""
    return policy_id in self.trap_policies or policy_id in self.child_policies


async def install_traps(self: IkeService, only: tuple[str, str] | None = None) -> None:
    """Trap policies of start_action = trap children (or of the one child named); one the worker
    does not take is logged, and the others still go in."""
    for conn in self.connections.values():
        ike = conn.ike
        for ch in ike.children:
            if only is not None:
                if only != (ike.name, ch.name) or (ike.name, ch.name) in self.trap_policies.values():
                    continue
            elif conn.child(ch.name).start_action != "trap":
                continue
            local = [t.resolve(ike.local_addr) for t in ch.local_ts]
            remote = [t.resolve(ike.remote_addr) for t in ch.remote_ts]
            try:
                trap = fast_selectors([t for t in local if t], [t for t in remote if t]).outbound
            except SelectorError as err:
                log.error("%s: child %s: no trap policy: %s", ike.name, ch.name, err)
                continue
            for sel in trap:
                if self.closing:   # shut down under a reload the stop did not wait for: nothing new goes in
                    return
                pid = self.ids.policy_id()
                self.trap_policies[pid] = (ike.name, ch.name)
                reqid = self._trap_reqid(ike.name, ch.name)
                pol = Policy(id=pid, priority=priority(Band.TRAP), action=Action.PROTECT, reqid=reqid,
                             selector=sel)
                try:
                    await self.worker().request(lambda r, pol=pol: pipe.SpdAdd(r, pol))  # type: ignore[misc]
                except WorkerError as err:
                    # kept as ours (a timed-out SPDADD may be in): a worker that died is followed by one
                    # whose reinstall puts every trap back; a removal SPDDELETEs it and frees the id.
                    # Raised, it would end a reload half applied (the rest of the connections not started)
                    log.error("%s: child %s: trap policy not installed: %s", ike.name, ch.name, err)


def _trap_reqid(self: IkeService, conn: str, child: str) -> int:
    """A reqid no SA ever gets: its policies always raise ACQUIRE."""
    reqid = self.trap_reqids.get((conn, child))
    if reqid is None:
        reqid = self.trap_reqids[(conn, child)] = self.ids.reqid()
    return reqid


def acquire(self: IkeService, policy_id: int) -> None:
    """A packet hit a trap policy: initiate its child, unless that is under way already, or its last
    initiation failed within its hold-down (trap_hold.py).

    As strongSwan's trap_manager (its list of pending acquires) a repeat ACQUIRE is ignored while
    the first one's negotiation goes on; counted (tunsec_trap_acquires_ignored), not logged: the
    worker raises one per policy and rate-limit period for as long as packets keep coming.  One
    held down is counted (tunsec_trap_acquires_held); the hold-down logs once per failure."""
    target = self.trap_policies.get(policy_id)
    if target is None:
        _child_acquire(self, policy_id)
        return
    if _under_way(self, *target):
        self.events.acquires_ignored[target] += 1
        return
    if self.trap_holds.holds(target):
        self.events.acquires_held[target] += 1
        return
    self.trap_holds.started(target)
    conn, child = target
    log.info("%s: traffic for child %s: initiating (start_action = trap)", conn, child)
    self.acquiring.add(target)
    tries.with_spi(self, tries.Try(conn, child, "an ACQUIRE"), functools.partial(_acquired, self))
    self._pump()


def _child_acquire(self: IkeService, policy_id: int) -> None:
    """A packet hit a Child SA's policy whose outbound SA is gone: the worker removed it at its hard
    limit (bytes, packets, sequence numbers, time) before our DELETE or rekey is through, which then
    removes the policies or binds them to the new SA.  As in strongSwan (its trap_manager finds no
    trap for a CHILD_SA's reqid and starts nothing) no negotiation is started here.  The worker
    raises one per policy a second while packets come (for as long as a DELETE to a dead peer is
    retransmitted): counted (tunsec_child_sa_acquires_ignored), logged once per Child SA (strongSwan
    logs each)."""
    owner = self.child_policies.get(policy_id)
    if owner is None:
        return
    conn, child, lineage = owner
    self.events.child_acquires_ignored[(conn, child)] += 1
    # the lineage's newest Child SA: the one its policies send on (none: its policies are going)
    members = [self.children[h] for h in lineage.members if h in self.children]
    state = max(members, key=lambda s: s.handle, default=None)
    if state is not None and not state.acquire_noted:
        state.acquire_noted = True
        log.info("%s: CHILD_SA %s %08x_o expired, waiting for the DELETE/rekey: its traffic is dropped until "
                 "then (counted: tunsec_child_sa_acquires_ignored)", conn, child, state.spi_out)


def _under_way(self: IkeService, conn: str, child: str) -> bool:
    """The child is up, its initiation waits for an inbound SPI, or one of the connection's IKE SAs
    is creating it: IKE_AUTH or CREATE_CHILD_SA out or queued, or asked again after a
    TEMPORARY_FAILURE (IkeSa.creating; an IKE SA being set up for another child of the connection
    takes this one on after IKE_AUTH, see IkeService._initiate).  The engine is asked rather than
    an entry kept per initiation: its answer ends when the Child SA is up, failed for good or its
    IKE SA is gone (closed, or rekeyed: the new one carries the request on), and no missed event
    can leave a trap that never initiates again.  A half-open IKE SA a peer started creates
    nothing of ours: it does not hold our traffic back."""
    if (conn, child) in self.acquiring or vip_refused.holding(self, conn):   # waits for its next try
        return True
    if self.child_index.has(conn, child):
        return True
    return any(sa.name == conn and sa.creating(child) for sa in self.endpoint.sas)


def _acquired(self: IkeService, conn: str, child: str | None) -> None:
    """The initiation of an ACQUIRE, once an inbound SPI is at hand (the engine has it from now on;
    one a terminate stopped comes not here, and terminate took it off ``acquiring``)."""
    if child is not None:   # (always: an ACQUIRE names its child)
        self.acquiring.discard((conn, child))
    self._initiate(conn, child)
