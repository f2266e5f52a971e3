"""The operator's commands on IKE: ``tunsec initiate`` and ``tunsec terminate`` (--ike, --child).

An initiate of a child whose IKE SA is up adds it there (CREATE_CHILD_SA), as strongSwan does; a
terminate deletes the connection's IKE SAs and stops its tries not sent yet (tries.py) and its
re-creations (recreate.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from tunsec.ike.sa import State
from tunsec.services.ike import recreate, reestablish, tries, vip_refused

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def initiate(self: IkeService, conn: str, child: str | None,
             attempt: tries.Try | None = None) -> asyncio.Future[str | None] | None:
    """The operator's (``attempt`` None), or a scheduled try's (tries.later).  An operator's of a child
    being created again joins that re-creation: the future of its outcome (None: up; else why it
    ended), for the answer (daemon._ike_command)."""
    if conn not in self.connections:
        raise KeyError(conn)
    joined = recreate.waiter(self, conn, child) if attempt is None and child is not None else None
    then = self._initiate
    if attempt is not None and attempt.bound and child is not None:   # a lost peer's, or its IKE SA's
        then = functools.partial(_bound, self, attempt)
    tries.with_spi(self, attempt or tries.Try(conn, child, "initiate"), then)
    self._pump()
    return joined


def _bound(self: IkeService, attempt: tries.Try, conn: str, child: str | None) -> None:
    if not self.closing and child is not None and _still_there(self, conn, child):
        reestablish.initiate(self, conn, child, attempt.ike, attempt.peer)


def _still_there(self: IkeService, conn: str, child: str | None) -> bool:
    # it waited for an SPI (an ACQUIRE, a keying try) while a reload removed the connection or child
    plan = self.connections.get(conn)
    if plan is None or (child is not None and plan.get_child(child) is None):
        log.info("%s: %s not initiated: a reload removed it", conn, f"child {child}" if child else "connection")
        return False
    return True


def _initiate(self: IkeService, conn: str, child: str | None) -> None:
    """An initiation by the connection's name (the operator's, a trap's ACQUIRE, keyingtries, a refused
    virtual IP's retry): a child goes into an IKE SA of the connection that is up.  A re-initiation
    for one peer is bound to it instead (reestablish.py)."""
    if self.closing or not _still_there(self, conn, child):    # it waited for an SPI into the shutdown
        return
    # like strongSwan: a child of a connection whose IKE SA is up is added to it (CREATE_CHILD_SA)
    up = next((sa for sa in self.endpoint.sas if sa.name == conn and sa.state is State.ESTABLISHED), None)
    if up is not None and child is not None and (pending := recreate.of(self, conn, child)) is not None:
        # the IKE SA re-creating it, of the connection's several: in another, it would come up twice
        up = self._ike_sa(pending.ike) or up
    if up is not None and child is not None:
        if not recreate.under_way(self, conn, child):   # else it joins that re-creation: never two
            up.initiate(child)
        return
    if up is None:
        # or, as strongSwan's checkout_by_config, one of ours being set up: the child is asked for
        # after IKE_AUTH, and no second IKE SA is started (two trap or start_action = start
        # children, an ACQUIRE and a keyingtries retry)
        setting_up = next((sa for sa in self.endpoint.sas if sa.name == conn and sa.is_initiator
                           and sa.state is State.CONNECTING), None)
        if setting_up is not None:
            # a keyingtries retry of the child an ACQUIRE's new IKE SA already asks for: once is enough
            if child is not None and not setting_up.creating(child):
                setting_up.initiate(child)
            return
    self.endpoint.initiate(conn, child, time.monotonic())


def terminate(self: IkeService, conn: str) -> tries.Terminated:
    """Delete the connection's IKE SAs, and stop its tries not sent yet (tries.py): scheduled or
    waiting for an SPI (the acquires among them no longer hold its traps back), re-creations."""
    vip_refused.cancel(self, conn)   # a refused virtual IP's count and hold start again
    self.attempts.pop(conn, None)    # and keyingtries': the next initiate has them all
    stopped = self.tries.stop(conn)
    self.acquiring -= {(t.conn, t.child) for t in stopped if t.child is not None}
    said = [t.describe() for t in stopped] + recreate.stop(self, conn)
    if said:
        log.info("%s: terminate %s", conn, tries.stopped_line(said))
    n = 0
    for sa in self.endpoint.sas:
        if sa.name == conn and not sa.is_closed:
            sa.delete(time.monotonic())
            n += 1
    self._pump()
    return tries.Terminated(n, said)


def terminate_child(self: IkeService, conn: str, child: str) -> tries.Terminated:
    """Delete the Child SAs named ``child`` of the connection's IKE SAs (INFORMATIONAL DELETE,
    as ``swanctl --terminate --child``); the IKE SAs stay up.  Its re-creations and tries not sent
    yet stop too: else the child came back a few seconds after the operator's terminate."""
    stopped = self.tries.stop(conn, child)
    self.acquiring.discard((conn, child))
    # its new Child SAs under way (an initiate just before, a trap's, a re-creation's try) never come up:
    # their answers install nothing (review revdelete F2), so a re-creation whose try it was ends now
    if abandoned := sum(sa.abandon_creating(child) for sa in self.endpoint.sas if sa.name == conn and not sa.is_closed):
        log.info("%s: terminate child %s: %d CHILD_SA(s) being set up will not come up", conn, child, abandoned)
    said = [t.describe() for t in stopped] + recreate.stop(self, conn, child)
    if said:
        log.info("%s: terminate child %s: %s", conn, child, tries.stopped_line(said))
    # a stopped re-creation's Child SA whose install is under way is deleted when it ends (recreate.installed):
    # deleted here too, it got two DELETEs (review revops F3)
    installing = {(id(self._ike_sa(p.ike)), self.children[p.joined].unique_id) for p in self._recreating.values()
                  if p.conn == conn and p.child == child and p.joined is not None and p.joined in self.children}
    n = 0
    for sa in self.endpoint.sas:
        if sa.name != conn or sa.state is not State.ESTABLISHED:
            continue
        for ch in sa.children:
            if ch.name == child and (id(sa), ch.unique_id) not in installing:
                sa.delete_child(ch.unique_id, at_once=True)   # its traffic stops now, answered or not
                n += 1
    self._pump()
    return tries.Terminated(n, said, f"CHILD_SA(s) {child} of {conn}")


ANSWER_MARGIN = 1.0   # seconds of the control socket's deadline left for writing the answer


async def joined_answer(joined: asyncio.Future[str | None], conn: str, child: str,
                        deadline: asyncio.Timeout | None) -> dict[str, Any]:
    """The answer of an initiate that joined a re-creation (initiate): its outcome, the child up or
    why it ended (its tries used up, a terminate...), not "initiating" and then nothing.  Waited for
    within the control socket's deadline (a client holds a slot meanwhile); a re-creation still
    under way at its end is said so (its later tries are seconds apart)."""
    wait = None
    if deadline is not None and (when := deadline.when()) is not None:
        wait = max(0.0, when - asyncio.get_running_loop().time() - ANSWER_MARGIN)
    done, _ = await asyncio.wait({joined}, timeout=wait)
    if not done:
        return {"ok": True, "message": f"initiating {conn} child {child}: joined its CHILD_SA's re-creation, still "
                                       "under way (tunsec status shows it)"}
    why = joined.result()
    if why is None:
        return {"ok": True, "message": f"CHILD_SA {child} of {conn} is up (this initiate joined its re-creation)"}
    return {"ok": False, "error": f"CHILD_SA {child} of {conn} is not up: its re-creation, which this initiate "
                                  f"joined, ended: {why}"}
