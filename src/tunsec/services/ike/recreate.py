"""A Child SA our own rekey replaced, whose new Child SA the worker did not take: created again.

The engine deletes the old Child SA once our rekey succeeds, and the new one is deleted when its
install fails (install_failed.py): without this the IKE SA would hold no such Child SA until a trap,
the peer or an operator started it again.  So it is started again in the same IKE SA (CREATE_CHILD_SA
for the same child), at most TRIES times, RETRY_DELAY seconds after the failure and twice as long
after each further one, counted (child_recreate) and logged once per failure and once at the end.

Its traffic is never sent in clear meanwhile: the lineage (reqid, PROTECT policies) is held by a
token member, so its policies stay in the worker bound to no SA (the worker drops the packets and
raises ACQUIREs, which start nothing: traps._child_acquire); the new Child SA joins that lineage
(installs._child_registered) and its ADD binds them.  The token holds the child's selector claims
too (policy/claims.py), until the new Child SA has booked its own or the lineage ends: released
meanwhile, another identity could be given the selectors its held policies still act on.  A joined
Child SA that is lost before its install said OK (deleted, or its install failed) counts as a
failed try, as does a try that brought nothing back by its deadline, unless its request is still in
the engine (_still_under_way: never two at once, which could both come up); a Child SA of the child that
comes up on other selectors ends the re-creation (the held policies act on the old ones).  The
lineage ends, as it would have, when the tries are used up or the IKE SA goes.  Only that IKE SA's
Child SA is touched: nothing of another peer's.  The operator's commands (commands.py): ``terminate
--child`` stops it (stop), an ``initiate`` joins it in its IKE SA (of) and is answered with its
outcome (waiter).

A Child SA the peer no longer has (CHILD_SA_NOT_FOUND to our rekey of it: the engine ends it,
DownReason.LOST_BY_PEER, and asks for the child again itself) is held the same way (peer_lost): the
engine's request is the first try, its Child SA joins the held lineage, and further tries are this
module's if it fails (review revrekey F1)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import TYPE_CHECKING

from tunsec.ike.events import DownReason
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.services.ike import churn_log, installs
from tunsec.services.ike.state import ChildState, Lineage

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

TRIES = 4            # CREATE_CHILD_SAs after the failed rekey, at most
RETRY_DELAY = 2.0    # seconds before the first; doubled before each further one


@dataclasses.dataclass(eq=False)
class Pending:
    """A child of IKE SA ``ike`` being created again, in ``lineage`` (held by ``token``)."""
    ike: int
    conn: str
    child: str
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    lineage: Lineage | None   # None after a worker restart: the new Child SA starts a lineage of its own
    token: int
    tries: int = 0
    timer: asyncio.TimerHandle | None = None
    joined: int | None = None   # the handle of the new Child SA that joined, its install under way
    trying: bool = False   # a try's CREATE_CHILD_SA is out, nothing back for it yet
    # operators' initiates that joined it (commands.initiate): None when it is up, else why it ended
    waiters: list[asyncio.Future[str | None]] = dataclasses.field(default_factory=list)
    last: str = ""         # how the last try failed, for the end's log line and the waiters
    stopped: bool = False  # terminate --child: no more tries; the one in the engine is deleted if it comes up


def failed(self: IkeService, state: ChildState, our_rekey: bool) -> bool:
    """Before ``state`` (whose install failed) is forgotten: if it was our rekey, or a Child SA created
    again here, its lineage is held and a CREATE_CHILD_SA scheduled; False if not (or tries used up)."""
    key = (state.ike, state.child)
    pending = self._recreating.get(key)
    if pending is not None and pending.joined != state.handle:
        pending = None if not our_rekey else pending
    if pending is None and not our_rekey:
        return False
    sa = self._ike_sa(state.ike)
    if sa is None or sa.state is not State.ESTABLISHED or self.closing:
        if pending is not None:
            _end(self, pending, "its IKE SA went")
        return False
    if pending is None:
        pending = self._recreating[key] = Pending(state.ike, state.conn, state.child, state.local_ts,
                                                  state.remote_ts, state.lineage, next(self._handles))
        state.lineage.members.add(pending.token)
    self.ts_claims.share(state.handle, pending.token)   # the caller's _forget releases the child's own
    pending.joined = None
    pending.last = "the worker did not install its Child SA"
    self._unlater(pending.timer)
    return _schedule(self, pending)


def lost(self: IkeService, state: ChildState, reason: DownReason | None = None) -> None:
    """Before ``state`` is forgotten (its ChildSaDown): if it was a re-creation that joined, its
    install not yet said OK, that try failed: the next is scheduled (or the tries are used up);
    if its lineage goes on in another Child SA (it was rekeyed), the re-creation is done.  One the
    peer no longer has (``reason``) is created again by the engine: its lineage is held (peer_lost)."""
    if reason is DownReason.LOST_BY_PEER and peer_lost(self, state):
        return
    pending = self._recreating.get((state.ike, state.child))
    if pending is None or pending.joined != state.handle:
        return
    if any(h in self.children for h in state.lineage.members if h != state.handle):
        _done(self, pending)
        return
    self.ts_claims.share(state.handle, pending.token)
    pending.joined = None
    pending.last = "its Child SA was deleted before its install ended"
    _schedule(self, pending)


def peer_lost(self: IkeService, state: ChildState) -> bool:
    """``state`` ended as the peer no longer has it, and the engine asks for its child again (its
    request queued or out, sa.creating): that request is a try of a re-creation holding the lineage's
    policies and claims (the caller's _forget then ends no lineage), so its traffic is dropped, not
    sent in clear or elsewhere, until the new Child SA is installed.  False if nothing is being
    created (its IKE SA going): the lineage ends with the Child SA as any other's."""
    sa = self._ike_sa(state.ike)
    if sa is None or sa.state is not State.ESTABLISHED or self.closing or not sa.creating(state.child):
        return False
    key = (state.ike, state.child)
    pending = self._recreating.get(key)
    if pending is None:
        pending = self._recreating[key] = Pending(state.ike, state.conn, state.child, state.local_ts,
                                                  state.remote_ts, state.lineage, next(self._handles))
        state.lineage.members.add(pending.token)
    # the peer may answer each of our rekeys so: its share of the churn lines (review revrekey2 R3)
    churn_log.line(self, self.log_peer(sa, state.conn), log, "%s: CHILD_SA %s %08x_i %08x_o: the peer no longer "
                   "has it (CHILD_SA_NOT_FOUND to our rekey): creating it again; its traffic is dropped meanwhile",
                   state.conn, state.child, state.spi_in, state.spi_out, level=logging.WARNING)
    self.ts_claims.share(state.handle, pending.token)   # the caller's _forget releases the child's own
    pending.joined = None
    pending.trying = True
    pending.tries += 1
    pending.last = "the peer no longer had its Child SA"
    self.events.child_recreate[(pending.conn, pending.child)] += 1
    self._unlater(pending.timer)
    pending.timer = self._later(_deadline(sa), functools.partial(_overdue, self, pending))
    return True


def refused(self: IkeService, ike: int, child: str, reason: str = "") -> None:
    """Our CREATE_CHILD_SA of ``child`` in IKE SA ``ike`` failed (the peer refused it, or no SPI):
    if it was a re-creation, the next try is scheduled (or the tries are used up)."""
    pending = self._recreating.get((ike, child))
    if pending is not None and pending.joined is None and pending.trying:
        pending.last = f"refused: {reason}" if reason else "refused"
        self._unlater(pending.timer)
        pending.timer = None
        if not _still_under_way(self, pending):   # (no SPI for now: the engine asks again itself)
            _schedule(self, pending)


def _schedule(self: IkeService, pending: Pending) -> bool:
    """The next try after its delay; False (the lineage ends) if the tries are used up."""
    pending.trying = False
    if pending.stopped:   # terminate --child: the try it waited for brought nothing
        if _still_under_way(self, pending):   # an operator's joined request is still out: its Child SA is deleted
            return True
        _end(self, pending, STOPPED)
        return False
    if pending.tries >= TRIES:
        last = f" (the last: {pending.last})" if pending.last else ""
        log.error("%s: CHILD_SA %s not created again after %d tries%s: its traffic is dropped until the peer, a "
                  "trap or an operator starts it", pending.conn, pending.child, pending.tries, last)
        _end(self, pending, f"not created again after {pending.tries} tries{last}")
        return False
    delay = RETRY_DELAY * (1 << pending.tries)
    if not pending.tries:   # once: the tries are counted (child_recreate), their end logged
        log.warning("%s: CHILD_SA %s: our rekey's new Child SA was not installed: creating it again (at most %d "
                    "tries, the first in %.0f s); its traffic is dropped meanwhile", pending.conn, pending.child,
                    TRIES, delay)
    pending.timer = self._later(delay, functools.partial(_due, self, pending))
    return True


def _due(self: IkeService, pending: Pending) -> None:
    pending.timer = None
    self.spi_pool.with_spi(functools.partial(_initiate, self, pending))
    self._pump()


def _initiate(self: IkeService, pending: Pending) -> None:
    if self._recreating.get((pending.ike, pending.child)) is not pending:
        return   # ended meanwhile (its IKE SA went)
    sa = self._ike_sa(pending.ike)
    if sa is None or sa.state is not State.ESTABLISHED or self.closing:
        _end(self, pending, "its IKE SA went")
        return
    if pending.trying or pending.joined is not None:
        return   # one is out already (a worker restart came between): its answer counts
    if pending.tries >= TRIES or pending.stopped:
        _schedule(self, pending)   # ends it
        return
    pending.tries += 1
    pending.trying = True
    self.events.child_recreate[(pending.conn, pending.child)] += 1
    # the try's end is its Child SA joining, the peer's refusal (refused), or the IKE SA gone with
    # its retransmissions; a backstop for anything else (its Child SA refused here, none started)
    self._unlater(pending.timer)
    pending.timer = self._later(_deadline(sa), functools.partial(_overdue, self, pending))
    if not sa.creating(pending.child):   # one under way already (an operator's) is this try: never two
        sa.initiate(pending.child)


def of(self: IkeService, conn: str, child: str) -> Pending | None:
    """The re-creation of ``child`` of ``conn`` in an established IKE SA, if any: an operator's
    initiate goes to that IKE SA (commands._initiate), were another of the connection's up too (in
    another, its Child SA would come up beside the re-creation's: two of the child).  One that
    terminate --child stopped while its try was out goes on: the operator wants the child again, and
    that try's Child SA is no longer deleted when it comes up."""
    for pending in self._recreating.values():
        sa = self._ike_sa(pending.ike)
        if pending.conn == conn and pending.child == child and sa is not None and sa.state is State.ESTABLISHED:
            pending.stopped = False
            return pending
    return None


def waiter(self: IkeService, conn: str, child: str) -> asyncio.Future[str | None] | None:
    """An operator's initiate of a child being created again: its answer is that re-creation's
    outcome (None: up; else why it ended), not "initiating" at once and nothing when its tries fail."""
    pending = of(self, conn, child)
    if pending is None:
        return None
    fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    pending.waiters.append(fut)
    return fut


def under_way(self: IkeService, conn: str, child: str) -> bool:
    """An operator's initiate of ``child``: a re-creation of it with a try's request in the engine, or
    its Child SA up and installing, takes it as its own (logged); a second request beside it would
    bring up two Child SAs of the child.  One waiting for its try's delay lets it go: its try, when
    due, finds it in the engine (_initiate), and its Child SA joins as the try's would."""
    for pending in self._recreating.values():
        sa = self._ike_sa(pending.ike)
        if pending.conn == conn and pending.child == child and sa is not None and \
                (pending.joined is not None or sa.creating(child)):
            log.info("%s: CHILD_SA %s is being created again: the initiate joins that try", conn, child)
            return True
    return False


STOPPED = "terminated by the operator"


def stop(self: IkeService, conn: str, child: str | None = None, why: str = STOPPED) -> list[str]:
    """``tunsec terminate`` (the connection's re-creations end now, as its IKE SAs going would end
    them), or ``terminate --child`` (that child's: its IKE SA stays, so a try whose request is in
    the engine, or whose Child SA installs, may still bring it up: it is deleted then, installed),
    described for its answer."""
    out = []
    for pending in [p for p in self._recreating.values() if p.conn == conn and child in (None, p.child)]:
        out.append(f"re-creation of CHILD_SA {pending.child} (after {pending.tries} of {TRIES} tries)")
        sa = self._ike_sa(pending.ike)
        if child is not None and (pending.joined is not None or (sa is not None and sa.creating(pending.child))):
            pending.stopped = True   # its end comes with that try's (installed, failed, refused, _overdue)
            _answer(pending, why)
        else:
            _end(self, pending, why)
    return out


def end_holding(self: IkeService, handle: int, why: str) -> bool:
    """The re-creation whose token holds claim ``handle``, or whose joined Child SA is ``handle``, ended now
    (a reload gave its selectors to a named connection: reclaim.py); False if there is none."""
    pending = next((p for p in self._recreating.values() if handle in (p.token, p.joined)), None)
    if pending is None:
        return False
    _end(self, pending, why)
    return True


def _deadline(sa: IkeSa) -> float:
    """Longer than the IKE SA's retransmissions of the try's request: it is deleted after them."""
    return sa.config.retransmit.span() + RETRY_DELAY


def _overdue(self: IkeService, pending: Pending) -> None:
    pending.timer = None
    if self._recreating.get((pending.ike, pending.child)) is not pending or pending.joined is not None:
        return
    if not _still_under_way(self, pending):
        pending.last = "nothing came back by its deadline"
        _schedule(self, pending)


def _still_under_way(self: IkeService, pending: Pending) -> bool:
    """The try's request is still in the engine (queued behind another exchange, retransmitted, or
    to be asked again after the peer's TEMPORARY_FAILURE): it is waited for, its deadline re-armed.
    A next try beside it could bring both up, two Child SAs with their own keys in one lineage (the
    traffic split between them).  The engine ends it: its Child SA up (join), refused for good
    (refused), or the IKE SA gone after its retransmissions (ike_gone)."""
    sa = self._ike_sa(pending.ike)
    if sa is None or not sa.creating(pending.child):
        return False
    pending.timer = self._later(_deadline(sa), functools.partial(_overdue, self, pending))
    return True


def join(self: IkeService, ike: int, child: str, local_ts: tuple[Ts, ...], remote_ts: tuple[Ts, ...],
         handle: int) -> Pending | None:
    """The re-creation a new Child SA ``handle`` of IKE SA ``ike`` is, if any (the same child and
    selectors; ours, or the peer's made meanwhile): it joins its lineage (None: one of its own).
    One of the child on other selectors ends the re-creation: the held policies act on the old
    ones, which its claims would not cover (as a rekey that moved, installs._moved)."""
    pending = self._recreating.get((ike, child))
    if pending is None or pending.joined is not None:
        return None
    if (set(pending.local_ts), set(pending.remote_ts)) != (set(local_ts), set(remote_ts)):
        log.warning("%s: CHILD_SA %s came up on other selectors than the one being created again: that one's "
                    "held policies go", pending.conn, pending.child)
        _end(self, pending, None)   # (the child is up, on those)
        return None
    pending.joined = handle
    pending.trying = False
    self._unlater(pending.timer)
    pending.timer = None
    return pending


def installed(self: IkeService, state: ChildState) -> None:
    """A Child SA's install said OK: if it was one created again, that is done."""
    pending = self._recreating.get((state.ike, state.child))
    if pending is not None and pending.joined == state.handle:
        if pending.stopped:   # terminate --child came while its try was out: it does not come back
            log.info("%s: CHILD_SA %s came up after terminate stopped its re-creation: deleted", state.conn,
                     state.child)
            _done(self, pending)
            if (sa := self._ike_sa(state.ike)) is not None and sa.state is State.ESTABLISHED:
                sa.delete_child(state.unique_id)
                asyncio.get_running_loop().call_soon(self._pump)   # its DELETE out (this may run inside a pump)
            return
        log.info("%s: CHILD_SA %s created again", state.conn, state.child)
        _done(self, pending)


def _done(self: IkeService, pending: Pending) -> None:
    """Its lineage goes on in a new Child SA, which booked its own claims: the token's go."""
    del self._recreating[(pending.ike, pending.child)]
    _answer(pending, None)
    self._unlater(pending.timer)
    self.ts_claims.remove(pending.token)
    if pending.lineage is not None:
        pending.lineage.members.discard(pending.token)


def _answer(pending: Pending, outcome: str | None) -> None:
    """The operators' initiates that joined it get its outcome (None: the child is up)."""
    for fut in pending.waiters:
        if not fut.done():
            fut.set_result(outcome)
    pending.waiters.clear()


def _end(self: IkeService, pending: Pending, why: str | None) -> None:
    """No more tries: the token goes, and the lineage with it if it holds nothing else (its policies)."""
    self._recreating.pop((pending.ike, pending.child), None)
    _answer(pending, why)
    self._unlater(pending.timer)
    self.ts_claims.remove(pending.token)
    lineage = pending.lineage
    if lineage is None:
        return
    lineage.members.discard(pending.token)
    if not lineage.members:
        self._spawn(self._changes.queue(_end_lineage(self, lineage)))


async def _end_lineage(self: IkeService, lineage: Lineage) -> None:
    async with self._changes:
        if lineage.worker == self.spi_pool.generation:   # else they went with the old worker
            await installs._delete_policies(self, lineage.policy_ids)
        self._release(lineage)   # no member left for a restart to release it with
    self._updown_down(lineage)


def ike_gone(self: IkeService, ike: int) -> None:
    """IKE SA ``ike`` is gone: what it was creating again ends."""
    for pending in [p for p in self._recreating.values() if p.ike == ike]:
        _end(self, pending, "its IKE SA went")


def worker_restarted(self: IkeService) -> None:
    """Before the restart releases the booked Child SAs' lineages: a held lineage none of them is in
    is released here (its policies went with the old worker), and each child being created again is
    asked for again now, in a lineage of its own (the restart's timers went), unless a try is out:
    its Child SA comes back through restart.stale_spi and joins, or it is refused (refused).  The
    token's claims stay (as restart.hold_claim does for the booked Child SAs)."""
    for pending in list(self._recreating.values()):
        if (lineage := pending.lineage) is not None:
            lineage.members.discard(pending.token)
            if not any(h in self.children for h in lineage.members):
                self._release(lineage)
                self._updown_down(lineage)
        # a joined Child SA is rekeyed into the new worker (restart.py), and its rekey joins again
        out = pending.trying or pending.joined is not None
        pending.lineage, pending.timer, pending.joined, pending.trying = None, None, None, out
        if out and (sa := self._ike_sa(pending.ike)) is not None:   # (the restart's timers went)
            pending.timer = self._later(_deadline(sa), functools.partial(_overdue, self, pending))
        else:
            self.spi_pool.with_spi(functools.partial(_initiate, self, pending))
