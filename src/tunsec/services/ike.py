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
  DELETE arrives, or after STANDBY_TIMEOUT, whichever comes first; a rekeyed
  Child SA's inbound SA lingers INBOUND_LINGER seconds for packets in flight.
- Ownership: each Child SA is known by a handle unique across IKE SAs (many
  peers may share one connection, and unique ids restart per IKE SA).  A
  Child SA and the ones that rekey it form a lineage with its own reqid and
  policies (from tunsec.policy.ids), released when the lineage ends; a
  peer's DELETE touches only what its own IKE SA created.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import ipaddress
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunsec import updown
from tunsec.conf.connections import Child, Connection, ike_endpoints
from tunsec.conf.diff import credentials_only, diff_by_name
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Errno, ExpireReason, Policy, SaSpec, Selector
from tunsec.ike.config import ChildConfig
from tunsec.ike.constants import IKE_PORT, NATT_PORT, HeaderFlag
from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.endpoint import Datagram, DosLimits, EndpointStats, IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    DownReason,
    EapRelayAbandoned,
    EapRelayRequest,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    NegotiationFailed,
    PeerRedirected,
    PeerUnreachable,
    Redirected,
    ResolveGateway,
    SpiUnused,
)
from tunsec.ike.fragments import FragmentStats
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.state import SpiUnavailable
from tunsec.ike.ts import Ts
from tunsec.loglimit import LogLimiter, suffix
from tunsec.metrics import EventCounts
from tunsec.policy.ids import Band, IdSpace, priority
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import SelectorError, fast_selectors
from tunsec.radius.messages import Station
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusSettings
from tunsec.services.addrwatch import AddressWatch
from tunsec.services.base import EspEndpoint, Service, bind_udp
from tunsec.services.ike_record import IkeUpRecord

if TYPE_CHECKING:
    from tunsec.conf.config import Config

log = logging.getLogger("tunsec.ike")

# Named once: dataclasses.asdict()/fields() build a tuple(<generator>) per call, and each such
# 7-tuple stays in CPython's free list for that length (see the note in dataplane/pipe.py).
_IKE_DROPS = tuple([f.name for f in dataclasses.fields(EndpointStats)])
_FRAGMENT_COUNTERS = tuple([f.name for f in dataclasses.fields(FragmentStats)])

SPI_POOL = 32   # inbound SPIs asked for ahead (larval SAs in the worker); refilled in one round trip
# incoming IKE datagrams held while the SPI pool is empty (beyond: dropped, the peer retransmits): a burst
# of clients' IKE_AUTHs is read from the socket in one go, so room for many, but bounded in bytes too
HELD_MAX = 1024
HELD_BYTES_MAX = 4 << 20
RESOLVE_WAIT = 5.0  # seconds a lookup of a gateway named by FQDN (RFC 5685 REDIRECT) may take
SHUTDOWN_WAIT = 3.0   # seconds for the peers to acknowledge our DELETEs at shutdown
INVALID_SPI_INTERVAL = 1.0   # seconds between two INVALID_SPI notifies in one IKE SA
INBOUND_LINGER = 5.0   # seconds a rekeyed Child SA's inbound SA outlives its DELETE (packets in flight; as strongSwan)
STANDBY_TIMEOUT = 10.0   # seconds a rekey responder waits for traffic on the new SA or the old one's DELETE
IkeSocketKey = tuple[int, str, int]   # family, bound address, UDP port
ALGS = {"aes128gcm16": Alg.AES128GCM16, "aes256gcm16": Alg.AES256GCM16}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ts_networks(t: Ts) -> list[IPNetwork]:
    return list(ipaddress.summarize_address_range(t.start, t.end))


@dataclass(slots=True)
class Lineage:
    """A Child SA and those that rekeyed it: one reqid, one set of policies.

    The policies bind to the lineage's newest outbound SA, so a rekey moves
    traffic over; they go when the last member does."""

    reqid: int
    members: set[int] = field(default_factory=set)     # handles of its Child SAs
    policy_ids: list[int] = field(default_factory=list)
    updown: updown.ChildEvent | None = None   # what its script was told at up-client (down reuses it)


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
    alg: str
    esn: bool
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    lineage: Lineage
    established: float = field(default_factory=time.time)
    out_installed: bool = False    # our ADD succeeded: the outbound SA (spi_out, remote) is ours to delete
    pred: int | None = None        # handle of the Child SA this one rekeyed
    moving_to: Endpoint | None = None   # a MIGRATE to the peer's new endpoint is queued (NAT rebinding)
    # a rekey we answered: its outbound SA, added when the initiator shows it has installed the new Child
    # SA (its first packet on our new inbound SA, or its DELETE of the old one); until then we send on the old
    standby: SaSpec | None = field(default=None, repr=False)
    standby_timer: asyncio.TimerHandle | None = None
    # the install's requests are sent, their answers not all in (see _child_up): what else changes
    # this Child SA in the worker waits for them (_install_answered)
    install: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def reqid(self) -> int:
        return self.lineage.reqid


