"""Child SAs in the worker: ChildSaUp -> UPDATE/ADD/SPDADD, rekey standbys (FIRST_USE), deletes,
lineages and their reqids/policies, lifetimes (EXPIRE), and the updown scripts of Child SAs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tunsec import updown
from tunsec.conf.connections import Child
from tunsec.dataplane import pipe
from tunsec.dataplane.client import REQUEST_TIMEOUT, Sent, WorkerError, answered, outcome, send_soon
from tunsec.dataplane.pipe import Direction, Endpoint, Errno, Selector
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS, ChildConfig
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.loglimit import suffix
from tunsec.policy.claims import Peer, describe
from tunsec.policy.ids import Band, priority
from tunsec.policy.selector import addr_text, parse_ip
from tunsec.services.ike import (
    churn_log,
    going_sas,
    install_failed,
    install_requests,
    recreate,
    rekey_hold,
    restart,
    tries,
)
from tunsec.services.ike.child_index import book, still_held, unbook
from tunsec.services.ike.giveup import Turn
from tunsec.services.ike.install_requests import ALGS
from tunsec.services.ike.record import IkeUpRecord
from tunsec.services.ike.refusal_log import up_key
from tunsec.services.ike.state import ChildState, IPAddress, Lineage

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

INBOUND_LINGER = 5.0   # seconds a rekeyed Child SA's inbound SA outlives its DELETE (packets in flight; as strongSwan)
STANDBY_TIMEOUT = 10.0   # seconds after its answer a rekey responder's standby timer first fires (standby.timed_out)


def expired(self: IkeService, spi: int, direction: Direction, hard: bool, remote: Endpoint | None = None) -> bool:
    """A Child SA's lifetime: soft -> rekey it, hard -> delete it.  False if not ours."""
    state = self._child_of_sa(spi, direction, remote)
    if state is not None and rekey_hold.expired(self, state, hard):   # our rekey of it is out and ends it
        return True
    if state is not None and (sa := self._ike_sa(state.ike)) is not None:
        if hard and any(c.deleting for c in sa.children if c.unique_id == state.unique_id):
            # its other SA's EXPIRE came first (a time lifetime ends both at once): one DELETE
            log.debug("%s: CHILD_SA %s is being deleted already", state.conn, state.child)
            return True
        if hard:
            log.info("%s: CHILD_SA %s reached its hard limit; deleting", state.conn, state.child)
            sa.delete_child(state.unique_id, DownReason.EXPIRED)
        else:
            log.info("%s: CHILD_SA %s reached its soft limit; rekeying", state.conn, state.child)
            self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, state.unique_id))
        self._pump()
        return True
    return False


def _delete_sa(self: IkeService, spi: int, direction: Direction, remote: Endpoint | None = None,
               of_child: int | None = None, worker: int | None = None) -> Coroutine[Any, Any, None]:
    """DELETE one SA from the worker.  ``of_child``: the inbound SPI of the Child SA (reported gone) the
    SA is of: accounting gets the SA's final counters, which the answer carries (LIFETIME_CURRENT),
    or None if the DELETE failed (ENOENT: its hard lifetime removed it, and its EXPIRE carried them).
    ``worker``: the generation of the worker the SA went into (Lineage.worker), by default this call's."""
    return _delete_sa_in(self, self.spi_pool.generation if worker is None else worker, spi, direction, remote,
                         of_child)


async def _delete_sa_in(self: IkeService, worker: int, spi: int, direction: Direction, remote: Endpoint | None,
                        of_child: int | None) -> None:
    final = None
    try:
        # an older worker's SA went with it: here the number (even the peer's reused one) is another SA
        if worker != self.spi_pool.generation or (direction is Direction.IN and not self.spi_pool.issued(spi)):
            return
        with contextlib.suppress(WorkerError):
            final = (await self.worker().request(lambda r: pipe.Delete(r, spi, direction, remote)))[-1].current
    finally:   # whatever happened: the session's Stop waits for it
        going_sas.deleted(self, spi, direction, remote)   # its EXPIREs read from now on are still ours a while
        if of_child is not None:
            self._acct_deleted(of_child, direction, final)


def _endpoint(self: IkeService, family: int, port: int, ip: str | None = None) -> Endpoint:
    """Our ESP endpoint: ``ip`` (the address the IKE SA's peer talks to) if it is of ``family``, else
    the configured one (or the wildcard: the worker then sends from the route's choice)."""
    if ip is not None and (addr := parse_ip(ip))._version == family:  # type: ignore[union-attr]
        return Endpoint(addr, port)
    text = self.local_addrs.get(family) or ("0.0.0.0" if family == 4 else "::")
    return Endpoint(parse_ip(text), port)


