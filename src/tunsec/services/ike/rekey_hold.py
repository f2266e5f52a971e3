"""A Child SA the peer deleted while our rekey of it is out (CreateChildTask.takes_peer_delete): the
engine has taken it out of its IKE SA's ``children`` but reports it down only when the rekey ends
(REKEYED once the new one is up, DELETED_BY_PEER if none comes up).  Until then it is still its
IKE SA's, and the service keeps what it stands for (review revdel5):

- its claim across a worker restart (restart.worker_restarted holds it, as for any Child SA the
  restart rekeys; the rekey's ChildSaUp, its ChildSaDown or its IKE SA's end release it).  Removed,
  another peer's request read before the answer took its subnet, and the owner's answer was refused;
- its EXPIREs' counters (radius_edge._acct_expired: the hard one's are final, else lost from the
  Stop).  The EXPIRE itself asks nothing more: a rekey is out already (soft), and the Child SA ends
  with it (hard; the engine no longer lists it to delete).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def held(svc: IkeService, state: ChildState) -> bool:
    """The engine holds the service's Child SA ``state`` for our rekey of it (IkeSa.held_children)."""
    sa = svc._ike_sa(state.ike)
    return sa is not None and any(c.unique_id == state.unique_id for c in sa.held_children())


def expired(svc: IkeService, state: ChildState, hard: bool) -> bool:
    """An EXPIRE of a held Child SA: nothing to do (True), as its rekey is out and ends it.  False if
    ``state`` is not held (its EXPIRE is handled as usual)."""
    if not held(svc, state):
        return False
    log.info("%s: CHILD_SA %s reached its %s limit while our rekey of it is out (the peer deleted it): it ends "
             "with the rekey", state.conn, state.child, "hard" if hard else "soft")
    return True
