"""A rekey we answered: our new outbound SA held back (``ChildState.standby``) until the initiator
shows it has installed the new Child SA, so that nothing we send is lost.

The initiator installs the new Child SA once it has our answer; until then it has no inbound SA for
it, and the old Child SA, which both sides still have, carries the traffic.  The standby ends (the
ADD goes to the worker and the SPD moves to the new SA) at the first of:

- the worker's FIRST_USE: the initiator sends on the new Child SA (``first_use``);
- the initiator's DELETE of the old Child SA (installs._child_down);
- the end of the initiator's retransmissions of its request (``timed_out``): by then it has our
  answer or has given up on the IKE SA.  A fixed timeout (10 s) moved our traffic over even when
  the answer was lost and the initiator would get it only with a later retransmission of its
  request (11.2 s, 24.2 s ... with the defaults): what we sent from then on was dropped there
  (review revrekey F2).  Waiting costs nothing: the old Child SA carries our traffic meanwhile.
  The initiator's settings are not known here: the IKE SA's own (``retransmit_timeout``,
  ``retransmit_base``, ``retransmit_tries``; strongSwan's defaults, about 165 s) stand for them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.ike.config import RetransmitConfig
from tunsec.services.ike import install_failed
from tunsec.services.ike.installs import STANDBY_TIMEOUT
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def first_use(self: IkeService, spi: int) -> bool:
    """The worker's FIRST_USE: an authenticated packet arrived on our inbound SA ``spi``.

    If it belongs to a rekey we answered, the initiator has installed the new Child SA and
    sends on it, so our traffic moves to the new outbound SA now rather than at the old SA's
    DELETE or the standby timeout.  Older standbys of the lineage are dropped: the peer has
    moved past them, and adding one later would move our traffic back.  True if promoted."""
    state = next(self.child_index.inbound(spi), None)
    if state is None or state.standby is None:
        return False   # the DELETE or the timeout came first, or the child is gone
    pred = self.children.get(state.pred) if state.pred is not None else None
    while pred is not None:
        pred.standby = None
        self._unlater(pred.standby_timer)
        pred = self.children.get(pred.pred) if pred.pred is not None else None
    self._spawn(self._changes.queue(promote(self, state, "the peer sends on the new SA")))
    return True


async def timed_out(self: IkeService, state: ChildState, why: str) -> None:
    """The standby timer ran out, STANDBY_TIMEOUT after our answer (IkeService._promote, which
    installs._send_install arms): the initiator may still lack our answer, as long as it may still
    retransmit its request (see the module's docstring).  The rest of that time is waited for; the
    standby ends at its end, unless FIRST_USE or the DELETE of the old Child SA end it first."""
    async with self._changes:
        if state.standby is None or state.handle not in self.children:
            return
        sa = self._ike_sa(state.ike)
        rest = (sa.config.retransmit if sa is not None else RetransmitConfig()).span() - STANDBY_TIMEOUT
        if rest > 0:
            log.debug("%s: CHILD_SA %s: no traffic on %08x_i nor DELETE of the old SA yet; waiting %.0f s more for "
                      "the peer's retransmissions", state.conn, state.child, state.spi_in, rest)
            ended = f"{why}, nor traffic, within the peer's retransmissions"
            state.standby_timer = self._later(rest, lambda: self._spawn(self._changes.queue(
                promote(self, state, ended))))
            return
        await self._add_standby(state, why)


async def promote(self: IkeService, state: ChildState, why: str) -> None:
    async with self._changes:
        await self._add_standby(state, why)


async def add_standby(self: IkeService, state: ChildState, why: str) -> None:
    """ADD a rekey responder's held-back outbound SA (under ``_changes``); the SPD moves to it."""
    await self._install_answered(state)
    spec, state.standby = state.standby, None
    self._unlater(state.standby_timer)
    if spec is None or state.handle not in self.children:
        return
    try:
        await self.worker().request(lambda r: pipe.Add(r, spec))
        state.out_installed = True
        log.debug("%s: CHILD_SA %s sending on %08x_o (%s)", state.conn, state.child, state.spi_out, why)
    except WorkerError as err:   # it cannot send: deleted, as any Child SA whose install failed
        state.out_installed = isinstance(err.__cause__, (OSError, TimeoutError))   # unanswered: may go in late
        if state.handle not in self.children:
            return   # the peer deleted it meanwhile: its _child_down (queued) removes it, once
        ended = self._forget(state)
        install_failed.delete_in_engine(self, self._ike_sa(state.ike), state.unique_id, state.conn, state.child,
                                        f"{state.spi_in:08x}_i, its outbound SA {state.spi_out:08x}, failed: {err}")
        await self._remove(state, ended)
        if ended:
            self._updown_down(state.lineage)