def _child_registered(self: IkeService, sa: IkeSa, ev: ChildSaUp) -> ChildState | None:
    """Book a new Child SA now, in event order: a rekey joins its predecessor's lineage (or, if
    that one is gone already, a sibling's: _sibling), so does a duplicate of a Child SA of the
    same peer (in the same IKE SA, or in another one of the same identity: a client back without
    INITIAL_CONTACT); anything else (another peer's child of the same connection too) starts its own."""
    if ALGS.get(ev.alg) is None:   # its larval inbound SA goes with its ChildSaDown (_child_gone)
        install_failed.delete_in_engine(self, sa, ev.unique_id, sa.name, ev.child,
                                        f"failed: negotiated ESP {ev.alg}, which the fast path does not do",
                                        removed=False)
        return None
    # (the IKE SA's properties read once: each is a frame, and the booking below asks them again)
    name, config, peer_id = sa.name, sa.config, sa.peer_id
    peer = Peer(peer_id if peer_id is not None else ev.remote_addr[0], config.lease_proof)
    named = config.assigns(ev.child, ev.remote_ts)
    by_name = config.names_its_peer
    if found := self.ts_claims.overlaps(peer, ev.remote_ts, ev.local_ts, named, by_name):
        # the engine refuses or narrows another peer's selectors (exchanges/child.py _not_others,
        # answer_not_others for the answers to our requests), but a datagram handled in the same
        # batch as that peer's negotiation, before its Child SA was booked here, passed: never
        # installed, it is refused in our answer if that has not left (the peer asked for it), else
        # deleted (an INFORMATIONAL DELETE to the peer, whichever side asked for it)
        refused = install_failed.refused_answer(self, sa, ev.unique_id, None, policies=True)   # (its selectors)
        if (held := self.refusals.refused.admit(self.log_peer(sa, sa.name))) is not None:
            log.error("%s: CHILD_SA %s of peer %s %s, not installed: its remote %s %s%s", sa.name, ev.child, peer,
                      "refused in our answer" if refused else "deleted", ", ".join(map(str, ev.remote_ts)),
                      describe(found), suffix(held))
        self.events.ts_claims_refused[(sa.name, ev.child)] += 1
        if not refused and install_failed.deletable(sa, ev.unique_id):   # (review revrekey F5: the peer's
            sa.delete_child(ev.unique_id)                                 # DELETE may have come first)
        return None
    ike = self._ike_handle(sa)
    restart.release_claim(self, ike, ev.rekey_of)   # a Child SA of an old worker's, rekeyed: it holds them now
    if not self.spi_pool.issued(ev.spi_in):
        restart.stale_spi(self, sa, ev, ike, peer, named, by_name)   # negotiated across a worker restart
        return None
    pred = rekeyed = self._by_uid.get((ike, ev.rekey_of)) if ev.rekey_of is not None else None
    if pred is not None and _moved(self.children[pred], ev):
        # the engine refuses such a rekey (exchanges/child.py rekey_select, rekey_answer); one that
        # passed would leave the lineage's policies on selectors its claims, which follow the new
        # Child SA, no longer cover (another peer could be given them, and the policies would still
        # draw their traffic here): it starts a lineage of its own, the old one's ends with it
        if (held := self.refusals.refused.admit(self.log_peer(sa, sa.name))) is not None:
            log.error("%s: CHILD_SA %s of peer %s rekeyed to other selectors (%s === %s): not on the old one's "
                      "policies%s", sa.name, ev.child, peer, ", ".join(map(str, ev.local_ts)),
                      ", ".join(map(str, ev.remote_ts)), suffix(held))
        self.events.rekey_ts_refused[(sa.name, ev.child)] += 1
        pred = None
    handle = next(self._handles)
    if pred is not None:
        lineage = self.children[pred].lineage
    elif (sibling := _sibling(self, sa, ike, ev)) is not None:
        lineage = sibling.lineage
        if sibling.ike != ike:
            # one of another IKE SA of the same peer (_sibling) has no pred: nothing of that IKE SA
            # waits for it (no standby, its DELETE promotes nothing); its ADD binds the policies to
            # it at once, as a new Child SA's would, which is what it is to the peer (it installs
            # after IKE_AUTH)
            log.info("%s: CHILD_SA %s of %s takes over reqid %d from an older IKE SA of the same identity",
                     sa.name, ev.child, sa.peer_id, lineage.reqid)
        elif ev.rekey_of is None:
            # a duplicate (both peers asked for this child at once, or it was initiated twice):
            # strongSwan gives it the same reqid, so the policies move to the newest SA; here it
            # takes the traffic over as a rekey would (pred: standby until the peer uses it, if
            # we answered).  With a lineage of its own its policies would sit behind the older
            # one's, and deleting that one would stop the traffic until both peers had removed it
            pred = sibling.handle
    elif (again := recreate.join(self, ike, ev.child, ev.local_ts, ev.remote_ts, handle)) and again.lineage:
        lineage = again.lineage   # created again after our rekey's install failed: its policies held
    else:
        lineage = Lineage(self.ids.reqid(), self.spi_pool.generation)
    # a rekey keeps what its predecessor came up with (a reload since may have renamed the child)
    before = self.children.get(rekeyed) if rekeyed is not None else None
    plan = before.plan if before is not None else _plan(self, name, ev.child)
    remote_ip = parse_ip(ev.remote_addr[0])
    local = self._endpoint(remote_ip._version, ev.local_port, ev.local_ip)  # type: ignore[union-attr]
    state = ChildState(handle, ike, name, ev.child, ev.unique_id, ev.spi_in, ev.spi_out,
                       Endpoint(remote_ip, ev.remote_addr[1]), local, ev.alg, ev.esn, ev.local_ts, ev.remote_ts,
                       lineage, plan, pred=pred)
    if ike not in self._ike_peers and not self._by_ike.get(ike):
        # the IKE SA's first Child SA is on the path its event names: the IKE SA's first check
        # (_follow_peers) would compare this child with that path and find it there, at the cost
        # of an address parsed from text and two Endpoints per client; a path that has moved
        # since differs from this one and is compared as before
        self._ike_peers[ike] = (ev.remote_addr, ev.local_ip, ev.local_port)
    lineage.members.add(handle)
    book(self, state)
    # whose these selectors are: a later Child SA of another peer may not take them toward the same
    # local ones (policy/claims.py)
    self.ts_claims.add(handle, name, peer, ev.remote_ts, ev.local_ts, named, by_name)
    self._by_uid[(ike, ev.unique_id)] = handle
    self._by_ike.setdefault(ike, set()).add(handle)
    return state


