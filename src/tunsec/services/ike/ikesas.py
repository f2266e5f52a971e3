"""What the service does when IKE SAs come, go or rekey: unique policy, handles across rekeys,
close_action/dpd_action, keying tries."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tunsec.ike.events import DownReason, IkeSaRekeyed, IkeSaUp
from tunsec.ike.sa import IkeSa, State
from tunsec.policy.pad import is_duplicate
from tunsec.services.ike import churn_log, mobility, recreate, reestablish, refusal_log, restart, tries
from tunsec.services.ike.trusted import peer_of

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

# seconds before a lost IKE SA (close_action, dpd_action, hard lifetime) or a failed keying try is
# initiated again; a plain loop timer: a worker restart meanwhile must not cancel it (IkeService._later)
RETRY_DELAY = 1.0


def _unique_keep(self: IkeService, conn: str) -> bool:
    """For the engine: a responder refuses a duplicate of this connection in IKE_AUTH."""
    c = self.connections.get(conn)
    return c is not None and c.unique == "keep"


def _outdated(self: IkeService, sa: IkeSa, ev: IkeSaUp) -> bool:
    """An IKE SA that came up under configuration a reload removed or replaced: deleted at once.
    reload.py closes or re-points those being set up, so this is a bug's backstop: such an SA
    would hold Child SAs with no connection's settings, rekey for ever, and its peer may have
    proved the old credentials (a leaked PSK)."""
    conn = self.connections.get(ev.name)
    if conn is not None and conn.ike is sa.config:
        return reestablish.wrong_peer(self, sa, ev)   # (its own line)
    log.error("%s: IKE SA with %s (%s) came up under a connection a reload %s: deleting it", ev.name,
              ev.remote_id, ev.remote_addr[0], "removed" if conn is None else "changed")
    sa.delete(time.monotonic())
    return True


def _enforce_unique(self: IkeService, fresh: IkeSa, ev: IkeSaUp) -> None:
    """strongSwan's ``unique`` for a new IKE SA whose peer identity already has one on this connection:
    ``replace`` deletes the old ones in the same address family (pad.is_duplicate: a dual-stack
    peer's IPv4 and IPv6 IKE SAs are no duplicates); ``keep`` was decided in IKE_AUTH (the engine
    refused the new one, see IkeEndpoint._refuse_duplicate); ``no``/``never`` allow duplicates
    (INITIAL_CONTACT still replaces, see IkeEndpoint).  Only as the responder of the new IKE SA, as strongSwan's
    IKEv2 (ike_auth.c calls check_uniqueness in build_r, never in process_i): a duplicate we
    initiate is the peer's to judge with its own policy.  The old SAs it replaces may be any
    role's, ones we initiated included (strongSwan's connected-peers table has both)."""
    conn = self.connections.get(ev.name)
    if conn is None or conn.unique != "replace" or fresh.is_initiator:
        return
    dups = [s for s in self.endpoint.sas if s is not fresh and s.name == fresh.name
            and s.state is State.ESTABLISHED
            and is_duplicate(ev.remote_id, fresh.remote_addr[0], s.peer_id, s.remote_addr[0])]
    for old in dups:
        log.info("%s: replacing IKE SA with %s from %s (unique = replace)", ev.name, ev.remote_id,
                 old.remote_addr[0])
        old.delete(time.monotonic(), DownReason.REPLACED)


def _ike_rekeyed(self: IkeService, sa: IkeSa, ev: IkeSaRekeyed) -> None:
    """The successor carries on the old IKE SA's children, so it takes over its handle."""
    new = sa.heir
    # the old SA keeps its handle too: a DELETE for a shared child may still arrive on it.  Those of
    # the same lineage that closed since give theirs up: a look at its few rekeyed SAs (the engine
    # lets at most sa_successor.MAX_UNDELETED linger), never at every IKE SA's handle per rekey
    handle = self._ike_handle(sa)
    kept = [old for old in self._replaced.pop(handle, ()) if not _forgotten(self, old)]
    self._replaced[handle] = [*kept, sa]
    if new is not None:
        self._ike_handles[new] = handle
    info = self.ike_up.pop(sa.local_spi, None)
    # the old SA keeps its reserve at the worker until it is gone (endpoint.on_forget): its DELETE
    # exchange, ours or the peer's, must get through a flood as the rest of its IKE did
    # one closed already was forgotten (on_forget): its SPI would stay for ever, and if the endpoint refused
    # it because another IKE SA has that SPI (IkeEndpoint._succeed), the record and reserve are that SA's
    refused = new is not None and self.endpoint.sa_by_spi(new.local_spi) not in (new, None)
    if info is not None and new is not None and not refused:
        info.update(spi_i=ev.new_spi_i.hex(), spi_r=ev.new_spi_r.hex(), established=time.time())
        self.ike_up[new.local_spi] = info
        if not new.is_closed:
            self.trusted.add(new.local_spi, peer_of(info.ev))   # the same peer: the same share
    # the peer may rekey as often as it likes, each successor replacing the last: its share of lines
    churn_log.line(self, refusal_log.up_key(self, sa, info.ev) if info is not None else ev.name, log,
                   "%s: IKE SA rekeyed, SPIs %s_i %s_r", ev.name, ev.new_spi_i.hex(), ev.new_spi_r.hex())


def _forgotten(self: IkeService, old: IkeSa) -> bool:
    """A rekeyed IKE SA that closed (it goes quietly, without IkeSaDown) gives up its handle."""
    if old.is_closed:
        self._ike_handles.pop(old, None)
    return old.is_closed


