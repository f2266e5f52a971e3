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
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.ike.events import ChildSaUp
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Claim
from tunsec.policy.held import Held
from tunsec.policy.selector import selectors_text
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


class Widening:
    """Our Child SAs cut for others' claims, and their replacements (the module's docstring)."""

    def __init__(self, service: IkeService) -> None:
        self._svc = service
        self._narrowed: dict[int, tuple[Ts, ...]] = {}   # child handle -> what was cut out of it
        self._attempts: dict[_Key, _Attempt] = {}
        service.ts_claims.on_release(self.released)

    def installed(self, state: ChildState, ev: ChildSaUp) -> None:
        """A Child SA's install said OK: a new one of ours may replace narrowed ones; a narrowed one is
        booked, and checked after the hold-off."""
        if ev.initiator and ev.rekey_of is None:
            self._supersede(state)
        if ev.cut:
            for gone in [h for h in self._narrowed if h not in self._svc.children]:
                del self._narrowed[gone]   # (deleted, rekeyed): pruned as others come, never more than live ones
            self._narrowed[state.handle] = ev.cut
            self._schedule((state.ike, state.child), state.conn)

    def released(self, claims: Sequence[Claim]) -> None:
        """TsClaims removed ``claims``: the narrowed Child SAs whose cut they meet are checked after the
        hold-off (they may be held again by then: a replaced or moved claim is released too)."""
        for handle, cut in self._narrowed.items():
            state = self._svc.children.get(handle)
            if state is not None and any(_meets(c.ts, piece) for c in claims for piece in cut):
                self._schedule((state.ike, state.child), state.conn)

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
        attempt.trying = True
        attempt.timer = asyncio.get_running_loop().call_later(try_deadline(sa), self._overdue, key, attempt)
        svc.spi_pool.with_spi(functools.partial(self._initiate, key, attempt))
        svc._pump()

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
        if sa is not None and sa.creating(key[1]):   # still out (retransmitted, asked again later)
            attempt.timer = asyncio.get_running_loop().call_later(try_deadline(sa), self._overdue, key, attempt)
            return
        self._failed(key, attempt, "it was refused, or not installed")

    def _failed(self, key: _Key, attempt: _Attempt, why: str) -> None:
        attempt.trying = False
        attempt.failures += 1
        delay = HOLD_OFF * (1 << min(attempt.failures, MAX_DOUBLINGS))
        log.info("%s: CHILD_SA %s not created again with what was left out of it (%s): the narrowed one stays; "
                 "checked again %.0f s after the next release or rekey", attempt.conn, key[1], why, delay)

    def _supersede(self, new: ChildState) -> None:
        """``new``, a Child SA we started (not a rekey), installed: the narrowed ones of its IKE SA and child,
        of other lineages, go if it holds all their selectors.  If it holds none of them while our
        replacement was out, it is that replacement, come up narrower: it goes, they stay."""
        key = (new.ike, new.child)
        attempt = self._attempts.get(key)
        ours = attempt is not None and attempt.trying
        # (one of the same lineage: our replacement that came up on the same selectors, the claims back
        # by the time it was sent, took the traffic over as a duplicate does, installs._sibling)
        olds = [old for h in self._narrowed if (old := self._svc.children.get(h)) is not None
                and (old.ike, old.child) == key and (old.lineage is not new.lineage or ours)]
        sa = self._svc._ike_sa(new.ike)
        if sa is None or sa.state is not State.ESTABLISHED or not olds:
            return
        live = {c.unique_id for c in sa.children}
        held = [old for old in olds if _holds(new, old) and old.unique_id in live]
        for old in held:
            log.info("%s: CHILD_SA %s (reqid %d) carries %s: the narrowed one (reqid %d, %s) is deleted", new.conn,
                     new.child, new.reqid, selectors_text(new.remote_ts), old.reqid, selectors_text(old.remote_ts))
            self._narrowed.pop(old.handle, None)
            sa.delete_child(old.unique_id)
        if held and attempt is not None:
            if attempt.timer is not None:
                attempt.timer.cancel()
            del self._attempts[key]
        elif not held and attempt is not None and ours:
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


def _holds(new: ChildState, old: ChildState) -> bool:
    """Whether ``new``'s selectors hold every packet ``old``'s do, on both sides (each piece within the
    union of the other's, for its protocol and ports)."""
    return all(_within(mine, theirs) for mine, theirs in ((old.local_ts, new.local_ts), (old.remote_ts, new.remote_ts)))


def _within(pieces: Sequence[Ts], union: Sequence[Ts]) -> bool:
    over = Held.of((int(t.start), int(t.end), t) for t in union)
    return all(over.holds(t, int(t.start), int(t.end)) for t in pieces)