def _moved(pred: ChildState, ev: ChildSaUp) -> bool:
    """Whether a rekey's selectors differ from its predecessor's (those its lineage's policies act on)."""
    return set(ev.local_ts) != set(pred.local_ts) or set(ev.remote_ts) != set(pred.remote_ts)


def _sibling(self: IkeService, sa: IkeSa, ike: int, ev: ChildSaUp) -> ChildState | None:
    """The newest Child SA of the same peer, child and selectors: the lineage a new one joins.

    A rekey whose predecessor is gone already (the peer won a rekey collision and its DELETE of
    the old Child SA overtook the answer to our redundant rekey) goes on the old one's lineage,
    which lives on in the peer's new Child SA; so does a duplicate (see _child_registered).  A
    lineage of its own would put a second reqid and set of policies for the same traffic in the
    worker.

    The same peer: the same IKE SA, or another IKE SA of the same connection whose peer
    authenticated with the same identity.  A road warrior that comes back without INITIAL_CONTACT
    (or under unique = no, or unique = replace while the old IKE SA's DELETE is unanswered) while
    its old IKE SA is still here gets the same virtual IP (leases are per identity), so the same
    selectors; with a lineage of its own, its policies sat behind the old one's (same priority,
    older first) and the traffic to its address went to the old, likely dead, SA until DPD removed
    it.  strongSwan gives identical policies one reqid, and the newest SA wins: so here.  Not
    another identity's Child SA with the same selectors: that one must not take over this one's
    traffic (it starts a lineage of its own, behind this one's policies).

    One of the same IKE SA first (a duplicate's pred, see _child_registered); all are of one lineage."""
    key = (ev.child, ev.local_ts, ev.remote_ts)
    found = _newest_of(self, ike, key)
    if found is None and sa.peer_id is not None:
        # the other IKE SAs of the identity, from the index INITIAL_CONTACT uses: no pass over every client
        for other in self.endpoint.peer_sas(sa.name, sa.peer_id):
            if (h := self._ike_handles.get(other)) is not None and h != ike \
                    and (state := _newest_of(self, h, key)) is not None \
                    and (found is None or state.handle > found.handle):
                found = state
    return found


def _newest_of(self: IkeService, ike: int, key: tuple[str, tuple[Ts, ...], tuple[Ts, ...]]) -> ChildState | None:
    """The newest Child SA of IKE SA ``ike`` with (child, local_ts, remote_ts) ``key``."""
    same = [state for h in self._by_ike.get(ike, ())
            if ((state := self.children[h]).child, state.local_ts, state.remote_ts) == key]
    return max(same, key=lambda state: state.handle, default=None)


def _forget(self: IkeService, state: ChildState, keep_claims: bool = False) -> bool:
    """Unbook a Child SA; True if its lineage ended (its policies and reqid are free to go).
    ``keep_claims``: its claims stay, for the caller to hold (restart.hold_claim)."""
    unbook(self, state)
    if not keep_claims:
        self.ts_claims.remove(state.handle)
    if (mine := self._by_ike.get(state.ike)) is not None:
        mine.discard(state.handle)
        if not mine:
            del self._by_ike[state.ike]
    if self._by_uid.get((state.ike, state.unique_id)) == state.handle:
        del self._by_uid[(state.ike, state.unique_id)]
    state.lineage.members.discard(state.handle)
    return not state.lineage.members


@dataclasses.dataclass(eq=False)
class _Started:
    """A Child SA's install requests, sent (see _send_install): their answers, the ADD's among them."""

    sent: list[Sent]
    add: asyncio.Future[list[pipe.Reply]] | None
    install: asyncio.Future[None]   # state.install: set once the answers are in
    turn: Turn | None = None   # gives up on answers that do not come (IkeService._install_give_up)
    ok: _AllOk | None = None   # what saw each answer as it was read (all OK: _install_ended need not look)
    worker: object = None   # the WorkerClient they went to


