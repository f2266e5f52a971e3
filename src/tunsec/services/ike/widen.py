"""A Child SA we proposed without what others held, created again with it once they let it go.

Our proposal of a new Child SA leaves out what other peers and manual tunnels hold toward its local
side (exchanges/child.py outside_others_claims): a full tunnel to a hub comes up as 0.0.0.0/0 without
a site's 10.8.0.0/16.  A rekey keeps the selectors: RFC 7296 §2.9.2 lets a responder keep the old
ones, strongSwan's child_create narrows a rekey with the old Child SA's selectors, and ours refuses
others (child.py rekey_select: the lineage's policies act on them).  So after that site had gone,
the network stayed out of the tunnel, rekey after rekey, for the life of our IKE SA: its traffic,
which the configured routes send into the TUN, met no policy (review revclaims3 F3).

Each Child SA that was cut so (ChildSaUp.cut; its rekeys keep it, either side's) is booked here
once the worker has installed it.  When claims are released (TsClaims.on_release) whose addresses
meet what was cut out of it, and when it is installed (a release while it was negotiated, or
before a worker restart), a check is due HOLD_OFF seconds later: a claim that comes back at once
(its peer reconnecting) has it again by then, and every release meanwhile is that one check.  If
some of the cut is nobody else's then (IkeSa.regained: the claims as the proposal sees them), a
new Child SA of the child is created in the same IKE SA (a CREATE_CHILD_SA, not a rekey).  Its
proposal is made as any other's, from the claims as they are when it is sent, and its answer is
checked against them (answer_not_others).  Once the worker has installed it and its selectors hold
all of the narrowed one's, the narrowed one is deleted: make-before-break, as the kept networks
stay on the old SA's policies until the new SA's are in.  A new Child SA of ours that came up
without all of them (the peer narrowed it further) is deleted instead, and the narrowed one kept.

Bounds: one replacement per (IKE SA, child) in flight, never beside a re-creation (recreate.py) or
another initiation of the child.  The check waits HOLD_OFF after the first release, and each
replacement that failed (refused, not installed, nothing back by its deadline, or narrower) doubles
that, up to 2**MAX_DOUBLINGS times.  A peer whose claim comes and goes every second costs a check per
hold-off at most, and a CREATE_CHILD_SA per doubled hold-off at most.  Only our IKE SA's Child SAs
of that child are touched.

What a widening took back yields (TsClaims.yielding; review revwiden F1): until then the network
was another peer's, and a site that comes back after the hold-off (a reboot, DPD, a reauthentication
that is break-before-make) is admitted, its Child SA's selectors meeting ours only there, as before
widenings existed.  Once that Child SA is installed, ours is created again as any new one is (so
narrowed around it), and the wide one deleted once the new one is installed: the same
make-before-break, reversed.  Until then both are installed and the wide one's policies, the older,
carry the network's traffic (all Child SAs' policies share a priority).  Equal peers stay first
come, first served: only what a widening took gives way.  The first narrowing after a quiet period
starts at once; each later one (a peer swapping its own Child SAs within what was taken back), and
each after a refused one, waits HOLD_OFF doubled per narrowing and failure since (_Pace, apart from
the failures a success forgets; review revwiden2 F1), the wide one's policies carrying the network
meanwhile.  Nothing starts for a claim our proposal would not leave out (two peers named with
selectors as written share: review revwiden2 F3), and what was taken back is kept once, not once
per round (F4).  A worker restart's held claims yield as their Child SAs did (restart.hold_claim),
and a rekey of the widened Child SA (either side's, a restart's) is not refused for another peer's
claim that meets it only where it yields (TsClaims.overlaps ``rekey``; review revwiden2 F2).

The replacement is named, not guessed (review revwiden F2): the first new Child SA of ours in its IKE
SA and child while it is out, and whatever rekeys that one (a worker restart rekeys one whose answer
bears the old worker's SPI: restart.stale_spi; our rekey before its install).  A narrowed Child SA of
the child installed while a widened one is up there (our rekey of the narrowed one, or the peer's,
that crossed our DELETE of it; a worker restart's rekey of it) is deleted at once.  An IKE SA's
bookkeeping goes with it, a Child SA's with its claims.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.ike.events import ChildSaUp
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Claim
from tunsec.policy.held import Held
from tunsec.policy.selector import selectors_text
from tunsec.services.ike.cut_index import CutIndex
from tunsec.services.ike.recreate import try_deadline
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

HOLD_OFF = 10.0      # seconds from a release to the check (tests set less)
MAX_DOUBLINGS = 6    # failed replacements double the hold-off, at most this often (~10 min)

_Key = tuple[int, str]   # (IKE SA handle, child)


@dataclasses.dataclass(eq=False)
class _Attempt:
    """The check of a narrowed child, or its replacement out (``trying``)."""

    conn: str
    timer: asyncio.TimerHandle | None = None   # the check's hold-off, or the replacement's deadline
    trying: bool = False
    failures: int = 0
    # the replacement narrows a widened one around another peer's network that came back (F1), not widens
    narrowing: bool = False
    # the unique ids of the replacement's Child SA and of the rekeys of it (ChildSaUp's rekey_of chain)
    uids: set[int] = dataclasses.field(default_factory=set)
    cut: tuple[Ts, ...] = ()   # what the narrowed one it replaces had cut out (a widening's)


@dataclasses.dataclass
class _Pace:
    """How often a widened Child SA was narrowed around a returning peer lately (review revwiden2 F1):
    apart from _Attempt.failures, which a success forgets."""

    count: int = 0            # narrowings each within the doubled hold-off of the one before
    last: float = -math.inf   # when the last one started (the loop's clock)

    def wait(self, failures: int) -> float:
        """Seconds from the last narrowing before the next may start: none after a quiet period."""
        doublings = self.count + failures
        return HOLD_OFF * (1 << min(doublings, MAX_DOUBLINGS)) if doublings else 0.0

    def decayed(self, now: float) -> None:
        """A quiet period (twice the current wait) forgets the count: the next narrowing is immediate."""
        if self.count and now - self.last >= 2 * HOLD_OFF * (1 << min(self.count, MAX_DOUBLINGS)):
            self.count = 0


class Widening:
    """Our Child SAs cut for others' claims, and their replacements (the module's docstring)."""

    def __init__(self, service: IkeService) -> None:
        self._svc = service
        self._narrowed: dict[int, tuple[Ts, ...]] = {}   # child handle -> what was cut out of it
        self._index: dict[int, CutIndex] = {}   # child handle -> its cut by address (built as asked)
        self._attempts: dict[_Key, _Attempt] = {}
        self._taken: dict[_Key, Held] = {}   # what widenings there took back: it yields (TsClaims.yielding)
        self._taken_pieces: dict[_Key, tuple[Ts, ...]] = {}
        # the widened Child SA there and its rekeys, by unique id (a worker restart starts lineages anew)
        self._wide: dict[_Key, set[int]] = {}
        self._again: set[int] = set()   # handles of returning peers' Child SAs whose narrowing of ours waits
        self._pace: dict[_Key, _Pace] = {}   # the narrowings of a widened Child SA, bounded (F1)
        # the handles of claims a worker restart holds (restart.hold_claim): they yield as before it (F2)
        self._held: dict[int, _Key] = {}
        service.ts_claims.on_release(self.released)
        service.ts_claims.yielding(self.yields)

    def seen(self, ike: int, ev: ChildSaUp) -> None:
        """A Child SA came up (before it is booked or installed): a replacement out learns its name."""
        key = (ike, ev.child)
        if ev.rekey_of is not None and (wide := self._wide.get(key)) is not None and ev.rekey_of in wide:
            wide.add(ev.unique_id)
            if len(wide) > 4 and (sa := self._svc._ike_sa(ike)) is not None:   # the rekeyed ones gone: forgotten
                wide.intersection_update({ev.unique_id, *(c.unique_id for c in sa.children)})
        attempt = self._attempts.get(key)
        if attempt is None or not attempt.trying or not ev.initiator:
            return
        if (ev.rekey_of is None and not attempt.uids) or ev.rekey_of in attempt.uids:
            attempt.uids.add(ev.unique_id)

    def installed(self, state: ChildState, ev: ChildSaUp) -> None:
        """A Child SA's install said OK: our replacement takes over from the Child SAs it replaces; a
        narrowed one is booked, and checked after the hold-off; another peer's that came back into
        what a widening took starts the narrowing of ours."""
        key = (state.ike, state.child)
        attempt = self._attempts.get(key)
        ours = attempt is not None and attempt.trying and ev.unique_id in attempt.uids
        if ours and attempt is not None and attempt.narrowing:
            self._narrowed_again(state, key, attempt)
        elif ours or (ev.initiator and ev.rekey_of is None):
            self._supersede(state, ours)
        if ev.cut and state.handle in self._svc.children:
            if not ours and self._widened_holds(state, key):
                return
            self._narrowed[state.handle] = ev.cut
            self._schedule(key, state.conn)
        if self._taken:
            self._came_back(state)

    def released(self, claims: Sequence[Claim]) -> None:
        """TsClaims removed ``claims``: the narrowed Child SAs whose cut they meet are checked after the
        hold-off (they may be held again by then: a replaced or moved claim is released too); a Child
        SA no longer booked is forgotten."""
        children = self._svc.children
        for c in claims:
            self._held.pop(c.handle, None)
            if c.handle in self._narrowed and c.handle not in children:
                del self._narrowed[c.handle]
                self._index.pop(c.handle, None)
        for handle, cut in self._narrowed.items():
            state = children.get(handle)
            if state is None or ((state.ike, state.child) in self._attempts and \
                    self._attempts[state.ike, state.child].timer is not None):
                continue   # (a check already due there: every release meanwhile is that one)
            index = self._index.get(handle)
            if index is None or index.cut is not cut:
                index = self._index[handle] = CutIndex.of(cut)
            if any(index.meets(c.ts, _meets) for c in claims):
                self._schedule((state.ike, state.child), state.conn)

    def yields(self, claim: Claim) -> Held | None:
        """What of ``claim`` gives way to another peer (TsClaims.yielding): what widenings took back.  A
        claim a worker restart holds for a Child SA no longer booked yields as it did (review revwiden2
        F2: it took the returning peer's Child SA away)."""
        state = self._svc.children.get(claim.handle)
        key = (state.ike, state.child) if state is not None else self._held.get(claim.handle)
        return self._taken.get(key) if key is not None else None

    def hold(self, handle: int, ike: int, child: str) -> None:
        """A worker restart holds claims under ``handle`` for a Child SA of ``child`` in IKE SA ``ike``
        (restart.hold_claim), until they are released."""
        self._held[handle] = (ike, child)

    def ike_gone(self, ike: int) -> None:
        """IKE SA ``ike`` (its lineage) is gone: nothing of it is checked or replaced any more."""
        for key in [key for key in self._attempts if key[0] == ike]:
            if (timer := self._attempts.pop(key).timer) is not None:
                timer.cancel()
        for book in (self._taken, self._taken_pieces, self._wide, self._pace):
            for key in [key for key in book if key[0] == ike]:
                del book[key]

    def _schedule(self, key: _Key, conn: str) -> None:
        attempt = self._attempts.setdefault(key, _Attempt(conn))
        if attempt.timer is None and not attempt.trying:
            delay = HOLD_OFF * (1 << min(attempt.failures, MAX_DOUBLINGS))
            attempt.timer = asyncio.get_running_loop().call_later(delay, self._due, key, attempt)

    def _due(self, key: _Key, attempt: _Attempt) -> None:
        """The hold-off is over: a replacement is started if some of the cut is nobody else's now."""
        attempt.timer = None
        svc = self._svc
        old = self._newest(key)
        sa = svc._ike_sa(key[0])
        if self._attempts.get(key) is not attempt or svc.closing:
            return
        if old is None or sa is None or sa.state is not State.ESTABLISHED:
            del self._attempts[key]   # nothing narrowed left there (or the IKE SA is going): done
            return
        if key in svc._recreating or sa.creating(key[1]):   # one under way: what it brings is awaited
            self._schedule(key, attempt.conn)
            return
        if not _regained(sa, old):
            if not attempt.failures:
                del self._attempts[key]   # still theirs: the next release checks again
            return
        log.info("%s: CHILD_SA %s: some of %s, left out of it for others' claims, is nobody else's now: creating "
                 "it again, the narrowed one deleted once the new one is installed", attempt.conn, key[1],
                 selectors_text(self._narrowed.get(old.handle, ())))
        attempt.narrowing = False
        attempt.cut = self._narrowed.get(old.handle, ())
        self._start(key, attempt, sa)

    def _start(self, key: _Key, attempt: _Attempt, sa: IkeSa) -> None:
        attempt.trying = True
        attempt.uids.clear()
        attempt.timer = asyncio.get_running_loop().call_later(try_deadline(sa), self._overdue, key, attempt)
        self._svc.spi_pool.with_spi(functools.partial(self._initiate, key, attempt))
        self._svc._pump()

    def _initiate(self, key: _Key, attempt: _Attempt) -> None:
        sa = self._svc._ike_sa(key[0])
        if self._attempts.get(key) is attempt and attempt.trying and sa is not None \
                and sa.state is State.ESTABLISHED and not sa.creating(key[1]) and not self._svc.closing:
            try:
                sa.initiate(key[1])
            except (KeyError, RuntimeError) as err:   # its child no longer in the IKE SA's configuration
                log.error("%s: cannot create CHILD_SA %s again: %s", attempt.conn, key[1], err)

    def _overdue(self, key: _Key, attempt: _Attempt) -> None:
        """The replacement's deadline (longer than its retransmissions): nothing installed by now."""
        attempt.timer = None
        if self._attempts.get(key) is not attempt or not attempt.trying:
            return
        sa = self._svc._ike_sa(key[0])
        if sa is None:   # its IKE SA went (ike_gone ends what is left of it)
            del self._attempts[key]
            return
        if sa.creating(key[1]):   # still out (retransmitted, asked again later)
            attempt.timer = asyncio.get_running_loop().call_later(try_deadline(sa), self._overdue, key, attempt)
            return
        self._failed(key, attempt, "it was refused, or not installed")

    def _failed(self, key: _Key, attempt: _Attempt, why: str) -> None:
        attempt.trying = False
        attempt.failures += 1
        delay = HOLD_OFF * (1 << min(attempt.failures, MAX_DOUBLINGS))
        kept = "the widened one stays" if attempt.narrowing else "the narrowed one stays"
        log.info("%s: CHILD_SA %s not created again %s (%s): %s; checked again %.0f s after the next release "
                 "or rekey", attempt.conn, key[1], "around another peer's network" if attempt.narrowing
                 else "with what was left out of it", why, kept, delay)

    def _done(self, key: _Key, attempt: _Attempt | None) -> None:
        """The replacement did what it was for: the try ends, its failures forgotten."""
        if attempt is not None and self._attempts.get(key) is attempt:
            if attempt.timer is not None:
                attempt.timer.cancel()
            del self._attempts[key]

    def _supersede(self, new: ChildState, ours: bool) -> None:
        """``new``, a Child SA we started (not a rekey) or our replacement (``ours``: also a rekey of it),
        installed: the narrowed ones of its IKE SA and child, of other lineages, go if it holds all
        their selectors.  If it holds none of them while it is our replacement, it came up narrower:
        it goes, they stay.  Our replacement with no narrowed one left to replace (the peer deleted it,
        a worker restart rekeys it) carries the child: the try ends well."""
        key = (new.ike, new.child)
        attempt = self._attempts.get(key)
        # (one of the same lineage: our replacement that came up on the same selectors, the claims back
        # by the time it was sent, took the traffic over as a duplicate does, installs._sibling)
        olds = [old for h in self._narrowed if (old := self._svc.children.get(h)) is not None
                and (old.ike, old.child) == key and (old.lineage is not new.lineage or ours)]
        sa = self._svc._ike_sa(new.ike)
        if sa is None or sa.state is not State.ESTABLISHED:
            return
        live = {c.unique_id for c in sa.children}
        olds = [old for old in olds if old.unique_id in live and old.handle != new.handle]
        if not olds:
            if ours and attempt is not None:
                self._widened(key, new, attempt.cut)
                self._done(key, attempt)
            return
        held = [old for old in olds if _holds(new, old)]
        took = [*(attempt.cut if ours and attempt is not None else ()),
                *(piece for old in held for piece in self._narrowed.get(old.handle, ()))]
        for old in held:
            log.info("%s: CHILD_SA %s (reqid %d) carries %s: the narrowed one (reqid %d, %s) is deleted", new.conn,
                     new.child, new.reqid, selectors_text(new.remote_ts), old.reqid, selectors_text(old.remote_ts))
            self._drop(old.handle)
            sa.delete_child(old.unique_id)
        if held:
            self._widened(key, new, took)
            self._done(key, attempt)
        elif attempt is not None and ours:
            log.warning("%s: CHILD_SA %s came up with %s, not all of the narrowed one's: deleted", new.conn,
                        new.child, selectors_text(new.remote_ts))
            sa.delete_child(new.unique_id)
            if attempt.timer is not None:
                attempt.timer.cancel()
                attempt.timer = None
            self._failed(key, attempt, "the peer narrowed it")
        else:
            return
        asyncio.get_running_loop().call_soon(self._svc._pump)   # the DELETE out (this may run inside a pump)

    def _widened(self, key: _Key, new: ChildState, took: Sequence[Ts]) -> None:
        """``new`` carries the child now, with what of the cuts ``took`` it holds: that yields from now on
        (not what is still others': their holders' Child SAs come and go without narrowing ours)."""
        self._wide[key] = {new.unique_id}
        back = dict.fromkeys(common for piece in took for mine in new.remote_ts
                             if (common := piece.intersect(mine)) is not None)
        # only what is not taken already: a piece taken back round after round is kept once (review
        # revwiden2 F4: the list grew by a piece per round for the IKE SA's life)
        taken = self._taken.get(key)
        fresh = [t for t in back if taken is None or not taken.holds(t, int(t.start), int(t.end))]
        if fresh:
            pieces = self._taken_pieces[key] = (*self._taken_pieces.get(key, ()), *fresh)
            self._taken[key] = Held.of((int(t.start), int(t.end), t) for t in pieces)

    def _drop(self, handle: int) -> None:
        self._narrowed.pop(handle, None)
        self._index.pop(handle, None)

    def _widened_holds(self, state: ChildState, key: _Key) -> bool:
        """A narrowed Child SA came up beside the widened one of its IKE SA and child that holds all of it
        (a rekey of the one it replaced that crossed its DELETE, a worker restart's rekey of that): it
        is deleted at once, not booked (review revwiden F2)."""
        wide = self._wide_state(key)
        sa = self._svc._ike_sa(key[0])
        if wide is None or sa is None or state.unique_id in self._wide[key] or not _holds(wide, state) \
                or state.unique_id not in {c.unique_id for c in sa.children}:
            return False
        log.info("%s: CHILD_SA %s (reqid %d, %s) came up narrowed beside the one that carries it (reqid %d): "
                 "deleted", state.conn, state.child, state.reqid, selectors_text(state.remote_ts), wide.reqid)
        sa.delete_child(state.unique_id)
        asyncio.get_running_loop().call_soon(self._svc._pump)
        return True

    def _came_back(self, state: ChildState) -> None:
        """Another peer's Child SA, installed, holds some of what a widening of ours took back (admitted:
        that yields): ours is created again around it, the widened one deleted once it is in."""
        peer = self._svc.ts_claims.peer_of(state.handle)
        for key, taken in list(self._taken.items()):
            if key == (state.ike, state.child) or key not in self._wide or \
                    not any(_touches(taken, t) for t in state.remote_ts):
                continue
            attempt = self._attempts.get(key)
            sa = self._svc._ike_sa(key[0])
            wide = self._wide_state(key)
            if sa is None or wide is None or self._svc.ts_claims.peer_of(wide.handle) == peer \
                    or not _any_meet(state.local_ts, wide.local_ts) or not _any_meet(state.remote_ts, wide.remote_ts) \
                    or not self._left_out(wide, state):
                continue
            if (attempt is not None and attempt.trying) or sa.state is not State.ESTABLISHED:
                self._later(state.handle)   # a replacement out there (its answer refused now), an IKE SA rekey
                continue
            if (wait := self._paced(key, attempt)) > 0:
                self._later(state.handle, wait)   # narrowed lately: not again before the doubled hold-off
                continue
            if attempt is None:
                attempt = self._attempts[key] = _Attempt(wide.conn)
            elif attempt.timer is not None:
                attempt.timer.cancel()
            attempt.narrowing = True
            log.info("%s: CHILD_SA %s: %s of %s, taken back for it while nobody held it, is that peer's again: "
                     "creating it again around it, the widened one deleted once the new one is installed",
                     wide.conn, key[1], selectors_text(state.remote_ts), state.conn)
            self._start(key, attempt, sa)

    def _left_out(self, wide: ChildState, returning: ChildState) -> bool:
        """Whether our proposal of the child would leave ``returning``'s claim out, as it would be made
        now (outside_others_claims): not if the two share (two peers named with selectors as written),
        which would create the same Child SA again at every install of the peer's (review revwiden2 F3)."""
        claims = self._svc.ts_claims
        mine = claims.claims_of(wide.handle)
        if not mine:
            return False
        found = claims.overlaps(mine[0].peer, returning.remote_ts, wide.local_ts, mine[0].named, mine[0].by_name,
                                yielded=False)
        return any(claim.handle == returning.handle for claim, _ in found)

    def _paced(self, key: _Key, attempt: _Attempt | None) -> float:
        """Seconds until a narrowing of ``key`` may start (0: it starts now, and is counted).  The first
        after a quiet period is immediate (the SPD window, where the wide one's policies carry the
        returning network's traffic, stays one round trip); each later one, and each after a refused
        one, waits the doubled hold-off: a peer swapping its own Child SAs within what was taken back
        costs a CREATE_CHILD_SA in ours per doubled hold-off at most (review revwiden2 F1)."""
        now = asyncio.get_running_loop().time()
        pace = self._pace.setdefault(key, _Pace())
        pace.decayed(now)
        wait = pace.last + pace.wait(attempt.failures if attempt is not None else 0) - now
        if wait > 0:
            return wait
        pace.count += 1
        pace.last = now
        return 0.0

    def _later(self, handle: int, delay: float | None = None) -> None:
        """The returning peer's Child SA ``handle`` is looked at again after ``delay`` (the hold-off), while
        it is booked."""
        if handle not in self._again:
            self._again.add(handle)
            asyncio.get_running_loop().call_later(HOLD_OFF if delay is None else delay, self._again_due, handle)

    def _again_due(self, handle: int) -> None:
        self._again.discard(handle)
        if (state := self._svc.children.get(handle)) is not None and not self._svc.closing:
            self._came_back(state)

    def _narrowed_again(self, new: ChildState, key: _Key, attempt: _Attempt) -> None:
        """Our Child SA created again around another peer's network is installed: the widened one goes."""
        sa = self._svc._ike_sa(key[0])
        wide = self._wide.pop(key, set())
        self._done(key, attempt)
        if sa is None:
            return
        live = {c.unique_id for c in sa.children}
        for old in self._of(key):
            if old.unique_id in wide and old.unique_id in live and old.unique_id != new.unique_id:
                log.info("%s: CHILD_SA %s (reqid %d, %s) carries the child: the widened one (reqid %d) is deleted",
                         new.conn, new.child, new.reqid, selectors_text(new.remote_ts), old.reqid)
                sa.delete_child(old.unique_id)
        if (taken := self._taken.get(key)) is not None and any(_touches(taken, t) for t in new.remote_ts):
            self._wide[key] = {new.unique_id}   # (that peer went again meanwhile: it came up wide, and yields)
        asyncio.get_running_loop().call_soon(self._svc._pump)

    def _wide_state(self, key: _Key) -> ChildState | None:
        """The newest booked Child SA of the widened one's (it or its rekeys)."""
        wide = self._wide.get(key)
        found = [state for state in self._of(key) if state.unique_id in wide] if wide else []
        return max(found, key=lambda state: state.handle, default=None)

    def _of(self, key: _Key) -> list[ChildState]:
        """The booked Child SAs of (IKE SA, child)."""
        svc = self._svc
        return [state for h in svc._by_ike.get(key[0], ()) if (state := svc.children[h]).child == key[1]]

    def _newest(self, key: _Key) -> ChildState | None:
        """The newest narrowed Child SA of (IKE SA, child) still booked."""
        found = [state for h in self._narrowed if (state := self._svc.children.get(h)) is not None
                 and (state.ike, state.child) == key]
        return max(found, key=lambda state: state.handle, default=None)


def _regained(sa: IkeSa, old: ChildState) -> bool:
    try:
        return sa.regained(old.unique_id)
    except KeyError:   # no longer installed in the engine (being deleted): its ChildSaDown ends it
        return False


def _meets(a: Ts, b: Ts) -> bool:
    """Some address of one lies in the other (whatever protocol or ports: the cut takes whole ranges)."""
    return a.version == b.version and int(a.start) <= int(b.end) and int(b.start) <= int(a.end)


def _any_meet(these: Sequence[Ts], those: Sequence[Ts]) -> bool:
    return any(_meets(a, b) for a in these for b in those)


def _touches(held: Held, t: Ts) -> bool:
    """Some address of ``t`` is in ``held`` (whatever protocol or ports): an interval holds its first
    address, or starts within it."""
    first, last = int(t.start), int(t.end)
    spans = held.every[t.version]
    i = bisect.bisect_left(spans.firsts, first)
    return spans.reach(first) >= first or (i < len(spans.firsts) and spans.firsts[i] <= last) or \
        any(ts.version == t.version and lo <= last and first <= hi for lo, hi, ts in held.some)


def _holds(new: ChildState, old: ChildState) -> bool:
    """Whether ``new``'s selectors hold every packet ``old``'s do, on both sides (each piece within the
    union of the other's, for its protocol and ports)."""
    return all(_within(mine, theirs) for mine, theirs in ((old.local_ts, new.local_ts), (old.remote_ts, new.remote_ts)))


def _within(pieces: Sequence[Ts], union: Sequence[Ts]) -> bool:
    over = Held.of((int(t.start), int(t.end), t) for t in union)
    return all(over.holds(t, int(t.start), int(t.end)) for t in pieces)
