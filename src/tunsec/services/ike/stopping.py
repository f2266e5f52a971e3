"""The IKE service's stop (IkeService.shutdown): every IKE SA deleted, and nothing new set up
meanwhile (review revupdown2 F2).

The stop lasts up to updown.STOP_WAIT (the down-clients' drain), long enough for a peer to connect,
or a road warrior to reconnect at once after our DELETE.  As strongSwan's charon at its shutdown
(the processor has no thread left: a request is not answered), an IKE_SA_INIT request gets no
answer once the stop began: counted (``ike_drops.stopping``), the peer retransmits and tries
again elsewhere or later; the peer's CREATE_CHILD_SAs meet IKE SAs the stop put in DELETING,
which the engine refuses (TEMPORARY_FAILURE); an IKE SA that completes anyway (its IKE_AUTH was
in flight) is deleted at once, before any of its Child SAs is installed or announced to a script.
The scripts' queue is closed at once too: no up-client runs after the stop began, so none is left
without its down-client.  The deletes' events are handled at once (the Child SAs go down in the
service whether or not the peer answers), and the drain waits for the removals from the worker
that queue their down-clients (Scripts.expect).  The DELETE exchanges of the SAs being deleted go on as before: the
stop waits for those, and only those, to be answered (SHUTDOWN_WAIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from tunsec import updown
from tunsec.ike.constants import is_ike_sa_init
from tunsec.ike.sa import IkeSa

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

SHUTDOWN_WAIT = 3.0   # seconds for the peers to acknowledge our DELETEs at shutdown
ACCT_SHUTDOWN_WAIT = 3.0   # seconds for the last RADIUS accounting records at shutdown (a dead server)


async def shutdown(self: IkeService) -> None:
    """Delete every IKE SA (the peer learns it now, not at its DPD timeout)."""
    self.closing = True
    self.scripts.closing = True   # no up-client from now on (its down would never run)
    stop_began = asyncio.get_running_loop().time()
    for task in self._relay_rounds.values():
        task.cancel()     # the IKE SAs they wait for are deleted next
    for sa in self.endpoint.sas:
        _delete(self, sa)
    # their events now (the deletes left them in the SAs): each Child SA goes down in the service,
    # its removal from the worker and down-client queued, whether or not the peer answers the
    # DELETE (a flush alone left them for the next input, none from a silent peer: h/fixdown)
    self._pump()
    await _await_deletes(self, time.monotonic() + SHUTDOWN_WAIT)
    await self.scripts.drain(stop_began + updown.STOP_WAIT)   # the down-clients the deletes queued
    if self._tasks or self.sockets.natt_sends:
        await asyncio.wait([*self._tasks, *self.sockets.natt_sends], timeout=2.0)
    if self.accounting is not None:   # the Stops of the IKE SAs just deleted and of those still up, the Off
        await self.accounting.shutdown(ACCT_SHUTDOWN_WAIT)
    if self._timer:
        self._timer.cancel()
        self._timer = None
    self._cancel_timers()
    self.ke_refill.stop()   # no key pair outlives the service


def _delete(self: IkeService, sa: IkeSa) -> None:
    if not sa.is_closed:
        self.stop_deleted.add(sa)
        with contextlib.suppress(Exception):
            sa.delete(time.monotonic())


async def _await_deletes(self: IkeService, deadline: float) -> None:
    """Until the peers acknowledged the stop's DELETEs (their answers come in through the worker,
    still running) or the deadline: the worker stops after this."""
    while any(not sa.is_closed for sa in self.stop_deleted) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def refuses(self: IkeService, data: bytes) -> bool:
    """An IKE_SA_INIT request while the service stops: dropped unanswered, counted."""
    if self.closing and is_ike_sa_init(data, 0):
        self.endpoint.stats.stopping += 1
        return True
    return False


def came_up(self: IkeService, sa: IkeSa) -> bool:
    """An IKE SA established during the stop: deleted at once (nothing of it reaches the worker
    nor the scripts: ChildSaUp skips a DELETING SA not in ike_up)."""
    if not self.closing:
        return False
    _delete(self, sa)
    return True