def _start_install(self: IkeService, state: ChildState, ev: ChildSaUp, release: Callable[[], None]) -> None:
    """The install of a new Child SA (ChildSaUp): its requests, and what follows their answers.

    The IKE SA's datagrams to the peer (the IKE_AUTH answer) wait for the install (``release``
    lets them go); every event-loop turn between the ChildSaUp and their release is on each
    client's critical path, and a turn of a burst handles many clients.  So a new Child SA (not a
    rekey) whose changes wait for no other sends its requests now, in the turn that negotiated
    it, rather than from a task in a later turn; and its datagrams go as soon as all answers
    said OK (_AllOk), in the turn that read them, not two turns later when the task that books
    the result has run.  One with a predecessor (a rekey, a duplicate) takes the task and the
    lock: its predecessor's changes come first; so does one that joins a lineage whose SPDADDs
    are unanswered (Lineage.protecting): whether it must add them again is known after them."""
    started = None
    if state.pred is None and state.lineage.protecting is None and self._changes.idle():
        # nothing else changes the worker now, or is queued to: sending is what the lock would have let us do
        try:
            started = self._send_install(state, ev, release)
        except Exception as err:   # as in a task: logged; this turn's other events go on
            log.exception("%s: installing CHILD_SA %s failed", state.conn, ev.child)
            state.install = None   # (set only once all was sent) nothing is answered any more
            install_failed.uninstallable(self, state, f"{ev.spi_in:08x}_i {ev.spi_out:08x}_o failed: {err!r}")
            started = None
        if started is None:
            release()
            return
        # no task while all goes well (a burst made one per client, each with an asyncio.wait): the
        # last request's end (answered, failed, the worker gone, or cancelled by the timer) ends
        # the install, as the worker answers in order and a worker gone fails them all; a failure
        # takes the task after all (_install_ended)
        started.turn = self._install_give_up.watch(started)
        started.sent[-1][1].add_done_callback(functools.partial(self._install_ended, state, ev, release, started))
        return
    self._spawn(self._changes.queue(self._child_up(state, ev, release))).add_done_callback(lambda _task: release())


def request_timeout() -> float:
    """REQUEST_TIMEOUT, read when an install's give-up timer is armed (tests shorten it): what is
    still unanswered then is cancelled, which ends the install as failed (see GiveUp)."""
    return REQUEST_TIMEOUT


def _install_ended(self: IkeService, state: ChildState, ev: ChildSaUp, release: Callable[[], None],
                   started: _Started, _last: object = None) -> None:
    """A new Child SA's install requests have all ended (see _start_install): booked here when all
    said OK; anything else goes to the task that handles failures (_child_up)."""
    if started.turn is not None:
        started.turn.end(started)
    # all answered OK as they were read (_AllOk; nearly always): no failure to retrieve or look for
    if not (started.ok is not None and started.ok.all_ok(len(started.sent))):
        ends = [outcome(what, fut) if fut.done() else None for what, fut in started.sent]   # each failure retrieved
        if any(e is None or isinstance(e, WorkerError) for e in ends):
            self._spawn(self._child_up(state, ev, release, started)).add_done_callback(lambda _task: release())
            return
    if started.add is not None:
        state.out_installed = True
    if state.lineage.protecting is started.install:
        state.lineage.protecting = None   # its SPDADDs said OK: the lineage's policies are in place
    state.install = None
    started.install.set_result(None)
    release()
    _installed(self, state, ev)


async def _child_up(self: IkeService, state: ChildState, ev: ChildSaUp, release: Callable[[], None],
                    started: _Started | None = None) -> None:
    if started is None:
        async with self._changes:
            if (protecting := state.lineage.protecting) is not None:
                # the lineage's SPDADDs (another member's) are unanswered: if the worker refuses
                # them, they leave the record (_spdadds_answered) and this install adds them again.
                # What ends the wait (their answers, or the give-up) takes no lock
                await asyncio.wait([protecting])
            started = self._send_install(state, ev, release)
        if started is None:
            return
    try:
        failure = await self._answered(state, started.sent, started.add)
    finally:
        stray = _spdadds_answered(self, state, started)   # before a member waiting for them wakes
        state.install = None
        started.install.set_result(None)
    if failure is not None:
        async with self._changes:
            # its lineage's policies that no longer count (one was refused): even if this Child SA
            # was deleted meanwhile, as no lineage has them to delete
            await _delete_policies(self, stray)
            self.ids.release_policy_ids(stray)
            # no larval SA for its inbound SPI (lost with the worker that issued it): the engine keeps
            # the Child SA up and nothing else would replace it, so it is rekeyed with an SPI of the current
            # worker, its claims held.  Any other failure: deleted in the engine, what it holds removed here
            what = f"{ev.spi_in:08x}_i {ev.spi_out:08x}_o failed: {failure}"
            if state.handle not in self.children:   # deleted meanwhile (its DELETE; a worker restart rekeys it)
                log.error("%s: installing CHILD_SA %s %s", state.conn, state.child, what)
                return
            # the worker went (its restart rekeys every Child SA its IKE SAs hold: review revauth R1), or lost the
            # larval SA: kept, not refused nor deleted (our rekey's: created again, recreate.py)
            gone = _worker_gone(started)
            again = (gone or _larval_lost(started)) and still_held(self, state)
            recreate.failed(self, state, not again and ev.initiator and ev.rekey_of is not None)
            ended = self._forget(state, keep_claims=again)
            if again and gone:
                log.warning("%s: installing CHILD_SA %s %s: kept for the worker's restart to rekey", state.conn,
                            state.child, what)
                restart.hold_claim(self, state.ike, state.unique_id, state.handle)
            elif again:
                log.error("%s: installing CHILD_SA %s %s", state.conn, state.child, what)
                restart.rekey_uninstalled(self, state)
            else:
                # the peer's CREATE_CHILD_SA answer may wait still (the barrier's, in the IKE SA's flow
                # as _handle parked it): refused there rather than answered and then deleted
                sa = self._ike_sa(state.ike)
                flow = (ev.remote_addr, sa.spi_i + sa.spi_r) if sa is not None and not ev.initiator else None
                install_failed.delete_in_engine(self, sa, state.unique_id, state.conn, state.child, what, flow=flow,
                                                policies=install_failed.policies_refused(started.sent))
            await self._remove(state, ended)
            if ended and not again:
                self._updown_down(state.lineage)   # a rekey's lineage may have run its up-client
        return
    _installed(self, state, ev)