def _ike_lineage_gone(self: IkeService, handle: int) -> None:
    """The last IKE SA of a lineage closed: its handle goes, with its rekeyed SAs still lingering
    (their Child SAs, shared, went with it)."""
    self._ike_peers.pop(handle, None)
    restart.release_claims_of(self, handle)   # its Child SAs' claims a worker restart left held
    recreate.ike_gone(self, handle)   # a child it was creating again: its held lineage ends
    if (move := self._moves.pop(handle, None)) is not None and move.left:   # a mover still running or waiting
        mobility._sweep_left(self, move.left)   # ends (mobility._move_children): what it left goes (revfinal K1)
    for old in self._replaced.pop(handle, ()):
        self._ike_handles.pop(old, None)


def _after_loss(self: IkeService, up: IkeSaUp, which: str) -> None:
    """close_action / dpd_action of each child of a connection whose IKE SA (``up``) went away: the
    child back towards that IKE SA's own peer (reestablish.py), never into another peer's."""
    conn = self.connections.get(up.name)
    if conn is None or self.closing:
        return
    _bring_back(self, conn, up, [p.name for p in conn.children if getattr(p, which) == "start"],
                [p.name for p in conn.children if getattr(p, which) == "trap"], f"{which} = start")


def _after_expiry(self: IkeService, up: IkeSaUp) -> None:
    """The IKE SA reached its hard lifetime (over_time after its rekey was due) with no rekey done.

    strongSwan keeps such an SA until its unanswered rekey gives up retransmitting, then reestablishes
    it (ike_sa.c retransmit -> reestablish): each child's dpd_action (start: a new IKE SA with it, trap:
    its trap policies).  The engine closes it then as EXPIRED, not a dead peer (sa_timers.expire), so the
    service does that here, and brings a start_action = start child back as at startup: a
    site-to-site tunnel must not stay down.  A new IKE SA that fails is retried with the connection's
    keyingtries (_retry).  start_action = trap children keep their trap policies all along (traps.py):
    their next packet initiates.  Not when we cannot initiate the same IKE SA (strongSwan's "asymmetric
    setup"): we leased the peer virtual IPs or authenticate it with EAP, i.e. we were its responder
    (whichever side initiated the last IKE rekey, which ``sa.is_initiator`` tells)."""
    conn = self.connections.get(up.name)
    if conn is None or self.closing:
        return
    restart = [p.name for p in conn.children if "start" in (p.start_action, p.dpd_action)]
    _bring_back(self, conn, up, restart, [p.name for p in conn.children if p.dpd_action == "trap"],
                "re-initiation after the IKE SA expired")


def _bring_back(self: IkeService, conn: Connection, up: IkeSaUp, restart: list[str], trap: list[str],
                why: str) -> None:
    """The children of a lost IKE SA: ``restart`` ones initiated again towards its peer (a try bound to
    it), ``trap`` ones (a start_action = trap child keeps its traps all along) wait for traffic.  A
    connection of %any (remote_addrs) gets no trap: its remote_ts is every peer's, an ACQUIRE would
    initiate by the connection's name; none of it where the peer reconnects by itself (asymmetric)."""
    if reestablish.asymmetric(conn, up):
        if restart or trap:
            log.info("%s: not re-initiating %s towards %s: we were its responder (virtual IPs or EAP), it "
                     "reconnects by itself", up.name, ", ".join(restart or trap), up.remote_id)
        return
    peer = reestablish.LostPeer.of(up)
    for name in (t for t in trap if conn.child(t).start_action != "trap" and t not in restart):
        if not reestablish.named(conn):
            log.info("%s: child %s: no trap after the loss of %s: remote_addrs is %%any (the trap would be "
                     "every peer's)", up.name, name, up.remote_id)
            continue
        log.info("%s: child %s waits for traffic (trap)", up.name, name)
        self._spawn(self.install_traps(only=(up.name, name)))
    for name in restart:
        log.info("%s: %s: re-initiating child %s towards %s (%s)", up.name, why, name, up.remote_id,
                 up.remote_addr[0])
        tries.later(self, RETRY_DELAY, up.name, name, why, peer=peer)


def _retry(self: IkeService, conn_name: str, creating: tuple[str, ...] = (), sa: IkeSa | None = None) -> None:
    """keyingtries: a new IKE SA for one we initiated that got no answer, asking again for the
    children it was creating (as strongSwan moves the failed SA's child tasks to the new one), so a
    trap child's IKE SA comes back with its Child SA and not bare until the next packet.  One that
    went towards a lost peer (``sa``, reestablish.py) tries that peer again, nobody else."""
    peer = self.reestablishing.pop(sa, None) if sa is not None else None
    conn = self.connections.get(conn_name)
    if conn is None or self.closing:
        return
    failed = self.attempts[conn_name] = self.attempts.get(conn_name, 0) + 1
    if conn.keyingtries and failed >= conn.keyingtries:
        if conn.keyingtries > 1:
            log.error("%s: giving up after %d keying tries", conn_name, failed)
        self.attempts.pop(conn_name, None)
        return
    log.info("%s: keying try %d%s failed; trying again", conn_name, failed,
             f" of {conn.keyingtries}" if conn.keyingtries else "")
    children: list[str | None] = [*creating] or [p.name for p in conn.children if p.start_action == "start"] or [None]
    for child in children:
        if peer is not None and child is None:
            continue   # (a bound try names its child: the lost peer's, which it was creating)
        tries.later(self, RETRY_DELAY, conn_name, child, "keyingtries", peer=peer)
