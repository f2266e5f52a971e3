"""Rekey hand-over of an IKE SA to its successor (RFC 7296 §2.18, §2.8.2).

When a CREATE_CHILD_SA exchange rekeys the IKE SA, the new SA (the successor, also the
*heir*) takes the Child SAs, their virtual IPs and the queued work; the old one goes
REKEYED and lingers until the peer deletes it (or deletes it itself, if it initiated the
rekey). A rekey collision leaves a redundant SA that only waits for its DELETE. Requests
of the old SA still in flight hand what they leave to the heir.

These functions are methods of :class:`~tunsec.ike.sa.IkeSa` (assigned in its class body);
they live here so that sa.py holds the transport and this file the hand-over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.loglimit import suffix

from .constants import ExchangeType
from .events import IkeSaRekeyed
from .exchanges import informational, mobike, rekey_ike
from .exchanges.base import Task
from .message import Payload
from .peer_logs import Line
from .proposals import Suite
from .state import IkeRekey, State

if TYPE_CHECKING:
    from .sa import IkeSa

log = logging.getLogger(__name__)

REKEYED_LINGER = 60.0  # how long a replaced IKE SA waits for the peer to delete it

# IKE SAs of one lineage replaced by a rekey (or left redundant by a collision) that are not deleted
# yet: each keeps its keys and SPI slots for REKEYED_LINGER.  A peer that rekeyed the new SA at once,
# and again, never deleting the old ones, piled up thousands per minute (a curve25519 each); past
# this many its next IKE rekey gets TEMPORARY_FAILURE (RFC 7296 §2.25: it asks again later, once
# its DELETEs went through).  Two: a rekey and a collision's redundant SA, or two rekeys in a row
# whose DELETEs are still under way.
MAX_UNDELETED = 2


@dataclass(slots=True)
class Undeleted:
    """How many REKEYED IKE SAs one lineage holds (shared by its IKE SAs)."""

    count: int = 0


def rekey_refused(self: IkeSa, exchange: int, payloads: Sequence[Payload]) -> bool:
    """The peer asks to rekey this IKE SA while MAX_UNDELETED of its predecessors wait for their
    DELETE: refuse it (counted as ``ike_rekeys_refused``, logged rate-limited)."""
    line = self._undeleted
    if line is None or line.count < MAX_UNDELETED or exchange != ExchangeType.CREATE_CHILD_SA \
            or self._state != State.ESTABLISHED or not rekey_ike.is_rekey_request(payloads):
        return False
    self._drops.ike_rekeys_refused += 1
    # a peer may keep asking: its own share of lines (peer_logs.py), not a line per refusal
    if (held := self._st.peer_logs.admit(Line.IKE_REKEY_REFUSED, self._st)) is not None:
        log.warning("%s: IKE SA rekey refused (TEMPORARY_FAILURE): %d IKE SAs it replaced are not deleted "
                    "yet%s", self.name, line.count, suffix(held))
    return True


def rekeyed_sa(self: IkeSa, rekey: IkeRekey) -> IkeSa:
    """A new IKE SA keyed by a rekey exchange of this one (RFC 7296 §2.18)."""
    from .sa import IkeSa  # here: sa.py imports this module

    old = self._st
    assert old.prf is not None and old.keys is not None
    new = IkeSa(
        old.config,
        rekey.we_initiated,
        self._now,
        old.rng,
        spi_allocator=old.spi_allocator,
        spi_tag=old.spi_tag,
        spi_book=old.spi_book,
        remote_addr=old.remote_addr,
        local_addr=old.local_addr,
        wall_clock=old.wall_clock,
        jitter=old.jitter,
        address_pool=old.address_pool,
        ts_claims=old.ts_claims,
        fragment_stats=self._frag_stats,
        drop_stats=self._drops,
        address_role=old.address_role,   # a peer's moves are checked there too
        peer_logs=old.peer_logs,
    )
    st = new._st
    st.spi_i, st.spi_r, st.local_port = rekey.spi_i, rekey.spi_r, old.local_port
    st.proposal, st.suite = rekey.proposal, Suite.of(rekey.proposal)
    st.nonce_i, st.nonce_r = rekey.nonce_i, rekey.nonce_r
    st.peer_id, st.peer_sent_id, st.peer_hashes = old.peer_id, old.peer_sent_id, old.peer_hashes
    st.peer_fragmentation = old.peer_fragmentation
    st.mobike, st.esp_hold, st.nat_peer, st.nat_here = old.mobike, old.esp_hold, old.nat_peer, old.nat_here
    st.esp_hold_local = old.esp_hold_local
    st.original_initiator = old.original_initiator
    st.proven_addr = old.proven_addr
    st.install_keys(rekey.shared, (old.prf, old.keys.d))
    st.forget_setup()
    return new


def spawn_successor(self: IkeSa) -> None:
    """Build the IKE SA that replaces this one; it takes the Child SAs and queued work."""
    old, rekey = self._st, self._st.rekey
    assert rekey is not None
    old.rekey = None
    new = self._rekeyed_sa(rekey)
    st = new._st
    st.children = old.children  # shared: see _heir
    st.unconfirmed = old.unconfirmed   # the peer's next request may come on the new IKE SA
    # the virtual IPs move with the Child SAs; the old SA must not release them
    st.peer_vips, st.own_vips, st.own_dns = old.peer_vips, old.own_vips, old.own_dns
    old.peer_vips = ()
    st.next_child_id = old.next_child_id
    # our rekey's answer came after we began to delete this SA: the successor is the one to delete (our
    # DELETE, queued here, goes there), and takes no Child SA meanwhile (sa_teardown.py)
    new._state = State.DELETING if self._state is State.DELETING else State.ESTABLISHED
    new._delete_reason = self._delete_reason
    # a rekey of ours still queued is moot: the IKE SA was just replaced
    new._queue = [t for t in self._queue if not t.rekeys_ike_sa]
    for moot in (t for t in self._queue if t.rekeys_ike_sa):
        moot.abort(old)   # never sent: the new IKE SPI it reserved is free again (spi_book.py)
    self._queue = []
    new._delayed, self._delayed = self._delayed, ()  # retries of refused requests go there too
    if st.esp_hold is not None and not new._queued(mobike.ReturnRoutabilityTask):
        # a MOBIKE return routability check was under way here: the successor, which holds
        # the Child SAs now, checks again (an answer on this SA would not release them there)
        new._enqueue([mobike.ReturnRoutabilityTask()])   # ahead of the queued requests
    # what was queued goes now: nothing else would start it before the next exchange there.  A
    # collision's DELETE of our redundant Child SA that waited there for the peer's rekey of that
    # Child SA left both Child SAs up for good (the rekey replaced it before the DELETE came)
    new._start_next()
    new._schedule()
    self._successor = self._heir = new
    self._linger(new)
    old.emit(IkeSaRekeyed(self.name, old.spi_i, old.spi_r, st.spi_i, st.spi_r))
    if rekey.we_initiated:
        self._queue.append(informational.DeleteIkeTask())
    if old.redundant is not None:
        new._successor = self._redundant_sa(old.redundant)
        old.redundant = None
    log.debug("%s: IKE SA rekeyed", self.name)


def linger(self: IkeSa, successor: IkeSa) -> None:
    """Go REKEYED until the peer deletes this SA, counted in the lineage ``successor`` carries on."""
    line = self._undeleted or Undeleted()
    self._undeleted = successor._undeleted = line
    line.count += 1
    self._state = State.REKEYED
    self._linger_until = self._now + REKEYED_LINGER


def redundant_sa(self: IkeSa, rekey: IkeRekey) -> IkeSa:
    """The loser of a rekey collision (RFC 7296 §2.8.2): no Child SAs, deleted by the
    side that initiated its exchange; the other side keeps it only to answer that
    DELETE.  It goes quietly, like a rekeyed IKE SA (the endpoint finds it as the
    successor's successor, so that its SPI is routed)."""
    sa = self._rekeyed_sa(rekey)
    # counted in this lineage, not in a line of its own (or MAX_UNDELETED would not see it).
    # spawn_successor lingers this SA before calling here, so the line exists already (also
    # when the collision is the lineage's first rekey); made here for any other caller
    self._undeleted = self._undeleted or Undeleted()
    sa._undeleted = self._undeleted
    sa._linger(sa)
    if rekey.we_initiated:
        sa._queue.append(informational.DeleteIkeTask())
        sa._start_next()
    log.debug("%s: IKE SA rekey collision: %s redundant SA deleted by %s", self.name,
              "our" if rekey.we_initiated else "the peer's", "us" if rekey.we_initiated else "the peer")
    return sa


def adopt_peer_rekey(self: IkeSa) -> bool:
    """The peer deletes this IKE SA while our rekey request is still out and we have answered
    its rekey (a collision, RFC 7296 §2.8.2): its new SA won, and its DELETE overtook the
    answer to ours.  Take its SA as the successor and drop our request (the peer holds our
    SA as the redundant one and lets it go) instead of closing with the Child SAs."""
    pending = self._pending.task if self._pending else None
    theirs = pending.yield_to_peer_rekey() if pending is not None else None
    if pending is None or theirs is None:
        return False
    self._st.rekey = theirs
    self._pending = None
    pending.abort(self._st)
    log.debug("%s: IKE SA rekey collision: the peer's SA won; its DELETE came before our answer", self.name)
    return True


def end_pending(self: IkeSa, task: Task) -> None:
    """Our request will never be answered here: abort it, or hand what it leaves to the heir."""
    if self._heir is None:
        task.abort(self._st)
        return
    instead = task.handover(self._st)
    if task.rekeying is not None:
        self._rearm_failed_rekey(task)
    self._enqueue(instead)
