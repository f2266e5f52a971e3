"""IKEv2 in the control process: the glue between the sans-I/O engine
(tunsec.ike), the sockets and timers of asyncio, and the dataplane worker.

- IKE on port 500 arrives on this service's own sockets; on port 4500 it comes
  up the pipe from the worker (non-ESP marker stripped) and goes back down as
  SEND_IKE, so one socket carries both IKE and ESP as RFC 3948 wants.
- Inbound Child SA SPIs come from the worker (GETSPI: it owns the SAD); the
  engine takes them synchronously from a pool kept topped up here; while
  it is empty, IKE of existing IKE SAs waits for the refill (see receive).
- ChildSaUp -> UPDATE (inbound) + ADD (outbound) + PROTECT policies for the
  negotiated selectors; ChildSaDown -> DELETE.  Trap policies (start_action
  = trap) have a reqid no SA ever gets, so their packets raise ACQUIRE.
- Rekeys make before they break (RFC 7296 §2.8, in strongSwan's order): no
  datagram leaves while a Child SA is being installed (the responder's
  CREATE_CHILD_SA response waits for its new inbound SA, the initiator's
  DELETE for both new SAs); a rekey responder adds its new outbound SA only
  when the first packet arrives on its new inbound SA (the worker's
  FIRST_USE: the initiator has installed its side), or when the old SA's
  DELETE arrives, or once the initiator's retransmissions of its request are
  over (standby.py), whichever comes first; a rekeyed
  Child SA's inbound SA lingers INBOUND_LINGER seconds for packets in flight.
- Ownership: each Child SA is known by a handle unique across IKE SAs (many
  peers may share one connection, and unique ids restart per IKE SA).  A
  Child SA and the ones that rekey (or duplicate: in the same IKE SA, or in
  another of the same peer identity, a client back without INITIAL_CONTACT)
  it form a lineage with its own reqid and policies (from tunsec.policy.ids),
  released when the lineage ends; a peer's DELETE touches only what its own
  IKE SA created.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from tunsec import updown, worker_distrust
from tunsec.conf.connections import Connection
from tunsec.dataplane import pipe, siphash
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.exclude import ExcludeRoutes
from tunsec.dataplane.pipe import Direction, ExpireReason
from tunsec.eventcounts import EventCounts
from tunsec.ike import dh
from tunsec.ike.auth_ban import AuthBan
from tunsec.ike.constants import MAX_IKE_MESSAGE, NATT_PORT
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaLimit,
    ChildSaUp,
    DownReason,
    EapRelayAbandoned,
    EapRelayRequest,
    IkeSaDeleting,
    IkeSaDown,
    IkeSaLimit,
    IkeSaRekeyed,
    IkeSaUp,
    NegotiationFailed,
    PeerRedirected,
    PeerUnreachable,
    Redirected,
    ResolveGateway,
    SpiUnused,
)
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.spi_tag import IkeSpiTag
from tunsec.loglimit import LogLimiter, PeerLogLimiter, SourceLimiter, internal_error, suffix
from tunsec.policy.claims import TsClaims
from tunsec.policy.ids import IdSpace
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import addr_text, parse_ip
from tunsec.radius.accounting import Accounting
from tunsec.radius.dae import DaeServer
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings
from tunsec.services.addr_feed import AddressFeed, Subscription
from tunsec.services.base import EspEndpoint, Service
from tunsec.services.ike import (
    auth_log,
    child_index,
    churn_log,
    commands,
    going_sas,
    ikesas,
    installs,
    mobility,
    natt_local,
    radius_edge,
    recreate,
    reestablish,
    refusal_log,
    restart,
    standby,
    stopping,
    traps,
    tries,
    vip_refused,
    worker_claims,
    worker_path,
)
from tunsec.services.ike import invalid_spi as _invalid_spi
from tunsec.services.ike import reload as _reload
from tunsec.services.ike import status as _status
from tunsec.services.ike.barrier import Barrier
from tunsec.services.ike.changes import Changes
from tunsec.services.ike.child_index import ChildIndex
from tunsec.services.ike.configured_claims import ConfiguredClaims
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer, kept_addresses
from tunsec.services.ike.giveup import GiveUp
from tunsec.services.ike.going_sas import GoingSas
from tunsec.services.ike.handles import Handles
from tunsec.services.ike.host_addresses import HostAddresses
from tunsec.services.ike.keypool import KeyPoolRefill
from tunsec.services.ike.record import IkeUpRecord
from tunsec.services.ike.resolver import Resolver
from tunsec.services.ike.sockets import IkeSocketKey, IkeSockets, _is_init, recv
from tunsec.services.ike.spis import SpiPool
from tunsec.services.ike.state import ChildState, IPAddress, IPNetwork, Lineage, ts_networks
from tunsec.services.ike.trap_hold import TrapHolds
from tunsec.services.ike.trusted import TrustedSpis, peer_of
from tunsec.services.ike.vips import VirtualIps
from tunsec.status import filled

log = logging.getLogger("tunsec.ike")

SHUTDOWN_WAIT = stopping.SHUTDOWN_WAIT   # seconds for the peers to acknowledge our DELETEs at shutdown


def _nothing() -> None:
    """on_activity until the daemon sets it (tests run the service without one)."""


class IkeService(Service):
    """Runs the engine for the daemon; see the module docstring."""

    name = "ike"

    def __init__(self, connections: Sequence[Connection], worker: Callable[[], WorkerClient],
                 local_addrs: dict[int, str], ids: IdSpace | None = None,
                 limits: DosLimits | None = None, pools: Sequence[PoolConfig] = (),
                 radius: RadiusSettings | None = None, ke_pool: int = 0, ts_claims: TsClaims | None = None) -> None:
        self.connections = {c.ike.name: c for c in connections}
        # ready key pairs for IKE_SA_INIT, CREATE_CHILD_SA PFS and IKE rekeys: ke_pool per group (tunsec { })
        self.ke_refill = KeyPoolRefill(dh.POOL, ke_pool, busy=self._setting_up)
        self.pool_configs = {p.name: p for p in pools}
        self.pools = AddressPools(pools)    # virtual IP leases: they outlive IKE SAs, so they live here
        # a client's virtual IPs: set by the daemon to its TUN (add_address, remove_address, set_route_source)
        self.tun: Any = None
        self.vips = VirtualIps(lambda: self.tun, lambda name: self.connections.get(name), self._spawn,
                               functools.partial(vip_refused.refused, self),
                               functools.partial(vip_refused.applied, self))
        self.vip_refusals = vip_refused.Refusals()   # a client's IKE SAs ended for their virtual IP
        self.tries = tries.Tries()   # initiations not in the engine yet (tries.py): terminate stops them
        self.reestablishing = reestablish.Reestablishing()   # our IKE SAs towards a lost peer (reestablish.py)
        self.scripts = updown.Scripts(self._spawn)   # updown: each IKE SA's in order, IKE SAs side by side
        self.worker = worker
        self.local_addrs = local_addrs     # family -> our outer address for ESP SAs
        self.sockets = IkeSockets(connections, local_addrs, worker, self._spawn)
        # make-before-break: datagrams to a peer wait while its Child SAs are being installed (see
        # Barrier.flush); all wait while the SPI pool is empty and being refilled (see SpiPool.receive)
        self.barrier = Barrier(lambda now: self.endpoint.datagrams_to_send(now), self.sockets.send, self._spawn,
                               resume=lambda: self.spi_pool.run_held())
        self.spi_pool = SpiPool(worker, self._spawn, self.barrier, self._deliver, self._pump,
                                owner=self._owner, half_open=lambda: self.endpoint.half_open)
        # the remote selectors each peer's Child SAs hold: no peer may take another's (installs.py books
        # them), nor a manual tunnel's (the daemon's claims, shared with ManualService: manual_claims.py)
        self.ts_claims = ts_claims if ts_claims is not None else TsClaims()
        # the key our IKE SPIs are tagged with for their peer's address, which the worker holds (trusted.py)
        self.spi_tag = IkeSpiTag.new(siphash=siphash.siphash24())
        # IKE SA handle -> unique id -> claim handle: claims of Child SAs no longer booked (a worker restart)
        self._held_claims: dict[int, dict[int, int]] = {}
        self.endpoint = IkeEndpoint([c.ike for c in connections], spi_allocator=self.spi_pool.take, limits=limits,
                                    address_pool=self.pools, unique_keep=self._unique_keep, ts_claims=self.ts_claims,
                                    spi_tag=self.spi_tag)
        self.ids = ids if ids is not None else IdSpace()
        self.children: dict[int, ChildState] = {}                # child handle -> state
        self.child_index = ChildIndex()   # children by their SAs' SPIs (child_index.book: both at once)
        self._by_uid: dict[tuple[int, int], int] = {}            # (IKE SA handle, unique id) -> child handle
        # Child SAs deleted in the engine after their install failed, whose inbound SA is removed already:
        # their ChildSaDown deletes no SPI (the worker may have issued it again; install_failed.py)
        self.uninstalled: set[tuple[int, int]] = set()             # (IKE SA handle, unique id)
        # (IKE SA handle, child) -> a Child SA created again after our rekey's install failed (recreate.py)
        self._recreating: dict[tuple[int, str], recreate.Pending] = {}
        self._by_ike: dict[int, set[int]] = {}   # IKE SA handle -> its child handles (_follow_peers)
        self._ike_handles = Handles()   # IKE SA -> handle, and back (_ike_sa)
        self._replaced: dict[int, list[IkeSa]] = {}   # IKE SA handle -> its rekeyed SAs holding it (ikesas.py)
        self._handles = itertools.count(1)
        # the named connections' configured selectors are their peers' while down too (configured_claims.py)
        self.configured_claims = ConfiguredClaims(self.ts_claims, self._handles, pools)
        self.configured_claims.follow(connections)
        self._changes = Changes()   # SA/SPD changes reach the worker in the order the engine reported them
        self._install_give_up = GiveUp(installs.request_timeout)   # new Child SAs' installs (_start_install)
        self.ike_up: dict[bytes, IkeUpRecord] = {}
        self.trusted = TrustedSpis(worker, self.spi_tag)   # established IKE SAs' SPIs and the tags' key, in the worker
        self.endpoint.on_forget = self._forgotten   # whichever way an IKE SA went
        self._port_freed = False   # an IKE SA on a port only IKE SAs use went (_pump closes it if it was the last)
        self._sweep_due = False    # an IKE SA went, half-open ones too: _pump sweeps the exclude routes once
        self.trap_reqids: dict[tuple[str, str], int] = {}        # (connection, child) -> reqid of its traps
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None   # the engine's deadline _timer was armed for
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peers_to_check: set[bytes] = set()   # our SPIs of IKE SAs that got a datagram (_follow_peers)
        self._addr_watch: Subscription | None = None   # the host's address changes (mobility._watch_addresses)
        self.addresses: AddressFeed | None = None   # the daemon's watch of them (None: one of our own)
        self.host_addresses = HostAddresses(self.endpoint)   # which the engine's address roles count as ours
        self._ike_peers: dict[int, mobility.IkePath] = {}   # IKE SA handle -> its ESP path at the last check
        self._moves: dict[int, mobility.IkeMove] = {}   # IKE SA handle -> its Child SAs' mover, once one moved
        self._left_sweep = mobility.LeftSweep()   # the sweeps of addresses MOBIKE SAs left, paced
        self.move_clock: Callable[[], float] = time.monotonic   # the moves' budget (tests set a fake one)
        # peers moving, per peer (log_peer) and 100 per 10 s in all: one peer's moves hold back no other's lines
        self._move_log = PeerLogLimiter(burst=10, period=10.0, clock=lambda: self.move_clock(), ceiling=100)
        self.trap_policies: dict[int, tuple[str, str]] = {}     # policy id -> (connection, child)
        # policy id -> (connection, child, lineage) of the Child SAs' policies, from their SPDADD until released
        self.child_policies: dict[int, tuple[str, str, Lineage]] = {}
        self.acquiring: set[tuple[str, str]] = set()   # (connection, child) of ACQUIREs waiting for an SPI
        self.trap_holds = TrapHolds()   # trap children whose ACQUIRE's initiation failed: held down (trap_hold.py)
        self.attempts: dict[str, int] = {}                       # connection -> failed tries in a row
        self.closing = False   # stopping (stopping.py): nothing new is set up
        self.stop_deleted: set[IkeSa] = set()   # the IKE SAs the stop deleted: it waits for their DELETEs
        self.unauthenticated_log = LogLimiter()                 # failures peers cause before authenticating
        # theirs that fail AUTH, by address (IPv6: by the prefix the DoS limits count a source under)
        self.auth_failed_log = SourceLimiter(flush_to=auth_log.report,
                                             ipv6_prefix=self.endpoint.limits.ipv6_source_prefix)
        self.auth_ban = AuthBan(ipv6_prefix=self.endpoint.limits.ipv6_source_prefix)   # the daemon sets its settings
        self.worker_path = worker_path.WorkerPath(self.auth_ban)   # IKE SAs opened through the worker: their own ban
        self._timer_log = LogLimiter(burst=1, period=60.0)      # the timer itself failed (a bug)
        self._receive_log = LogLimiter(burst=1, period=60.0)    # an IKE datagram the engine failed on (a bug)
        self.receive_errors = 0
        self._event_log = LogLimiter(burst=1, period=60.0)      # an engine event whose handling failed (a bug)
        self.event_errors = 0
        self.on_activity: Callable[[], None] = _nothing   # each IKE datagram in (the daemon's CalmTrim.note)
        self.refusals = refusal_log.RefusalLogs()   # per peer: what we refused it, or could not do for it
        self.churn_log = churn_log.limiter()   # per peer: the lines of its Child SA churn and IKE rekeys
        self.events = EventCounts()                             # rekeys, dead peers (Prometheus counters)
        self._timers: dict[asyncio.TimerHandle, Callable[[], object]] = {}   # lingering inbound SAs, standby ends
        # IKE SA handle -> its Child SAs' lingering inbound SAs (SPI -> lineage), oldest first (installs._linger)
        self._lingering: dict[int, dict[int, Lineage]] = {}
        self.going = GoingSas()   # SAs of Child SAs let go, until surely gone from the worker (going_sas.py)
        # auth = eap-radius: the RADIUS client, and the round trip each IKE SA waits for
        self.radius = RadiusRelay(radius) if radius is not None else None
        self._relay_rounds: dict[IkeSa, asyncio.Task[None]] = {}
        self.resolver = Resolver()   # REDIRECTs naming a gateway by FQDN: looked up on threads of its own
        self.accounting: Accounting | None = None   # radius { accounting = yes } (_acct_* below)
        # what accounting's DUMP answer may take: the daemon's cap (every service's entries), as the status's
        self.dump_cap: Callable[[], int] = lambda: worker_distrust.dump_cap([self])
        self.acct_retiring: set[Accounting] = set()   # turned off by a reload, still sending its last records
        self.session_limits: dict[int, asyncio.TimerHandle] = {}   # by IKE handle: its Session-Timeout's end
        self.dae: DaeServer | None = None   # radius { dae { enable = yes } } (_dae_* in radius_edge.py)
        self._acct_configure(radius)

    # --- lifecycle -------------------------------------------------------------
    def prepare(self) -> None:
        self.open_sockets()
        self._dae_open()

    def open_sockets(self) -> None:
        self.sockets.open(self.connections.values())

    def close(self) -> None:
        self.ke_refill.stop()
        self.trusted.close()
        self.sockets.close()
        self._radius_close()
        self.resolver.close()
        if self._addr_watch is not None:
            self._addr_watch.close()
            self._addr_watch = None
        self.host_addresses.close()

    async def start(self) -> None:
        # the watch, then the host's addresses (a change while they are listed is read: review revperf F2),
        # before anything is answered or initiated: a trap's first REDIRECT is checked (review revlate3)
        self._watch_addresses()
        await self.host_addresses.refresh()   # one raw dump: ~0.3 ms on a usual host
        self.trusted.start()   # the tags' key: the first IKE_AUTHs have their shares in the worker
        await self.spi_pool.refill()    # before answering anyone: an IKE_AUTH finds its inbound SPI in the pool
        self.ke_refill.start(c.ike for c in self.connections.values())   # and an IKE_SA_INIT its key pair
        self._acct_open()   # the Accounting-On, before any Start
        await self._dae_serve()
        self.sockets.read(self._readable)
        await self.install_traps()
        for conn in self.connections.values():
            for ch in conn.ike.children:
                if conn.child(ch.name).start_action == "start":
                    self.initiate(conn.ike.name, ch.name)

    def _setting_up(self) -> bool:
        """IKE SAs are being set up: half-open ones wait for their IKE_AUTH, Child SA installs and other
        worker requests are in flight.  The key pair refill waits for the end (services/ike/keypool.py)."""
        return bool(self.endpoint.half_open or self.barrier.up or self.worker().in_flight)

    # --- timers that a worker restart or shutdown cancels ------------------------------
    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _later(self, delay: float, fn: Callable[[], object]) -> asyncio.TimerHandle:
        """``fn`` after ``delay`` seconds, unless a worker restart or shutdown comes first."""
        def fire() -> None:
            del self._timers[handle]
            fn()
        handle = asyncio.get_event_loop().call_later(delay, fire)
        self._timers[handle] = fn
        return handle

    def _unlater(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None and self._timers.pop(handle, None) is not None:
            handle.cancel()

    # --- what the daemon sets up around IKE ---------------------------------------
    def esp_endpoints(self) -> list[EspEndpoint]:
        """ESP and IKE after the NAT-T float share the worker's port 4500 sockets (RFC 3948)."""
        return [(fam, addr, NATT_PORT) for fam, addr in self.local_addrs.items()]

    def routes(self) -> list[tuple[IPNetwork, tuple[IPNetwork, ...]]]:
        """Configured (not dynamic) remote selectors, routed into the TUN, with our side's networks."""
        out = []
        for conn in self.connections.values():
            for ch in conn.ike.children:
                local = tuple(n for t in ch.local_ts if not t.dynamic for n in ts_networks(t))
                for t in ch.remote_ts:
                    if not t.dynamic:
                        out += [(n, local) for n in ts_networks(t)]
                # a gateway's dynamic remote_ts are its clients' virtual IPs: the pools go into the TUN
                if any(t.dynamic for t in ch.remote_ts):
                    for name in conn.ike.pools:
                        pool = self.pool_configs[name]
                        nets = pool.networks()   # one route for a subnet pool
                        out += [(n, local) for n in nets if (n, local) not in out]
        return out

    def exclude_routes(self, routes: ExcludeRoutes) -> None:
        """IKE to an address the TUN's routes capture waits for its exclude route (exclude_gate.py)."""
        self.sockets.gate = ExcludeGate(routes, lambda: [n for n, _ in self.tun.routes] if self.tun else [],
                                        self.sockets.send, self.peer_addresses, self._spawn,
                                        lambda ip, data: authenticated_peer(self.endpoint, self.ike_up, ip, data))

    def sweep_excludes(self, reset: bool = False) -> None:
        """The exclude routes of addresses no IKE SA keeps nor connection has go (reset: the TUN's routes changed)."""
        if (gate := self.sockets.gate) is not None:
            if reset:
                gate.reset()
            # and the addresses a moving MOBIKE SA's Child SAs still send to (move.left: _sweep_passed takes out
            # those none is at; review revsweep4 F2)
            gate.sweep(lambda: [*kept_addresses(self.endpoint.sas, self.ike_up),
                                *(parse_ip(a) for m in self._moves.values() for a in m.left)])

    def peer_addresses(self) -> list[IPAddress]:
        """The connections' remote_addrs: trusted for an exclude route (exclude_gate.py)."""
        return [a for conn in self.connections.values() for a in conn.remote_addrs]

    # --- who owns what -------------------------------------------------------------
    def _ike_handle(self, sa: IkeSa) -> int:
        handle = self._ike_handles.get(sa)
        if handle is None:
            handle = self._ike_handles[sa] = next(self._handles)
        return handle

    def _ike_sa(self, handle: int) -> IkeSa | None:
        """The live IKE SA behind a handle: after a rekey the old SA (which still answers a DELETE for the
        children it shares with its successor) and the successor hold the same handle."""
        return self._ike_handles.live(handle)

    def _release(self, lineage: Lineage) -> None:
        for pid in lineage.policy_ids:
            self.child_policies.pop(pid, None)
        self.ids.release_policy_ids(lineage.policy_ids)
        self.ids.release_reqid(lineage.reqid)
        lineage.policy_ids = []

    # --- API ---------------------------------------------------------------------
    def _rekey_child(self, sa: IkeSa, unique_id: int) -> None:
        """Rekey a Child SA unless it went away while the rekey waited for an SPI; in the IKE SA that
        holds it now (an IKE rekey done meanwhile moved it to the successor, which has sa's handle)."""
        if (handle := self._ike_handles.get(sa)) is not None:
            sa = self._ike_sa(handle) or sa
        if sa.state is State.ESTABLISHED and any(c.unique_id == unique_id for c in sa.children):
            sa.rekey_child(unique_id)

    # --- the pump and the timer -----------------------------------------------------
    def _pump(self) -> None:
        """After any input: handle events (starting installs), send, re-arm the timer."""
        while True:
            # calls made straight on an SA (delete, delete_child, rekey_child...) left their events
            # in it: collect them now, not at the next input
            self.endpoint.collect(time.monotonic())
            if not self.endpoint.has_events:
                break
            while (item := self.endpoint.next_event()) is not None:
                self._handle(*item)
        if self._peers_to_check:
            self._follow_peers()
        if self._sweep_due:   # the exclude routes of peers no IKE SA has any more go (exclude_gate.py)
            self._sweep_due = False
            self.sweep_excludes()
        if self._port_freed:   # the last IKE SA on a port a reload left to them went
            self._port_freed = False
            _reload.close_unused_ports(self)
        self.spi_pool.follow_half_open()   # before the IKE_SA_INIT answers leave: GETSPI overlaps the next flight
        self.barrier.flush()
        self._arm()

    def _handle(self, sa: IkeSa, ev: Any) -> None:
        """One engine event; a bug it hits must not cost the events after it (other peers' installs,
        and their datagrams held by the barrier) nor, raised out of the pump, the rest of the
        worker's batch: logged (rate-limited, the traceback once), counted, and the pump goes on."""
        try:
            self._event(sa, ev)
        except Exception as err:
            self.event_errors += 1
            if (held := self._event_log.admit()) is not None:
                log.error("%s: handling %s failed%s: internal error %s", getattr(ev, "name", sa.name),
                          type(ev).__name__, suffix(held), internal_error(err, self.event_errors == 1))

    def _arm(self, at_least: float = 0.0) -> None:
        when = self.endpoint.get_timer()
        at = self._timer_at
        if self._timer is not None and at is not None and when is not None and when >= at and not at_least:
            # armed for it or earlier (that one fires early, then re-arms): each IKE_AUTH of a burst moves
            # the earliest deadline (the oldest half-open SA's) later, a new TimerHandle per client
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            loop = asyncio.get_event_loop()
            delay = max(at_least, when - time.monotonic())
            self._timer = loop.call_later(delay, self._on_timer)
            self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self.spi_pool.starved:    # a rekey would find no SPI: the barrier's end re-arms the timer
            self.barrier.flush()
            return
        try:
            self.endpoint.handle_timer(time.monotonic())   # (an SA whose timer raises is logged there)
            self._pump()
        except Exception as err:   # the timer must stay armed: a lost one stalls every IKE SA
            if (held := self._timer_log.admit()) is not None:
                log.error("IKE timer failed; timers go on%s: %s", suffix(held), internal_error(err, False))
            self._arm(at_least=1.0)   # not at once: what failed may fail again

    async def _resolve_gateway(self, sa: IkeSa, gateway: str) -> None:
        await self.resolver.resolve_gateway(sa, gateway)
        self._pump()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- events ----------------------------------------------------------------------
    def _admit_log(self, sa: IkeSa) -> int | None:
        """Failures of IKE SAs a peer opened and never authenticated pass a rate limit (anyone can cause
        them); our own negotiations and established SAs always log.  See tunsec.loglimit."""
        return self.unauthenticated_log.admit() if self._unproven(sa) else 0

    def _unproven(self, sa: IkeSa) -> bool:
        """An IKE SA a peer opened and has not authenticated: anyone may cause its failures."""
        return not sa.is_initiator and sa.local_spi not in self.ike_up

    def _event(self, sa: IkeSa, ev: Any) -> None:
        match ev:
            case IkeSaUp():
                if self._outdated(sa, ev) or stopping.came_up(self, sa):
                    return
                self.attempts.pop(ev.name, None)
                if not sa.is_initiator:   # its wider IPv6 prefixes are someone's shared ones (auth_ban.py)
                    self.worker_path.succeeded(sa, ev.remote_addr[0])   # on its path's ban only
                # one line with the virtual IPs we assigned: a record per client less at scale; the
                # peer's identity (named twice then) as text once
                peer = str(ev.remote_id) if ev.peer_vips else ev.remote_id
                log.info("%s: IKE SA established with %s (%s), %s <-> %s%s", ev.name, ev.remote_addr[0],
                         ev.proposal, ev.local_id, peer,
                         f"; assigned virtual IP {', '.join(map(addr_text, ev.peer_vips))} to peer {peer}"
                         if ev.peer_vips else "")
                if ev.own_vips or (sa.is_initiator and sa.config.vips):   # none: refused (vip_refused.py)
                    self.vips.up(self._ike_handle(sa), ev)
                self.ike_up[sa.local_spi] = IkeUpRecord(ev, time.time())
                if not sa.is_closed:   # one closed already was forgotten (on_forget): it would stay for ever
                    self.trusted.add(sa.local_spi, peer_of(ev))
                self._enforce_unique(sa, ev)
                self._acct_start(sa, ev)
            case IkeSaRekeyed():
                self.events.ike_rekeys[ev.name] += 1
                self._ike_rekeyed(sa, ev)
            case IkeSaDown():
                log.info("%s: IKE SA closed: %s", ev.name, ev.reason)
                self._acct_stop(sa, ev.reason)   # one IkeSaDeleting ended already: nothing left
                self.vips.down(self._ike_handles.get(sa))
                if (handle := self._ike_handles.pop(sa, None)) is not None and sa.heir is None:
                    self._ike_lineage_gone(handle)   # not rekeyed: no successor uses the handle
                # (one the endpoint still routes by its SPI is another IKE SA's: IkeEndpoint._succeed)
                up = self.ike_up.pop(sa.local_spi, None) if self.endpoint.sa_by_spi(sa.local_spi) is None else None
                if up is not None and ev.reason is DownReason.DELETED_BY_PEER:
                    self._after_loss(up.ev, "close_action")
                elif up is not None and ev.reason is DownReason.EXPIRED:
                    self._after_expiry(up.ev)
            case IkeSaDeleting():
                # its Child SAs (their final counters awaited) and leases went just before: the session
                # ends now, not ~165 s later with a silent peer, its address maybe another's by then
                self._acct_stop(sa, ev.reason)
            case ChildSaUp():
                if sa.state is State.DELETING and sa.local_spi not in self.ike_up:
                    return   # its IKE SA was refused as it came up (_outdated): nothing of it goes to the worker
                if ev.rekey_of is not None:
                    self.events.child_rekeys[(ev.name, ev.child)] += 1
                state = self._child_registered(sa, ev)
                if state is not None:
                    # the datagrams queued with this event go to the IKE SA's peer (then), in this IKE SA:
                    # they wait for the install (even a task cancelled before it ran releases them)
                    self._start_install(state, ev, self.barrier.peer_install((ev.remote_addr, sa.spi_i + sa.spi_r)))
            case ChildSaDown():
                self._child_gone(sa, ev)
            case AuthFailed() if self.worker_path.of(sa):   # the worker may have made it up (worker_path.py)
                auth_log.failed(self.worker_path.failed_log, ev.name, sa.remote_addr, ev.by_peer, ev.reason,
                                self._unproven(sa), self.worker_path.counting(), backend=ev.backend,
                                refused=ev.refused, counted=ev.counted, tag=worker_path.TAG)
            case AuthFailed():
                auth_log.failed(self.auth_failed_log, ev.name, sa.remote_addr, ev.by_peer, ev.reason,
                                self._unproven(sa), self.auth_ban, backend=ev.backend, refused=ev.refused,
                                counted=ev.counted)
            case NegotiationFailed():
                if ev.claims:
                    self.events.ts_claims_refused[(ev.name, ev.child or "")] += 1
                if ev.rekey_ts:
                    self.events.rekey_ts_refused[(ev.name, ev.child or "")] += 1
                if ev.child is not None and not ev.peer_request:   # a re-creation's next try (recreate.py)
                    recreate.refused(self, self._ike_handle(sa), ev.child, ev.reason)
                if ev.ts_limit:
                    self.events.ts_limit_refused[(ev.name, ev.child or "")] += 1
                if (held := refusal_log.failure(self, sa, ev)) is not None:
                    child = f" child {ev.child}" if ev.child else ""
                    # which peer sends what an SA cannot hold (its identity may be anyone's of a pool connection)
                    peer = f" from {sa.remote_addr[0]}" if ev.ts_limit else ""
                    log.error("%s%s: %s%s: %s%s", ev.name, child, ev.reason, peer, ev.detail, suffix(held))
            case ChildSaLimit():
                refusal_log.child_sa_limit(self, sa, ev)
            case IkeSaLimit():
                refusal_log.ike_sa_limit(self, sa, ev)
            case PeerUnreachable():
                log.error("%s: peer did not answer after %d retransmissions; giving up", ev.name, ev.tries)
                if (up := self.ike_up.pop(sa.local_spi, None)) is not None:
                    self.events.dpd_failures[ev.name] += 1
                    self._after_loss(up.ev, "dpd_action")     # it was up: dead peer detected
                elif sa.is_initiator:
                    self._retry(ev.name, ev.children, sa)
            case Redirected():
                log.info("%s: gateway %s redirected us to %s (RFC 5685%s)", ev.name, ev.from_addr, ev.to_addr,
                         ", in IKE_AUTH" if ev.in_auth else "")
            case PeerRedirected():
                log.info("%s: authenticated %s and redirected it to %s (RFC 5685, in IKE_AUTH)", ev.name, ev.peer,
                         ev.to)
            case ResolveGateway():
                self._spawn(self._resolve_gateway(sa, ev.gateway))
            case SpiUnused():
                self._spawn(self._delete_sa(ev.spi, Direction.IN))
            case EapRelayRequest():
                self._relay_round(sa, ev)
            case EapRelayAbandoned():
                self._end_relay(sa)

    # --- IKE in: from our sockets, and port 4500's through the worker -------------------
    async def refill_spis(self) -> None:
        """Top the SPI pool up; returns when it is full (or the worker refused)."""
        await self.spi_pool.refill()

    def receive(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None = None,
                unmarked: bool = False) -> None:
        """One IKE datagram into the engine (the caller pumps), unless it must wait for an SPI
        (SpiPool.receive); ``unmarked``: it came without the non-ESP marker (ike/unmarked.py)."""
        if len(data) > MAX_IKE_MESSAGE:   # the engine drops it unparsed: it does not wait for an SPI either
            self.endpoint.stats.too_big += 1
            return
        if self.auth_ban.refuses(data, remote[0], time.monotonic()):   # banned: nothing kept (auth_ban.py)
            self.endpoint.stats.auth_banned += 1
            return
        if stopping.refuses(self, data):
            return
        self.spi_pool.receive(data, remote, local, unmarked)   # noted (_note_peer) as it goes into the engine

    def _owner(self, data: bytes) -> IkeSa | None:
        """The IKE SA ``data`` is for, if we have it (SpiPool.receive)."""
        return self.endpoint.sa_for(data)

    def _deliver(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None,
                 unmarked: bool = False) -> None:
        self.on_activity()
        self._note_peer(data)   # as it goes into the engine (one that was held too): _follow_peers checks after it
        try:
            self.endpoint.receive(data, remote, time.monotonic(), local, unmarked)
        except Exception as err:
            # a bug one peer's datagram hits must not cost what comes with it: the rest of the worker's
            # batch (other peers' IKE, EXPIREs, ACQUIREs) or of the SPI pool's held datagrams would be lost
            self.receive_errors += 1
            if (held := self._receive_log.admit()) is not None:
                log.error("IKE datagram from %s[%d] dropped%s: internal error %s", remote[0], remote[1],
                          suffix(held), internal_error(err, self.receive_errors == 1))

    def _readable(self, s: socket.socket, key: IkeSocketKey) -> None:
        for data, remote, local in recv(s, key):
            ike, unmarked = self.sockets.unmark(data, remote, key[2])
            if ike is not None and key[2] in self.sockets.draining and _is_init(ike, 0):
                continue   # a port a reload left to its IKE SAs' DELETEs: no new one (reload.close_unused_ports)
            if ike is not None:
                self.receive(ike, remote, local, unmarked)
        self._pump()

    def receive_natt(self, msg: pipe.Ike) -> None:
        """IKE that arrived on port 4500 via the worker."""
        local = natt_local.local_end(self, msg)   # port 4500, whatever port the event names (natt_local.py)
        remote = (addr_text(msg.remote.addr), msg.remote.port)
        if self.worker_path.refuses(msg.data, remote[0]):   # banned for failures on this path only
            self.endpoint.stats.auth_banned += 1
            return
        before = self.endpoint.last_registered
        self.receive(msg.data, remote, local, msg.unmarked)   # its IKE_SA_INIT answer goes back so
        self.worker_path.opened(before, self.endpoint.last_registered)   # the IKE SA it opened, if any
        self._pump()

    # --- worker events -------------------------------------------------------------
    def worker_entries(self) -> int:
        return worker_claims.entries(self)

    def on_event(self, msg: pipe.Message) -> bool:
        """Worker events that belong to IKE; True when handled."""
        match msg:
            case pipe.Ike():
                self.receive_natt(msg)
                return True
            case pipe.Acquire() if self.owns_policy(msg.policy_id):
                self.acquire(msg.policy_id)
                return True
            case pipe.Expire() if msg.reason is ExpireReason.LARVAL_TIMEOUT:
                self.spi_pool.larval_expired(msg.spi)
                return True
            case pipe.Expire() if worker_claims.refused_expire(self, msg):   # a limit never installed
                return True
            case pipe.Expire():
                self._acct_expired(msg)   # its counters first: a hard EXPIRE deletes the Child SA
                # (one of a Child SA just let go, its DELETE under way: ours, not unowned: going_sas.py)
                return self.expired(msg.spi, msg.direction, msg.hard, msg.remote) or going_sas.claim(self, msg)
            case pipe.InvalidSpi():
                return self.invalid_spi(msg.spi, msg.remote)   # True: it logged the notify it sent
            case pipe.FirstUse():
                self.first_use(msg.spi)
                return True
        return False

    # --- tunsec status (status.py) -----------------------------------------------------------------
    def status(self, dump: pipe.Reply) -> dict[str, Any]:
        return filled(self.status_rows(dump))

    def status_rows(self, dump: pipe.Reply) -> dict[str, Any]:
        rows = _status.ike_sa_rows(self.endpoint.sas, self.ike_up, self.children.values(), self._ike_handles.get,
                                   self._ike_sa, self._acct_usage)
        radius = {} if self.radius is None else self.radius.status(self.accounting, self.dae)
        return _status.status(rows, _status.lease_rows(self.pools), self.endpoint, self.spi_pool, self.barrier,
                              self.sockets, radius, self.events, self.ke_refill.pool, self.trusted.refused,
                              self.auth_ban, self.worker_path.ban)

    @classmethod
    def idle_status(cls) -> dict[str, Any]:
        return _status.idle_status()

    def ike_sas(self) -> list[dict[str, Any]]:
        return _status.ike_sas(self.endpoint.sas, self.ike_up, self.children.values(), self._ike_handles.get,
                               self._ike_sa, self._acct_usage)

    def leases(self) -> list[dict[str, Any]]:
        """Virtual IP leases for ``tunsec status``: pool, address, identity, online or offline."""
        return _status.leases(self.pools)

    # --- defined in the package's modules, one concern each (see their docstrings) ---------------
    # restart.py
    worker_restarted = restart.worker_restarted
    worker_died = restart.worker_died
    # installs.py
    expired = installs.expired
    _child_of_sa = child_index.child_of_sa
    _delete_sa = installs._delete_sa
    _endpoint = installs._endpoint
    _child_registered = installs._child_registered
    log_peer = refusal_log.peer_key   # the peer a log line about an IKE SA is limited as
    _forget = installs._forget
    _linger_ended = installs._linger_ended
    _start_install = installs._start_install
    _child_up = installs._child_up
    _install_ended = installs._install_ended
    _send_install = installs._send_install
    # standby.py
    first_use = standby.first_use
    _promote = standby.timed_out   # the end of the standby timer installs._send_install arms
    _add_standby = standby.add_standby
    _answered = installs._answered
    _install_answered = installs._install_answered
    _protect = installs._protect
    _remove = installs._remove
    _child_gone = installs._child_gone
    _child_down = installs._child_down
    _updown_event = installs._updown_event
    _updown_down = installs._updown_down
    # traps.py
    _forget_traps = traps._forget_traps
    _remove_traps = traps._remove_traps
    owns_policy = traps.owns_policy
    install_traps = traps.install_traps
    _trap_reqid = traps._trap_reqid
    acquire = traps.acquire
    # invalid_spi.py
    invalid_spi = _invalid_spi.invalid_spi
    # radius_edge.py
    _reload_radius = radius_edge._reload_radius
    _relay_round = radius_edge._relay_round
    _relay = radius_edge._relay
    _end_relay = radius_edge._end_relay
    _station = radius_edge._station
    _radius_close = radius_edge._radius_close
    _acct_configure = radius_edge._acct_configure
    _acct_open = radius_edge._acct_open
    _acct_dump = radius_edge._acct_dump
    _acct_children = radius_edge._acct_children
    _acct_worker_restarted = radius_edge._acct_worker_restarted
    acct_observe = radius_edge._acct_observe
    _acct_start = radius_edge._acct_start
    _acct_child_down = radius_edge._acct_child_down
    _acct_deleted = radius_edge._acct_deleted
    _acct_expired = radius_edge._acct_expired
    _acct_usage = radius_edge._acct_usage
    _acct_stop = radius_edge._acct_stop
    _dae_open = radius_edge._dae_open
    _dae_serve = radius_edge._dae_serve
    # mobility.py
    _watch_addresses = mobility._watch_addresses
    local_addresses_changed = mobility.local_addresses_changed
    _note_peer = mobility._note_peer
    _follow_peers = mobility._follow_peers
    _move_children = mobility._move_children
    # ikesas.py
    _unique_keep = ikesas._unique_keep
    _enforce_unique = ikesas._enforce_unique
    _outdated = ikesas._outdated
    _ike_rekeyed = ikesas._ike_rekeyed
    _ike_lineage_gone = ikesas._ike_lineage_gone
    _after_loss = ikesas._after_loss
    _after_expiry = ikesas._after_expiry
    _retry = ikesas._retry
    # stopping.py
    shutdown = stopping.shutdown
    # commands.py
    initiate = commands.initiate
    _initiate = commands._initiate
    terminate = commands.terminate
    terminate_child = commands.terminate_child
    # reload.py
    check_reload = _reload.check_reload
    reload = _reload.reload
    _forgotten = _reload.forgotten

