"""Rekey, dead peer detection and lifetime timers of an IKE SA and its Child SAs.

Rekey times are jittered (strongSwan's rand_time) against collisions; the hard lifetime
is rekey time + over_time; a request the peer refused for now goes again 2-10 s later (a Child
SA rekey that keeps failing backs off exponentially).
:meth:`IkeSa.get_timer` and :meth:`IkeSa.handle_timer` (here) read and fire them, and every
other timer of the IKE SA: our request's retransmission, the half-open timeout, a REKEYED SA's
linger, the redirect deadlines, IKE fragments' reassembly.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .config import default_rand_time
from .events import DownReason
from .exchanges import informational
from .exchanges.base import Task
from .redirect import RESOLVE_TIMEOUT
from .state import ChildSa, State

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)

# a Child SA rekey that failed n times in a row goes again after 2-10 s times 2**(n-1), at most this
# many times that (64-320 s)
REKEY_BACKOFF_MAX = 32
# seconds (jittered up to as much again) before our rekey of a Child SA whose rekey by the peer we
# refused in our answer, at the soonest: the peer's retry comes first (own_rekey_at)
REFUSED_REKEY_DELAY = 30.0


def jittered(self: IkeSa, period: float, rand_time: float | None) -> float:
    """``now + period`` minus a random 0..rand_time (strongSwan's rand_time) against collisions."""
    bound = default_rand_time(period) if rand_time is None else min(rand_time, period)
    assert self._st.jitter is not None
    return self._now + period - min(max(self._st.jitter(bound), 0.0), bound)


def schedule(self: IkeSa) -> None:
    """Arm the IKE and Child SA rekey timers that are not armed yet."""
    heir = self._heir
    if heir is not None and not heir.is_closed:  # a child that came up here lives there
        heir._now = max(heir._now, self._now)
        heir._schedule()
        heir._changed()
    if self._state != State.ESTABLISHED:
        return
    if self._established_at is None:
        self._established_at = self._now
    cfg = self._st.config
    if self._rekey_at is None and cfg.rekey_time:
        self._rekey_at = self._jittered(cfg.rekey_time, cfg.rand_time)
        # strongSwan deletes an IKE SA whose rekey did not succeed over_time after it was due
        over = default_rand_time(cfg.rekey_time) if cfg.over_time is None else cfg.over_time
        self._expire_at = self._rekey_at + over
    for child in self._st.children.values():
        if child.installed and child.created_at is None:
            child.created_at = self._now
        if child.installed and child.rekey_at is None and child.config.rekey_time:
            child.rekey_at = self._jittered(child.config.rekey_time, child.config.rand_time)
            if child.rekey_due is None:
                child.rekey_due = child.rekey_at


def rearm_failed_rekey(self: IkeSa, task: Task) -> None:
    """A refused rekey (e.g. TEMPORARY_FAILURE after a collision) is tried again soon."""
    retry = self._retry_at()
    # a rekey asked for by hand (no timer armed) is tried again too if the peer was only busy
    if task.rekeys_ike_sa and (self._rekey_at == float("inf") or (task.try_again and self._rekey_at is None)):
        if self._expire_at is not None:   # before the hard lifetime (a short over_time)
            retry = min(retry, self._now + max(self._expire_at - self._now, 0.0) / 2)
        self._rekey_at = retry
    old = task.rekeying
    if old is not None and old.installed and old.rekeyed_by_us is None and old.rekey_at == float("inf"):
        # each failure in a row waits twice as long: a rekey is tried until the Child SA's hard
        # lifetime, and one that cannot get an inbound SPI (the worker's SAD is full) would otherwise
        # ask and fail every few seconds until then
        old.rekey_failures += 1
        old.rekey_at = self._now + (retry - self._now) * min(2 ** (old.rekey_failures - 1), REKEY_BACKOFF_MAX)
        # never past the hard lifetime (the worker's EXPIRE would end it while the peer may be ready again):
        # at most half the time left, a floor against a tight loop should that EXPIRE come late (revrekeytail F1)
        life = old.config.life_time
        if life and old.created_at is not None:
            old.rekey_at = min(old.rekey_at, self._now + max(old.created_at + life - self._now, 1.0) / 2)


def rearm(self: IkeSa, children: Sequence[ChildSa], at: Callable[[ChildSa], float]) -> None:
    """Our rekey timer runs again, at ``at(child)``, for Child SAs no longer rekeyed by the peer: it
    withdrew that rekey (informational._withdrawn), we deleted its new Child SA (delete_ours) or refused
    it in our answer (child_refusal.py).  Not one our rekey of which is queued or out: that goes on (no
    longer obsolete, sa_requester.obsolete), and is re-armed if it fails (rearm_failed_rekey, which
    needs the timer at inf); a second one queued meanwhile would rekey it twice (review revrekey5 F3)."""
    ours = [t.rekeying for t in (*self._queue, *([self._pending.task] if self._pending else []))]
    for child in children:
        if child.rekey_at == float("inf") and not any(child is o for o in ours):
            child.rekey_at = at(child) if child.config.rekey_time or child.rekey_asked else None


def own_rekey_at(self: IkeSa, child: ChildSa) -> float:
    """When our rekey of ``child`` is due after our answer to the peer's rekey of it was refused
    (TEMPORARY_FAILURE: child_refusal.py): its own timer as first armed (rekey_due), not in a few
    seconds.  RFC 7296 §2.25 leaves the retry of a refused exchange to its initiator (tunsec's
    retries 2-10 s later, strongSwan's 6-15 s: RETRY_INTERVAL less up to RETRY_JITTER); ours in those
    seconds would cross it, a collision settled by the nonces that makes a Child SA for nothing, and
    would start while our worker has just refused an install (review revresp R1).  So never sooner
    than REFUSED_REKEY_DELAY (jittered up to as much again), clearly after that retry; and before the
    hard lifetime (life_time from its creation), at half the time left if that comes first."""
    assert self._st.jitter is not None
    jitter = min(max(self._st.jitter(REFUSED_REKEY_DELAY), 0.0), REFUSED_REKEY_DELAY)
    at = self._now + REFUSED_REKEY_DELAY + jitter
    if child.rekey_due is not None:
        at = max(at, child.rekey_due)
    life = child.config.life_time
    if life and child.created_at is not None:
        at = min(at, self._now + max(child.created_at + life - self._now, 0.0) / 2)
    return at


def retry_at(self: IkeSa) -> float:
    """When a request the peer refused for now goes again: 2-10 s from now, at random, so that
    two sides that refused each other do not cross again."""
    return self._now + 2.0 + 8.0 * int.from_bytes(self._st.rng(2), "big") / 0xFFFF


def delay_retry(self: IkeSa, task: Task) -> None:
    """Send what ``task.retry()`` asks for again a little later, on the heir once this SA is replaced."""
    again = task.retry()
    if again is not None:
        at = self._retry_at()
        log.debug("%s: trying the refused request again in %.1f s", self.name, at - self._now)
        self._delay(at, again)


def delay(self: IkeSa, at: float, task: Task) -> None:
    heir = self._heir
    if heir is None:
        self._delayed += ((at, task),)
    elif not heir.is_closed:
        heir._delay(at, task)
        heir._changed()


def dpd_at(self: IkeSa) -> float | None:
    delay = self._st.config.dpd_delay
    if not delay or self._pending is not None or self._queue:
        return None  # an exchange in flight proves liveness (or its retransmits will fail)
    return self._last_heard + delay


def maintenance_timers(self: IkeSa) -> list[float]:
    if self._expired:
        return []  # only the exchange in flight is left: its retransmission deadline is the timer
    timers = [c.rekey_at for c in self._st.children.values() if c.installed and c.rekey_at is not None]
    if self._rekey_at is not None:
        timers.append(self._rekey_at)
    if self._expire_at is not None:
        timers.append(self._expire_at)
    timers += [at for at, _ in self._delayed]
    dpd = self._dpd_at()
    if dpd is not None:
        timers.append(dpd)
    return [t for t in timers if t != float("inf")]


def fire_maintenance(self: IkeSa, now: float) -> None:
    if self._expired:
        return  # nothing new starts on an expired SA (expire)
    if self._expire_at is not None and now >= self._expire_at:
        self._expire()
        return
    if self._rekey_at is not None and now >= self._rekey_at:
        self._rekey_at = float("inf")  # the successor arms its own timer
        self.rekey()
    for child in list(self._st.children.values()):
        if child.installed and child.rekey_at is not None and now >= child.rekey_at:
            self.rekey_child(child.unique_id)
    if any(now >= at for at, _ in self._delayed):
        self._queue += [task for at, task in self._delayed if now >= at]
        self._delayed = tuple(d for d in self._delayed if now < d[0])
        self._start_next()
    dpd = self._dpd_at()
    if dpd is not None and now >= dpd:
        self.send_liveness()


def expire(self: IkeSa) -> None:
    """The hard lifetime (rekey time + over_time) passed. As strongSwan's (ike_sa.c ``delete_``
    queues the DELETE, task_manager_v2.c ``initiate`` holds it while an exchange is in the air),
    the exchange in flight still completes: a late answer to our rekey saves the Child SAs in the
    successor. Bounded unlike strongSwan's: nothing new starts meanwhile (no retry of that exchange,
    no queued or timed one), and the DELETE goes once, never retransmitted (end_expired), so the SA
    ends when that exchange ends, answered or given up (sa.py _give_up): never later than its
    retransmission timeout after the hard lifetime, whatever the peer does."""
    log.debug("%s: IKE SA reached its hard lifetime (rekey_time + over_time)", self.name)
    self._expired = True
    if self._pending is None:
        self._end_expired()
    else:
        log.debug("%s: closing once the exchange in flight (message %d) ends", self.name, self._pending.message_id)


def end_expired(self: IkeSa) -> None:
    """The window of an expired SA is free: the peer hears our DELETE once and the SA closes; quietly
    if a rekey replaced it meanwhile (its Child SAs live on in the successor)."""
    self._send_once(informational.DeleteIkeTask())
    self._close(DownReason.EXPIRED if self._heir is None else DownReason.REKEYED)


def get_timer(self: IkeSa) -> float | None:
    """The earliest of the SA's timers (None: none is armed)."""
    timers = [t for r in self._reassembly.values() if (t := r.deadline) is not None]   # (no generator)
    if self._pending is not None and self._pending.deadline is not None:
        timers.append(self._pending.deadline)
    if self.is_half_open:
        timers.append(self._created + self._st.config.half_open_timeout)
    if self._state == State.REKEYED:
        timers.append(self._linger_until)
    for deadline in (self._resolve_deadline, self._redirect_deadline):
        if deadline is not None:
            timers.append(deadline)
    if self._state == State.ESTABLISHED:
        timers += self._maintenance_timers()
    return min(timers) if timers else None


def handle_timer(self: IkeSa, now: float) -> None:
    """Fire what is due at ``now``: reassembly, redirect and rekey/DPD/lifetime timers, the
    half-open timeout, our request's retransmission."""
    self._now = now
    if self._state == State.CLOSED:
        return
    self._expire_reassembly(now)
    if self._resolve_deadline is not None and now >= self._resolve_deadline:
        self._resolve_failed(f"no address for gateway {self._st.resolving} within {RESOLVE_TIMEOUT:.0f} s")
        return
    if self._redirect_deadline is not None and now >= self._redirect_deadline:
        self._redirect_deadline = None
        log.debug("%s: the client we redirected did not delete its IKE SA; deleting it", self.name)
        self.delete(now, DownReason.REDIRECTED)
    if self._state == State.ESTABLISHED:
        self._fire_maintenance(now)
    if self._state == State.REKEYED and now >= self._linger_until:
        self._close(DownReason.REKEYED)
        return
    if self.is_half_open and now >= self._created + self._st.config.half_open_timeout:
        self._close(DownReason.HALF_OPEN_TIMEOUT)
        return
    pending = self._pending
    if pending is None or pending.deadline is None or now < pending.deadline:
        return
    if pending.attempts >= self._st.config.retransmit.tries:
        self._give_up(pending)
        return
    pending.attempts += 1
    pending.deadline = None
    log.debug("%s: retransmit %d of message %d", self.name, pending.attempts, pending.message_id)
    to = pending.task.resend_to(self._st, pending.to)
    self._outbox.extend((data, to) for data in pending.datagrams)