class IkeService(Service):
    """Runs the engine for the daemon; see the module docstring."""

    name = "ike"

    def __init__(self, connections: Sequence[Connection], worker: Callable[[], WorkerClient],
                 local_addrs: dict[int, str], ids: IdSpace | None = None,
                 limits: DosLimits | None = None, pools: Sequence[PoolConfig] = (),
                 radius: RadiusSettings | None = None) -> None:
        self.connections = {c.ike.name: c for c in connections}
        self.pool_configs = {p.name: p for p in pools}
        self.pools = AddressPools(pools)    # virtual IP leases: they outlive IKE SAs, so they live here
        # a client's virtual IPs: set by the daemon to its TUN (add_address, remove_address, set_route_source)
        self.tun: Any = None
        self._vips: dict[int, tuple[str, tuple[IPAddress, ...]]] = {}   # IKE SA handle -> (connection, ours)
        self._vip_refs: collections.Counter[IPAddress] = collections.Counter()   # IKE SAs using each address
        self._vip_lock = asyncio.Lock()     # netlink changes in the order the engine reported them
        self._updown_lock = asyncio.Lock()  # updown scripts run one at a time, in the order of the events
        self.worker = worker
        self.local_addrs = local_addrs     # family -> our outer address for ESP SAs
        self.spis: collections.deque[int] = collections.deque()
        self.endpoint = IkeEndpoint([c.ike for c in connections], spi_allocator=self._take_spi, limits=limits,
                                    address_pool=self.pools, unique_keep=self._unique_keep)
        # (family, bound address, port) -> socket: one per local_port in use (open_sockets, _close_unused)
        self.sockets: dict[IkeSocketKey, socket.socket] = {}
        self.ports = _ports(connections)   # what open_sockets binds, per family
        self.ids = ids if ids is not None else IdSpace()
        self.children: dict[int, ChildState] = {}                # child handle -> state
        self._by_uid: dict[tuple[int, int], int] = {}            # (IKE SA handle, unique id) -> child handle
        self._ike_handles: dict[IkeSa, int] = {}
        self._handles = itertools.count(1)
        self._changes = asyncio.Lock()   # SA/SPD changes reach the worker in the order the engine reported them
        self.ike_up: dict[bytes, IkeUpRecord] = {}
        self.trap_reqids: dict[tuple[str, str], int] = {}        # (connection, child) -> reqid of its traps
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._natt_sends: set[asyncio.Future[list[pipe.Reply]]] = set()   # SEND_IKEs in flight
        self._refill: asyncio.Task[None] | None = None
        self._spi_wait = False     # the pool is empty and a refill in flight: the barrier is up (_spi_barrier)
        self._held: collections.deque[Callable[[], None]] = collections.deque()   # what waits for an SPI
        self._held_datagrams = 0   # how many of those are incoming datagrams (at most HELD_MAX)
        self._held_bytes = 0       # and their size (at most HELD_BYTES_MAX)
        self._peers_to_check: set[bytes] = set()   # our SPIs of IKE SAs that got a datagram (_follow_peers)
        self._addr_watch: AddressWatch | None = None   # a MOBIKE client's own address changes
        self._ike_peers: dict[int, tuple[str, int]] = {}   # IKE SA handle -> its peer at the last check
        self.held_total = 0        # incoming IKE datagrams that waited for an SPI (status: ike_held)
        self.held_dropped = 0      # incoming IKE datagrams dropped because HELD_MAX were already held
        self.install_waits = 0     # times outgoing datagrams waited behind the barrier (_flush_datagrams)
        self._held_log = LogLimiter()     # lines a flood can cause while inbound SPIs are short
        self._getspi_log = LogLimiter()
        self.trap_policies: dict[int, tuple[str, str]] = {}     # policy id -> (connection, child)
        self.attempts: dict[str, int] = {}                       # connection -> failed tries in a row
        self.closing = False
        self.unauthenticated_log = LogLimiter()                 # failures peers cause before authenticating
        self.events = EventCounts()                             # rekeys, dead peers (Prometheus counters)
        self._invalid_spi_sent: dict[bytes, float] = {}         # IKE SA (our SPI) -> last INVALID_SPI
        # make-before-break: datagrams to a peer wait while its Child SAs are being installed (see
        # _flush_datagrams); all wait while the SPI pool is empty and being refilled (see receive)
        self._installing: collections.Counter[tuple[str, int]] = collections.Counter()   # peer -> installs
        self._parked: dict[tuple[str, int], list[Datagram]] = {}   # peer -> what waits for its installs
        self._installs = 0
        self._installed = asyncio.Event()
        self._installed.set()
        self._flush_held = False
        self._timers: dict[asyncio.TimerHandle, Callable[[], object]] = {}   # lingering inbound SAs, standby ends
        # auth = eap-radius: the RADIUS client, and the round trip each IKE SA waits for
        self.radius = RadiusRelay(radius) if radius is not None else None
        self._relay_rounds: dict[IkeSa, asyncio.Task[None]] = {}

    # --- lifecycle -------------------------------------------------------------
    def prepare(self) -> None:
        self.open_sockets()

    def close(self) -> None:
        self.close_sockets()
        if self.radius is not None:
            self.radius.close()
        if self._addr_watch is not None:
            self._addr_watch.close()
            self._addr_watch = None

    def open_sockets(self) -> None:
        """UDP 500 (or the configured ports) per family, before the event loop starts."""
        self.ports = _ports(self.connections.values())
        for fam, addr in self.local_addrs.items():
            for port in sorted(self.ports):
                if (fam, addr, port) not in self.sockets:
                    self.sockets[(fam, addr, port)] = bind_udp(fam, addr, port, purpose="IKE")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.refill_spis()    # before answering anyone: an IKE_AUTH finds its inbound SPI in the pool
        for key, s in self.sockets.items():
            loop.add_reader(s.fileno(), self._readable, s, key)
        await self.install_traps()
        self._watch_addresses()
        for conn in self.connections.values():
            for ch in conn.ike.children:
                if conn.child(ch.name).start_action == "start":
                    self.initiate(conn.ike.name, ch.name)

    def _watch_addresses(self) -> None:
        """A MOBIKE client (a connection with a remote address and no fixed local one) follows
        its own address changes: each one sends UPDATE_SA_ADDRESSES (RFC 4555 §3.5)."""
        if not any(c.ike.mobike and c.ike.remote_addr and not c.ike.local_addr for c in self.connections.values()):
            return
        watch = AddressWatch(self.local_addresses_changed)
        try:
            watch.start()
        except OSError as err:
            log.warning("MOBIKE: cannot watch the host's addresses (rtnetlink): %s; "
                        "the gateways will not hear of our address changes", err)
            return
        self._addr_watch = watch

    def local_addresses_changed(self) -> int:
        """Our addresses changed: every established IKE SA we (originally) initiated with MOBIKE
        sends UPDATE_SA_ADDRESSES from the address the kernel now picks; how many did."""
        n = sum(1 for sa in self.endpoint.sas if sa.update_addresses())
        if n:
            log.info("MOBIKE: our addresses changed: updating %d IKE SA(s)", n)
            self._pump()
        return n

    async def worker_restarted(self) -> None:
        """A new worker has an empty SAD: IKE SAs survive, their children must be renegotiated."""
        self.spis.clear()
        self._spi_barrier()
        self._cancel_timers()   # their SPIs mean nothing (or someone else's SA) to the new worker
        for state in self.children.values():
            self._release(state.lineage)
        self.children.clear()
        self._by_uid.clear()
        self.ids.release_policy_ids(list(self.trap_policies))
        self.trap_policies.clear()
        await self.refill_spis()
        if not self.spis:          # the refill in flight at the restart asked the old worker
            await self.refill_spis()
        await self.install_traps()
        for sa in self.endpoint.sas:
            with contextlib.suppress(Exception):
                for child in sa.children:
                    self._with_spi(functools.partial(self._rekey_child, sa, child.unique_id))
        self._pump()

    async def shutdown(self) -> None:
        """Delete every IKE SA (the peer learns it now, not at its DPD timeout)."""
        self.closing = True
        for task in self._relay_rounds.values():
            task.cancel()     # the IKE SAs they wait for are deleted next
        for sa in self.endpoint.sas:
            if not sa.is_closed:
                with contextlib.suppress(Exception):
                    sa.delete(time.monotonic())
        self._flush_datagrams()
        await self._await_deletes(time.monotonic() + SHUTDOWN_WAIT)
        if self._tasks or self._natt_sends:
            await asyncio.wait([*self._tasks, *self._natt_sends], timeout=2.0)
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._cancel_timers()

    # --- reload ---------------------------------------------------------------------
    def check_reload(self, cfg: Config) -> list[str]:
        """The IKE sockets were bound at start (port 500 needs a privilege given up since)."""
        out = []
        want = ike_endpoints(cfg.connections) if cfg.connections else {}
        for fam, addr in sorted(want.items()):
            have = self.local_addrs.get(fam)
            if have != addr:
                out.append(f"needs a restart: IKE on IPv{fam} address {addr} (tunsec listens on "
                           f"{have or f'no IPv{fam} address'})")
        ports = self.ports
        for c in cfg.connections:
            if c.local_port not in ports:
                out.append(f"needs a restart: connection {c.name}: IKE on local_port {c.local_port} "
                           f"(tunsec listens on {', '.join(map(str, sorted(ports)))})")
        return out

    async def reload(self, cfg: Config) -> list[str]:
        """As swanctl --load-conns: IKE SAs of removed and changed connections are deleted (the peer
        is told), the changed and added ones start as configured; a connection that differs only in
        its credentials (PSK, certificates, keys) keeps its SAs and negotiates anew with the new ones."""
        d = diff_by_name(list(self.connections.values()), cfg.connections)
        creds = {new.name for old, new in d.changed if credentials_only(old, new)}
        replaced = [new for _, new in d.changed if new.name not in creds]
        gone = {c.name for c in d.removed} | {c.name for c in replaced}
        now = time.monotonic()
        for sa in self.endpoint.sas:
            if sa.name in gone and not sa.is_closed:
                with contextlib.suppress(Exception):
                    sa.delete(now)
        await self._remove_traps(gone)
        for name in gone:
            self.attempts.pop(name, None)
        self.connections = {c.name: c for c in cfg.connections}
        self.endpoint.set_configs([c.ike for c in cfg.connections])
        self._reload_radius(cfg.radius)
        if self._addr_watch is None:
            self._watch_addresses()   # a MOBIKE client connection may have been added
        self._close_unused()
        self._pump()   # the DELETEs go out (the children's SAs leave the worker as they are confirmed)
        for conn in [*d.added, *replaced]:
            for ch in conn.children:
                if ch.start_action == "trap":
                    await self.install_traps(only=(conn.name, ch.name))
                elif ch.start_action == "start":
                    self.initiate(conn.name, ch.name)
        out = dataclasses.replace(d, changed=tuple((o, n) for o, n in d.changed if n.name not in creds)
                                  ).summary("IKE connections")
        if creds:
            out.append(f"IKE connections with new credentials (for new negotiations): {', '.join(sorted(creds))}")
        return out

    def _reload_radius(self, settings: RadiusSettings | None) -> None:
        """New RADIUS servers or timers serve new rounds; a round in flight fails (its client is closed)."""
        if (self.radius.settings if self.radius is not None else None) == settings:
            return
        if self.radius is not None:
            self.radius.close()
        self.radius = RadiusRelay(settings) if settings is not None else None

    async def _remove_traps(self, conns: set[str]) -> None:
        for pid, (conn, _child) in list(self.trap_policies.items()):
            if conn not in conns:
                continue
            del self.trap_policies[pid]
            with contextlib.suppress(WorkerError):
                await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]
            self.ids.release_policy_ids([pid])
        for key in [k for k in self.trap_reqids if k[0] in conns]:
            self.ids.release_reqid(self.trap_reqids.pop(key))

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

    async def _await_deletes(self, deadline: float) -> None:
        """Until the peers acknowledged our DELETEs (their answers come in through
        the worker, still running) or the deadline: the worker stops after this."""
        while any(not sa.is_closed for sa in self.endpoint.sas) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def close_sockets(self) -> None:
        for key in list(self.sockets):
            self._close_socket(key)

    def _close_socket(self, key: IkeSocketKey) -> None:
        s = self.sockets.pop(key)
        with contextlib.suppress(Exception):
            asyncio.get_event_loop().remove_reader(s.fileno())
        s.close()

    def _close_unused(self) -> None:
        """After a reload: the ports no connection uses any more are closed (a new port needs a
        restart, see check_reload, so none is opened here)."""
        want = _ports(self.connections.values())
        for key in [k for k in self.sockets if k[2] not in want]:
            self._close_socket(key)
        self.ports = want & self.ports

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

    def peer_addresses(self) -> list[IPAddress]:
        out = []
        for conn in self.connections.values():
            with contextlib.suppress(ValueError, TypeError):
                out.append(ipaddress.ip_address(conn.ike.remote_addr or ""))
        return out

    def owns_policy(self, policy_id: int) -> bool:
        return policy_id in self.trap_policies

    # --- SPIs ------------------------------------------------------------------
    def _take_spi(self) -> int:
        if not self.spis:
            raise SpiUnavailable("no inbound SPI from the worker yet")
        spi = self.spis.popleft()
        self._start_refill()
        return spi

    def _start_refill(self) -> asyncio.Task[None]:
        """Top the pool up in the background (one refill at a time)."""
        if self._refill is None:
            self._refill = self._spawn(self._refill_spis())
        self._spi_barrier()    # the pool may have just run empty under a refill in flight
        return self._refill

    async def refill_spis(self) -> None:
        """Top the pool up; returns when it is full (or the worker refused)."""
        await asyncio.shield(self._start_refill())

    def _spi_barrier(self) -> None:
        """The install barrier (see _flush_datagrams) is also up while the pool is empty and a
        refill is in flight: incoming IKE that may need an inbound SPI waits (see receive), and
        so do timers (a rekey takes one), rather than fail the Child SA with TEMPORARY_FAILURE.
        With no refill in flight (the worker refused GETSPI) nothing waits: the failure is real."""
        wait = self._refill is not None and not self.spis
        if wait != self._spi_wait:
            self._spi_wait = wait
            if wait:
                self._install_started()
            else:
                self._install_done()
                if self._held:   # SPIs are in: what waits for one runs now, not after every pending install
                    asyncio.get_running_loop().call_soon(self._run_held)

    async def _refill_spis(self) -> None:
        try:
            # asked for all at once: one round trip per refill, not one per SPI (a burst of clients
            # empties the pool again and again)
            while (want := SPI_POOL - len(self.spis)) > 0:
                # larval_seconds=0: no larval timeout for these.  A pooled SPI is ours; a
                # handed one is installed (ChildSaUp) or handed back (SpiUnused -> DELETE)
                # by the engine, so none is expired under a negotiation, and an idle
                # pool does not churn (it used to expire and log each SPI every 30 s)
                answers = await asyncio.gather(*(self.worker().request(
                    lambda r: pipe.GetSpi(r, 0xC0000000, 0xCFFFFFFF, larval_seconds=0)) for _ in range(want)),
                    return_exceptions=True)
                for replies in answers:     # keep every SPI the worker gave before reporting a failure
                    if not isinstance(replies, BaseException) and replies[0].spi is not None:
                        self.spis.append(replies[0].spi)
                self._spi_barrier()
                if failed := next((a for a in answers if isinstance(a, BaseException)), None):
                    raise failed
        except WorkerError as err:
            # rate-limited: with the SAD full, any datagram of an IKE SA (a peer's junk too) retries
            if (held := self._getspi_log.admit()) is not None:
                log.warning("GETSPI failed: %s%s", err, suffix(held))
        finally:
            self._refill = None
            self._spi_barrier()

    def larval_expired(self, spi: int) -> None:
        if spi in self.spis:
            self.spis.remove(spi)
            self._start_refill()

    def expired(self, spi: int, direction: Direction, hard: bool, remote: Endpoint | None = None) -> bool:
        """A Child SA's lifetime: soft -> rekey it, hard -> delete it.  False if not ours.

        An outbound SA is named by (spi, remote): two peers may have chosen the same SPI."""
        for state in self.children.values():
            if direction is Direction.IN and spi != state.spi_in:
                continue
            if direction is Direction.OUT and (spi, remote) != (state.spi_out, state.remote):
                continue
            sa = self._ike_sa(state.ike)
            if sa is None or not any(c.unique_id == state.unique_id for c in sa.children):
                continue
            if hard:
                log.info("%s: CHILD_SA %s reached its hard limit; deleting", state.conn, state.child)
                sa.delete_child(state.unique_id, DownReason.EXPIRED)
            else:
                log.info("%s: CHILD_SA %s reached its soft limit; rekeying", state.conn, state.child)
                self._with_spi(functools.partial(self._rekey_child, sa, state.unique_id))
            self._pump()
            return True
        return False

    # --- who owns what -------------------------------------------------------------
    def _ike_handle(self, sa: IkeSa) -> int:
        handle = self._ike_handles.get(sa)
        if handle is None:
            handle = self._ike_handles[sa] = next(self._handles)
        return handle

    def _ike_sa(self, handle: int) -> IkeSa | None:
        """The live IKE SA behind a handle: after a rekey the old SA (which still answers a DELETE for the
        children it shares with its successor) and the successor hold the same handle."""
        sas = [sa for sa, h in self._ike_handles.items() if h == handle]
        return next((sa for sa in sas if sa.state not in (State.REKEYED, State.CLOSED)), sas[0] if sas else None)

    def _release(self, lineage: Lineage) -> None:
        self.ids.release_policy_ids(lineage.policy_ids)
        self.ids.release_reqid(lineage.reqid)
        lineage.policy_ids = []

    # --- INVALID_SPI -------------------------------------------------------------
    def invalid_spi(self, spi: int, remote: Endpoint) -> bool:
        """ESP from ``remote`` for an SPI the worker does not know (a hint, rate-limited there).

        Tell the peer with an INVALID_SPI notify, but only inside an IKE SA we have
        established with that address (never a new exchange or state for anyone
        else: the ESP packet proves nothing) and at most once per INVALID_SPI_INTERVAL
        per IKE SA.  True if a notify was queued.
        """
        now = time.monotonic()
        sas = [sa for sa in self.endpoint.sas if sa.state is State.ESTABLISHED and _same_addr(sa, remote)]
        live = {sa.local_spi for sa in self.endpoint.sas}
        for key in [k for k in self._invalid_spi_sent if k not in live]:
            del self._invalid_spi_sent[key]   # bounded by the IKE SAs that exist
        if not sas:
            return False
        sa = sas[0]
        last = self._invalid_spi_sent.get(sa.local_spi)
        if last is not None and now - last < INVALID_SPI_INTERVAL:
            return False
        if not sa.send_invalid_spi(spi):
            return False
        self._invalid_spi_sent[sa.local_spi] = now
        log.info("%s: ESP for unknown SPI %08x from %s: telling the peer (INVALID_SPI)", sa.name, spi, remote.addr)
        self._pump()
        return True

    # --- traps -----------------------------------------------------------------
    async def install_traps(self, only: tuple[str, str] | None = None) -> None:
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

    def _trap_reqid(self, conn: str, child: str) -> int:
        """A reqid no SA ever gets: its policies always raise ACQUIRE."""
        reqid = self.trap_reqids.get((conn, child))
        if reqid is None:
            reqid = self.trap_reqids[(conn, child)] = self.ids.reqid()
        return reqid

    def acquire(self, policy_id: int) -> None:
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

    # --- API ---------------------------------------------------------------------
    def initiate(self, conn: str, child: str | None) -> None:
        if conn not in self.connections:
            raise KeyError(conn)
        self._with_spi(functools.partial(self._initiate, conn, child))
        self._pump()

    def _initiate(self, conn: str, child: str | None) -> None:
        if self.closing:    # it waited for an SPI into the shutdown
            return
        # like strongSwan: a child of a connection whose IKE SA is up is added to it (CREATE_CHILD_SA)
        up = next((sa for sa in self.endpoint.sas if sa.name == conn and sa.state is State.ESTABLISHED), None)
        if up is not None and child is not None:
            up.initiate(child)
        else:
            self.endpoint.initiate(conn, child, time.monotonic())

    @staticmethod
    def _rekey_child(sa: IkeSa, unique_id: int) -> None:
        """Rekey a Child SA unless it went away while the rekey waited for an SPI."""
        if sa.state is State.ESTABLISHED and any(c.unique_id == unique_id for c in sa.children):
            sa.rekey_child(unique_id)

    def terminate(self, conn: str) -> int:
        n = 0
        for sa in self.endpoint.sas:
            if sa.name == conn and not sa.is_closed:
                sa.delete(time.monotonic())
                n += 1
        self._pump()
        return n

    def terminate_child(self, conn: str, child: str) -> int:
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

    # --- I/O -----------------------------------------------------------------------
    def _readable(self, s: socket.socket, key: IkeSocketKey) -> None:
        local = (key[1], key[2])   # the port it came in on is the one the answer leaves from
        for _ in range(64):
            try:
                data, addr = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                log.debug("IKE socket: %s", err)
                break
            self.receive(data, (addr[0], addr[1]), local)
        self._pump()

    def receive_natt(self, msg: pipe.Ike) -> None:
        """IKE that arrived on port 4500 via the worker."""
        local = (str(msg.local.addr), msg.local.port) if msg.local else None
        self.receive(msg.data, (str(msg.remote.addr), msg.remote.port), local)
        self._pump()

    def receive(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None = None) -> None:
        """One IKE datagram into the engine (the caller pumps), unless it must wait for an SPI.

        The engine takes inbound SPIs synchronously from the pool.  A datagram of an existing IKE
        SA (IKE_AUTH, CREATE_CHILD_SA, an IKE_SA_INIT response) may need one; while the pool is
        empty it is held (at most HELD_MAX) until the refill brings one, behind the same barrier
        that holds outgoing datagrams during installs.  Held ones keep their order; IKE_SA_INIT
        requests need no SPI and never wait."""
        self._note_peer(data)
        if not (_may_need_spi(data) and self._must_wait_for_spi()):
            self.endpoint.receive(data, remote, time.monotonic(), local)
        elif self._held_datagrams >= HELD_MAX or self._held_bytes + len(data) > HELD_BYTES_MAX:
            self.held_dropped += 1
            if (held := self._held_log.admit()) is not None:
                log.warning("IKE datagram from %s dropped: %d (%d bytes) already wait for inbound SPIs from the "
                            "worker%s", remote[0], self._held_datagrams, self._held_bytes, suffix(held))
        else:
            self._held_datagrams += 1
            self.held_total += 1
            self._held_bytes += len(data)
            self._hold(functools.partial(self._receive_held_datagram, data, remote, local))

    def _receive_held_datagram(self, data: bytes, remote: tuple[str, int], local: tuple[str, int] | None) -> None:
        self._held_datagrams -= 1
        self._held_bytes -= len(data)
        self._note_peer(data)
        self.endpoint.receive(data, remote, time.monotonic(), local)

    def _with_spi(self, action: Callable[[], None]) -> None:
        """Run a local action that may take an inbound SPI (a rekey, a CREATE_CHILD_SA) now, or
        after the refill if the pool is empty; the caller pumps."""
        if self._must_wait_for_spi():
            self._hold(action)
        else:
            action()

    def _must_wait_for_spi(self) -> bool:
        """The pool is empty (a refill is started) or others already wait: wait behind them."""
        if not self.spis:
            self._start_refill()
        return self._spi_wait or bool(self._held)

    def _hold(self, action: Callable[[], None]) -> None:
        self._held.append(action)
        if self._installs:   # starts the wait for the barrier if none is pending (else _spi_barrier's
            self._flush_datagrams()   # call_soon runs it): not a send before the events are handled

    def _run_held(self) -> None:
        """The barrier is down: what waited for an SPI runs, in order, until the pool is empty
        again; then what is queued leaves and the timer (held back meanwhile) is re-armed."""
        # not "until no install is pending": that let one held IKE_AUTH through per Child SA install,
        # and a burst of clients overflowed HELD_MAX; what is sent still waits for the installs
        while self._held and not self._spi_wait:
            action = self._held.popleft()
            try:
                action()
            except Exception as err:   # its caller has moved on; the rest must still run
                log.warning("IKE action that waited for an inbound SPI failed: %s", err)
        self._pump()   # installs it started, datagrams, timer; waits again if some still wait

    def _flush_datagrams(self) -> None:
        """Send what the engine has queued, but not before the peer's pending Child SA installs are
        acknowledged.

        Make-before-break (RFC 7296 §2.8): a rekey responder's CREATE_CHILD_SA response must not
        leave before its new inbound SA is in the worker, nor a rekey initiator's DELETE of the old
        Child SA before its new SAs are; both were queued in the step that reported the ChildSaUp,
        to the IKE SA's peer.  What goes to that peer (address and port) waits in its own queue until
        its installs are answered, so no datagram of an IKE SA overtakes another; other peers'
        datagrams leave (installs take a few pipe round trips, and a burst of clients installs many).
        While the SPI pool is refilled everything waits (see _spi_barrier)."""
        if self._installs:
            if not self._flush_held:
                self._flush_held = True
                self.install_waits += 1
                self._spawn(self._flush_after_installs())
            return
        self._send_datagrams()

    async def _flush_after_installs(self) -> None:
        try:
            await self._installed.wait()
        finally:
            self._flush_held = False
        self._run_held()

    def _install_started(self) -> None:
        self._installs += 1
        self._installed.clear()

    def _install_done(self, _task: Any = None) -> None:
        self._installs -= 1
        if not self._installs:
            self._installed.set()

    def _peer_install_done(self, peer: tuple[str, int]) -> None:
        self._installing[peer] -= 1
        if self._installing[peer] <= 0:
            del self._installing[peer]
            for datagram in self._parked.pop(peer, []):   # older than anything the engine still holds
                self._send(datagram)

    def _send_datagrams(self) -> None:
        for datagram in self.endpoint.datagrams_to_send(time.monotonic()):
            parked = self._parked.get(datagram.addr)
            if parked is None:
                self._send(datagram)
                continue
            if not parked:
                self.install_waits += 1
            parked.append(datagram)

    def _send(self, datagram: Datagram) -> None:
        data, addr, local_port = datagram
        ip = ipaddress.ip_address(addr[0])
        if local_port == NATT_PORT:
            self._send_natt(data, Endpoint(ip, addr[1]))
            return
        s = self._socket(ip.version, local_port)
        if s is None:
            log.warning("no IPv%d IKE socket for %s", ip.version, addr[0])
            return
        with contextlib.suppress(OSError):
            s.sendto(data, addr)

    def _socket(self, family: int, port: int) -> socket.socket | None:
        """The socket bound to ``port``; else (an initiator's IKE_SA_INIT: the engine sends those
        from port 500) the family's first one."""
        fam = [(k, s) for k, s in self.sockets.items() if k[0] == family]
        return next((s for k, s in fam if k[2] == port), fam[0][1] if fam else None)

    def _send_natt(self, data: bytes, remote: Endpoint) -> None:
        """SEND_IKE without a task per datagram (see WorkerClient.request_soon)."""
        try:
            sent = self.worker().request_soon(lambda r: pipe.SendIke(r, data, remote))
        except WorkerError as err:
            log.warning("sending IKE to %s failed: %s", remote.addr, err)
            return
        self._natt_sends.add(sent)   # shutdown waits for them as for tasks
        sent.add_done_callback(functools.partial(self._natt_sent, remote))

    def _natt_sent(self, remote: Endpoint, sent: asyncio.Future[list[pipe.Reply]]) -> None:
        self._natt_sends.discard(sent)
        err = sent.exception()    # retrieved: a worker that goes fails them all, no "never retrieved"
        if err is not None:
            log.warning("sending IKE to %s failed: %s", remote.addr, err)
        elif (bad := next((r.errno for r in sent.result() if r.errno is not Errno.OK), None)) is not None:
            log.warning("sending IKE to %s failed: %s", remote.addr, bad.name)

    def _pump(self) -> None:
        """After any input: handle events (starting installs), send, re-arm the timer."""
        while True:
            # calls made straight on an SA (delete, delete_child, rekey_child...) left their events
            # in it: collect them now, not at the next input
            self.endpoint.collect(time.monotonic())
            if not self.endpoint.has_events:
                break
            while (item := self.endpoint.next_event()) is not None:
                sa, ev = item
                self._event(sa, ev)
        if self._peers_to_check:
            self._follow_peers()
        self._flush_datagrams()
        self._arm()

    def _note_peer(self, data: bytes) -> None:
        """Remember which IKE SA a datagram is for (our SPI in its header): only its peer may have moved."""
        if len(data) >= 28:
            from_initiator = data[19] & HeaderFlag.INITIATOR
            self._peers_to_check.add(data[8:16] if from_initiator else data[0:8])

    def _follow_peers(self) -> None:
        """NAT rebinding (RFC 7296 §2.23) and MOBIKE (RFC 4555): the engine moves an IKE SA to the
        address and port of the peer's latest authenticated request (with MOBIKE: its
        UPDATE_SA_ADDRESSES, once the new address passed the return routability check:
        ``IkeSa.esp_remote``); the Child SAs it negotiated follow, their
        outbound ESP to the new mapping (MIGRATE, no re-keying).  Checked after input only, and
        only for the IKE SAs that got a datagram (not a pass over all of them per datagram); the
        children only when one's peer changed."""
        spis, self._peers_to_check = self._peers_to_check, set()
        peers: dict[int, tuple[str, int]] = {}
        for spi in spis:
            sa = self.endpoint.sa_by_spi(spi)
            handle = self._ike_handles.get(sa) if sa is not None else None
            if sa is None or handle is None or sa.state in (State.REKEYED, State.CLOSED):
                continue   # no handle: no Child SA of it is installed, nothing to move
            peer = sa.esp_remote   # MOBIKE: after the return routability check
            if self._ike_peers.get(handle) != peer:   # moved, or not seen yet: its children compare
                peers[handle] = self._ike_peers[handle] = peer
        if not peers:
            return
        for state in list(self.children.values()):
            now = peers.get(state.ike)
            known = state.moving_to or state.remote
            if now is None or (str(known.addr), known.port) == now:
                continue
            try:
                moved = Endpoint(ipaddress.ip_address(now[0]), now[1])
            except ValueError:
                continue
            if moved.family != state.remote.family:
                continue   # an SA keeps its family: a change needs new Child SAs (MOBIKE's job)
            state.moving_to = moved   # the next check must not move it again
            self._spawn(self._migrate_child(state, moved))

    async def _migrate_child(self, state: ChildState, moved: Endpoint) -> None:
        """MIGRATE a Child SA's inbound and (if added) outbound SA to the peer's new endpoint."""
        async with self._changes:
            await self._install_answered(state)
            if state.moving_to == moved:
                state.moving_to = None
            if state.handle not in self.children or state.remote == moved:
                return
            old, w = state.remote, self.worker()
            try:
                if state.out_installed:   # the worker knows the outbound SA by its peer (spi_out, old)
                    await w.request(lambda r: pipe.Migrate(r, state.spi_out, Direction.OUT, moved, old))
                await w.request(lambda r: pipe.Migrate(r, state.spi_in, Direction.IN, moved))
                state.remote = moved
                if state.standby is not None:
                    state.standby = dataclasses.replace(state.standby, remote=moved)
            except WorkerError as err:
                log.error("%s: moving CHILD_SA %s %08x_i %08x_o to %s:%d failed: %s", state.conn, state.child,
                          state.spi_in, state.spi_out, moved.addr, moved.port, err)
                return
        log.info("%s: CHILD_SA %s %08x_i %08x_o follows its peer to %s:%d", state.conn, state.child,
                 state.spi_in, state.spi_out, moved.addr, moved.port)

    def _arm(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None
        when = self.endpoint.get_timer()
        if when is not None:
            loop = asyncio.get_event_loop()
            delay = max(0.0, when - time.monotonic())
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._spi_wait:           # a rekey would find no SPI: the barrier's end re-arms the timer
            self._flush_datagrams()
            return
        self.endpoint.handle_timer(time.monotonic())
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
        if sa.is_initiator or sa.local_spi in self.ike_up:
            return 0
        return self.unauthenticated_log.admit()

    def _event(self, sa: IkeSa, ev: Any) -> None:
        match ev:
            case IkeSaUp():
                self.attempts.pop(ev.name, None)
                log.info("%s: IKE SA established with %s (%s), %s <-> %s", ev.name, ev.remote_addr[0],
                         ev.proposal, ev.local_id, ev.remote_id)
                if ev.peer_vips:
                    log.info("%s: assigned virtual IP %s to peer %s", ev.name,
                             ", ".join(map(str, ev.peer_vips)), ev.remote_id)
                if ev.own_vips:
                    self._vips_up(sa, ev)
                self.ike_up[sa.local_spi] = IkeUpRecord(ev, time.time())
                self._enforce_unique(sa, ev)
            case IkeSaRekeyed():
                self.events.ike_rekeys[ev.name] += 1
                self._ike_rekeyed(sa, ev)
            case IkeSaDown():
                log.info("%s: IKE SA closed: %s", ev.name, ev.reason)
                self._vips_down(sa)
                if (handle := self._ike_handles.pop(sa, None)) is not None and sa.heir is None:
                    self._ike_peers.pop(handle, None)   # not rekeyed: no successor uses the handle
                was_up = self.ike_up.pop(sa.local_spi, None) is not None
                if was_up and ev.reason is DownReason.DELETED_BY_PEER:
                    self._after_loss(ev.name, "close_action")
            case ChildSaUp():
                if ev.rekey_of is not None:
                    self.events.child_rekeys[(ev.name, ev.child)] += 1
                state = self._child_registered(sa, ev)
                if state is not None:
                    # the datagrams queued with this event go to the IKE SA's peer (then): they wait for the
                    # install (even a task cancelled before it ran releases them)
                    peer = ev.remote_addr
                    self._installing[peer] += 1
                    self._parked.setdefault(peer, [])
                    self._spawn(self._child_up(state, ev)).add_done_callback(
                        lambda _task: self._peer_install_done(peer))
            case ChildSaDown():
                self._child_gone(sa, ev)
            case AuthFailed():
                if (held := self._admit_log(sa)) is not None:
                    side = "the peer refused our authentication" if ev.by_peer else "the peer failed authentication"
                    log.error("%s: AUTHENTICATION_FAILED: %s (%s)%s", ev.name, side, ev.reason, suffix(held))
            case NegotiationFailed():
                if (held := self._admit_log(sa)) is not None:
                    child = f" child {ev.child}" if ev.child else ""
                    log.error("%s%s: %s: %s%s", ev.name, child, ev.reason, ev.detail, suffix(held))
            case PeerUnreachable():
                log.error("%s: peer did not answer after %d retransmissions; giving up", ev.name, ev.tries)
                if self.ike_up.pop(sa.local_spi, None) is not None:
                    self.events.dpd_failures[ev.name] += 1
                    self._after_loss(ev.name, "dpd_action")     # it was up: dead peer detected
                elif sa.is_initiator:
                    self._retry(ev.name)
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

    # --- auth = eap-radius: EAP between the engine and RADIUS ----------------------------
    def _relay_round(self, sa: IkeSa, ev: EapRelayRequest) -> None:
        """The engine holds the client's IKE_AUTH request until RADIUS answers (or gives up)."""
        if self.radius is None:   # the config check refuses eap-radius without servers; a reload might not
            self.endpoint.relay_reply(sa, RelayReply(RelayOutcome.FAILED, reason="no RADIUS server configured"),
                                      time.monotonic())
            return
        self._relay_rounds[sa] = self._spawn(self._relay(sa, ev, self.radius))

    async def _relay(self, sa: IkeSa, ev: EapRelayRequest, radius: RadiusRelay) -> None:
        try:
            reply = await radius.round(sa, ev, self._station(sa, ev))
        except Exception as err:   # answer anyway: the client's request must not wait for the half-open timeout
            log.error("%s: RADIUS round failed: %s: %s", ev.name, type(err).__name__, err)
            reply = RelayReply(RelayOutcome.FAILED, reason=f"RADIUS round failed ({type(err).__name__})")
        self._relay_rounds.pop(sa, None)
        if not self.endpoint.relay_reply(sa, reply, time.monotonic()):
            radius.stats.late += 1   # the IKE SA went away in the meantime
        self._pump()

    def _end_relay(self, sa: IkeSa) -> None:
        task = self._relay_rounds.pop(sa, None)
        if task is not None:
            task.cancel()   # gives its RADIUS identifier back; an answer still to come is dropped as late
        if self.radius is not None:
            self.radius.abandon(sa)

    def _station(self, sa: IkeSa, ev: EapRelayRequest) -> Station:
        """The attributes strongSwan's eap-radius sends: our IKE address, both endpoints as addr[port]."""
        me = self._endpoint(ipaddress.ip_address(ev.peer[0]).version, sa.local_port)
        assert self.radius is not None
        return Station(self.radius.settings.nas_identifier, None if me.addr.is_unspecified else str(me.addr),
                       f"{me.addr}[{me.port}]", f"{ev.peer[0]}[{ev.peer[1]}]", int.from_bytes(sa.local_spi[:4]))

    async def _resolve_gateway(self, sa: IkeSa, gateway: str) -> None:
        """Look up the gateway a REDIRECT named by FQDN with the system resolver, in the loop's
        executor (getaddrinfo blocks) and bounded in time; the engine gives up by itself too."""
        family = ipaddress.ip_address(sa.remote_addr[0]).version
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(gateway, None, type=socket.SOCK_DGRAM), RESOLVE_WAIT)
        except (OSError, UnicodeError, TimeoutError) as exc:
            log.error("%s: cannot resolve gateway %s we were redirected to: %s", sa.name, gateway,
                      str(exc) or "no answer in time")  # an exception is true even with no message
            infos = []
        addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
        # addresses of the family we reached the redirecting gateway in first (a route for it exists)
        addrs.sort(key=lambda a: ipaddress.ip_address(a.split("%")[0]).version != family)
        sa.gateway_resolved(gateway, addrs, time.monotonic())
        self._pump()

    # --- a client's virtual IPs (RFC 7296 §3.15) ------------------------------------
    def _vips_up(self, sa: IkeSa, ev: IkeSaUp) -> None:
        """Put the addresses the gateway assigned on the TUN, as the source of the connection's routes."""
        self._vips[self._ike_handle(sa)] = (ev.name, ev.own_vips)
        log.info("%s: virtual IP %s assigned by the peer%s", ev.name, ", ".join(map(str, ev.own_vips)),
                 f", DNS {', '.join(map(str, ev.dns))}" if ev.dns else "")
        fresh = [a for a in ev.own_vips if self._vip_refs[a] == 0]
        self._vip_refs.update(ev.own_vips)
        if fresh:
            self._spawn(self._apply_vips(ev.name, fresh, up=True))

    def _vips_down(self, sa: IkeSa) -> None:
        """The IKE SA is gone: its virtual IPs leave the TUN unless another IKE SA holds them too."""
        handle = self._ike_handles.get(sa)
        entry = self._vips.pop(handle, None) if handle is not None else None
        if entry is None:
            return
        self._vip_refs.subtract(entry[1])
        gone = [a for a in entry[1] if self._vip_refs[a] <= 0]
        for a in gone:
            del self._vip_refs[a]
        if gone:
            self._spawn(self._apply_vips(entry[0], gone, up=False))

    async def _apply_vips(self, conn: str, addrs: Sequence[IPAddress], up: bool) -> None:
        tun = self.tun
        if tun is None:
            return
        c = self.connections.get(conn)
        nets = [n for ch in c.ike.children for t in ch.remote_ts if not t.dynamic for n in ts_networks(t)] if c else []
        async with self._vip_lock:
            for addr in addrs:
                try:   # netlink in a thread: pyroute2's synchronous calls run an event loop of their own
                    if up:
                        await asyncio.to_thread(tun.add_address, str(addr))
                    else:
                        await asyncio.to_thread(tun.remove_address, str(addr))
                    for net in (n for n in nets if n.version == addr.version):
                        await asyncio.to_thread(tun.set_route_source, net, str(addr) if up else None)
                except Exception as exc:   # pyroute2's NetlinkError is an OSError with the kernel's errno
                    log.error("%s: cannot %s virtual IP %s on TUN %s: %s", conn, "add" if up else "remove",
                              addr, getattr(tun, "name", "?"), exc)

    def _unique_keep(self, conn: str) -> bool:
        """For the engine: a responder refuses a duplicate of this connection in IKE_AUTH."""
        c = self.connections.get(conn)
        return c is not None and c.unique == "keep"

    def _enforce_unique(self, fresh: IkeSa, ev: IkeSaUp) -> None:
        """strongSwan's ``unique`` for a new IKE SA whose peer identity already has one on this connection:
        ``replace`` deletes the old ones; ``keep`` was decided in IKE_AUTH (the engine refused the new
        one, see IkeEndpoint._refuse_duplicate); ``no``/``never`` allow duplicates (INITIAL_CONTACT
        still replaces, see IkeEndpoint)."""
        conn = self.connections.get(ev.name)
        if conn is None or conn.unique != "replace":
            return
        dups = [s for s in self.endpoint.sas if s is not fresh and s.name == fresh.name
                and s.state is State.ESTABLISHED and s.peer_id == ev.remote_id]
        for old in dups:
            log.info("%s: replacing IKE SA with %s from %s (unique = replace)", ev.name, ev.remote_id,
                     old.remote_addr[0])
            old.delete(time.monotonic(), DownReason.REPLACED)

    def _ike_rekeyed(self, sa: IkeSa, ev: IkeSaRekeyed) -> None:
        """The successor carries on the old IKE SA's children, so it takes over its handle."""
        new = sa.heir
        for gone in [s for s in self._ike_handles if s.is_closed]:
            del self._ike_handles[gone]
        # the old SA keeps its handle too: a DELETE for a shared child may still arrive on it
        handle = self._ike_handle(sa)
        if new is not None:
            self._ike_handles[new] = handle
        info = self.ike_up.pop(sa.local_spi, None)
        if info is not None and new is not None:
            info.update(spi_i=ev.new_spi_i.hex(), spi_r=ev.new_spi_r.hex(), established=time.time())
            self.ike_up[new.local_spi] = info
        log.info("%s: IKE SA rekeyed, SPIs %s_i %s_r", ev.name, ev.new_spi_i.hex(), ev.new_spi_r.hex())

    def _after_loss(self, conn_name: str, which: str) -> None:
        """close_action / dpd_action of each child of a connection whose IKE SA went away."""
        conn = self.connections.get(conn_name)
        if conn is None or self.closing:
            return
        for plan in conn.children:
            action = getattr(plan, which)
            if action == "start":
                log.info("%s: %s = start: re-initiating child %s", conn_name, which, plan.name)
                asyncio.get_event_loop().call_later(1.0, self._initiate_quietly, conn_name, plan.name)
            elif action == "trap" and plan.start_action != "trap":
                log.info("%s: %s = trap: child %s waits for traffic", conn_name, which, plan.name)
                self._spawn(self.install_traps(only=(conn_name, plan.name)))

    def _retry(self, conn_name: str) -> None:
        conn = self.connections.get(conn_name)
        if conn is None or self.closing:
            return
        tries = self.attempts[conn_name] = self.attempts.get(conn_name, 0) + 1
        if conn.keyingtries and tries >= conn.keyingtries:
            if conn.keyingtries > 1:
                log.error("%s: giving up after %d keying tries", conn_name, tries)
            self.attempts.pop(conn_name, None)
            return
        log.info("%s: keying try %d%s failed; trying again", conn_name, tries,
                 f" of {conn.keyingtries}" if conn.keyingtries else "")
        children: list[str | None] = [p.name for p in conn.children if p.start_action == "start"] or [None]
        for child in children:
            asyncio.get_event_loop().call_later(1.0, self._initiate_quietly, conn_name, child)

    def _initiate_quietly(self, conn_name: str, child: str | None) -> None:
        if self.closing:
            return
        try:
            self.initiate(conn_name, child)
        except (KeyError, ValueError) as err:
            log.error("%s: cannot initiate: %s", conn_name, err)

    async def _delete_sa(self, spi: int, direction: Direction, remote: Endpoint | None = None) -> None:
        with contextlib.suppress(WorkerError):
            await self.worker().request(lambda r: pipe.Delete(r, spi, direction, remote))

    def _endpoint(self, family: int, port: int) -> Endpoint:
        addr = self.local_addrs.get(family) or ("0.0.0.0" if family == 4 else "::")
        return Endpoint(ipaddress.ip_address(addr), port)

    def _child_registered(self, sa: IkeSa, ev: ChildSaUp) -> ChildState | None:
        """Book a new Child SA now, in event order: a rekey joins its predecessor's lineage,
        anything else (another peer's child of the same connection too) starts its own."""
        if ALGS.get(ev.alg) is None:
            log.error("%s: negotiated ESP %s, which the fast path does not do", sa.name, ev.alg)
            return None
        ike = self._ike_handle(sa)
        pred = self._by_uid.get((ike, ev.rekey_of)) if ev.rekey_of is not None else None
        lineage = self.children[pred].lineage if pred is not None else Lineage(self.ids.reqid())
        conn = self.connections.get(sa.name)
        plan = conn.child(ev.child) if conn else Child(ev.child, ChildConfig(ev.child))
        remote_ip = ipaddress.ip_address(ev.remote_addr[0])
        handle = next(self._handles)
        state = ChildState(handle, ike, sa.name, plan.name, ev.unique_id, ev.spi_in, ev.spi_out,
                           Endpoint(remote_ip, ev.remote_addr[1]), ev.alg, ev.esn, ev.local_ts, ev.remote_ts,
                           lineage, pred=pred)
        lineage.members.add(handle)
        self.children[handle] = state
        self._by_uid[(ike, ev.unique_id)] = handle
        return state

    def _forget(self, state: ChildState) -> bool:
        """Unbook a Child SA; True if its lineage ended (its policies and reqid are free to go)."""
        self.children.pop(state.handle, None)
        if self._by_uid.get((state.ike, state.unique_id)) == state.handle:
            del self._by_uid[(state.ike, state.unique_id)]
        state.lineage.members.discard(state.handle)
        return not state.lineage.members

    async def _child_up(self, state: ChildState, ev: ChildSaUp) -> None:
        conn = self.connections.get(state.conn)
        plan = conn.child(ev.child) if conn else Child(ev.child, ChildConfig(ev.child))
        local = self._endpoint(state.remote.addr.version, ev.local_port)
        try:
            sels = fast_selectors(ev.local_ts, ev.remote_ts)
        except SelectorError as err:   # the engine refuses such children; never install one that admits nothing
            log.error("%s: CHILD_SA %s not installed: %s", state.conn, ev.child, err)
            self._forget(state)
            return
        common = dict(alg=ALGS[ev.alg], esn=ev.esn, reqid=state.reqid, local=local, remote=state.remote,
                      soft=plan.soft_lifetime(), hard=plan.hard_lifetime())
        # a rekey we answer: the worker tells us when the initiator first sends on it (see first_use)
        inbound = SaSpec(spi=ev.spi_in, direction=Direction.IN, key=ev.key_in.reveal(),
                         replay_window=plan.replay_window, selectors=sels.inbound,
                         report_first_use=not ev.initiator and state.pred is not None,
                         **common)  # type: ignore[arg-type]
        outbound = SaSpec(spi=ev.spi_out, direction=Direction.OUT, key=ev.key_out.reveal(), replay_window=0,
                          selectors=sels.outbound, **common)  # type: ignore[arg-type]
        w = self.worker()
        async with self._changes:
            if state.handle not in self.children:
                return   # already deleted again
            # UPDATE, ADD and the SPDADDs are sent under the lock, in order (each request is written
            # when its task first runs, before anyone else takes the lock); their answers are awaited
            # outside it, so installs of different Child SAs overlap.  The worker applies requests
            # in the order they came; what else changes this Child SA awaits its answers first
            update = self._spawn(w.request(lambda r: pipe.Update(r, inbound)))
            add = None
            if not ev.initiator and state.pred in self.children:
                # we answered a rekey: the initiator installs after our response, so it may not open
                # the new SA yet; the old one carries our traffic until its DELETE (or a timeout).
                # If the old one is itself on standby, this one waits for it: promoted in turn
                state.standby = outbound
                state.standby_timer = self._later(
                    STANDBY_TIMEOUT, lambda: self._spawn(self._promote(state, "no DELETE came")))
            else:
                add = self._spawn(w.request(lambda r: pipe.Add(r, outbound)))
            protect = []
            if not state.lineage.policy_ids:   # a rekey finds its predecessor's policies in place
                protect = self._protect(state.lineage, outbound.selectors)
            install = state.install = self._spawn(self._answered(state, [update, *protect], add))
        try:
            await install
        except WorkerError as err:
            log.error("%s: installing CHILD_SA %s %08x_i %08x_o failed: %s", state.conn, plan.name,
                      ev.spi_in, ev.spi_out, err)
            async with self._changes:
                if state.handle in self.children:   # not deleted meanwhile (its DELETE, a worker restart)
                    await self._remove(state, self._forget(state))
            return
        finally:
            state.install = None
        if state.handle not in self.children:
            return   # deleted while its install was answered: _child_down has taken it out again
        log.info("%s: CHILD_SA %s up, SPIs %08x_i %08x_o, %s === %s (peer %s, reqid %d)", state.conn, plan.name,
                 ev.spi_in, ev.spi_out, ", ".join(map(str, ev.local_ts)), ", ".join(map(str, ev.remote_ts)),
                 state.remote.addr, state.reqid)
        if plan.updown and state.pred is None:   # a new Child SA, not a rekey (as strongSwan's updown plugin)
            state.lineage.updown = self._updown_event(state, plan, local.addr)
            self._spawn(self._run_updown(plan.updown, state.lineage.updown))

    def first_use(self, spi: int) -> bool:
        """The worker's FIRST_USE: an authenticated packet arrived on our inbound SA ``spi``.

        If it belongs to a rekey we answered, the initiator has installed the new Child SA and
        sends on it, so our traffic moves to the new outbound SA now rather than at the old SA's
        DELETE or the standby timeout.  Older standbys of the lineage are dropped: the peer has
        moved past them, and adding one later would move our traffic back.  True if promoted."""
        state = next((c for c in self.children.values() if c.spi_in == spi), None)
        if state is None or state.standby is None:
            return False   # the DELETE or the timeout came first, or the child is gone
        pred = self.children.get(state.pred) if state.pred is not None else None
        while pred is not None:
            pred.standby = None
            self._unlater(pred.standby_timer)
            pred = self.children.get(pred.pred) if pred.pred is not None else None
        self._spawn(self._promote(state, "the peer sends on the new SA"))
        return True

    async def _promote(self, state: ChildState, why: str) -> None:
        async with self._changes:
            await self._add_standby(state, why)

    async def _add_standby(self, state: ChildState, why: str) -> None:
        """ADD a rekey responder's held-back outbound SA (under ``_changes``); the SPD moves to it."""
        await self._install_answered(state)
        spec, state.standby = state.standby, None
        self._unlater(state.standby_timer)
        if spec is None or state.handle not in self.children:
            return
        try:
            await self.worker().request(lambda r: pipe.Add(r, spec))
            state.out_installed = True
            log.debug("%s: CHILD_SA %s sending on %08x_o (%s)", state.conn, state.child, state.spi_out, why)
        except WorkerError as err:
            log.error("%s: installing outbound SA %08x of CHILD_SA %s failed: %s", state.conn, state.spi_out,
                      state.child, err)

    async def _answered(self, state: ChildState, tasks: list[asyncio.Task[Any]],
                        add: asyncio.Task[Any] | None) -> None:
        """The answers to a Child SA's install requests; the first failure is raised."""
        every = [*tasks, add] if add is not None else tasks
        await asyncio.wait(every)
        if add is not None and not add.exception():
            state.out_installed = True
        for task in every:
            if (exc := task.exception()) is not None:
                raise exc

    async def _install_answered(self, state: ChildState) -> None:
        """Wait (under ``_changes``) for the answers to the Child SA's install, whatever they are."""
        if state.install is not None:
            await asyncio.wait([state.install])

    def _protect(self, lineage: Lineage, selectors: Sequence[Selector]) -> list[asyncio.Task[Any]]:
        """Send the SPDADDs of a new lineage (tasks that write their request when they first run)."""
        sent = []
        for sel in selectors:
            pid = self.ids.policy_id()
            lineage.policy_ids.append(pid)   # before the request: released with the lineage even if it fails
            pol = Policy(id=pid, priority=priority(Band.IKE_CHILD), action=Action.PROTECT, reqid=lineage.reqid,
                         selector=sel)
            sent.append(self._spawn(self.worker().request(lambda r, pol=pol: pipe.SpdAdd(r, pol))))  # type: ignore[misc]
        return sent

    async def _remove(self, state: ChildState, lineage_ended: bool, linger: bool = False) -> None:
        """The worker side of a Child SA going away: its SAs, and its policies if it was the last of its
        lineage.  Only what this Child SA installed: its outbound SA is named by (SPI, its peer).
        ``linger``: it was rekeyed; its inbound SA stays INBOUND_LINGER seconds for packets in flight."""
        await self._install_answered(state)   # out_installed is known then
        state.standby = None
        self._unlater(state.standby_timer)
        if state.out_installed:   # a refused ADD (EEXIST) leaves the SA that was there alone
            await self._delete_sa(state.spi_out, Direction.OUT, state.remote)
        if linger and not self.closing:
            log.debug("%s: inbound SA %08x of rekeyed CHILD_SA %s lingers %.0f s", state.conn, state.spi_in,
                      state.child, INBOUND_LINGER)
            spi = state.spi_in
            self._later(INBOUND_LINGER, lambda: self._spawn(self._delete_sa(spi, Direction.IN)))
        else:
            await self._delete_sa(state.spi_in, Direction.IN)
        if not lineage_ended:
            return
        for pid in state.lineage.policy_ids:
            with contextlib.suppress(WorkerError):
                await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]
        self._release(state.lineage)

    def _child_gone(self, sa: IkeSa, ev: ChildSaDown) -> None:
        handle = self._by_uid.get((self._ike_handle(sa), ev.unique_id))
        state = self.children.get(handle) if handle is not None else None
        if state is None:
            # never installed (or lost with a worker restart): only our inbound SPI may be left
            self._spawn(self._delete_sa(ev.spi_in, Direction.IN))
            log.info("%s: CHILD_SA %s %08x_i %08x_o deleted: %s", sa.name, ev.child, ev.spi_in, ev.spi_out,
                     ev.describe())
            return
        self._spawn(self._child_down(state, self._forget(state), ev))

    async def _child_down(self, state: ChildState, lineage_ended: bool, ev: ChildSaDown) -> None:
        async with self._changes:
            # its successor, if we answered that rekey, sends from now on (before the old SA goes)
            for member in [self.children[h] for h in state.lineage.members if h in self.children]:
                if member.pred == state.handle and member.standby is not None:
                    await self._add_standby(member, "old SA deleted")
            await self._remove(state, lineage_ended, linger=not lineage_ended)
        conn_name = state.conn
        log.info("%s: CHILD_SA %s %08x_i %08x_o deleted: %s (peer %s)", conn_name, state.child, state.spi_in,
                 state.spi_out, ev.describe(), state.remote.addr)
        conn = self.connections.get(conn_name)
        if lineage_ended and state.lineage.updown is not None and conn is not None:
            up, state.lineage.updown = state.lineage.updown, None
            self._spawn(self._run_updown(conn.child(state.child).updown, dataclasses.replace(up, up=False)))
        ike = self._ike_sa(state.ike)
        # a rekeyed child's DELETE (its lineage goes on) is no reason to re-create it
        if conn is not None and ike is not None and ike.state is State.ESTABLISHED \
                and ev.reason is DownReason.DELETED_BY_PEER \
                and lineage_ended and not self.closing:
            plan = conn.child(state.child)
            if plan.close_action == "start":
                log.info("%s: close_action = start: re-creating child %s", conn_name, plan.name)
                asyncio.get_event_loop().call_later(1.0, self._initiate_quietly, conn_name, plan.name)

    # --- updown scripts ----------------------------------------------------------------
    def _updown_event(self, state: ChildState, plan: Child, me: IPAddress) -> updown.ChildEvent:
        ike = self._ike_sa(state.ike)
        info: Mapping[str, Any] = self.ike_up.get(ike.local_spi, {}) if ike is not None else {}
        own, peer, dns = info.get("vips", ((), (), ()))
        return updown.ChildEvent(
            up=True, child=state.child, interface=getattr(self.tun, "name", ""), reqid=state.reqid,
            ike_unique_id=state.ike, me=str(me), peer=str(state.remote.addr), peer_port=state.remote.port,
            my_id=info.get("local_id", ""), peer_id=info.get("remote_id", ""),
            local_ts=state.local_ts, remote_ts=state.remote_ts, own_vips=own, peer_vips=peer, dns=dns,
            hostaccess=plan.hostaccess)

    async def _run_updown(self, argv: Sequence[str], ev: updown.ChildEvent) -> None:
        async with self._updown_lock:
            for env in updown.environments(ev):
                await updown.run(argv, env)

    # --- worker events -------------------------------------------------------------
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
                self.larval_expired(msg.spi)
                return True
            case pipe.Expire():
                return self.expired(msg.spi, msg.direction, msg.hard, msg.remote)
            case pipe.InvalidSpi():
                return self.invalid_spi(msg.spi, msg.remote)   # True: it logged the notify it sent
            case pipe.FirstUse():
                self.first_use(msg.spi)
                return True
        return False

    # --- status ------------------------------------------------------------------------
    def status(self, dump: pipe.Reply) -> dict[str, Any]:
        return {
            "ike_sas": self.ike_sas(),
            "leases": self.leases(),
            # unauthenticated IKE: half-open responder SAs now, and what was dropped or answered statelessly
            "ike_half_open": self.endpoint.half_open,
            "ike_drops": {n: getattr(self.endpoint.stats, n) for n in _IKE_DROPS},
            # IKE fragmentation (RFC 7383): messages split and reassembled, fragments dropped
            "ike_fragments": {n: getattr(self.endpoint.fragment_stats, n) for n in _FRAGMENT_COUNTERS},
            # the barrier: incoming datagrams that waited for an inbound SPI (now, in all, dropped at
            # HELD_MAX), and how often outgoing ones waited for installs or SPIs (see receive)
            "ike_held": {"waiting": self._held_datagrams, "held": self.held_total, "held_dropped": self.held_dropped,
                         "install_waits": self.install_waits},
            # auth = eap-radius: requests and answers, what was dropped, what is open now
            "radius": {} if self.radius is None else {
                **self.radius.stats.as_dict(), "conversations": self.radius.conversations,
                "outstanding": self.radius.client.outstanding()},
        }

    @classmethod
    def idle_status(cls) -> dict[str, Any]:
        return {"ike_sas": [], "leases": [], "ike_half_open": 0, "ike_drops": {}, "ike_fragments": {}, "ike_held": {},
                "radius": {}}

    def ike_sas(self) -> list[dict[str, Any]]:
        out = []
        for sa in self.endpoint.sas:
            info: Mapping[str, Any] = self.ike_up.get(sa.local_spi, {})
            out.append({
                "name": sa.name,
                "state": sa.state.value,
                "initiator": sa.is_initiator,
                "remote": f"{sa.remote_addr[0]}[{sa.remote_addr[1]}]",
                "mobike": sa.mobike,   # RFC 4555 negotiated: only UPDATE_SA_ADDRESSES moves it
                "proposal": info.get("proposal"),
                "local_id": info.get("local_id"),
                "remote_id": info.get("remote_id"),
                "spi_i": sa.spi_i.hex(),
                "spi_r": sa.spi_r.hex(),
                "local_vips": info.get("local_vips", []),
                "remote_vips": info.get("remote_vips", []),
                "age_seconds": int(time.time() - info["established"]) if info else None,
                "children": [
                    {"name": c.child, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}", "alg": c.alg,
                     "esn": c.esn, "reqid": c.reqid, "remote": f"{c.remote.addr}[{c.remote.port}]",
                     "local_ts": [str(t) for t in c.local_ts], "remote_ts": [str(t) for t in c.remote_ts],
                     "age_seconds": int(time.time() - c.established)}
                    for c in self.children.values()
                    if c.ike == self._ike_handles.get(sa) and self._ike_sa(c.ike) is sa
                ],
            })
        return out


    def leases(self) -> list[dict[str, Any]]:
        """Virtual IP leases for ``tunsec status``: pool, address, identity, online or offline."""
        return [{"pool": x.pool, "address": str(x.address), "identity": x.identity,
                 "status": "online" if x.online else "offline"} for x in self.pools.leases()]


def _ports(connections: Iterable[Connection]) -> set[int]:
    return {c.local_port for c in connections} or {IKE_PORT}


def _may_need_spi(data: bytes) -> bool:
    """Whether a datagram belongs to an existing IKE SA (its responder SPI is set), so handling
    it may take an inbound Child SA SPI; IKE_SA_INIT requests (and junk too short) do not."""
    return len(data) >= 16 and any(data[8:16])


def _same_addr(sa: IkeSa, remote: Endpoint) -> bool:
    """The IKE SA's peer is at ``remote``'s address (ports differ behind NATs)."""
    try:
        return ipaddress.ip_address(sa.remote_addr[0]) == remote.addr
    except ValueError:
        return False
