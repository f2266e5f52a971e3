"""IKEv2 in the control process: the glue between the sans-I/O engine
(tunsec.ike), the sockets and timers of asyncio, and the dataplane worker.

- IKE on port 500 arrives on the daemon's own sockets; on port 4500 it comes
  up the pipe from the worker (non-ESP marker stripped) and goes back down as
  SEND_IKE, so one socket carries both IKE and ESP as RFC 3948 wants.
- Inbound Child SA SPIs come from the worker (GETSPI: it owns the SAD); the
  engine takes them synchronously from a pool kept topped up here.
- ChildSaUp -> UPDATE (inbound) + ADD (outbound) + PROTECT policies for the
  negotiated selectors; ChildSaDown -> DELETE.  Trap policies (start_action
  = trap) have a reqid no SA ever gets, so their packets raise ACQUIRE.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
from tunsec.ike.config import IkeConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    NegotiationFailed,
    PeerUnreachable,
    SpiUnused,
)
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.state import SpiUnavailable
from tunsec.ike.ts import Ts

log = logging.getLogger("tunsec.ike")

NATT_PORT = 4500
SPI_POOL = 8
ALGS = {"aes128gcm16": Alg.AES128GCM16, "aes256gcm16": Alg.AES256GCM16}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ts_networks(t: Ts) -> list[IPNetwork]:
    return list(ipaddress.summarize_address_range(t.start, t.end))


@dataclass(frozen=True)
class ChildPlan:
    """Daemon-level settings of one child the engine does not need."""

    name: str
    start_action: str = "none"          # none | start | trap
    close_action: str = "none"          # when the peer deletes it: none | start | trap
    dpd_action: str = "none"            # when the peer stops answering: none | start | trap
    replay_window: int = 4096
    soft: Lifetime = field(default_factory=Lifetime)
    hard: Lifetime = field(default_factory=Lifetime)


@dataclass(frozen=True)
class IkeConnection:
    ike: IkeConfig
    children: tuple[ChildPlan, ...] = ()
    local_port: int = 500
    keyingtries: int = 1                # attempts to establish before giving up; 0 = forever

    def child(self, name: str) -> ChildPlan:
        for c in self.children:
            if c.name == name:
                return c
        return ChildPlan(name)


def ts_selector(src: Ts, dst: Ts) -> Selector | None:
    """The fast path's selector for packets from src to dst (None if families differ)."""
    if src.version != dst.version or (src.protocol and dst.protocol and src.protocol != dst.protocol):
        return None
    return Selector(src.start, src.end, dst.start, dst.end, proto=src.protocol or dst.protocol,
                    sport=(src.start_port, src.end_port), dport=(dst.start_port, dst.end_port))


def selector_pairs(srcs: Sequence[Ts], dsts: Sequence[Ts]) -> tuple[Selector, ...]:
    out = [ts_selector(s, d) for s in srcs for d in dsts]
    return tuple(x for x in out if x is not None)[: pipe.MAX_SELECTORS]


@dataclass
class ChildState:
    """A Child SA installed in the worker."""

    conn: str
    child: str
    unique_id: int
    spi_in: int
    spi_out: int
    alg: str
    esn: bool
    local_ts: tuple[Ts, ...]
    remote_ts: tuple[Ts, ...]
    policy_ids: list[int]
    established: float = field(default_factory=time.time)


