"""What the IKE service books about the Child SAs it installed: ChildState, Lineage (reqid and
policies shared by a Child SA and those that rekeyed it), and the address types."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field

from tunsec import updown
from tunsec.conf.children import Child
from tunsec.dataplane.pipe import Endpoint, SaSpec
from tunsec.ike.ts import Ts

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ts_networks(t: Ts) -> list[IPNetwork]:
    return list(ipaddress.summarize_address_range(t.start, t.end))


@dataclass(slots=True)
class Lineage:
    """A Child SA and those that rekeyed it (and its duplicates of the same peer, in the same IKE SA
    or another of the same identity: same child and selectors, see installs._sibling): one reqid,
    one set of policies, for the selectors all of them have (a rekey with others starts a lineage of
    its own: installs._moved).

    The policies bind to the lineage's newest outbound SA, so a rekey moves
    traffic over; they go when the last member does.  ``policy_ids`` are those
    the worker said OK to, or has yet to answer (``protecting``)."""

    reqid: int
    # the generation of the worker its SAs and policies are in (SpiPool.generation): a removal queued
    # before a restart deletes nothing in the new worker, where its SPIs may be others' SAs, or its own
    # peer's new ones (installs._delete_sa); a worker restart starts every Child SA's lineage anew
    worker: int = 0
    members: set[int] = field(default_factory=set)     # handles of its Child SAs
    policy_ids: list[int] = field(default_factory=list)
    updown: updown.ChildEvent | None = None   # what its script was told at up-client (down reuses it)
    # the script that ran at up-client, with its arguments: down runs it, whatever a reload did to the child
    updown_argv: tuple[str, ...] = ()
    # inbound SAs of rekeyed members, left for packets in flight (installs._remove): SPI -> (the handle
    # of their IKE SA, the timer that deletes them); they go with the lineage, or with their IKE SA's
    # last member of it, at the latest (None while there are none: one per client)
    lingering: dict[int, tuple[int, asyncio.TimerHandle]] | None = None
    # the install future (ChildState.install) of the member whose SPDADDs asked for policy_ids, until
    # their answers are booked (installs._spdadds_answered): a member that joins meanwhile waits for
    # them, then adds the policies again if they were refused (installs._child_up)
    protecting: asyncio.Future[None] | None = None


@dataclass(slots=True)
class ChildState:
    """A Child SA installed in the worker (or being installed)."""

    handle: int
    ike: int                       # handle of the IKE SA that negotiated it (kept across IKE rekeys)
    conn: str
    child: str
    unique_id: int                 # the engine's id, unique only within its IKE SA
    spi_in: int
    spi_out: int
    remote: Endpoint               # the outbound SA's peer: with spi_out, what names that SA
    local: Endpoint                # our end of both SAs (a wildcard: the route picks the source)
    alg: str
    esn: bool
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    lineage: Lineage
    # its child's settings as it came up (lifetimes, replay window, updown): a reload may rename or
    # remove the child while the SA lives, so they are never looked up by name again (shared, not copied)
    plan: Child
    established: float = field(default_factory=time.time)
    # the same moment on the monotonic clock (established is wall time, for status): how long its SAs
    # can at most have carried traffic (worker_claims.seq_overflow_possible), whatever the clock does
    registered: float = field(default_factory=time.monotonic, repr=False)
    out_installed: bool = False    # our ADD succeeded: the outbound SA (spi_out, remote) is ours to delete
    pred: int | None = None        # handle of the Child SA this one rekeyed (or duplicates: installs._sibling)
    # a MIGRATE to (the peer's new endpoint, our new end) is in flight (NAT rebinding, MOBIKE: mobility._batch)
    moving_to: tuple[Endpoint, Endpoint] | None = None
    migrate_failures: int = 0      # MIGRATEs of the current move that failed (mobility._migrate_failed)
    # a rekey we answered: its outbound SA, added when the initiator shows it has installed the new Child
    # SA (its first packet on our new inbound SA, or its DELETE of the old one); until then we send on the old
    standby: SaSpec | None = field(default=None, repr=False)
    standby_timer: asyncio.TimerHandle | None = None
    # the install's requests are sent, their answers not all in (see _child_up): what else changes
    # this Child SA in the worker waits for them (_install_answered)
    install: asyncio.Future[None] | None = field(default=None, repr=False)
    acquire_noted: bool = False    # an ACQUIRE of its policies (outbound SA gone) was logged: once (traps.acquire)

    @property
    def reqid(self) -> int:
        return self.lineage.reqid
