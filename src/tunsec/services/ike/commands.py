"""The operator's commands on IKE: ``tunsec initiate`` and ``tunsec terminate`` (--ike, --child).

An initiate of a child whose IKE SA is up adds it there (CREATE_CHILD_SA), as strongSwan does; a
terminate deletes the connection's IKE SAs and stops its tries not sent yet (tries.py) and its
re-creations (recreate.py)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tunsec.ike.sa import State
from tunsec.services.ike import recreate, tries, vip_refused

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def initiate(self: IkeService, conn: str, child: str | None, attempt: tries.Try | None = None) -> None:
    """The operator's (``attempt`` None), or a scheduled try's (tries.later)."""
    if conn not in self.connections:
        raise KeyError(conn)
    tries.with_spi(self, attempt or tries.Try(conn, child, "initiate"), self._initiate)
    self._pump()


def _initiate(self: IkeService, conn: str, child: str | None) -> None:
    if self.closing:    # it waited for an SPI into the shutdown
        return
    # it waited for an SPI (an ACQUIRE, a keying try) while a reload removed the connection or child
    plan = self.connections.get(conn)
    if plan is None or (child is not None and plan.get_child(child) is None):
        log.info("%s: %s not initiated: a reload removed it", conn, f"child {child}" if child else "connection")
        return
    # like strongSwan: a child of a connection whose IKE SA is up is added to it (CREATE_CHILD_SA)
    up = next((sa for sa in self.endpoint.sas if sa.name == conn and sa.state is State.ESTABLISHED), None)
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


def terminate_child(self: IkeService, conn: str, child: str) -> int:
    """Delete the Child SAs named ``child`` of the connection's IKE SAs (INFORMATIONAL DELETE,
    as ``swanctl --terminate --child``); the IKE SAs stay up.  How many deletes were started."""
    n = 0
    for sa in self.endpoint.sas:
        if sa.name != conn or sa.state is not State.ESTABLISHED:
            continue
        for ch in sa.children:
            if ch.name == child:
                sa.delete_child(ch.unique_id)
                n += 1
    self._pump()
    return n