class IkeService:
    """Runs the engine for the daemon; see the module docstring."""

    def __init__(self, connections: Sequence[IkeConnection], worker: Callable[[], WorkerClient],
                 local_addrs: dict[int, str]) -> None:
        self.connections = {c.ike.name: c for c in connections}
        self.worker = worker
        self.local_addrs = local_addrs     # family -> our outer address for ESP SAs
        self.spis: collections.deque[int] = collections.deque()
        self.endpoint = IkeEndpoint([c.ike for c in connections], spi_allocator=self._take_spi)
        self.sockets: dict[int, socket.socket] = {}
        self.children: dict[tuple[str, int], ChildState] = {}
        self.ike_up: dict[bytes, dict[str, Any]] = {}
        self.reqids = {(c.ike.name, ch.name): 1000 + i
                       for i, (c, ch) in enumerate((c, ch) for c in connections for ch in c.ike.children)}
        self._policy_ids = itertools.count(100000)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refilling = False
        self.trap_policies: dict[int, tuple[str, str]] = {}     # policy id -> (connection, child)
        self.attempts: dict[str, int] = {}                       # connection -> failed tries in a row
        self.closing = False

    # --- lifecycle -------------------------------------------------------------
    def open_sockets(self) -> None:
        """UDP 500 (or the configured port) per family, before the event loop starts."""
        ports = {c.local_port for c in self.connections.values()} or {500}
        for fam, addr in self.local_addrs.items():
            for port in ports:
                af = socket.AF_INET if fam == 4 else socket.AF_INET6
                s = socket.socket(af, socket.SOCK_DGRAM)
                if fam == 6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, port))
                s.setblocking(False)
                self.sockets[fam] = s

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self.sockets.values():
            loop.add_reader(s.fileno(), self._readable, s)
        await self.refill_spis()
        await self.install_traps()
        for conn in self.connections.values():
            for ch in conn.ike.children:
                if conn.child(ch.name).start_action == "start":
                    self.initiate(conn.ike.name, ch.name)

    async def worker_restarted(self) -> None:
        """A new worker has an empty SAD: IKE SAs survive, their children must be renegotiated."""
        self.spis.clear()
        self.children.clear()
        await self.refill_spis()
        await self.install_traps()
        for sa in self.endpoint.sas:
            with contextlib.suppress(Exception):
                for child in sa.children:
                    sa.rekey_child(child.unique_id)
        self._pump()

    async def shutdown(self) -> None:
        """Delete every IKE SA (the peer learns it now, not at its DPD timeout)."""
        self.closing = True
        for sa in self.endpoint.sas:
            if not sa.is_closed:
                with contextlib.suppress(Exception):
                    sa.delete(time.monotonic())
        self._flush_datagrams()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._timer:
            self._timer.cancel()
            self._timer = None

    def close_sockets(self) -> None:
        for s in self.sockets.values():
            with contextlib.suppress(Exception):
                asyncio.get_event_loop().remove_reader(s.fileno())
            s.close()
        self.sockets.clear()

    # --- what the daemon sets up around IKE ---------------------------------------
    def routes(self) -> list[tuple[IPNetwork, tuple[IPNetwork, ...]]]:
        """Configured (not dynamic) remote selectors, routed into the TUN, with our side's networks."""
        out = []
        for conn in self.connections.values():
            for ch in conn.ike.children:
                local = tuple(n for t in ch.local_ts if not t.dynamic for n in ts_networks(t))
                for t in ch.remote_ts:
                    if not t.dynamic:
                        out += [(n, local) for n in ts_networks(t)]
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
        self._spawn(self.refill_spis())
        return spi

    async def refill_spis(self) -> None:
        if self._refilling:
            return
        self._refilling = True
        try:
            while len(self.spis) < SPI_POOL:
                replies = await self.worker().request(lambda r: pipe.GetSpi(r, 0xC0000000, 0xCFFFFFFF))
                spi = replies[0].spi
                if spi is not None:
                    self.spis.append(spi)
        except WorkerError as err:
            log.warning("GETSPI failed: %s", err)
        finally:
            self._refilling = False

    def larval_expired(self, spi: int) -> None:
        if spi in self.spis:
            self.spis.remove(spi)
            self._spawn(self.refill_spis())

    def expired(self, spi: int, direction: Direction, hard: bool) -> bool:
        """A Child SA's lifetime: soft -> rekey it, hard -> delete it.  False if not ours."""
        for state in self.children.values():
            if spi != (state.spi_in if direction is Direction.IN else state.spi_out):
                continue
            for sa in self.endpoint.sas:
                if sa.name == state.conn and any(c.unique_id == state.unique_id for c in sa.children):
                    if hard:
                        log.info("%s: CHILD_SA %s reached its hard limit; deleting", state.conn, state.child)
                        sa.delete_child(state.unique_id)
                    else:
                        log.info("%s: CHILD_SA %s reached its soft limit; rekeying", state.conn, state.child)
                        sa.rekey_child(state.unique_id)
                    self._pump()
                    return True
        return False

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
                for sel in selector_pairs([t for t in local if t], [t for t in remote if t]):
                    pid = next(self._policy_ids)
                    self.trap_policies[pid] = (ike.name, ch.name)
                    reqid = self._trap_reqid(ike.name, ch.name)
                    pol = Policy(id=pid, priority=2000, action=Action.PROTECT, reqid=reqid, selector=sel)
                    await self.worker().request(lambda r, pol=pol: pipe.SpdAdd(r, pol))  # type: ignore[misc]

    def _trap_reqid(self, conn: str, child: str) -> int:
        return 500000 + self.reqids[(conn, child)]

    def acquire(self, policy_id: int) -> None:
        target = self.trap_policies.get(policy_id)
        if target is None:
            return
        conn, child = target
        if any(c.conn == conn and c.child == child for c in self.children.values()):
            return
        if any(sa.name == conn and not sa.is_closed for sa in self.endpoint.sas):
            return   # negotiation already under way
        log.info("%s: traffic for child %s: initiating (start_action = trap)", conn, child)
        self.initiate(conn, child)

    # --- API ---------------------------------------------------------------------
    def initiate(self, conn: str, child: str | None) -> None:
        if conn not in self.connections:
            raise KeyError(conn)
        # like strongSwan: a child of a connection whose IKE SA is up is added to it (CREATE_CHILD_SA)
        up = next((sa for sa in self.endpoint.sas if sa.name == conn and sa.state is State.ESTABLISHED), None)
        if up is not None and child is not None:
            up.initiate(child)
        else:
            self.endpoint.initiate(conn, child, time.monotonic())
        self._pump()

    def find_child(self, child: str) -> str | None:
        for conn in self.connections.values():
            if any(ch.name == child for ch in conn.ike.children):
                return conn.ike.name
        return None

    def terminate(self, conn: str) -> int:
        n = 0
        for sa in self.endpoint.sas:
            if sa.name == conn and not sa.is_closed:
                sa.delete(time.monotonic())
                n += 1
        self._pump()
        return n

    # --- I/O -----------------------------------------------------------------------
    def _readable(self, s: socket.socket) -> None:
        for _ in range(64):
            try:
                data, addr = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                log.debug("IKE socket: %s", err)
                break
            self.endpoint.receive(data, (addr[0], addr[1]), time.monotonic())
        self._pump()

    def receive_natt(self, msg: pipe.Ike) -> None:
        """IKE that arrived on port 4500 via the worker."""
        local = (str(msg.local.addr), msg.local.port) if msg.local else None
        self.endpoint.receive(msg.data, (str(msg.remote.addr), msg.remote.port), time.monotonic(), local)
        self._pump()

    def _flush_datagrams(self) -> None:
        for data, addr, local_port in self.endpoint.datagrams_to_send(time.monotonic()):
            ip = ipaddress.ip_address(addr[0])
            if local_port == NATT_PORT:
                remote = Endpoint(ip, addr[1])
                self._spawn(self._send_natt(data, remote))
                continue
            s = self.sockets.get(ip.version)
            if s is None:
                log.warning("no IPv%d IKE socket for %s", ip.version, addr[0])
                continue
            with contextlib.suppress(OSError):
                s.sendto(data, addr)

    async def _send_natt(self, data: bytes, remote: Endpoint) -> None:
        try:
            await self.worker().request(lambda r: pipe.SendIke(r, data, remote))
        except WorkerError as err:
            log.warning("sending IKE to %s failed: %s", remote.addr, err)

    def _pump(self) -> None:
        """After any input: send, handle events, re-arm the timer."""
        self._flush_datagrams()
        while (item := self.endpoint.next_event()) is not None:
            sa, ev = item
            self._event(sa, ev)
        self._flush_datagrams()
        self._arm()

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
        self.endpoint.handle_timer(time.monotonic())
        self._pump()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- events ----------------------------------------------------------------------
    def _event(self, sa: IkeSa, ev: Any) -> None:
        match ev:
            case IkeSaUp():
                self.attempts.pop(ev.name, None)
                log.info("%s: IKE SA established with %s (%s), %s <-> %s", ev.name, ev.remote_addr[0],
                         ev.proposal, ev.local_id, ev.remote_id)
                self.ike_up[sa.local_spi] = {"name": ev.name, "remote": ev.remote_addr[0], "proposal": ev.proposal,
                                             "local_id": str(ev.local_id), "remote_id": str(ev.remote_id),
                                             "spi_i": ev.spi_i.hex(), "spi_r": ev.spi_r.hex(),
                                             "established": time.time()}
            case IkeSaRekeyed():
                info = self.ike_up.pop(sa.local_spi, None)
                # keyed by the new SA's own SPI: its role is the rekey's, not the old SA's
                new = next((s for s in self.endpoint.sas if (s.spi_i, s.spi_r) == (ev.new_spi_i, ev.new_spi_r)), None)
                if info is not None and new is not None:
                    info.update(spi_i=ev.new_spi_i.hex(), spi_r=ev.new_spi_r.hex(), established=time.time())
                    self.ike_up[new.local_spi] = info
                log.info("%s: IKE SA rekeyed, SPIs %s_i %s_r", ev.name, ev.new_spi_i.hex(), ev.new_spi_r.hex())
            case IkeSaDown():
                log.info("%s: IKE SA closed: %s", ev.name, ev.reason)
                was_up = self.ike_up.pop(sa.local_spi, None) is not None
                if was_up and "by peer" in ev.reason:
                    self._after_loss(ev.name, "close_action")
            case ChildSaUp():
                self._spawn(self._child_up(sa.name, ev))
            case ChildSaDown():
                self._spawn(self._child_down(sa.name, ev))
            case AuthFailed():
                side = "the peer refused our authentication" if ev.by_peer else "the peer failed authentication"
                log.error("%s: AUTHENTICATION_FAILED: %s (%s)", ev.name, side, ev.reason)
            case NegotiationFailed():
                child = f" child {ev.child}" if ev.child else ""
                log.error("%s%s: %s: %s", ev.name, child, ev.reason, ev.detail)
            case PeerUnreachable():
                log.error("%s: peer did not answer after %d retransmissions; giving up", ev.name, ev.tries)
                if self.ike_up.pop(sa.local_spi, None) is not None:
                    self._after_loss(ev.name, "dpd_action")     # it was up: dead peer detected
                elif sa.is_initiator:
                    self._retry(ev.name)
            case SpiUnused():
                self._spawn(self._delete_sa(ev.spi, Direction.IN))

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

    async def _delete_sa(self, spi: int, direction: Direction) -> None:
        with contextlib.suppress(WorkerError):
            await self.worker().request(lambda r: pipe.Delete(r, spi, direction))

    def _endpoint(self, family: int, port: int) -> Endpoint:
        addr = self.local_addrs.get(family) or ("0.0.0.0" if family == 4 else "::")
        return Endpoint(ipaddress.ip_address(addr), port)

    async def _child_up(self, conn_name: str, ev: ChildSaUp) -> None:
        conn = self.connections.get(conn_name)
        plan = conn.child(ev.child) if conn else ChildPlan(ev.child)
        alg = ALGS.get(ev.alg)
        if alg is None:
            log.error("%s: negotiated ESP %s, which the fast path does not do", conn_name, ev.alg)
            return
        remote_ip = ipaddress.ip_address(ev.remote_addr[0])
        remote = Endpoint(remote_ip, ev.remote_addr[1])
        local = self._endpoint(remote_ip.version, ev.local_port)
        reqid = self.reqids.get((conn_name, plan.name), 999)
        common = dict(alg=alg, esn=ev.esn, reqid=reqid, local=local, remote=remote, soft=plan.soft, hard=plan.hard)
        inbound = SaSpec(spi=ev.spi_in, direction=Direction.IN, key=ev.key_in.reveal(),
                         replay_window=plan.replay_window, selectors=selector_pairs(ev.remote_ts, ev.local_ts),
                         **common)  # type: ignore[arg-type]
        outbound = SaSpec(spi=ev.spi_out, direction=Direction.OUT, key=ev.key_out.reveal(), replay_window=0,
                          selectors=selector_pairs(ev.local_ts, ev.remote_ts), **common)  # type: ignore[arg-type]
        w = self.worker()
        siblings = [c for c in self.children.values() if c.conn == conn_name and c.child == plan.name]
        try:
            await w.request(lambda r: pipe.Update(r, inbound))
            await w.request(lambda r: pipe.Add(r, outbound))
            # a rekeyed SA shares its predecessor's policies (same reqid: the newest SA wins)
            pids = siblings[0].policy_ids if siblings else await self._protect(reqid, outbound.selectors)
        except WorkerError as err:
            log.error("%s: installing CHILD_SA %s %08x_i %08x_o failed: %s", conn_name, plan.name, ev.spi_in,
                      ev.spi_out, err)
            return
        self.children[(conn_name, ev.unique_id)] = ChildState(
            conn_name, plan.name, ev.unique_id, ev.spi_in, ev.spi_out, ev.alg, ev.esn, ev.local_ts, ev.remote_ts, pids)
        log.info("%s: CHILD_SA %s up, SPIs %08x_i %08x_o, %s === %s", conn_name, plan.name, ev.spi_in, ev.spi_out,
                 ", ".join(map(str, ev.local_ts)), ", ".join(map(str, ev.remote_ts)))

    async def _protect(self, reqid: int, selectors: Sequence[Selector]) -> list[int]:
        pids = []
        for sel in selectors:
            pid = next(self._policy_ids)
            pol = Policy(id=pid, priority=1500, action=Action.PROTECT, reqid=reqid, selector=sel)
            await self.worker().request(lambda r, pol=pol: pipe.SpdAdd(r, pol))  # type: ignore[misc]
            pids.append(pid)
        return pids

    async def _child_down(self, conn_name: str, ev: ChildSaDown) -> None:
        state = self.children.pop((conn_name, ev.unique_id), None)
        await self._delete_sa(ev.spi_in, Direction.IN)
        await self._delete_sa(ev.spi_out, Direction.OUT)
        log.info("%s: CHILD_SA %s %08x_i %08x_o deleted: %s", conn_name, ev.child, ev.spi_in, ev.spi_out, ev.reason)
        if state is None:
            return
        conn = self.connections.get(conn_name)
        ike_up = any(sa.name == conn_name and sa.state is State.ESTABLISHED for sa in self.endpoint.sas)
        if conn is not None and ike_up and "by peer" in ev.reason and not self.closing:
            plan = conn.child(state.child)
            if plan.close_action == "start":
                log.info("%s: close_action = start: re-creating child %s", conn_name, plan.name)
                asyncio.get_event_loop().call_later(1.0, self._initiate_quietly, conn_name, plan.name)
        if any(c.conn == state.conn and c.child == state.child for c in self.children.values()):
            return   # a rekeyed successor keeps the policies
        for pid in state.policy_ids:
            with contextlib.suppress(WorkerError):
                await self.worker().request(lambda r, pid=pid: pipe.SpdDelete(r, pid))  # type: ignore[misc]

    # --- status ------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        out = []
        for sa in self.endpoint.sas:
            info = self.ike_up.get(sa.local_spi, {})
            out.append({
                "name": sa.name,
                "state": sa.state.value,
                "initiator": sa.is_initiator,
                "remote": f"{sa.remote_addr[0]}[{sa.remote_addr[1]}]",
                "proposal": info.get("proposal"),
                "local_id": info.get("local_id"),
                "remote_id": info.get("remote_id"),
                "spi_i": sa.spi_i.hex(),
                "spi_r": sa.spi_r.hex(),
                "age_seconds": int(time.time() - info["established"]) if info else None,
                "children": [
                    {"name": c.child, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}", "alg": c.alg,
                     "esn": c.esn, "local_ts": [str(t) for t in c.local_ts], "remote_ts": [str(t) for t in c.remote_ts],
                     "age_seconds": int(time.time() - c.established)}
                    for c in self.children.values() if c.conn == sa.name
                    and any(ch.unique_id == c.unique_id for ch in sa.children)
                ],
            })
        return out