def _worker_gone(started: _Started) -> bool:
    """An install request failed because its worker went (WorkerError.gone, or that worker is known gone)."""
    worker_gone = bool(getattr(started.worker, "gone", False))   # (a stand-in worker may not tell)
    for what, fut in started.sent:
        end = outcome(what, fut) if fut.done() else None
        if isinstance(end, WorkerError) and (end.gone or worker_gone):
            return True
    return False


def _larval_lost(started: _Started) -> bool:
    """The install's UPDATE (its first request) found no larval SA: ENOENT."""
    what, fut = started.sent[0]
    end = outcome(what, fut) if fut.done() else None
    return isinstance(end, WorkerError) and end.errno is Errno.ENOENT


def _spdadds_answered(self: IkeService, state: ChildState, started: _Started) -> list[int]:
    """Book the answers to an install's SPDADDs, if it asked for its lineage's policies (_protect).
    If one did not say OK, none of them count: they leave the lineage's record and child_policies
    (the lineage's next install adds the whole set again, see _child_up), the ids the worker
    refused are freed, and the others (applied, or maybe: not answered) are returned, for the
    caller to delete and free under ``_changes``."""
    lineage = state.lineage
    if lineage.protecting is not started.install:
        return []   # it asked for none: its lineage's were in place
    lineage.protecting = None
    # the lineage's ids are this install's SPDADDs, its last requests: a member joining since waited
    # for them (none if a worker restart has released them meanwhile)
    pids = lineage.policy_ids
    spdadds = started.sent[len(started.sent) - len(pids):]
    if all(fut.done() and not isinstance(outcome(what, fut), WorkerError) for what, fut in spdadds):
        return []
    lineage.policy_ids = []
    for pid in pids:
        self.child_policies.pop(pid, None)
    refused = [pid for pid, (_what, fut) in zip(pids, spdadds, strict=True) if _refused(fut)]
    self.ids.release_policy_ids(refused)
    return [pid for pid in pids if pid not in refused]


def _refused(fut: asyncio.Future[list[pipe.Reply]]) -> bool:
    """The worker answered a request with an error: it did not apply it (unlike a request not
    answered in time, which it may apply later)."""
    return fut.done() and not fut.cancelled() and fut.exception() is None \
        and any(r.errno is not _OK for r in fut.result())


def _installed(self: IkeService, state: ChildState, ev: ChildSaUp) -> None:
    """A Child SA's install is answered, all OK: its log line, and its updown script."""
    if not ev.initiator and (sa := self._ike_sa(state.ike)) is not None:
        sa.child_installed(state.unique_id)   # its IKE_AUTH answer is no longer refused (child_refusal.py)
    if state.handle not in self.children:
        return   # deleted while its install was answered: _child_down has taken it out again
    recreate.installed(self, state)
    # a failed trap initiation's hold-down ends once a Child SA of it is in, not when it is negotiated: an
    # install the worker refuses (SAD full) is a failure as a refusal is (review revtrap F3)
    self.trap_holds.up((state.conn, state.child))
    plan = state.plan
    churn_log.line(self, churn_log.child_peer(self, state.ike, state.unique_id, not ev.initiator, state.conn), log,
                   "%s: CHILD_SA %s up, SPIs %08x_i %08x_o, %s === %s (peer %s, reqid %d)", state.conn, state.child,
                   ev.spi_in, ev.spi_out, ", ".join(map(str, ev.local_ts)), ", ".join(map(str, ev.remote_ts)),
                   addr_text(state.remote.addr), state.reqid)
    # a new Child SA, not a rekey (as strongSwan's updown plugin), nor one that joined a sibling's lineage
    if plan.updown and state.pred is None and state.lineage.updown is None:
        told = self._updown_event(state, plan, state.local.addr)
        conn = self.connections.get(state.conn)
        cap = conn.ike.max_child_sas if conn is not None else DEFAULT_MAX_CHILD_SAS
        if self.scripts.submit(state.ike, plan.updown, told, cap):
            state.lineage.updown = told
            state.lineage.updown_argv = plan.updown
        else:   # skipped (logged): so is its down
            self.events.updown_skipped[(state.conn, state.child)] += 1


def _plan(self: IkeService, conn_name: str, child: str) -> Child:
    """The child's settings now; the defaults for one a reload removed or renamed while its IKE SA
    negotiated it (that IKE SA is being deleted: nothing else of it runs for long)."""
    conn = self.connections.get(conn_name)
    plan = conn.get_child(child) if conn is not None else None
    return plan if plan is not None else Child(child, ChildConfig(child))


