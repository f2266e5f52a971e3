"""Trap policies (start_action = trap): installed with a reqid no SA gets, their ACQUIRE initiates."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Action, Policy
from tunsec.ike.sa import State
from tunsec.policy.ids import Band, priority
from tunsec.policy.selector import SelectorError, fast_selectors

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


async def _remove_traps(self: IkeService, conns: set[str]) -> None:
    for pid, (conn, _child) in list(self.trap_policies.items()):
        if conn not in conns:
            continue
        del self.trap_policies[pid]
        with contextlib.suppress(WorkerError):
            await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]
        self.ids.release_policy_ids([pid])
    for key in [k for k in self.trap_reqids if k[0] in conns]:
        self.ids.release_reqid(self.trap_reqids.pop(key))


def owns_policy(self: IkeService, policy_id: int) -> bool:
    return policy_id in self.trap_policies


async def install_traps(self: IkeService, only: tuple[str, str] | None = None) -> None:
    """Trap policies of start_action = trap children (or of the one child named)."""
    for conn in self.connections.values():
        ike = conn.ike
        for ch in ike.children:
            if only is not None:
                if only != (ike.name, ch.name) or (ike.name, ch.name) in self.trap_policies.values():
                    continue
            elif conn.child(ch.name).start_action != "trap":
                continue
            local = [t.resolve(ike.local_addr) for t in ch.local_ts]
            remote = [t.resolve(ike.remote_addr) for t in ch.remote_ts]
            try:
                trap = fast_selectors([t for t in local if t], [t for t in remote if t]).outbound
            except SelectorError as err:
                log.error("%s: child %s: no trap policy: %s", ike.name, ch.name, err)
                continue
            for sel in trap:
                pid = self.ids.policy_id()
                self.trap_policies[pid] = (ike.name, ch.name)
                reqid = self._trap_reqid(ike.name, ch.name)
                pol = Policy(id=pid, priority=priority(Band.TRAP), action=Action.PROTECT, reqid=reqid,
                             selector=sel)
                await self.worker().request(lambda r, pol=pol: pipe.SpdAdd(r, pol))  # type: ignore[misc]


def _trap_reqid(self: IkeService, conn: str, child: str) -> int:
    """A reqid no SA ever gets: its policies always raise ACQUIRE."""
    reqid = self.trap_reqids.get((conn, child))
    if reqid is None:
        reqid = self.trap_reqids[(conn, child)] = self.ids.reqid()
    return reqid


def acquire(self: IkeService, policy_id: int) -> None:
    target = self.trap_policies.get(policy_id)
    if target is None:
        return
    conn, child = target
    if any(c.conn == conn and c.child == child for c in self.children.values()):
        return
    # only our own IKE SA being set up for it is "under way"; a half-open SA some peer
    # started (as responder) must not hold our traffic back
    if any(sa.name == conn and sa.is_initiator and sa.state in (State.IDLE, State.CONNECTING)
           for sa in self.endpoint.sas):
        return
    log.info("%s: traffic for child %s: initiating (start_action = trap)", conn, child)
    self.initiate(conn, child)
