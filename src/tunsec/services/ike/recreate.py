"""A Child SA our own rekey replaced, whose new Child SA the worker did not take: created again.

The engine deletes the old Child SA once our rekey succeeds, and the new one is deleted when its
install fails (install_failed.py): without this the IKE SA would hold no such Child SA until a trap,
the peer or an operator started it again.  So it is started again in the same IKE SA (CREATE_CHILD_SA
for the same child), at most TRIES times, RETRY_DELAY seconds after the failure and twice as long
after each further one, counted (child_recreate) and logged once per failure and once at the end.

Its traffic is never sent in clear meanwhile: the lineage (reqid, PROTECT policies) is held by a
token member, so its policies stay in the worker bound to no SA (the worker drops the packets and
raises ACQUIREs, which start nothing: traps._child_acquire); the new Child SA joins that lineage
(installs._child_registered) and its ADD binds them.  The lineage ends, as it would have, when the
tries are used up or the IKE SA goes.  Only that IKE SA's Child SA is touched: nothing of another
peer's."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import TYPE_CHECKING

from tunsec.ike.sa import State
from tunsec.ike.ts import Ts
from tunsec.services.ike import installs
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
            _end(self, pending)
        return False
    if pending is None:
        pending = self._recreating[key] = Pending(state.ike, state.conn, state.child, state.local_ts,
                                                  state.remote_ts, state.lineage, next(self._handles))
        state.lineage.members.add(pending.token)
    pending.joined = None
    self._unlater(pending.timer)
    return _schedule(self, pending)


def refused(self: IkeService, ike: int, child: str) -> None:
    """Our CREATE_CHILD_SA of ``child`` in IKE SA ``ike`` failed (the peer refused it, or no SPI):
    if it was a re-creation, the next try is scheduled (or the tries are used up)."""
    pending = self._recreating.get((ike, child))
    if pending is not None and pending.joined is None and pending.timer is None and pending.tries:
        _schedule(self, pending)


def _schedule(self: IkeService, pending: Pending) -> bool:
    """The next try after its delay; False (the lineage ends) if the tries are used up."""
    if pending.tries >= TRIES:
        log.error("%s: CHILD_SA %s not created again after %d tries: its traffic is dropped until the peer, a "
                  "trap or an operator starts it", pending.conn, pending.child, pending.tries)
        _end(self, pending)
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
        _end(self, pending)
        return
    pending.tries += 1
    self.events.child_recreate[(pending.conn, pending.child)] += 1
    sa.initiate(pending.child)


def join(self: IkeService, ike: int, child: str, local_ts: tuple[Ts, ...], remote_ts: tuple[Ts, ...],
         handle: int) -> Pending | None:
    """The re-creation a new Child SA ``handle`` of IKE SA ``ike`` is, if any (the same child and
    selectors; ours, or the peer's made meanwhile): it joins its lineage (None: one of its own)."""
    pending = self._recreating.get((ike, child))
    if pending is None or pending.joined is not None or (pending.local_ts, pending.remote_ts) != (local_ts,
                                                                                                 remote_ts):
        return None
    pending.joined = handle
    self._unlater(pending.timer)
    pending.timer = None
    return pending


def installed(self: IkeService, state: ChildState) -> None:
    """A Child SA's install said OK: if it was one created again, that is done."""
    pending = self._recreating.get((state.ike, state.child))
    if pending is not None and pending.joined == state.handle:
        log.info("%s: CHILD_SA %s created again", state.conn, state.child)
        del self._recreating[(state.ike, state.child)]
        if pending.lineage is not None:
            pending.lineage.members.discard(pending.token)


def _end(self: IkeService, pending: Pending) -> None:
    """No more tries: the token goes, and the lineage with it if it holds nothing else (its policies)."""
    self._recreating.pop((pending.ike, pending.child), None)
    self._unlater(pending.timer)
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
        _end(self, pending)


def worker_restarted(self: IkeService) -> None:
    """Before the restart releases the booked Child SAs' lineages: a held lineage none of them is in
    is released here (its policies went with the old worker), and each child being created again is
    asked for again now, in a lineage of its own (the restart's timers went)."""
    for pending in list(self._recreating.values()):
        if (lineage := pending.lineage) is not None:
            lineage.members.discard(pending.token)
            if not any(h in self.children for h in lineage.members):
                self._release(lineage)
                self._updown_down(lineage)
        pending.lineage, pending.timer, pending.joined = None, None, None
        self.spi_pool.with_spi(functools.partial(_initiate, self, pending))