def _send_install(self: IkeService, state: ChildState, ev: ChildSaUp,
                  release: Callable[[], None]) -> _Started | None:
    """Send the Child SA's UPDATE, ADD and SPDADDs (under ``_changes``, or when it is idle: Changes.idle);
    None if there is nothing to install (deleted again, or selectors that admit nothing)."""
    if state.handle not in self.children:
        return None   # already deleted again
    # we answered a rekey: the initiator installs after our response, so it may not open the new SA
    # yet; the old one carries our traffic until its DELETE (or a timeout).  If the old one is
    # itself on standby, this one waits for it: promoted in turn
    standby = not ev.initiator and state.pred in self.children
    built = install_requests.build(self, state, ev, standby)
    if built is None:
        return None
    update, add, outbound, policy_sels = built
    w = self.worker()
    # UPDATE, ADD and the SPDADDs are sent in order, now; their answers are awaited outside the
    # lock, so installs of different Child SAs overlap.  The worker applies requests in the order
    # they came; what else changes this Child SA awaits the answers first (state.install).  No
    # task per request: see answered
    ok = _AllOk(release)
    sent = [send_soon(w, "Update", update, ok.expect())]
    add_fut = None
    if standby:
        state.standby = outbound
        state.standby_timer = self._later(
            STANDBY_TIMEOUT, lambda: self._spawn(self._changes.queue(self._promote(state, "no DELETE came"))))
    else:
        sent.append(send_soon(w, "Add", add, ok.expect()))
        add_fut = sent[-1][1]
    asks = not state.lineage.policy_ids   # a rekey (a duplicate) finds its lineage's policies in place
    if asks:
        sent += self._protect(state, policy_sels, ok)
    install = state.install = asyncio.get_running_loop().create_future()
    if asks:
        state.lineage.protecting = install   # their answers are booked with this install's
    return _Started(sent, add_fut, install, ok=ok, worker=w)


class _AllOk:
    """Calls ``release`` when the answers to every request it was asked to ``expect`` are in and all say
    OK, from the pipe's reader (WorkerClient.request_soon's ``then``); if one fails, never: the task
    that handles the failure releases when it ends.  The answers come in later turns than the sends."""

    __slots__ = ("asked", "failed", "left", "release")

    def __init__(self, release: Callable[[], None]) -> None:
        self.asked = 0
        self.left = 0
        self.failed = False
        self.release = release

    def expect(self) -> Callable[[list[pipe.Reply]], None]:
        self.asked += 1
        self.left += 1
        return self._answered

    def all_ok(self, requests: int) -> bool:
        """Each of ``requests`` requests (all it was asked to expect) was answered, all OK."""
        return self.asked == requests and not self.left and not self.failed

    def _answered(self, replies: list[pipe.Reply]) -> None:
        if self.failed:
            return
        for r in replies:   # (one, but for a DUMP's parts) not any() over a generator: per answer
            if r.errno is not _OK:
                self.failed = True
                return
        self.left -= 1
        if not self.left:
            self.release()


_OK = Errno.OK


async def _answered(self: IkeService, state: ChildState, sent: Sequence[Sent],
                    add: asyncio.Future[list[pipe.Reply]] | None) -> WorkerError | None:
    """The answers to a Child SA's install requests: the first failure, if any.  Whether the ADD
    went in is booked first (what waits for the install may delete the outbound SA)."""
    answers = await answered(sent)
    if add is not None:   # one not answered in time may have gone in: it is deleted with the Child SA
        state.out_installed = not isinstance(answers[[fut for _, fut in sent].index(add)], WorkerError) \
            or not _refused(add)
    return next((a for a in answers if isinstance(a, WorkerError)), None)


async def _install_answered(self: IkeService, state: ChildState) -> None:
    """Wait (under ``_changes``) for the answers to the Child SA's install, whatever they are."""
    if state.install is not None:
        await asyncio.wait([state.install])


def _protect(self: IkeService, state: ChildState, selectors: Sequence[Selector] | Sequence[bytes],
             ok: _AllOk | None = None) -> list[Sent]:
    """Send the SPDADDs of a new lineage (``state``'s) now (their answers: see answered, and
    _spdadds_answered, which takes those of a refused set out again).  selectors: Selectors, or
    SELECTOR extensions (pipe.direct)."""
    sent: list[Sent] = []
    w = self.worker()
    lineage = state.lineage
    prio = priority(Band.IKE_CHILD)
    for sel in selectors:
        pid = self.ids.policy_id()
        lineage.policy_ids.append(pid)   # before the request: released with the lineage even if unanswered
        self.child_policies[pid] = (state.conn, state.child, lineage)   # its ACQUIREs are ours (traps.acquire)
        build = install_requests.spdadd(pid, prio, lineage.reqid, sel)
        sent.append(send_soon(w, "SpdAdd", build, ok.expect() if ok is not None else None))
    return sent


