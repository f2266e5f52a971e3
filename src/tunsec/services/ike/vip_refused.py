"""A client that cannot use the virtual IP its gateway assigned ends the connection, and tries again later.

The address may be one the host reaches outside the TUN (its router, a LAN neighbour, another
interface's: VirtualIps refuses it), or the gateway assigned none the engine would take (reserved, an
IKE peer's, none at all: its Child SA was refused FAILED_CP_REQUIRED).  Kept up, such an IKE SA looked
connected (status, the updown script's up-client) while nothing of the LAN matched its selectors.
RFC 7296 §3.15.4: an initiator that did not get the address its policy requires MAY delete the IKE SA
and retry "after some timeout.  Such a timeout should not be too short"; strongSwan's client fails the
connection when a requested virtual IP is missing.

So the IKE SA is deleted (DownReason.VIP_REFUSED: its Child SAs go with it, and an updown script that
heard up-client hears down-client), logged once with the address, the gateway and why, and the
connection is initiated again as a failed keying try is (``keyingtries`` IKE SAs in a row, 0: for
ever), FIRST_DELAY seconds later, doubling up to MAX_DELAY: the gateway will likely assign the same
address again, and at once would be an IKE_SA_INIT and IKE_AUTH a second.  Meanwhile the traffic of
its trap children initiates nothing (traps._under_way).  An IKE SA whose virtual IPs all went on the
TUN ends the count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunsec.ike.events import DownReason
from tunsec.ike.sa import State
from tunsec.services.ike import tries
from tunsec.services.ike.state import IPAddress

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

FIRST_DELAY = 2.0
MAX_DELAY = 300.0


@dataclass
class Refusals:
    """Per connection: IKE SAs in a row that ended for their virtual IP, and until when (monotonic)
    nothing but its scheduled try initiates it."""

    failed: dict[str, int] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)


def delay(failed: int) -> float:
    """Seconds before the next try after ``failed`` refusals in a row."""
    return min(FIRST_DELAY * 2.0 ** (failed - 1), MAX_DELAY)


def refused(self: IkeService, handle: int, conn: str, addr: IPAddress | None, why: str) -> None:
    """The IKE SA behind ``handle`` got ``addr`` (None: no usable one) and cannot use it (``why``)."""
    sa = self._ike_sa(handle)
    if sa is None or sa.state is not State.ESTABLISHED:
        return   # going already (a second address of the same IKE SA, a DELETE crossing): once
    c = self.connections.get(conn)
    self.events.vip_refused[conn] += 1
    failed = self.vip_refusals.failed[conn] = self.vip_refusals.failed.get(conn, 0) + 1
    wait = delay(failed)
    again = c is not None and not self.closing and (not c.keyingtries or failed < c.keyingtries)
    what = f"virtual IP {addr}" if addr is not None else "no usable virtual IP"
    if again and c is not None:
        of = f" of {c.keyingtries}" if c.keyingtries else ""
        then = f"initiating it again in {wait:.0f} s (try {failed + 1}{of})"
    else:
        then = "not initiating it again" + (f" (keyingtries = {c.keyingtries})" if c is not None else "")
    log.error("%s: %s from gateway %s: %s; deleting the IKE SA, %s", conn, what, sa.remote_addr[0], why, then,
              extra={"remote": sa.remote_addr[0]})
    children = [ch.name for ch in sa.children]
    sa.delete(time.monotonic(), DownReason.VIP_REFUSED)
    self._pump()
    self.vip_refusals.held[conn] = time.monotonic() + wait
    if not again or c is None:
        return
    names: list[str | None] = [*dict.fromkeys(children)] or \
        [p.name for p in c.children if p.start_action == "start"] or [None]
    for child in names:   # tries.py: ``tunsec terminate`` stops them (keyingtries = 0: they came back for ever)
        tries.later(self, wait, conn, child, "a refused virtual IP's retry")


def applied(self: IkeService, handle: int, conn: str) -> None:
    """Every virtual IP of the IKE SA behind ``handle`` is on the TUN: the refusals' count starts again,
    if it is still up (one refused meanwhile, or going, says nothing of the gateway's next answer)."""
    sa = self._ike_sa(handle)
    if sa is None or sa.state is not State.ESTABLISHED:
        return
    self.vip_refusals.failed.pop(conn, None)
    self.vip_refusals.held.pop(conn, None)


def cancel(self: IkeService, conn: str) -> None:
    """``tunsec terminate``: the connection's hold goes, its count starts again (its scheduled tries
    are stopped with the others, tries.py)."""
    self.vip_refusals.failed.pop(conn, None)
    self.vip_refusals.held.pop(conn, None)


def holding(self: IkeService, conn: str) -> bool:
    """A refused virtual IP's connection waits for its next try: a trap's traffic starts none."""
    until = self.vip_refusals.held.get(conn)
    return until is not None and until > time.monotonic()
