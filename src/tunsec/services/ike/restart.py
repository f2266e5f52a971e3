"""A dataplane worker restart: the new worker has an empty SAD and SPD, the engine's IKE SAs and
Child SAs live on, and every Child SA is rekeyed into the new worker (worker_restarted).

Until each one's rekey is recorded, what the old Child SAs stood for must hold:

- Their claims (policy/claims.py): the remote selectors each held stay claimed, kept by (IKE SA
  handle, unique id), until the rekey naming it is recorded (ChildSaUp's rekey_of), the engine
  reports it down, or its IKE SA goes.  Cleared, an authenticated peer's request read before the
  owner's answer to our rekey took another peer's subnet, and the owner's answer was then refused.
- Their inbound SPIs are the old worker's (SpiPool.issued): never DELETEd in the new worker, which
  may have given that number to another peer's new SA (installs._delete_sa).
- A Child SA negotiated across the restart (our CREATE_CHILD_SA or IKE_AUTH took its inbound SPI
  from the old worker's pool, the answer came after) cannot be installed: its UPDATE would find no
  larval SA, the engine would keep it up, and nothing would ever rekey it (the restart's rekeys
  passed it by, as a rekey was under way).  It is rekeyed at once with an SPI of the new worker,
  its claim held meanwhile (stale_spi).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

from tunsec.ike.events import ChildSaUp
from tunsec.ike.sa import IkeSa
from tunsec.services.ike import child_index, mobility, recreate, rekey_hold
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def worker_died(self: IkeService) -> None:
    """The worker died (daemon._watch_worker, before its successor starts).  The daemon starts the new
    worker and reinstalls the services before this one (the manual service) first: until
    worker_restarted, nothing of the old worker's Child SAs may go into the new one, where nothing
    would ever delete it (their removals are the old worker's generation).  A standby timer, the
    peer's DELETE of the old Child SA (IKE on port 500 needs no worker) or a FIRST_USE would ADD a
    rekey responder's held-back outbound SA (review revnonce R2): the timers stop and the held-back
    SAs are dropped; worker_restarted rekeys those Child SAs into the new worker anyway."""
    self._cancel_timers()   # their SPIs mean nothing (or someone else's SA) to the new worker
    for state in self.children.values():
        state.standby = None


async def worker_restarted(self: IkeService) -> None:
    """A new worker has an empty SAD: IKE SAs survive, their children must be renegotiated."""
    self._acct_worker_restarted()   # their usage so far stays in the sessions' totals
    self.spi_pool.clear(spi for sa in self.endpoint.sas for spi in sa.inbound_spis())
    self.trusted.resend()   # first: the new worker's IKE events from the established peers have their reserve
    worker_died(self)   # as the daemon said it at the death (an in-process worker's restart did not)
    self._lingering.clear()   # nor do lingering inbound SAs' (their timers just went)
    self.going.clear()   # nor any SA of a Child SA let go (going_sas.py)
    # after the timers went (it arms its own again), before the loop below releases the booked Child SAs' lineages
    recreate.worker_restarted(self)
    for state in self.children.values():
        self._release(state.lineage)
        # its SAs are gone: down now, in its IKE SA's turn, before the up of the Child SA that is
        # renegotiated below (a lineage of its own, maybe another reqid): each up has its down
        self._updown_down(state.lineage)
        # its selectors stay its peer's until it is rekeyed (or our rekey of it out ends: rekey_hold.py)
        if child_index.still_held(self, state) or rekey_hold.held(self, state):
            hold_claim(self, state.ike, state.unique_id, state.handle)
        else:   # no longer its IKE SA's (defensive: its ChildSaDown would have unbooked it): nothing releases them
            self.ts_claims.remove(state.handle)
    child_index.clear(self)
    self._by_uid.clear()
    self._by_ike.clear()
    left = [a for m in self._moves.values() for a in m.left]
    self._moves.clear()   # their movers end: the new Child SAs are installed where their IKE SAs are
    mobility._sweep_left(self, left)   # what they had left goes, not at some later sweep (review revfinal K1)
    self.ids.release_policy_ids(list(self.trap_policies))
    self.trap_policies.clear()
    await self.spi_pool.refill()
    if not self.spi_pool.spis:          # the refill in flight at the restart asked the old worker
        await self.spi_pool.refill()
    await self.install_traps()
    for sa in self.endpoint.sas:
        with contextlib.suppress(Exception):
            for child in sa.children:
                self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, child.unique_id))
    self._pump()


def hold_claim(self: IkeService, ike: int, unique_id: int, handle: int) -> None:
    """Keep the claims booked under ``handle`` (in ts_claims) for Child SA ``unique_id`` of IKE SA
    ``ike`` until its rekey is recorded, it goes down, or its IKE SA goes."""
    self._held_claims.setdefault(ike, {})[unique_id] = handle


def release_claim(self: IkeService, ike: int, unique_id: int | None) -> None:
    """Child SA ``unique_id`` of IKE SA ``ike`` was rekeyed (recorded) or went: its held claims go."""
    if unique_id is None or (held := self._held_claims.get(ike)) is None:
        return
    if (handle := held.pop(unique_id, None)) is not None:
        self.ts_claims.remove(handle)
    if not held:
        del self._held_claims[ike]


def release_claims_of(self: IkeService, ike: int) -> None:
    """IKE SA ``ike`` is gone (the last of its lineage): every claim held for its Child SAs goes."""
    for handle in self._held_claims.pop(ike, {}).values():
        self.ts_claims.remove(handle)


def stale_spi(self: IkeService, sa: IkeSa, ev: ChildSaUp, ike: int, peer: object, named: bool,
              by_name: bool) -> None:
    """A Child SA came up with an inbound SPI an older worker issued (see the module docstring): not
    installed; its selectors are claimed (held as an old Child SA's) and it is rekeyed now, with an
    SPI of the current worker, which installs it.  Should the rekey be refused, the Child SA stays
    claimed and uninstalled until its IKE SA deletes it, as the engine holds it."""
    log.warning("%s: CHILD_SA %s %08x_i %08x_o negotiated across a worker restart (its inbound SPI is the "
                "old worker's): rekeying it into the new worker", sa.name, ev.child, ev.spi_in, ev.spi_out)
    handle = next(self._handles)
    self.ts_claims.add(handle, sa.name, peer, ev.remote_ts, ev.local_ts, named, by_name)
    hold_claim(self, ike, ev.unique_id, handle)
    self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, ev.unique_id))


def rekey_uninstalled(self: IkeService, state: ChildState) -> None:
    """A booked Child SA whose UPDATE found no larval SA (installs._child_up) and whose IKE SA still
    holds it: its claims (kept by _forget) are held, and it is rekeyed with an SPI of the current worker."""
    log.warning("%s: CHILD_SA %s %08x_i %08x_o has no inbound SA in the worker: rekeying it", state.conn,
                state.child, state.spi_in, state.spi_out)
    hold_claim(self, state.ike, state.unique_id, state.handle)
    if (sa := self._ike_sa(state.ike)) is not None:
        self.spi_pool.with_spi(functools.partial(self._rekey_child, sa, state.unique_id))
        self._pump()