async def _remove(self: IkeService, state: ChildState, lineage_ended: bool, linger: bool = False) -> None:
    """The worker side of a Child SA going away: its SAs, and its policies if it was the last of its
    lineage.  Only what this Child SA installed: its outbound SA is named by (SPI, its peer).
    ``linger``: it was rekeyed; its inbound SA stays INBOUND_LINGER seconds for packets in flight."""
    await self._install_answered(state)   # out_installed is known then
    state.standby = None
    self._unlater(state.standby_timer)
    lineage = state.lineage
    if state.out_installed:   # a refused ADD (EEXIST) leaves the SA that was there alone
        await self._delete_sa(state.spi_out, Direction.OUT, state.remote, state.spi_in, lineage.worker)
    else:   # none of ours (on standby, refused): it counted nothing
        self._acct_deleted(state.spi_in, Direction.OUT, None)
        going_sas.deleted(self, state.spi_out, Direction.OUT, state.remote)   # no DELETE to wait for
    if linger and not self.closing and lineage.worker == self.spi_pool.generation:
        await _linger(self, state)
    else:
        await self._delete_sa(state.spi_in, Direction.IN, of_child=state.spi_in, worker=lineage.worker)
    if not lineage_ended:
        if lineage.lingering and not _has_member_in(self, lineage, state.ike):
            # the lineage goes on in another IKE SA of the peer's identity (_sibling: the client came
            # back), this one's part of it has ended: its lingering inbound SAs go now, not later,
            # so that nothing of an IKE SA that is gone stays in the worker
            await _drop_lingering(self, lineage, state.ike)
        return
    # the lineage's traffic selectors (a client's virtual IP, which its pool may lease to another
    # client as soon as this IKE SA is gone) admit no packet from this peer any more: its lingering
    # inbound SAs go now too, before the policies, and so before anything queued after this removal
    await _drop_lingering(self, lineage, None)
    await _delete_policies(self, lineage.policy_ids)
    self._release(state.lineage)


async def _linger(self: IkeService, state: ChildState) -> None:
    """Keep a rekeyed Child SA's inbound SA INBOUND_LINGER seconds (under ``_changes``).  Its IKE SA's
    lingering inbound SAs count against max_child_sas: a peer that rekeys and deletes in a loop would
    otherwise hold one per rekey in the worker, its rekey rate times INBOUND_LINGER; over the limit,
    the oldest goes now."""
    log.debug("%s: inbound SA %08x of rekeyed CHILD_SA %s lingers %.0f s", state.conn, state.spi_in,
              state.child, INBOUND_LINGER)
    lineage = state.lineage
    if lineage.lingering is None:
        lineage.lingering = {}
    ended = functools.partial(_linger_ended, self, lineage, state.spi_in)
    lineage.lingering[state.spi_in] = (state.ike, self._later(INBOUND_LINGER,
                                                              lambda: self._spawn(self._changes.queue(ended()))))
    mine = self._lingering.setdefault(state.ike, {})
    mine[state.spi_in] = lineage
    conn = self.connections.get(state.conn)
    cap = conn.ike.max_child_sas if conn is not None else DEFAULT_MAX_CHILD_SAS
    while len(mine) > cap:
        spi, oldest = next(iter(mine.items()))
        _unlinger(self, state.ike, spi)
        if oldest.lingering is not None and (entry := oldest.lingering.pop(spi, None)) is not None:
            self._unlater(entry[1])
            if not oldest.lingering:
                oldest.lingering = None   # no empty dict kept per client
        await self._delete_sa(spi, Direction.IN, of_child=spi, worker=oldest.worker)


def _unlinger(self: IkeService, ike: int, spi: int) -> None:
    """Inbound SA ``spi`` of IKE SA ``ike`` lingers no more (deleted, or about to be)."""
    if (mine := self._lingering.get(ike)) is not None:
        mine.pop(spi, None)
        if not mine:
            del self._lingering[ike]


async def _delete_policies(self: IkeService, pids: Sequence[int]) -> None:
    """SPDDELETE each of ``pids`` (under ``_changes``); one already gone is no error."""
    for pid in pids:
        with contextlib.suppress(WorkerError):
            await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]


async def _drop_lingering(self: IkeService, lineage: Lineage, ike: int | None) -> None:
    """Delete the lineage's lingering inbound SAs now (under ``_changes``): those of IKE SA ``ike``, or all.
    Each DELETE's answer carries what the SA took in to accounting, which the session's Stop waits for."""
    lingering = lineage.lingering or {}
    for spi, (owner, timer) in list(lingering.items()):
        if ike is None or owner == ike:
            self._unlater(timer)
            del lingering[spi]
            _unlinger(self, owner, spi)
            await self._delete_sa(spi, Direction.IN, of_child=spi, worker=lineage.worker)
    if not lingering:
        lineage.lingering = None   # no empty dict kept per client


def _lingers(self: IkeService, state: ChildState) -> bool:
    """Whether a Child SA going away (still booked) keeps its inbound SA INBOUND_LINGER seconds for
    packets in flight: it was rekeyed or duplicated, i.e. its lineage goes on in the same IKE SA,
    whose peer may still be sending on it.  Not when the lineage goes on only in another IKE SA of
    the peer's identity (_sibling): this IKE SA is gone or going, and nothing of it stays."""
    return not self.closing and _has_member_in(self, state.lineage, state.ike, besides=state.handle)


def _has_member_in(self: IkeService, lineage: Lineage, ike: int, besides: int | None = None) -> bool:
    """Whether a Child SA of IKE SA ``ike`` (other than ``besides``) is still a member of ``lineage``."""
    return any(h != besides and (other := self.children.get(h)) is not None and other.ike == ike
               for h in lineage.members)


