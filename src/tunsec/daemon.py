"""The control process: configuration -> TUN, routes, sockets, the worker
and the SAs/policies in it; the control socket `tunsec status` talks to.

asyncio lives here, at the edge; the worker does the packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from tunsec.conf.config import Config
from tunsec.conf.connections import find_child, ike_endpoints
from tunsec.conf.tunsec_section import worker_user
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, WorkerFds
from tunsec.dataplane.pipe import Direction, ExpireReason
from tunsec.dataplane.tun import Tun, local_address_in, outer_mtu_towards, tunnel_mtu
from tunsec.ike.constants import NATT_PORT
from tunsec.ikeservice import IkeService
from tunsec.manual import ManualPlan, plan
from tunsec.policy.ids import IdSpace
from tunsec.seqstate import SeqState, StateError, prepare_dir
from tunsec.status import status_document

log = logging.getLogger("tunsec")

SOCKET_BUFFER = 4 << 20
UDP_SEGMENT, UDP_GRO = 103, 104   # linux/udp.h; Python 3.11's socket module lacks them
RESERVE_RETRY = 1.0
MANUAL_WARNING = ("manual keys are for tests and benchmarks; use IKE in production (RFC 4106 §8.1 forbids "
                  "AES-GCM with statically configured keys; tunsec persists sequence numbers in state_dir)")
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


# How the worker names an SA: inbound by SPI, outbound by SPI and peer (peers choose those SPIs)
SaKey = tuple[int, Direction, pipe.Endpoint | None]


def _sa_key(spi: int, direction: Direction, remote: pipe.Endpoint | None) -> SaKey:
    return (spi, direction, remote if direction is Direction.OUT else None)


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


def _udp_socket(family: int, addr: str, port: int, reuseport: bool = False) -> socket.socket:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    s = socket.socket(af, socket.SOCK_DGRAM)
    if reuseport:
        # one socket per worker queue: the kernel spreads peers across them
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == 6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):   # SO_*BUFFORCE
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    try:
        s.bind((addr, port))
    except OSError as err:
        s.close()
        raise StartupError(f"cannot bind UDP {addr} port {port}: {err.strerror}") from err
    s.setblocking(False)
    return s


@dataclass
class Sockets:
    """The ESP-in-UDP sockets: per queue, one per outer family (SO_REUSEPORT when several queues)."""

    queues: list[dict[int, socket.socket]] = field(default_factory=list)

    @property
    def by_family(self) -> dict[int, socket.socket]:
        return self.queues[0] if self.queues else {}

    @classmethod
    def for_endpoints(cls, endpoints: list[tuple[int, str, int]], nqueues: int = 1) -> Sockets:
        """Bound to the local address when all tunnels of a family agree on one, else to any."""
        out = cls()
        families: dict[int, tuple[set[str], set[int]]] = {}
        for fam, addr, port in endpoints:
            addrs, ports = families.setdefault(fam, (set(), set()))
            addrs.add(addr)
            ports.add(port)
        if not families:
            families[4] = ({"0.0.0.0"}, {NATT_PORT})
        binds = {}
        for fam, (addrs, ports) in families.items():
            if len(ports) != 1:
                raise StartupError(f"IPv{fam} tunnels use different local ports {sorted(ports)}; "
                                   "tunsec listens on one ESP port per address family")
            binds[fam] = (addrs.pop() if len(addrs) == 1 else ("0.0.0.0" if fam == 4 else "::"), ports.pop())
        try:
            for _ in range(nqueues):
                out.queues.append({fam: _udp_socket(fam, a, p, nqueues > 1) for fam, (a, p) in binds.items()})
        except BaseException:
            out.close()
            raise
        return out

    def fd(self, family: int, queue: int = 0) -> int:
        s = self.queues[queue].get(family) if queue < len(self.queues) else None
        return s.fileno() if s else -1

    def offloads(self) -> list[str]:
        """UDP GSO/GRO as the worker's fast path finds them (the same sockets, the same probes)."""
        if not self.by_family:
            return []
        found = []
        for name, opt, value in (("udp-gso", UDP_SEGMENT, 0), ("udp-gro", UDP_GRO, 1)):
            try:
                for s in self.by_family.values():
                    s.setsockopt(socket.IPPROTO_UDP, opt, value)
            except OSError:
                continue
            found.append(name)
        return found

    def close(self) -> None:
        for q in self.queues:
            for s in q.values():
                s.close()
        self.queues.clear()


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ids = IdSpace()                     # reqids, policy ids: manual and IKE alike
        self.plans: list[ManualPlan] = [plan(t, i, self.ids) for i, t in enumerate(cfg.manual)]
        self.tun: Tun | None = None
        self.mtu = 0
        self.sockets = Sockets()
        self.worker = WorkerClient(self._on_event)
        conns = cfg.connections
        self.ike: IkeService | None = None
        if conns:
            self.ike = IkeService(conns, lambda: self.worker, ike_endpoints(conns), self.ids, cfg.tunsec.dos)
        self.nqueues = max(1, min(cfg.tunsec.workers or os.cpu_count() or 1, 16))
        self.started = time.time()
        self.restarts: list[float] = []
        # manual SAs' persisted sequence number reservations, by SA (see _sa_key)
        self.seq: dict[SaKey, SeqState] = {}
        self._seq_locks: dict[SaKey, asyncio.Lock] = {}
        self._extending: set[SaKey] = set()
        # RESERVE_LOW that came while that SA's refill was under way: the worker
        # sends one per reservation, so it is never stale and must not be lost
        self._again: dict[SaKey, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- setup -----------------------------------------------------------------
    def _choose_mtu(self) -> int:
        s = self.cfg.tunsec
        if s.mtu:
            return s.mtu
        sizes = []
        peers = [t.remote_addr for t in self.cfg.manual]
        if self.ike is not None:
            peers += self.ike.peer_addresses()
        for peer in peers:
            outer = s.outer_mtu or outer_mtu_towards(str(peer))
            sizes.append(tunnel_mtu(outer, peer.version))
        return min(sizes) if sizes else tunnel_mtu(s.outer_mtu or 1500, 4)

    def _open_tun(self) -> None:
        try:
            self.tun = Tun.open(self.cfg.tunsec.tun, queues=self.nqueues)
        except OSError as err:
            raise StartupError(f"cannot open TUN {self.cfg.tunsec.tun}: {err}") from err

    def _setup_tun(self) -> None:
        assert self.tun is not None
        self.mtu = self._choose_mtu()
        self.tun.configure(self.mtu)
        if self.mtu < 1280 and any(ts.version == 6 for p in self.plans for ts in p.tunnel.remote_ts):
            log.warning("tunnel MTU %d is below IPv6's minimum 1280: IPv6 through it will fail", self.mtu)
        for p in self.plans:
            self._route(p)
        if self.ike is not None:
            for net, local_nets in self.ike.routes():
                self._add_route(net, local_nets)

    def _route(self, p: ManualPlan) -> None:
        local_nets = tuple(net for ts in p.tunnel.local_ts for net in ts.networks())
        for ts in p.tunnel.remote_ts:
            for net in ts.networks():
                self._add_route(net, local_nets)

    def _add_route(self, net: IPv4Network | IPv6Network, local_nets: tuple[IPv4Network | IPv6Network, ...]) -> None:
        assert self.tun is not None
        if any(r[0] == net for r in self.tun.routes):
            return
        same = tuple(n for n in local_nets if n.version == net.version)
        self.tun.add_route(net, local_address_in(same) if same else None)

    async def _start_worker(self) -> None:
        assert self.tun is not None
        extra = [(self.tun.queue_fileno(q), self.sockets.fd(4, q), self.sockets.fd(6, q))
                 for q in range(1, self.tun.nqueues)]
        fds = WorkerFds(self.tun.fileno(), self.sockets.fd(4), self.sockets.fd(6), self.tun.vnet_hdr, extra)
        s = self.cfg.tunsec
        try:
            # a daemon that is not root has no privilege to give up by changing user
            user = worker_user(s.user) if os.geteuid() == 0 else None
        except LookupError as err:
            raise StartupError(f"starting the dataplane worker: {err}") from None
        self.worker = WorkerClient(self._on_event)
        await self.worker.start(fds, self.mtu, s.larval_timeout, s.log_level, user)
        await self._install()
        if self.ike is not None and self.restarts:
            await self.ike.worker_restarted()

    def _open_seq_state(self) -> None:
        """Every manual SA's persisted reservation; refuses to start on unreadable state."""
        if not self.plans:
            return
        state_dir = Path(self.cfg.tunsec.state_dir)
        owner: dict[Path, str] = {}
        try:
            prepare_dir(state_dir)
            for p in self.plans:
                for sa in (p.inbound, p.outbound):
                    st = SeqState.open(state_dir, p.tunnel.name, sa.spi, sa.direction, sa.key, sa.esn)
                    if st.path in owner:
                        raise StartupError(f"manual tunnels {owner[st.path]} and {p.tunnel.name} use the same "
                                           f"{sa.direction.name.lower()} SPI {sa.spi:08x} and key: their "
                                           "AES-GCM nonces would collide; give each tunnel its own keys")
                    owner[st.path] = p.tunnel.name
                    key = _sa_key(sa.spi, sa.direction, sa.remote)
                    if key in self.seq:
                        raise StartupError(f"manual tunnel {p.tunnel.name}: {sa.direction.name.lower()} SA "
                                           f"{sa.spi:08x} is also another manual tunnel's; give each its own SPI")
                    self.seq[key] = st
                    self._seq_locks[key] = asyncio.Lock()
        except StateError as err:
            raise StartupError(str(err)) from err

    async def _install(self) -> None:
        for p in self.plans:
            await self._install_one(await self._reserved(p))

    async def _reserved(self, p: ManualPlan) -> ManualPlan:
        """p with both SAs starting past their persisted limits, a new block persisted first."""
        kin = _sa_key(p.inbound.spi, Direction.IN, p.inbound.remote)
        kout = _sa_key(p.outbound.spi, Direction.OUT, p.outbound.remote)
        try:
            async with self._seq_locks[kin], self._seq_locks[kout]:
                r_in = await asyncio.to_thread(self.seq[kin].restart)
                r_out = await asyncio.to_thread(self.seq[kout].restart)
        except StateError as err:
            raise StartupError(str(err)) from err
        log.info("%s: sequence numbers reserved: out %08x from %d to %d, in %08x accepts %d..%d", p.tunnel.name,
                 p.outbound.spi, r_out[0] + 1, r_out[1], p.inbound.spi, r_in[0] + 1, r_in[1])
        return p.with_reservations(r_in, r_out)

    def _reserve_more(self, msg: pipe.ReserveLow) -> None:
        key = _sa_key(msg.spi, msg.direction, msg.remote)
        log.debug("SA %s %08x reached its reservation's refill point", msg.direction.name.lower(), msg.spi)
        if key not in self.seq:
            return
        if key in self._extending:
            # the worker may have taken the new reservation before we saw its
            # answer; it asks only once per reservation, so ignoring this would
            # leave the SA dropping everything past its limit for good
            self._again[key] = max(self._again.get(key, 0), msg.needed)
            return
        self._extending.add(key)
        task = asyncio.create_task(self._extend(key, msg.needed))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _extend(self, key: SaKey, needed: int) -> None:
        """Persist a further block for an SA, then (only then) let the worker use it."""
        st = self.seq[key]
        try:
            while not self.stopping.is_set():
                async with self._seq_locks[key]:
                    try:
                        limit, notify = await asyncio.to_thread(st.extend, time.monotonic(), needed)
                    except StateError as err:
                        log.error("%s; the SA drops packets past %d until this succeeds", err, st.limit)
                    else:
                        log.debug("SA %s %08x: sequence numbers up to %d reserved", key[1].name.lower(), key[0],
                                  limit)
                        await self._send_reserve(key, limit, notify)
                        if key not in self._again:
                            return
                        needed = self._again.pop(key)
                        continue
                await asyncio.sleep(RESERVE_RETRY)
        finally:
            self._extending.discard(key)
            self._again.pop(key, None)

    async def _install_one(self, p: ManualPlan) -> None:
        name = p.tunnel.name
        try:
            await self.worker.request(lambda r: pipe.GetSpi(r, p.inbound.spi, p.inbound.spi))
            await self.worker.request(lambda r: pipe.Update(r, p.inbound))
            await self.worker.request(lambda r: pipe.Add(r, p.outbound))
            for pol in p.policies:
                await self.worker.request(lambda r, pol=pol: pipe.SpdAdd(r, pol))  # type: ignore[misc]
        except WorkerError as err:
            raise StartupError(f"{name}: installing SAs failed: {err}") from err
        log.info("%s: SAs in %08x / out %08x installed, %d policies", name, p.inbound.spi,
                 p.outbound.spi, len(p.policies))

    async def _send_reserve(self, key: SaKey, limit: int, notify: int) -> None:
        with contextlib.suppress(WorkerError):   # a restarted worker starts past the limit anyway
            await self.worker.request(lambda r: pipe.Reserve(r, key[0], key[1], limit, notify, key[2]))

    # --- running ---------------------------------------------------------------
    def _on_event(self, msg: pipe.Message) -> None:
        if self.ike is not None and self._ike_event(msg):
            return
        match msg:
            case pipe.Expire():
                what = "hard" if msg.hard else "soft"
                log.warning("SA %s %08x reached its %s %s limit%s", msg.direction.name.lower(), msg.spi,
                            what, msg.reason.name.lower(),
                            "; manual keys cannot be renewed: replace them in the config" if msg.hard else "")
            case pipe.InvalidSpi():
                log.info("ESP for unknown SPI %08x from %s port %d", msg.spi, msg.remote.addr, msg.remote.port)
            case pipe.Acquire():
                log.info("traffic for policy %d has no SA (no IKE configured for it)", msg.policy_id)
            case pipe.Ike():
                log.debug("IKE message from %s ignored: no IKE connections configured", msg.remote.addr)
            case pipe.ReserveLow():
                self._reserve_more(msg)
            case _:
                log.debug("worker event %s", type(msg).__name__)

    def _ike_event(self, msg: pipe.Message) -> bool:
        """Worker events that belong to IKE; True when handled."""
        assert self.ike is not None
        match msg:
            case pipe.Ike():
                self.ike.receive_natt(msg)
                return True
            case pipe.Acquire() if self.ike.owns_policy(msg.policy_id):
                self.ike.acquire(msg.policy_id)
                return True
            case pipe.Expire() if msg.reason is ExpireReason.LARVAL_TIMEOUT:
                self.ike.larval_expired(msg.spi)
                return True
            case pipe.Expire():
                return self.ike.expired(msg.spi, msg.direction, msg.hard, msg.remote)
            case pipe.InvalidSpi():
                self.ike.invalid_spi(msg.spi, msg.remote)
                return False   # still logged below
        return False

    async def dump(self) -> pipe.Reply:
        replies = await self.worker.request(lambda r: pipe.Dump(r))
        return pipe.join_dump_replies(replies)

    async def _watch_worker(self) -> None:
        while not self.stopping.is_set():
            proc = self.worker.proc
            assert proc is not None
            code = await proc.wait()
            if self.stopping.is_set():
                return
            log.error("worker %d exited with status %s; restarting it and reinstalling %d tunnel(s)",
                      proc.pid, code, len(self.plans))
            await self.worker.stop()
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error("worker died %d times in %ds; giving up", len(self.restarts), RESTART_WINDOW)
                self.stopping.set()
                return
            await asyncio.sleep(min(2 ** (len(self.restarts) - 1) * 0.1, 5.0))
            try:
                await self._start_worker()
            except (StartupError, OSError) as err:
                log.error("restarting the worker failed: %s", err)
                self.stopping.set()
                return

    # --- control socket ----------------------------------------------------------
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            answer = await self._command(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _command(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line or b"{}")
            cmd = req.get("cmd") if isinstance(req, dict) else None
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if cmd in ("initiate", "terminate"):
            return self._ike_command(cmd, req)
        if cmd == "status":
            try:
                merged = await self.dump()
            except WorkerError as err:
                return {"ok": False, "error": f"worker unavailable: {err}"}
            return {"ok": True, "status": status_document(self, merged)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _ike_command(self, cmd: str, req: dict[str, Any]) -> dict[str, Any]:
        if self.ike is None:
            return {"ok": False, "error": "no IKE connections configured"}
        try:
            if cmd == "initiate":
                child = str(req.get("child", ""))
                try:
                    conn = find_child(self.cfg.connections, child, str(req.get("ike") or "")).name
                except LookupError as err:
                    return {"ok": False, "error": str(err.args[0])}
                self.ike.initiate(conn, child or None)
                return {"ok": True, "message": f"initiating {conn}" + (f" child {child}" if child else "")}
            n = self.ike.terminate(str(req.get("ike", "")))
            if not n:
                return {"ok": False, "error": f"no IKE SA of connection {req.get('ike')!r}"}
            return {"ok": True, "message": f"deleting {n} IKE SA(s)"}
        except KeyError as err:
            return {"ok": False, "error": f"unknown connection {err}"}

    def _claim_control_socket(self) -> None:
        """Refuse to start next to a live instance; clear a stale socket file."""
        path = self.cfg.tunsec.control_socket
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        if not os.path.lexists(path):
            return
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise StartupError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)   # left by a process that died
                return
        raise StartupError(f"another tunsec is running on {path}")

    async def _open_control_socket(self) -> None:
        path = self.cfg.tunsec.control_socket
        self._server = await asyncio.start_unix_server(self._serve_client, path=path)
        os.chmod(path, 0o660)

    # --- lifecycle -----------------------------------------------------------------
    # Netlink work (pyroute2's synchronous API runs an event loop of its own)
    # happens in prepare()/close_network(), outside the daemon's event loop.
    def prepare(self) -> None:
        """Sockets, TUN, MTU and routes; undone by close_network()."""
        self._claim_control_socket()
        self._open_seq_state()
        try:
            endpoints: list[tuple[int, str, int]] = [
                (int(t.local_addr.version), str(t.local_addr), t.local_port) for t in self.cfg.manual
            ]
            if self.ike is not None:
                endpoints += [(fam, addr, NATT_PORT) for fam, addr in self.ike.local_addrs.items()]
                self.ike.open_sockets()
            self._open_tun()
            assert self.tun is not None
            # one socket per TUN queue actually opened: an SO_REUSEPORT socket that no
            # loop thread reads would swallow the share of the peers the kernel gives it
            self.sockets = Sockets.for_endpoints(endpoints, self.tun.nqueues)
            self._setup_tun()
        except BaseException:
            self.close_network()
            raise

    def close_network(self) -> None:
        if self.ike is not None:
            self.ike.close_sockets()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self.sockets.close()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or the worker cannot be kept alive)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        for w in self.cfg.warnings:
            log.warning("%s", w)
        if self.plans:
            log.warning("%s", MANUAL_WARNING)
        try:
            await self._open_control_socket()
            await self._start_worker()
            if self.ike is not None:
                await self.ike.start()
            self._tasks = [asyncio.create_task(self._watch_worker())]
            log.info("tunsec up: %d manual tunnel(s), %d IKE connection(s) on %s (MTU %d), control socket %s",
                     len(self.plans), len(self.ike.connections) if self.ike else 0, self.cfg.tunsec.tun,
                     self.mtu, self.cfg.tunsec.control_socket)
            await self.stopping.wait()
            return 1 if len(self.restarts) > MAX_RESTARTS else 0
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.stopping.set()
        for t in self._tasks + list(self._background):
            t.cancel()
        for t in self._tasks + list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.ike is not None:
            await self.ike.shutdown()   # DELETEs go out through the worker's socket: before it stops
        await self.worker.stop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.tunsec.control_socket)
            self._server = None
        log.info("tunsec stopped")
