"""The log lines of what an authenticated peer may repeat as often as it likes (review revpeerdos
F3): its Child SAs made, rekeyed and deleted, its IKE SA rekeyed.  A create/delete loop is two
round trips within max_child_sas, on each of its max_ike_sas_per_identity IKE SAs; unlimited, its
two INFO lines per loop reached journald's rate limit, which then dropped every tunsec line (the
other peers' authentication failures that fail2ban reads, errors).  These lines go through a
limiter per peer (loglimit.PeerLogLimiter: the identity and proof, trusted.peer_of, as the IKE SA
cap counts them: refusal_log.peer_key, IkeService.log_peer; a name the client chooses, an unproven
eap-radius one or any a group PSK's holder gives, by its connection and source: review revpool2 F1,
F2); what is held is counted in the next line admitted, and written at DEBUG.  After the peer's own
limit, CEILING lines a PERIOD for all peers together (the per-peer limits alone passed 1024 peers'
bursts, 10,240 lines a minute: review revpool2's remark): enough for the peers' rekeys of a large
gateway's clients (two lines each, 18,000 clients rekeying once an hour), the rest at DEBUG.

Never limited: the lines of what we started (our own initiations and rekeys, operators' and tests'
commands wait for them), of the IKE_AUTH Child SA (the engine's first id of an IKE SA's lineage: the
peer pays a whole IKE SA for each), and of deletions that are not the peer's; the counters and
metrics count every one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tunsec.ike.events import DownReason
from tunsec.loglimit import PeerLogLimiter, suffix

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

FIRST_CHILD = 1   # ike/state.py new_child_id's first: the IKE_AUTH Child SA's unique_id
BURST = 10        # lines of one peer's churn per PERIOD ...
PERIOD = 60.0     # ... seconds, then held and counted
CEILING = 600     # lines of all peers' churn together per PERIOD


def limiter() -> PeerLogLimiter:
    return PeerLogLimiter(burst=BURST, period=PERIOD, ceiling=CEILING)


def child_peer(self: IkeService, ike: int, unique_id: int, theirs: bool, where: str) -> object | None:
    """The peer whose share a Child SA's line takes; None: not limited (``theirs`` False: we started
    it, or the deletion is not the peer's; or the IKE_AUTH Child SA)."""
    if not theirs or unique_id == FIRST_CHILD:
        return None
    return self.log_peer(self._ike_sa(ike), where)


def peer_deleted(reason: DownReason) -> bool:
    """The peer ended the Child SA: its DELETE, or its CHILD_SA_NOT_FOUND to our rekey (each of our
    rekeys may be answered so: review revrekey2 R3)."""
    return reason in (DownReason.DELETED_BY_PEER, DownReason.LOST_BY_PEER)


def line(self: IkeService, peer: object | None, logger: logging.Logger, msg: str, *args: object,
         level: int = logging.INFO) -> None:
    """``msg`` at ``level``, or if ``peer``'s lines are over its limit at DEBUG only (counted in its next)."""
    held = self.churn_log.admit(peer) if peer is not None else 0
    if held is None:
        logger.debug(msg, *args)
        return
    logger.log(level, msg + "%s", *args, suffix(held))
