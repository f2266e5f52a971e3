"""Re-initiations bound to the peer they are for (review revvanish F1, F2).

A child brought back after a loss (close_action, dpd_action, an IKE SA's hard lifetime) or after
its peer deleted it (the Child SA's close_action) is the lost SA's peer's, never just the
connection's: on a connection of %any every peer's IKE SA has the connection's name, and an
initiation by name alone put one peer's child into another peer's IKE SA.  So such a try carries
(tries.Try):

- ``ike``: the IKE SA handle the child goes back into (the Child SA's own close_action); while
  that IKE SA is established, else nothing (its peer is gone: its loss's own action applies), as
  recreate.py's re-creations are bound to ``Pending.ike``;
- ``peer``: the lost IKE SA's peer (strongSwan's ike_sa.c ``reestablish``): the child goes into
  an IKE SA of that peer that is up or being set up by us, else into a new IKE SA towards it: the
  connection's ``remote_addrs`` where it names one (strongSwan resolves its configured hosts), the
  lost SA's address where it is %any, and then only a peer with the lost identity may answer there
  (wrong_peer).  Not at all where we were the responder that leased the peer virtual IPs or
  authenticated it with EAP (``asymmetric``): a road warrior reconnects by itself.

The operator's ``initiate``, a trap's ACQUIRE and keyingtries are not bound: they take the
connection's IKE SA as before (commands._initiate)."""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from typing import TYPE_CHECKING

from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa, State

if TYPE_CHECKING:
    from tunsec.conf.connections import Connection
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


@dataclasses.dataclass(frozen=True)
class LostPeer:
    """The peer of an IKE SA that went: where it was and who it proved to be."""
    addr: str
    id: Identity

    @classmethod
    def of(cls, up: IkeSaUp) -> LostPeer:
        return cls(up.remote_addr[0], up.remote_id)


class Reestablishing(weakref.WeakKeyDictionary[IkeSa, LostPeer]):
    """Our IKE SAs set up towards a lost peer's address (a connection of %any), with that peer: held
    weakly, one that fails before IKE_AUTH goes with its IkeSa."""


def asymmetric(conn: Connection, up: IkeSaUp) -> bool:
    """We leased the peer virtual IPs or authenticated it with EAP: we were its responder and cannot
    set the same IKE SA up ourselves (strongSwan: "unable to reestablish IKE_SA due to asymmetric
    setup"); it reconnects by itself."""
    return bool(up.peer_vips) or conn.ike.remote.method.startswith("eap")


def named(conn: Connection) -> bool:
    """The connection names the address of its one peer (``remote_addrs``): a trap or an initiation
    by its name alone reaches that peer; on one of %any it may reach any peer's IKE SA."""
    return conn.ike.remote_addr is not None


def initiate(self: IkeService, conn: str, child: str, ike: int | None, peer: LostPeer | None) -> None:
    """A bound try's initiation, once an inbound SPI is at hand (commands._initiate for the rest)."""
    if ike is not None:
        _into_own(self, conn, child, ike)
    elif peer is not None:
        _towards(self, conn, child, peer)


def _into_own(self: IkeService, conn: str, child: str, ike: int) -> None:
    sa = self._ike_sa(ike)
    if sa is None or sa.state is not State.ESTABLISHED:
        log.info("%s: child %s not created again: its IKE SA is gone", conn, child)
        return
    if not _has(sa, child):
        sa.initiate(child)


def _has(sa: IkeSa, child: str) -> bool:
    """The IKE SA holds a Child SA of ``child`` or is creating one (its peer came back with it, or a
    re-creation of recreate.py is under way there): a second would be a duplicate."""
    return sa.creating(child) or any(c.name == child for c in sa.children)


def _towards(self: IkeService, conn: str, child: str, peer: LostPeer) -> None:
    plan = self.connections[conn]
    theirs = [sa for sa in self.endpoint.sas if sa.name == conn and not sa.is_closed and _is_peer(plan, sa, peer)]
    up = next((sa for sa in theirs if sa.state is State.ESTABLISHED), None)
    if up is not None:   # it came back (or another of its IKE SAs is up): the child goes there
        if not _has(up, child):
            up.initiate(child)
        return
    setting_up = next((sa for sa in theirs if sa.is_initiator and sa.state is State.CONNECTING), None)
    if setting_up is not None:
        if not setting_up.creating(child):
            setting_up.initiate(child)
        return
    if named(plan):
        self.endpoint.initiate(conn, child, time.monotonic())
        return
    sa = self.endpoint.initiate(conn, child, time.monotonic(), remote=(peer.addr, plan.ike.remote_port))
    self.reestablishing[sa] = peer   # its identity checked at IkeSaUp (wrong_peer), its keyingtries bound (_retry)


def _is_peer(plan: Connection, sa: IkeSa, peer: LostPeer) -> bool:
    """``sa`` is with the lost peer: on a named connection any of it (one peer); else the identity it
    proved, or, before IKE_AUTH, the address a reestablish of ours goes to."""
    if named(plan):
        return True
    if sa.peer_id is not None and sa.state is State.ESTABLISHED:
        return sa.peer_id == peer.id
    return sa.is_initiator and sa.remote_addr[0] == peer.addr


def wrong_peer(self: IkeService, sa: IkeSa, ev: IkeSaUp) -> bool:
    """An IKE SA we set up towards a lost peer's address came up with another identity: deleted at
    once, before its Child SA is installed (the address is someone else's now; the connection is
    %any, so the engine took any identity it allows)."""
    expected = self.reestablishing.pop(sa, None)
    if expected is None or ev.remote_id == expected.id:
        return False
    log.error("%s: IKE SA set up again towards %s came up with %s, not the lost peer %s: deleting it", ev.name,
              ev.remote_addr[0], ev.remote_id, expected.id)
    sa.delete(time.monotonic())
    return True