async def _linger_ended(self: IkeService, lineage: Lineage, spi: int) -> None:
    """A rekeyed Child SA's inbound SA has lingered long enough (unless its lineage ended first and
    took it along: _remove).  Under ``_changes``, so that _remove sees it either lingering or gone."""
    async with self._changes:
        if lineage.lingering is not None and (entry := lineage.lingering.pop(spi, None)) is not None:
            if not lineage.lingering:
                lineage.lingering = None   # no empty dict kept per client
            _unlinger(self, entry[0], spi)
            await self._delete_sa(spi, Direction.IN, of_child=spi, worker=lineage.worker)


def _child_gone(self: IkeService, sa: IkeSa, ev: ChildSaDown) -> None:
    ike = self._ike_handle(sa)
    restart.release_claim(self, ike, ev.unique_id)   # one a worker restart left unbooked: its claims go
    handle = self._by_uid.get((ike, ev.unique_id))
    state = self.children.get(handle) if handle is not None else None
    if state is None:
        # never installed (or lost with a worker restart): only our inbound SPI may be left, if the
        # current worker issued it (_delete_sa) and it was not removed when its install failed
        if not install_failed.removed_already(self, ike, ev.unique_id):
            self._spawn(self._delete_sa(ev.spi_in, Direction.IN))
        theirs = churn_log.peer_deleted(ev.reason) and ev.unique_id != churn_log.FIRST_CHILD
        churn_log.line(self, self.log_peer(sa, sa.name) if theirs else None, log,
                       "%s: CHILD_SA %s %08x_i %08x_o deleted: %s", sa.name, ev.child, ev.spi_in, ev.spi_out,
                       ev.describe())
        return
    linger = _lingers(self, state)   # before _forget: it asks the lineage's other members
    going_sas.book(self, state)   # its SAs' EXPIREs the worker raised before their DELETEs stay ours
    recreate.lost(self, state, ev.reason)   # (a re-creation's lost before its install said OK: tried again)
    self._acct_child_down(state)   # now, in event order: before its IKE SA's Stop (which waits for it)
    # its down-client is queued once it is out of the worker: a stop's drain waits for that
    self.scripts.expect(self._spawn(self._changes.queue(self._child_down(state, self._forget(state), ev, linger))))


async def _child_down(self: IkeService, state: ChildState, lineage_ended: bool, ev: ChildSaDown,
                      linger: bool) -> None:
    async with self._changes:
        # its successor, if we answered that rekey, sends from now on (before the old SA goes)
        for member in [self.children[h] for h in state.lineage.members if h in self.children]:
            if member.pred == state.handle and member.standby is not None:
                await self._add_standby(member, "old SA deleted")
        await self._remove(state, lineage_ended, linger=linger)
    conn_name = state.conn
    peer = churn_log.child_peer(self, state.ike, state.unique_id, churn_log.peer_deleted(ev.reason), conn_name)
    churn_log.line(self, peer, log, "%s: CHILD_SA %s %08x_i %08x_o deleted: %s (peer %s)", conn_name, state.child,
                   state.spi_in, state.spi_out, ev.describe(), state.remote.addr)
    if lineage_ended:
        self._updown_down(state.lineage)
    conn = self.connections.get(conn_name)
    plan = conn.get_child(state.child) if conn is not None else None
    ike = self._ike_sa(state.ike)
    # a rekeyed child's DELETE (its lineage goes on) is no reason to re-create it; nor one a reload removed
    if plan is not None and plan.close_action == "start" and ike is not None and ike.state is State.ESTABLISHED \
            and ev.reason is DownReason.DELETED_BY_PEER and lineage_ended and not self.closing:
        log.info("%s: close_action = start: re-creating child %s", conn_name, plan.name)
        # in this IKE SA, its peer's: by the name alone another peer's might get it (reestablish.py)
        tries.later(self, 1.0, conn_name, plan.name, "close_action = start", ike=state.ike)


def _updown_event(self: IkeService, state: ChildState, plan: Child, me: IPAddress) -> updown.ChildEvent:
    ike = self._ike_sa(state.ike)
    info: Mapping[str, Any] = self.ike_up.get(ike.local_spi, {}) if ike is not None else {}
    own, peer, dns = info.get("vips", ((), (), ()))
    return updown.ChildEvent(
        up=True, child=state.child, interface=getattr(self.tun, "name", ""), reqid=state.reqid,
        ike_unique_id=state.ike, me=str(me), peer=str(state.remote.addr), peer_port=state.remote.port,
        my_id=info.get("local_id", ""), peer_id=info.get("remote_id", ""),
        local_ts=state.local_ts, remote_ts=state.remote_ts, own_vips=own, peer_vips=peer, dns=dns,
        hostaccess=plan.hostaccess, peer_id_proven=info.get("remote_id_proven", True),
        eap_id=info.get("remote_eap_id"), groups=tuple(info.get("groups", ())),
        # made-up names share their source's, as in the log limits (refusal_log.up_key): not one per name
        peer_key=up_key(self, ike, info.ev) if ike is not None and isinstance(info, IkeUpRecord) else None)


def _updown_down(self: IkeService, lineage: Lineage) -> None:
    """The lineage's script hears down-client, if it heard up-client: with what up said, and the
    argv up ran, whatever a reload did to the connection or child since; in the IKE SA's turn of
    the up (updown.Scripts), after it."""
    if lineage.updown is not None:
        up, lineage.updown = lineage.updown, None
        self.scripts.submit(up.ike_unique_id, lineage.updown_argv, dataclasses.replace(up, up=False))
