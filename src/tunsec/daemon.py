"""The control process: configuration -> TUN, routes, the shared ESP-in-UDP
sockets, the worker process and the control socket `tunsec status` talks to.

The SAs and policies in the worker belong to the services (tunsec.services:
manual tunnels, IKE tunnels); the daemon starts and stops them, routes each
worker event to the service that owns it and asks each for its part of the
status.  `tunsec reload`/SIGHUP: the daemon reads the file, refuses what needs
a restart (tunsec { }, sockets), and hands each service the new configuration.
asyncio lives here, at the edge; the worker does the packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import time
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunsec import (
    ctl_commands,
    ctlsocket,
    gctune,
    memtrim,
    netadmin,
    pid1,
    privilege,
    reload_cut,
    reroute,
    sdnotify,
    selftest,
    startpaths,
    updown,
    worker_distrust,
    worker_watch,
)
from tunsec.conf.config import Config, load_config
from tunsec.conf.connections import ike_endpoints
from tunsec.conf.diff import comparable, restart_keys
from tunsec.conf.errors import ConfigError
from tunsec.conf.filecheck import reread_refusal
from tunsec.conf.tunsec_section import MAX_WORKERS, worker_user
from tunsec.dataplane import blockwatch, exclude, pipe, routekeep, rpfilter, spawner
from tunsec.dataplane.blockrecord import BlockRecord
from tunsec.dataplane.client import WorkerClient, WorkerFds, worker_args
from tunsec.dataplane.exclude import ExcludeRoutes, Route, is_half, tun_routes
from tunsec.dataplane.killswitch import KillSwitch
from tunsec.dataplane.tun import Tun, local_address_in
from tunsec.espsockets import Sockets
from tunsec.ike.address_role import is_full_tunnel
from tunsec.ike.constants import NATT_PORT
from tunsec.loglimit import LogLimiter, internal_error, os_failure
from tunsec.policy.claims import TsClaims
from tunsec.policy.ids import IdSpace
from tunsec.runtime import resolved
from tunsec.sdnotify import notify
from tunsec.services.addr_feed import AddressFeed
from tunsec.services.base import EspEndpoint, Failed, Service, StartupError, reinstall
from tunsec.services.ike import IkeService
from tunsec.services.manual import ManualService
from tunsec.status import status_document_sliced
from tunsec.tun_size import choose_mtu, warn_small_for_ipv6
from tunsec.worker_distrust import UnownedEvents

if TYPE_CHECKING:
    from tunsec import metrics

log = logging.getLogger("tunsec")

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# seconds the stop waits for a reload under way (`tunsec reload`) before the services shut down: one
# stuck (a worker not answering) must not hold the stop for ever
RELOAD_STOP_WAIT = 10.0
STOPPING_REFUSAL = "tunsec is stopping: reload refused"

__all__ = ["Daemon", "Sockets", "StartupError"]


def usable_cpus() -> int:
    """The CPUs this process may run on: a container or a service pinned to 2 of a host's 64 gets
    2 packet loops, not one per host core (os.cpu_count counts the host's)."""
    return len(os.sched_getaffinity(0)) or 1


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ids = IdSpace()                     # reqids, policy ids: manual and IKE alike
        self.tun: Tun | None = None
        self.mtu = 0
        self.sockets = Sockets()
        self.worker = WorkerClient(self._on_event)
        self.unowned = UnownedEvents()   # worker events no service owns (tunsec status: unowned_events)
        self.addresses = AddressFeed(lambda: self.worker)   # the one watch of the host's addresses (addr_feed.py)
        # the selector claims (policy/claims.py), one for both services: the manual tunnels' are booked as
        # ManualService is made, before the IKE service answers anyone, and no IKE peer takes them
        # (services/manual_claims.py)
        claims = TsClaims()
        self.manual = ManualService(cfg.manual, self.ids, cfg.tunsec.state_dir, lambda: self.worker, claims)
        conns = cfg.connections
        self.ike: IkeService | None = None
        if conns:
            self.ike = IkeService(conns, lambda: self.worker, ike_endpoints(conns), self.ids, cfg.tunsec.dos,
                                  pools=cfg.pools, radius=cfg.radius, ke_pool=cfg.tunsec.ke_pool, ts_claims=claims)
            self.ike.auth_ban.settings = cfg.tunsec.auth_ban   # its table outlives reloads (auth_ban.py)
            self.ike.addresses = self.addresses
            self.ike.dump_cap = self.dump_cap   # accounting's DUMP bounded as the status's (review revpipe F1)
        # every service the daemon runs, in start order; a new kind of service is added here
        self.services: list[Service] = [self.manual] + ([self.ike] if self.ike is not None else [])
        self.nqueues = max(1, min(cfg.tunsec.workers or usable_cpus(), MAX_WORKERS))
        self.started = time.time()
        self.restarts: list[float] = []
        self.gave_up = False   # no worker any more (_watch_worker): run() exits 1 (review revcontainer F2)
        self.worker_restarts = 0                 # all of them (restarts holds the recent ones)
        self._metrics: metrics.MetricsServer | None = None
        self.stopping = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.privilege = privilege.Plan(False, None)   # privilege: set by prepare()
        self.spawner: spawner.Spawner | None = None     # starts workers as their own user (spawner.py)
        self._privilege_given_up = False
        self._blocks_hold: netadmin.BlocksHold | None = None   # CAP_NET_ADMIN kept for the blocks alone
        self.excludes: ExcludeRoutes | None = None   # IKE peers' paths kept out of the TUN's routes (exclude.py)
        self.killswitch = KillSwitch("")   # the standing routes under the TUN's routes (killswitch.py)
        self.route_keeper: routekeep.Keeper | None = None   # the TUN's routes the kernel dropped put back
        self._reloading = asyncio.Lock()   # one reload at a time (SIGHUP and `tunsec reload` may meet)
        self._reloads: set[asyncio.Task[None]] = set()   # SIGHUP's
        self.reload_cut = reload_cut.ReloadCut()   # the control socket's, and the stop's cut (reload_cut.py)
        self.calm: memtrim.CalmTrim | None = None   # gives the heap back after a burst of IKE (run())
        self.gate = ctlsocket.Gate(worker_pid=lambda: self.worker.pid)   # who may run which command
        self._refusal_log = LogLimiter()   # a local process may connect as often as it likes
        self.ctl_slots = ctlsocket.Slots()     # control connections held, by uid
        self.ctl_counts = ctlsocket.Counts()   # what the control socket refused or cut short
        self._status_runs = ctlsocket.Shared(self._status)   # one DUMP for the status requests of a moment

    # --- setup -----------------------------------------------------------------
    def _choose_mtu(self) -> int:
        s = self.cfg.tunsec
        return choose_mtu(s.mtu, s.outer_mtu, self.services)

    def _open_tun(self) -> None:
        try:
            self.tun = Tun.open(self.cfg.tunsec.tun, queues=self.nqueues)
        except OSError as err:
            raise StartupError(f"cannot open TUN {self.cfg.tunsec.tun}: {err.strerror or err}") from err
        made_for_us = not self.tun.created   # tunsec prepare's: its exclude routes and kill switch stay at exit
        self.excludes = ExcludeRoutes(self.tun.name, keep_found=made_for_us)
        self.killswitch = KillSwitch(self.tun.name, keep_found=made_for_us)
        self.route_keeper = routekeep.Keeper(self.tun, local=self.excludes.local_nets)
        if self.ike is not None:
            self.ike.tun = self.tun   # a client's virtual IPs go on it
            self.ike.exclude_routes(self.excludes)
        # read before any route is touched: which prohibit routes a killed run of this instance left
        self.tun.record = BlockRecord.open(self.cfg.tunsec.state_dir, self.tun.name, self.manual.owner)

    def _setup_tun(self) -> None:
        """MTU, link and routes; a refusal is a StartupError saying what was refused (tun.py's OSError)."""
        assert self.tun is not None
        try:
            self.mtu = self._choose_mtu()
            self.tun.configure(self.mtu)
            routes = self._tun_routes()   # an IKE connection's IPv6 selectors and pools are routes too
            warn_small_for_ipv6(self.mtu, self.manual.carries_ipv6() or any(n.version == 6 for n, _ in routes))
            self._exclude_peers(routes)   # before the TUN's routes: the peers' paths as they were
            if self.excludes is not None:   # after: those in place (tunsec prepare's) are held, not stale
                self.excludes.clear_stale()
                rpfilter.warn_strict(self.excludes.held, (n for n, _ in routes))
            self.killswitch.ensure(n for n, _ in routes)   # before the TUN's: a kill -9 fails closed
            for net, local_nets in routes:
                self._add_route(net, local_nets)
            self.killswitch.keep_only(n for n, _ in routes)   # a killed run's of networks no longer routed
            self.killswitch.report_unapplied(self.cfg.path)   # an unprivileged start on a TUN made by hand
        except OSError as err:
            raise StartupError(err.strerror or str(err)) from err
        # after the routes: a wanted network's TUN route has replaced the prohibit route a killed run left
        self.tun.clear_stale_blocks({net for net, _ in routes})

    def _tun_routes(self) -> list[Route]:
        """The services' routes as the TUN gets them: a default route as its halves (exclude.py)."""
        return tun_routes(r for svc in self.services for r in svc.routes())

    def _exclude_peers(self, routes: list[Route]) -> list[str]:
        """Exclude routes for the configured peers that routes capture; what failed (logged)."""
        if self.excludes is None:
            return []
        # the configured local networks the routes cover stay local (review revks4 F2); a reload drops the
        # unwanted ones after the TUN's routes changed (_reload_routes)
        failed = self.excludes.keep_local(routes, drop=False)
        return failed + self.excludes.ensure([p for svc in self.services for p in svc.peer_addresses()],
                                             [n for n, _ in routes])

    def _add_route(self, net: IPv4Network | IPv6Network, local_nets: tuple[IPv4Network | IPv6Network, ...]) -> None:
        assert self.tun is not None
        if any(r[0] == net for r in self.tun.routes):
            return
        same = tuple(n for n in local_nets if n.version == net.version)
        src, before = local_address_in(same) if same else None, len(self.tun.unapplied)
        self.tun.add_route(net, src)
        if self.route_keeper is not None and len(self.tun.unapplied) == before and net not in dict(self.tun.routes):
            self.route_keeper.found[net] = src   # in place (tunsec prepare's): not ours, watched all the same

    async def _start_worker(self) -> None:
        assert self.tun is not None
        extra = [(self.tun.queue_fileno(q), self.sockets.fd(4, q), self.sockets.fd(6, q))
                 for q in range(1, self.tun.nqueues)]
        fds = WorkerFds(self.tun.fileno(), self.sockets.fd(4), self.sockets.fd(6), self.tun.vnet_hdr, extra)
        s = self.cfg.tunsec
        try:
            # a daemon that is not root has no privilege to give up by changing user
            user = worker_user(s.user) if os.geteuid() == 0 else None
            if not self._privilege_given_up:   # the spawner is started once, while we may still change user
                await self._start_spawner(fds)
        except (LookupError, privilege.PrivilegeError, OSError) as err:
            raise StartupError(f"starting the dataplane worker: {err}") from None
        self.worker = WorkerClient(self._on_event)
        await self.worker.start(fds, self.mtu, s.larval_timeout, s.log_level, user, s.log_format, self.spawner,
                                s.worker_sandbox, s.dos.ipv6_source_prefix)
        self._give_up_privilege()   # privilege: once, the first worker started, before any thread or IKE
        await self._start_serving()
        await self._install_services()

    async def _install_services(self) -> None:
        """Every service's SAs and policies into the worker just started.  The caller holds
        _reloading from before the worker is started (run, _watch_worker): each service works from
        one configuration, and a reload never installs into a new worker what the reinstall then
        installs again, nor retires what the reinstall is still putting in."""
        if self.restarts:   # each service whatever one before it raised (review revrestart F1)
            await reinstall(self.services, lambda: self.worker.gone)
            return
        for svc in self.services:
            await svc.start()

    async def _start_spawner(self, fds: WorkerFds) -> None:
        """The worker's own user (tunsec { worker_user }): the spawner becomes it and starts every worker,
        the first and those after a crash, which the control process could not once it dropped."""
        s = self.cfg.tunsec
        choice = spawner.choose(s.worker_user, self.privilege)
        if choice.warning:
            log.warning("%s", choice.warning)
        if choice.user is None:
            return
        args = worker_args(fds, self.mtu, s.larval_timeout, s.log_level, s.log_format, s.worker_sandbox,
                           s.dos.ipv6_source_prefix)
        try:
            self.spawner = await spawner.Spawner.start(choice.user, fds.all(), args, s.log_level, s.log_format)
        except spawner.SpawnerUnusable as err:
            if s.worker_user:
                raise privilege.PrivilegeError(str(err)) from None
            log.warning("%s; it runs as the control process's user instead", err)

    # --- running ---------------------------------------------------------------
    def _on_event(self, msg: pipe.Message) -> None:
        """Each worker event goes to the service that owns its SA or policy; the rest is logged."""
        if not any(svc.on_event(msg) for svc in self.services):
            self.unowned.note(msg)   # counted, its line rate-limited: the worker decides how many

    def service_status(self, dump: pipe.Reply) -> list[dict[str, Any]]:
        """Each service's part of the status document; a kind not configured gives its empty part."""
        running = {type(svc): svc for svc in self.services}
        kinds: list[type[Service]] = [ManualService, IkeService]
        return [running[k].status_rows(dump) if k in running else k.idle_status() for k in kinds]

    def dump_cap(self) -> int:
        """The bytes any DUMP answer may take (the status's, the scrapes', RADIUS accounting's):
        what every service installed, with slack (worker_distrust.dump_cap)."""
        return worker_distrust.dump_cap(self.services)

    async def dump(self) -> pipe.Reply:
        merged = await worker_distrust.dump(self.worker, self.dump_cap())   # bounded, checked (F5, F6)
        if self.calm is not None:   # status or a scrape: every SA decoded at once, a burst of its own
            self.calm.note(len(merged.sas))
        if self.ike is not None:   # RADIUS accounting keeps the counters (a worker crash then loses less)
            self.ike.acct_observe(merged)
        return merged

    async def _watch_worker(self) -> None:
        while not self.stopping.is_set():
            proc = self.worker.proc
            assert proc is not None
            ended = await worker_watch.ended(self.worker)   # its exit, or its pipe closed (then killed)
            if self.stopping.is_set():
                return
            log.error("worker %d %s; restarting it and reinstalling %d tunnel(s)",
                      proc.pid, ended, len(self.manual.plans))
            for svc in self.services:   # nothing of theirs goes into the new worker before their reinstall
                svc.worker_died()
            # from the death until the new worker holds every service's SAs: a reload meanwhile would
            # run against no worker, or put into the new one what the reinstall puts in again
            async with self._reloading:
                if not await self._restart_worker():
                    self.gave_up = True   # a failure (exit 1): Restart=on-failure brings tunsec back
                    self.stopping.set()
                    return

    async def _restart_worker(self) -> bool:
        """The dead worker's successor, the services reinstalled into it; False: tunsec gives up
        (MAX_RESTARTS deaths within RESTART_WINDOW, or no worker can be started).  A successor that
        dies during its reinstall is one more death: the watcher's next round restarts it."""
        await self.worker.stop()
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
        self.worker_restarts += 1
        if len(self.restarts) > MAX_RESTARTS:
            log.error("worker died %d times in %ds; giving up", len(self.restarts), RESTART_WINDOW)
            return False
        await asyncio.sleep(min(2 ** (len(self.restarts) - 1) * 0.1, 5.0))
        dead = self.worker
        try:
            await self._start_worker()
        except (StartupError, OSError) as err:
            if self.worker is not dead and self.worker.gone:
                log.error("the restarted worker %d died while its tunnels were reinstalled: %s", self.worker.pid, err)
                return True
            log.error("restarting the worker failed: %s", err)
            return False
        except Exception as err:   # a bug: the watcher goes on, or the next crash is never restarted
            log.error("reinstalling into the restarted worker failed: %s", internal_error(err, False))
            return self.worker.proc is not None   # else no worker to watch
        return True

    # --- control socket (ctl_commands.py) -------------------------------------------------
    _serve_client = ctl_commands.serve_client
    _exchange = ctl_commands.exchange
    _ctl_log = ctl_commands.ctl_log
    _command = ctl_commands.command
    _unban_command = ctl_commands.unban_command
    _reload_command = ctl_commands.reload_command
    _status = ctl_commands.status
    _ike_command = ctl_commands.ike_command

    # --- reload ---------------------------------------------------------------------
    async def reload(self) -> tuple[bool, list[str]]:
        """Read the configuration file again and apply the difference (as swanctl --load-all):
        (True, what changed) or (False, why nothing did).  A file with errors, or with a change
        that needs a restart (a tunsec { } key, a new socket), is refused as a whole."""
        if self.stopping.is_set():   # at once, not after a reload the stop cut short and is still undoing
            return self._stopping_refusal()
        async with self._reloading:
            if self.stopping.is_set():   # the stop began (while it waited for a restart, say): nothing applied
                return self._stopping_refusal()
            if self.cfg.not_regular:   # read once at the start: again, a pipe reads as empty (review revconf F3)
                return self._refused([reread_refusal(self.cfg.path, self.cfg.not_regular)])
            try:   # dropped: read as the service user, which accepts nothing another user may change (filecheck.py)
                cfg = resolved(await asyncio.to_thread(load_config, self.cfg.path, root_check=True,
                                                       service_user=self.privilege.drop))
            except ConfigError as err:
                return self._refused([f"{self.cfg.path}: configuration invalid, nothing changed:",
                                      *str(err).splitlines(), *_unreadable_hint(err)])
            problems = [f"needs a restart: {key} (tunsec {{ }} settings cannot change while tunsec runs)"
                        for key in restart_keys(self.cfg.tunsec, cfg.tunsec)]
            if cfg.connections and self.ike is None:
                problems.append("needs a restart: IKE connections in a tunsec started without any "
                                "(the IKE sockets are opened at start)")
            if comparable(cfg.pools) != comparable(self.cfg.pools):
                # leases are handed out from the pools the IKE service was built with
                problems.append("needs a restart: pools (virtual IP pools cannot change while tunsec runs)")
            problems += self.sockets.serves(_esp_endpoints(cfg))
            problems += updown.refusals(_updown_scripts(cfg), os.geteuid())   # this process runs them
            for svc in self.services:
                problems += svc.check_reload(cfg)
            if problems:
                return self._refused([f"{cfg.path}: reload refused, nothing changed:", *problems])
            lines: list[str] = []
            for w in cfg.warnings:
                log.warning("%s", w)
            for svc in self.services:
                lines += await svc.reload(cfg)
                if self.reload_cut.cut.is_set():   # the stop cut it short (reload_cut.py): nothing further
                    return self._refused([reload_cut.CUT_ANSWER, *lines])
            if self.ike is not None:   # its table (the bans in force) stays; 0 lifts them (ike/auth_ban.py)
                self.ike.auth_ban.settings = cfg.tunsec.auth_ban
            self.cfg = cfg
            lines += await self._reload_routes()
            lines += await self._reload_mtu()
            await self._release_net_admin()   # the last block lifted: as a start without blocks from now on
            for line in lines:
                if not isinstance(line, Failed):   # the service said it, as an error
                    log.info("reload: %s", line)
            # a manual tunnel not installed (Failed) makes the answer an error; a refused route's
            # line too (_reload_command), though the rest of the reload went in
            failed = sum(isinstance(line, Failed) or line.startswith(reroute.FAILED) for line in lines)
            # each failed step was logged as an error where it failed: this line only sums up
            log.log(logging.WARNING if failed else logging.INFO, "reload of %s done%s", cfg.path,
                    f", {failed} step(s) failed" if failed else "" if lines else ": no changes")
            return not any(isinstance(line, Failed) for line in lines), lines

    def _stopping_refusal(self) -> tuple[bool, list[str]]:
        log.warning("reload of %s refused: tunsec is stopping", self.cfg.path)
        return False, [STOPPING_REFUSAL]

    @staticmethod
    def _refused(lines: list[str]) -> tuple[bool, list[str]]:
        log.error("%s", "\n  ".join(lines))
        return False, lines

    async def _reload_routes(self) -> list[str]:
        """The TUN's routes follow the new configuration; a refused one fails closed (reroute.py)."""
        if self.tun is None:
            return []
        wanted = self._tun_routes()
        lines = [f"{reroute.FAILED}{line}" for line in await asyncio.to_thread(self._exclude_peers, wanted)]
        nets = [n for n, _ in wanted]
        lines += await reroute.standing(self.killswitch, self.killswitch.ensure, nets, "added")
        if self.route_keeper is not None:   # a found route of a tunnel the reload removes: no longer watched
            self.route_keeper.found = {n: s for n, s in self.route_keeper.found.items() if n in nets}
        lines += await reroute.reload_routes(self.tun, wanted, self._add_route)
        if self.route_keeper is not None:   # those listed that the kernel dropped meanwhile (review revks3 F4)
            lines += routekeep.reload_lines(await asyncio.to_thread(self.route_keeper.check), reroute.FAILED)
        # after the TUN's routes went; one the TUN keeps (its removal refused) keeps its standing route
        kept = [*nets, *(n for n, _ in self.tun.routes)]
        lines += await reroute.standing(self.killswitch, self.killswitch.keep_only, kept, "removed")
        if self.excludes is not None:   # a peer no TUN route captures any more needs none (review revfull F5)
            await asyncio.to_thread(self.excludes.keep_captured, nets)
            await asyncio.to_thread(self.excludes.keep_local, wanted)
        if self.ike is not None:   # those added (or re-added) take the virtual IP their IKE SA holds
            await self.ike.vips.source_routes()
            self.ike.sweep_excludes(reset=True)   # the TUN's routes changed: checked again
        return lines

    async def _reload_mtu(self) -> list[str]:
        """The TUN's MTU stays (changing it under running traffic is a restart's job); say so when
        the paths to new peers need a smaller one."""
        if self.tun is None or self.cfg.tunsec.mtu or not self.mtu:
            return []
        try:
            needed = await asyncio.to_thread(self._choose_mtu)   # route lookups through netlink
        except OSError as err:
            log.warning("reload: tunnel MTU not checked: %s", err.strerror or err)
            return [f"tunnel MTU not checked: {err.strerror or err}"]
        if needed >= self.mtu:
            return []
        line = (f"the tunnel MTU stays {self.mtu}; the paths to the new peers need {needed}: restart tunsec "
                f"(or set tunsec {{ mtu = {needed} }} and restart)")
        log.warning("reload: %s", line)
        return [line]

    def _claim_control_socket(self) -> None:
        """Refuse to start next to a live instance; clear a stale socket file."""
        path = self.cfg.tunsec.control_socket
        directory = os.path.dirname(path) or "."
        if (in_way := startpaths.in_the_way(Path(directory))) is not None:
            raise StartupError(startpaths.socket_dir_refusal(path, in_way))
        if not os.path.isdir(directory):
            try:
                ctlsocket.make_dir(directory, self._socket_owner())
            except OSError as err:
                raise StartupError(f"creating the control socket directory: {err.strerror}; "
                                   + privilege.writable_error("control socket directory", Path(directory), None)
                                   + " (or start it with RUNTIME_DIRECTORY or XDG_RUNTIME_DIR set)") from err
        if not os.path.lexists(path):
            return
        if not stat.S_ISSOCK(mode := os.lstat(path).st_mode):
            raise StartupError(startpaths.socket_refusal(path, mode))
        found = ctlsocket.listener(path)
        if found is ctlsocket.Listener.NOBODY:
            os.unlink(path)   # left by a process that died
            return
        raise StartupError(f"another tunsec is running on {path}" + (
            " (it listens and accepts no connection: stop it first)" if found is ctlsocket.Listener.SILENT else ""))

    def _socket_owner(self) -> privilege.Target | None:
        return self.privilege.target if self.privilege.drop else None

    async def _open_control_socket(self) -> None:
        path, owner = self.cfg.tunsec.control_socket, self._socket_owner()
        try:   # mode and owner set without a chmod/chown through a path another user may change
            sock = ctlsocket.bind(path, owner)
        except OSError as err:
            raise StartupError(f"creating the control socket {path}: {err.strerror}; " + privilege.writable_error(
                "control socket directory", Path(os.path.dirname(path) or "."), ctlsocket.who_binds(path, owner))
            ) from err
        # served once privilege is given up (_start_serving): no request is parsed as root
        self._server = await asyncio.start_unix_server(self._serve_client, sock=sock, limit=ctlsocket.LINE_LIMIT,
                                                       start_serving=False)

    async def _start_metrics(self) -> None:
        listen = self.cfg.tunsec.metrics_listen
        if listen is None:
            return
        from tunsec import metrics  # prometheus_client (~3 MiB) only where an endpoint is configured

        source = metrics.Source(
            dump=self.dump, document=lambda reply: status_document_sliced(self, reply, scrape=True),
            events=lambda: self.ike.events if self.ike else None,
            worker_restarts=lambda: self.worker_restarts, worker_pid=lambda: self.worker.pid,
        )
        try:
            self._metrics = await metrics.start(listen, source, serve=False)   # as the control socket
        except metrics.ListenError as err:
            raise StartupError(str(err)) from err

    def _give_up_privilege(self) -> None:
        """privilege: become the configured user, once (see privilege.give_up_control)."""
        if self._privilege_given_up:
            return
        self._privilege_given_up = True
        record = self.tun.record if self.tun is not None else None
        own = bool(self.tun and self.tun.routes and not self.tun.created)
        # blocks held at start need CAP_NET_ADMIN to be put back (blockwatch) and removed at exit; so do a full
        # tunnel's routes: both until none is left (netadmin.py)
        blocked = bool(self.tun and any(u.blocked for u in self.tun.unrouted.values())) or self._full_routing()
        vips = self._virtual_ips()
        try:
            privilege.give_up_control(self.privilege, self.cfg.tunsec, bool(self.manual.plans), own or blocked,
                                      virtual_ips=vips, block_record=record is not None and record.fd >= 0)
        except (privilege.PrivilegeError, OSError) as err:
            raise StartupError(f"dropping privileges: {err}") from err
        pid1.reown()   # the pipe PID 1 passes signals on (pid1.py): its SIGIO checked against the new user
        if (self.tun is not None and self.privilege.drop and blocked and not (own or vips)
                and privilege.has_cap(privilege.CAP_NET_ADMIN)):   # until the last block goes (netadmin.py)
            self._blocks_hold = netadmin.BlocksHold.start(blockwatch.Keeper(self.tun),
                                                          lambda: self._virtual_ips() or self._full_routing(),
                                                          [self.ike.resolver.renew, self.ike.host_addresses.renew]
                                                          if self.ike is not None else [])
        if record is not None and self.privilege.drop:
            record.usable_after_drop(privilege._me())
        if not self.cfg.not_regular and not os.access(self.cfg.path, os.R_OK):   # said now, not at the first reload
            log.warning("%s is not readable by %s: `tunsec reload` and SIGHUP will fail; as root: %s", self.cfg.path,
                        privilege._me(), _read_grant(self.cfg.path))

    def _full_routing(self) -> bool:
        """Exclude routes (or a local_ts's rule, localrules.py: removed at exit, not with the TUN) or a full tunnel's
        standing routes held, or a full tunnel that needs an exclude route for each authenticated peer it meets
        (exclude_gate.py): CAP_NET_ADMIN kept until none is (netadmin.py)."""
        held = self.excludes and (self.excludes.held or self.excludes.lans)
        return bool(self.tun and (held or any(map(is_half, self.killswitch.held))
                                  or is_full_tunnel([n for n, _ in self.tun.routes])))

    async def _start_serving(self) -> None:
        """The control socket and the metrics listener accept from now on (again: a no-op)."""
        for server in (self._server, self._metrics):
            if server is not None:
                await server.start_serving()

    def _virtual_ips(self) -> bool:
        """A connection of the configuration now has virtual IPs, or one a reload removed still has its
        address on the TUN (CAP_NET_ADMIN to put them on the TUN and take them off: review AF F2)."""
        return any(c.ike.vips for c in self.cfg.connections) or (self.ike is not None and self.ike.vips.holding())

    async def _release_net_admin(self) -> None:
        """CAP_NET_ADMIN given up if it was kept for blocks alone and none is left (netadmin.py).  The
        caller holds _reloading: a reload meanwhile could block a network with the capability given up.
        Only a reload lifts a block or makes a lost one moot (vips rule the drop out), so its end is
        the one place to look."""
        if self._blocks_hold is not None and await self._blocks_hold.release_if_unneeded():
            self._blocks_hold = None

    # --- lifecycle -----------------------------------------------------------------
    # Netlink work (pyroute2's synchronous API runs an event loop of its own)
    # happens in prepare()/close_network(), outside the daemon's event loop.
    def _self_test(self) -> None:
        """The IKE algorithms the connections name, once, before anything is set up (tunsec.selftest),
        and the modules of configured features that are otherwise imported on first use."""
        try:
            ran = selftest.run(selftest.checks((c.name, c.ike.proposals) for c in self.cfg.connections))
        except selftest.SelfTestError as err:
            raise StartupError(str(err)) from err
        if ran:
            log.debug("self-test: %d IKE algorithm(s) work", ran)
        if any(c.ike.remote.method == "eap-tls" for c in self.cfg.connections):
            # pyOpenSSL, imported on first use otherwise: at start where EAP-TLS is configured
            import tunsec.ike.eap.tls  # noqa: F401

    def prepare(self) -> None:
        """Sockets, TUN, MTU and routes; undone by close_network()."""
        try:   # privilege: whom both processes become, checked before anything is set up
            privilege.check_config_files(self.cfg)   # as root: only what was read through the check
            self.privilege = privilege.plan(self.cfg.tunsec.user)
        except privilege.PrivilegeError as err:
            raise StartupError(str(err)) from err
        runs_as = self.privilege.target   # who runs the updown scripts once set up (None: this user)
        refused = updown.refusals(_updown_scripts(self.cfg), runs_as.uid if runs_as else os.geteuid())
        if refused:
            raise StartupError("\n".join(refused))
        self._self_test()
        sdnotify.connect()   # before the drop: the supervisor's socket may be root's alone
        self._claim_control_socket()
        target = self._socket_owner()
        self.manual.owner = target.uid if target else None
        try:
            for svc in self.services:
                svc.prepare()
            self._open_tun()
            assert self.tun is not None
            # one socket per TUN queue actually opened: an SO_REUSEPORT socket that no
            # loop thread reads would swallow the share of the peers the kernel gives it
            endpoints = [e for svc in self.services for e in svc.esp_endpoints()]
            self.sockets = Sockets.for_endpoints(endpoints, self.tun.nqueues)
            self._setup_tun()
            self.tun.report_unapplied(self.cfg.path)   # privilege: the one warning when unprivileged
        except BaseException:
            self.close_network(clean=False)
            raise

    def close_network(self, clean: bool = True) -> None:
        """What prepare() set up goes; at a failure (not clean) the kill switch may stay (killswitch.py)."""
        for svc in self.services:
            svc.close()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self.excludes is not None:   # after the TUN's routes: nothing goes into the TUN any more
            self.excludes.close()
        self.killswitch.close(clean)   # last: the host's default route carries the traffic again
        self.sockets.close()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or the worker cannot be kept alive)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.calm = memtrim.CalmTrim(loop)
        if self.ike is not None:
            self.ike.on_activity = self.calm.note
        for w in self.cfg.warnings:
            log.warning("%s", w)
        try:
            await self._open_control_socket()
            await self._start_metrics()
            self.addresses.start_or_warn()   # before the worker: it hears of the addresses added from here
            async with self._reloading:   # a SIGHUP or `tunsec reload` meanwhile waits for the first install
                await self._start_worker()
            assert self.tun is not None
            keeper = self._blocks_hold.keeper if self._blocks_hold else None   # the one netadmin asks
            self._tasks = [asyncio.create_task(self._watch_worker()),
                           asyncio.create_task(blockwatch.watch(self.tun, self.stopping, keeper=keeper))]
            if self.route_keeper is not None:   # the TUN's routes the kernel drops put back (routekeep.py)
                self._tasks.append(asyncio.create_task(routekeep.watch(self.route_keeper, self.stopping)))
            if self.excludes is not None:   # they follow the host's paths (its default route may change)
                self._tasks.append(asyncio.create_task(exclude.follow(self.excludes, self.stopping)))
            gctune.settle()   # start-up is done: what exists now lives as long as we do
            self.killswitch.up = True   # its networks are tunnelled: a failure from now on keeps them held
            log.info("tunsec up: %d manual tunnel(s), %d IKE connection(s) on %s (MTU %d), control socket %s",
                     len(self.manual.plans), len(self.ike.connections) if self.ike else 0, self.cfg.tunsec.tun,
                     self.mtu, self.cfg.tunsec.control_socket)
            notify("READY=1", "STATUS=tunnels up, control socket listening")   # systemd Type=notify
            await self.stopping.wait()
            return 1 if self.gave_up else 0
        finally:
            await self.shutdown()

    def _on_sighup(self) -> None:
        """SIGHUP: the same reload as `tunsec reload` (its outcome goes to the log)."""
        if self.stopping.is_set():
            return
        log.info("SIGHUP: reloading %s", self.cfg.path)
        task = asyncio.create_task(self._reload_logged())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_logged(self) -> None:
        await self._reload_guarded()   # it logs what it did, or why not

    async def _reload_guarded(self) -> tuple[bool, list[str]]:
        """reload(), an error it did not foresee said once in the log (where, never its text) and in
        the answer: not asyncio's "exception never retrieved" for SIGHUP's task, nor a `tunsec reload`
        left without an answer."""
        try:
            return await self.reload()
        except OSError as err:   # the host's (a full disk, a permission), not a bug: no traceback
            return self._refused([os_failure(f"reload of {self.cfg.path} (maybe half applied: restart tunsec "
                                             "to be sure of what runs)", err)])
        except Exception as err:
            log.error("reload of %s failed: %s", self.cfg.path, internal_error(err, True))
            return False, [f"reload of {self.cfg.path} failed on an internal error ({type(err).__name__}), "
                           "maybe half applied: see the log; restart tunsec to be sure of what runs"]

    async def _reload_drained(self) -> None:
        """The stop: a `tunsec reload` under way (SIGHUP's were cancelled; the watcher's restart ended)
        applies in full before the services shut down, never into a service already shut down; one
        asked from now on finds `stopping` set and is refused (reload).  Bounded: RELOAD_STOP_WAIT, past
        which it is cut short (reload_cut.py, review revlate11 F1)."""
        try:
            async with asyncio.timeout(RELOAD_STOP_WAIT), self._reloading:
                pass
        except TimeoutError:
            log.warning("at shutdown: a reload is still running after %g s; the stop goes on without it",
                        RELOAD_STOP_WAIT)
            await self.reload_cut.cut_short(self._reloads)   # cancelled: it takes out what it put in

    async def shutdown(self) -> None:
        self.stopping.set()
        notify("STOPPING=1")
        for t in [*self._reloads, *self._tasks]:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception as err:   # said, and the rest of the shutdown (IKE DELETEs, the worker) still runs
                log.error("at shutdown: %s", internal_error(err, False))
        await self._reload_drained()
        for svc in self.services:
            await svc.shutdown()   # IKE's DELETEs go out through the worker's socket: before it stops
        await self.worker.stop()
        self.addresses.close()
        if self.spawner is not None:
            await self.spawner.close()
            self.spawner = None
        if self._metrics is not None:
            await self._metrics.close()
            self._metrics = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError, PermissionError):   # stale ones are cleared at start
                os.unlink(self.cfg.tunsec.control_socket)
            self._server = None
        log.info("tunsec stopped")


def _updown_scripts(cfg: Config) -> list[tuple[str, tuple[str, ...]]]:
    return [(f"connections.{c.name}.children.{ch.name}.updown", ch.updown)
            for c in cfg.connections for ch in c.children if ch.updown]


def _esp_endpoints(cfg: Config) -> list[EspEndpoint]:
    """The ESP-in-UDP endpoints cfg's tunnels use (as ManualService/IkeService.esp_endpoints would)."""
    out: list[EspEndpoint] = [(int(t.local_addr.version), str(t.local_addr), t.local_port) for t in cfg.manual]
    if cfg.connections:
        out += [(fam, addr, NATT_PORT) for fam, addr in ike_endpoints(cfg.connections).items()]
    return out


def _unreadable_hint(err: ConfigError) -> list[str]:
    """After the start, tunsec reads its files as the user it became: say so when that is the cause."""
    if "Permission denied" not in str(err):
        return []
    return [f"(tunsec runs as {privilege._me()} since it started and reads its files as that user: make the "
            f"configuration and the files it includes readable by it, e.g. as root: {_read_grant('FILE')})"]


def _read_grant(file: str) -> str:
    """privilege.read_grant for the user tunsec became."""
    return privilege.read_grant(file, privilege._me(), os.getegid())
