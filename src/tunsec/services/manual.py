"""Manual keying (RFC 4301 §4.5): fixed SPIs and keys from the config,
installed through the same pipe messages IKE uses (GETSPI pins the inbound
SPI, UPDATE keys it, ADD installs the outbound SA).

RFC 4106 forbids AES-GCM with static keys because a restart would repeat
nonces: every SA's sequence numbers are reserved in blocks persisted
(tunsec.seqstate) before the worker may use them; the worker asks for the
next block (RESERVE_LOW) and gets it (RESERVE) only once it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunsec.conf.diff import NameDiff, diff_by_name
from tunsec.conf.manual import Esp, ManualTunnel
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import (
    SEQ_SOFT_MARGIN,
    Alg,
    Direction,
    Endpoint,
    ExpireReason,
    Lifetime,
    Policy,
    SaInfo,
    SaSpec,
)
from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.claims import TsClaims
from tunsec.policy.ids import Band, IdSpace, priority
from tunsec.policy.spd import PolicyError, protect_policies, tunnel_selectors
from tunsec.seqstate import Expired, SeqState, StateError
from tunsec.services.base import (
    STOP_CUT,
    EspEndpoint,
    Failed,
    IPAddress,
    ReloadRefused,
    Route,
    Service,
    StartupError,
)
from tunsec.services.manual_claims import ManualClaims
from tunsec.services.manual_install import cut_by_death, died, undone, unless_refused
from tunsec.services.manual_retry import Retries
from tunsec.statedir import StateDir
from tunsec.status import sa_status

if TYPE_CHECKING:
    from tunsec.conf.config import Config

log = logging.getLogger("tunsec")

ALGS = {Esp.AES128GCM16: Alg.AES128GCM16, Esp.AES256GCM16: Alg.AES256GCM16}


@dataclass(frozen=True)
class ManualPlan:
    """What one manual tunnel puts into the worker."""

    tunnel: ManualTunnel
    reqid: int
    inbound: SaSpec
    outbound: SaSpec
    policies: tuple[Policy, ...]

    def with_reservations(self, inbound: tuple[int, int, int], outbound: tuple[int, int, int]) -> ManualPlan:
        """The same plan with each SA's (seq_start, seq_limit, seq_notify) from its persisted state."""
        def apply(sa: SaSpec, r: tuple[int, int, int]) -> SaSpec:
            return dataclasses.replace(sa, seq_start=r[0], seq_limit=r[1], seq_notify=r[2])

        return dataclasses.replace(self, inbound=apply(self.inbound, inbound), outbound=apply(self.outbound, outbound))


def plan(t: ManualTunnel, index: int, ids: IdSpace) -> ManualPlan:
    """Reqid and policy ids come from ids; index (0-based, config order) orders the tunnels'
    policies within the manual band."""
    sels = tunnel_selectors(t.name, t.local_ts, t.remote_ts)
    reqid = ids.reqid()
    checked = protect_policies(sels, reqid, first_id=0, priority=priority(Band.MANUAL, index))
    policies = [dataclasses.replace(p, id=ids.policy_id()) for p in checked]
    local = Endpoint(t.local_addr, t.local_port)
    remote = Endpoint(t.remote_addr, t.remote_port)
    soft = Lifetime(bytes=t.rekey_bytes, packets=t.rekey_packets, seconds=t.rekey_time)
    hard = Lifetime(bytes=t.life_bytes, packets=t.life_packets, seconds=t.life_time)
    alg = ALGS[t.esp]
    inbound = SaSpec(
        spi=t.spi_in, direction=Direction.IN, alg=alg, key=t.key_in.reveal(), esn=t.esn,
        replay_window=t.replay_window, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=sels.inbound,
    )
    outbound = SaSpec(
        spi=t.spi_out, direction=Direction.OUT, alg=alg, key=t.key_out.reveal(), esn=t.esn,
        replay_window=0, reqid=reqid, local=local, remote=remote,
        soft=soft, hard=hard, selectors=sels.outbound,
    )
    return ManualPlan(t, reqid, inbound, outbound, tuple(policies))


def lifetime_left(sa: SaSpec, st: SeqState, now: float) -> SaSpec | str:
    """``sa`` as its key's hard lifetime leaves it at wall time ``now``: its time limits counted from
    the key's first use (st.first_use), not from this install; or the limit it is past (the name
    status shows): the one the worker removed it at, while the config keeps that limit (one raised
    or removed since lifts it: the operator's call), or its life_time."""
    gone = st.expired
    if gone is not None:
        # time too (review revmanual F1): recomputed from the wall clock alone, a clock stepped back
        # (an NTP correction, a VM restored, a box without an RTC) gave a removed key a new life_time
        raised = {"bytes": sa.hard.bytes, "packets": sa.hard.packets, "time": sa.hard.seconds}.get(gone.reason)
        if raised is None or 0 < raised <= gone.limit:
            return gone.reason
    used = max(now - (st.first_use if st.first_use is not None else now), 0.0)
    if sa.hard.seconds and used >= sa.hard.seconds:
        return "time"

    def left(seconds: int) -> int:
        return max(math.ceil(seconds - used), 1) if seconds else 0

    return dataclasses.replace(sa, hard=dataclasses.replace(sa.hard, seconds=left(sa.hard.seconds)),
                               soft=dataclasses.replace(sa.soft, seconds=left(sa.soft.seconds)))


def check_unique(tunnels: Sequence[ManualTunnel]) -> None:
    """No key in two manual SAs (their AES-GCM nonces, salt || sequence number, would collide: the SPI
    is not part of them), and no two SAs with the same name in the worker (SPI, and the peer for
    outbound ones)."""
    used: dict[bytes, str] = {}
    keys: dict[SaKey, str] = {}
    for t in tunnels:
        remote = Endpoint(t.remote_addr, t.remote_port)
        for spi, direction, key in ((t.spi_in, Direction.IN, t.key_in), (t.spi_out, Direction.OUT, t.key_out)):
            where = f"manual tunnel {t.name} ({t.file}:{t.line}) key_{direction.name.lower()}"
            first = used.setdefault(key.reveal(), where)
            if first != where:
                raise ReloadRefused(f"{where} is the same key as {first}: one key in two SAs repeats AES-GCM "
                                    "nonces (each SA, ours or the peer's, numbers its packets on its own); give "
                                    "every key_in and key_out a random key of its own")
            k = sa_key(spi, direction, remote)
            if k in keys:
                raise ReloadRefused(f"manual tunnel {t.name}: {direction.name.lower()} SA {spi:08x} is also "
                                    f"manual tunnel {keys[k]}'s; give each its own SPI")
            keys[k] = t.name


RESERVE_RETRY = 1.0
MANUAL_WARNING = ("manual keys are for tests and benchmarks; use IKE in production (RFC 4106 §8.1 forbids "
                  "AES-GCM with statically configured keys; tunsec persists sequence numbers in state_dir)")

# How the worker names an SA: inbound by SPI, outbound by SPI and peer (peers choose those SPIs)
SaKey = tuple[int, Direction, Endpoint | None]


def sa_key(spi: int, direction: Direction, remote: Endpoint | None) -> SaKey:
    return (spi, direction, remote if direction is Direction.OUT else None)


def _done(d: NameDiff[ManualTunnel], failed: set[str]) -> list[str]:
    """d's summary without the tunnels that failed to go in (their Failed line says what became of them)."""
    return dataclasses.replace(d, added=tuple(t for t in d.added if t.name not in failed),
                               changed=tuple(c for c in d.changed if c[1].name not in failed)
                               ).summary("manual tunnels")


class ManualService(Service):
    """The manual tunnels of the config: their SAs, policies and persisted sequence numbers."""

    name = "manual"

    def __init__(self, tunnels: Sequence[ManualTunnel], ids: IdSpace, state_dir: str,
                 worker: Callable[[], WorkerClient], claims: TsClaims | None = None) -> None:
        self.ids = ids
        # the tunnels' networks in the selector claims the IKE service reads (the daemon's, shared;
        # none: an instance without IKE), from now on: before the IKE service answers anyone
        self.claims = ManualClaims(claims if claims is not None else TsClaims())
        self.claims.follow(tunnels)
        self.plans: list[ManualPlan] = [plan(t, i, ids) for i, t in enumerate(tunnels)]
        self.state_dir = state_dir
        self.dir: StateDir | None = None   # checked and locked while manual tunnels may use it
        self.owner: int | None = None      # the uid tunsec becomes (set by the daemon): may own state_dir
        self.worker = worker
        # manual SAs' persisted sequence number reservations, by SA (see sa_key)
        self.seq: dict[SaKey, SeqState] = {}
        self._seq_locks: dict[SaKey, asyncio.Lock] = {}
        self._extending: dict[SaKey, asyncio.Task[None]] = {}
        # RESERVE_LOW that came while that SA's refill was under way: the worker
        # sends one per reservation, so it is never stale and must not be lost
        self._again: dict[SaKey, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        # hard expiries being written to their keys' state files: awaited, never cancelled (a lost
        # marker would let a restart install the key again past its hard limit)
        self._persisting: set[asyncio.Task[None]] = set()
        # SAs that reached a hard lifetime: the worker removed them, and no worker gets them again
        # with the same keys (a restarted one neither); a reload that changes the tunnel clears them.
        # The limit it reached (time, bytes, packets, seq_overflow): status shows why the tunnel is dead
        self.expired: dict[SaKey, str] = {}
        # hard EXPIREs the worker could not have meant (see _impossible_expiry): ignored, not persisted
        self.refused_expires = 0
        self._refused_log = LogLimiter()
        self._expire_log = LogLimiter()   # EXPIREs of its SAs: a soft one of a configured limit is a line each
        # tunnels of the configuration the last reload could not install, and why: their remote
        # networks stay routed into the TUN (routes), where no policy takes their traffic and the
        # worker drops it; without that route the host's other routes would carry it in clear.  The
        # next reload tries them again (not in plans: they are new to it)
        self.not_installed: dict[str, tuple[ManualTunnel, str]] = {}
        # tunnels of plans a restarted worker could not take: left out, tried again (manual_retry.py)
        self.retries = Retries(self._attempt, RESERVE_RETRY, worker)
        self.closing = False

    # --- what the daemon sets up -------------------------------------------------
    def esp_endpoints(self) -> list[EspEndpoint]:
        return [(int(p.tunnel.local_addr.version), str(p.tunnel.local_addr), p.tunnel.local_port)
                for p in self.plans]

    def peer_addresses(self) -> list[IPAddress]:
        return [p.tunnel.remote_addr for p in self.plans]

    def routes(self) -> list[Route]:
        """Every configured tunnel's, the installed ones' and those a reload failed to install (fail
        closed: see not_installed)."""
        out: list[Route] = []
        for t in [*(p.tunnel for p in self.plans), *(t for t, _ in self.not_installed.values())]:
            local_nets = tuple(net for ts in t.local_ts for net in ts.networks())
            out += [(net, local_nets) for ts in t.remote_ts for net in ts.networks()]
        return out

    def carries_ipv6(self) -> bool:
        return any(ts.version == 6 for p in self.plans for ts in p.tunnel.remote_ts)

    def worker_entries(self) -> int:
        return sum(2 + len(p.policies) for p in self.plans)

    # --- lifecycle -----------------------------------------------------------------
    def prepare(self) -> None:
        self._open_seq_state()

    async def start(self) -> None:
        if self.plans:
            log.warning("%s", MANUAL_WARNING)
        await self._install()

    async def worker_restarted(self) -> None:
        await self.retries.stop_all()   # the new worker takes them with the others
        await self._install(restarted=True)

    async def shutdown(self) -> None:
        self.closing = True
        await self.retries.stop_all()
        await self._persisted()
        for t in list(self._background):
            t.cancel()
        for t in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def close(self) -> None:
        if self.dir is not None:
            self.dir.close()
            self.dir = None

    def _open_seq_state(self) -> None:
        """Every manual SA's persisted reservation; refuses to start on unreadable state."""
        if not self.plans:
            return
        try:
            self._state_dir()
            self._open_states(self.plans)
        except (StateError, ReloadRefused) as err:
            raise StartupError(str(err)) from err

    def _state_dir(self) -> StateDir:
        """The initialised state directory, locked by this process from the first use on (StateError)."""
        if self.dir is None:
            self.dir = StateDir.open(Path(self.state_dir), self.owner)
            log.info("state directory %s (instance %s) locked", self.dir.path, self.dir.instance)
        return self.dir

    def _open_states(self, plans: Sequence[ManualPlan]) -> None:
        """The persisted reservations of plans' SAs (tunnels being added) next to those already open."""
        check_unique([p.tunnel for p in self.plans])
        for p in plans:
            for sa in (p.inbound, p.outbound):
                st = SeqState.open(self._state_dir(), p.tunnel.name, sa.spi, sa.direction, sa.key, sa.esn)
                if st.taken_over:
                    log.info("%s: %s SA %08x continues past sequence number %d, taken over from %s",
                             p.tunnel.name, sa.direction.name.lower(), sa.spi, st.limit, ", ".join(st.taken_over))
                key = sa_key(sa.spi, sa.direction, sa.remote)
                self.seq[key] = st
                self._seq_locks[key] = asyncio.Lock()

    # --- reload ---------------------------------------------------------------------
    def check_reload(self, cfg: Config) -> list[str]:
        """The new tunnels must plan (selectors), keep their SAs apart and find their sequence state."""
        scratch = IdSpace()
        try:
            for i, t in enumerate(cfg.manual):
                plan(t, i, scratch)
            check_unique(cfg.manual)
            d = diff_by_name([p.tunnel for p in self.plans], cfg.manual)
            fresh = list(d.added) + [new for _, new in d.changed]
            if taken := self.claims.held_by_ike(fresh):   # an IKE peer's network (manual_claims.py)
                return taken
            for t in fresh:   # read-only: a state file that is corrupt refuses the reload now
                for spi, direction, key in ((t.spi_in, Direction.IN, t.key_in), (t.spi_out, Direction.OUT, t.key_out)):
                    SeqState.open(self._state_dir(), t.name, spi, direction, key.reveal(), t.esn)
        except (PolicyError, ReloadRefused, StateError) as err:
            return [str(err)]
        return []

    async def reload(self, cfg: Config) -> list[str]:
        if self.closing:   # shut down under a reload the stop did not wait for: nothing changes (revlate11 F1)
            log.error("reload: manual tunnels: %s, nothing changed", STOP_CUT)
            return [Failed(f"manual tunnels: {STOP_CUT}, nothing changed")]
        # the new tunnels' networks are theirs before any old policy goes, the removed ones' are free;
        # a tunnel not installed below keeps its claim (manual_claims.py)
        self.claims.follow(cfg.manual)
        d = diff_by_name([p.tunnel for p in self.plans], cfg.manual)
        # those still configured are in d.added: tried again below, and noted again if they fail
        self.not_installed = {}
        self.retries.resume()   # "not installed until a reload": those an internal error ended
        if d.empty:
            return []
        by_name = {p.tunnel.name: p for p in self.plans}
        for t in list(d.removed) + [old for old, _ in d.changed]:
            await self._uninstall(by_name.pop(t.name))
        fresh = {t.name for t in d.added} | {new.name for _, new in d.changed}
        # config order, as at start (it orders the tunnels' policies); kept tunnels keep their plans and ids
        self.plans = [by_name[t.name] if t.name not in fresh else plan(t, i, self.ids)
                      for i, t in enumerate(cfg.manual)]
        added = [p for p in self.plans if p.tunnel.name in fresh]
        installed: list[ManualPlan] = []
        try:
            return await self._install_added(d, added, installed)
        except asyncio.CancelledError:   # by the stop (review revlate11 F1): what did not go in leaves
            self._forget(added, installed)
            raise

    async def _install_added(self, d: NameDiff[ManualTunnel], added: list[ManualPlan],
                             installed: list[ManualPlan]) -> list[str]:
        """The tunnels a reload adds (or replaces) into the worker, each installed one into installed; the
        reload's lines.  A tunnel the worker's death cut keeps its plan (the restart installs it); if the
        stop shuts the service down meanwhile, those not installed leave (_forget)."""
        replaced = {new.name for _, new in d.changed}
        try:
            self._open_states(added)
        except (StateError, ReloadRefused) as err:   # checked before: only a file changed since
            return [*_done(d, {p.tunnel.name for p in added}), await self._not_installed(added, err, replaced)]
        if added:
            log.warning("%s", MANUAL_WARNING)
        failed: list[str] = []
        waiting: list[ManualPlan] = []
        for p in added:
            worker = self.worker()
            try:
                await self._attempt(p, worker)
                installed.append(p)
            except StartupError as err:
                if self.closing:   # the stop, not the tunnel: no restart comes either
                    break
                if cut_by_death(err, worker):   # not the tunnel's fault: kept for the restart
                    waiting.append(p)
                    continue
                failed.append(await self._not_installed([p], err, replaced))
        cut = self._forget(added, installed) if self.closing else []
        out = {p.tunnel.name for p in added if not any(p is q for q in installed)}
        return (_done(d, out) + failed + ([_for_the_restart(waiting, replaced)] if waiting and not cut else [])
                + ([_stop_cut(cut)] if cut else []))

    def _forget(self, added: list[ManualPlan], installed: list[ManualPlan]) -> list[ManualPlan]:
        """The plans of added a reload cut short by the stop did not install, taken out again (its
        cancel, or the service shut down under it: review revlate11 F1): their plans, ids and sequence
        state, so that nothing of them is left (the worker holds nothing of them: _attempt's undo; the
        reservation persisted stays, as any).  Not awaited: a second cancel cannot cut it in two."""
        gone = [p for p in added if not any(p is q for q in installed) and any(p is q for q in self.plans)]
        for p in gone:
            self.plans = [q for q in self.plans if q is not p]
            self._release(p)
            for sa in (p.inbound, p.outbound):
                key = sa_key(sa.spi, sa.direction, sa.remote)
                self.seq.pop(key, None)
                self._seq_locks.pop(key, None)
        return gone

    async def _not_installed(self, plans: list[ManualPlan], err: Exception, replaced: set[str]) -> Failed:
        """plans leave again (their ids, their sequence state; the worker holds nothing of them): the next
        reload sees them as new and tries again.  Meanwhile their networks stay routed into the TUN
        (not_installed): a replaced tunnel's traffic, protected until this reload, must not take the
        host's other routes in clear once its old version is gone."""
        for p in plans:
            self.plans = [q for q in self.plans if q is not p]
            self.not_installed[p.tunnel.name] = (p.tunnel, str(err))
            await self._uninstall(p, installed=False)
        names = [p.tunnel.name for p in plans]
        gone = ", ".join(n for n in names if n in replaced)
        line = Failed(f"manual tunnels {', '.join(names)} not installed"
                      + (f" (the previous version of {gone} removed)" if gone else "")
                      + f": {err}; their traffic is dropped until a reload installs or removes them")
        log.error("reload: %s", line)
        return line

    async def _uninstall(self, p: ManualPlan, installed: bool = True) -> None:
        """A removed (or replaced) tunnel: its policies and SAs leave the worker (installed: it put them
        there), its sequence state is retired.  The state file stays: the same key used again starts
        past what this SA used.  One a restarted worker left out has nothing there (its SPIs may
        be the IKE service's by now): its retry ends first, and only what that put in goes."""
        if await self.retries.stop(p):
            installed = False
        worker = self.worker()
        requests: list[Callable[[int], Any]] = [
            *(functools.partial(pipe.SpdDelete, id=pol.id) for pol in p.policies),   # policies first: no
            lambda r: pipe.Delete(r, p.outbound.spi, Direction.OUT, p.outbound.remote),   # ACQUIRE/drop gap
            lambda r: pipe.Delete(r, p.inbound.spi, Direction.IN, None),
        ] if installed else []
        for make in requests:
            with contextlib.suppress(WorkerError):   # already gone (a worker restart) is gone
                await worker.request(make)
        self._release(p)
        await self._persisted()   # before a re-add of the key reads its file
        for sa in (p.inbound, p.outbound):
            key = sa_key(sa.spi, sa.direction, sa.remote)
            self.seq.pop(key, None)
            task = self._extending.get(key)
            if task is not None:   # it stops once retired; its write (if any) lands before a re-add reads
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._seq_locks.pop(key, None)
        if installed:
            log.info("%s: SAs in %08x / out %08x and %d policies removed", p.tunnel.name, p.inbound.spi,
                     p.outbound.spi, len(p.policies))

    def _release(self, p: ManualPlan) -> None:
        """p's ids free again, its SAs' expiries forgotten (it left the plans)."""
        self.ids.release_policy_ids([pol.id for pol in p.policies])
        for sa in (p.inbound, p.outbound):
            self.expired.pop(sa_key(sa.spi, sa.direction, sa.remote), None)
        self.ids.release_reqid(p.reqid)

    async def _install(self, restarted: bool = False) -> None:
        """Every plan into the worker.  At the start a tunnel that cannot go in refuses the start
        (StartupError: whoever starts tunsec sees the path and the fix at once).  At a worker restart
        it is left out and retried on its own (manual_retry.py) and the others go on, whatever the
        reason (review revrestart F1); only the new worker's death is raised: the daemon restarts
        it, and its reinstall takes every tunnel again."""
        # a copy: a reload replaces the list, and retires (_uninstall) the plans it drops or changes
        for p in list(self.plans):
            if not any(p is q for q in self.plans):   # the reload installed its successor, if any
                continue
            worker = self.worker()
            try:
                await self._attempt(p, worker)
            except StartupError as err:
                if not restarted or died(err, worker):
                    raise
                self.retries.start(p, err, worker)

    async def _attempt(self, p: ManualPlan, worker: WorkerClient) -> None:
        """p's reservations persisted, then (only then) its SAs and policies into worker; if it fails,
        whatever the error, nothing of p is left there (what went in is taken out, and only that: an
        SPI may be another's): a retry an internal error ended holds nothing in the worker, as a
        reload removing the tunnel takes it (review revlate9 F2).  Once the service is shut down (a reload
        the stop did not wait for) nothing goes in: refused, or taken out again (review revlate11 F1)."""
        if self.closing:
            raise StartupError(f"{p.tunnel.name}: {STOP_CUT}")
        done: list[Callable[[int], Any]] = []
        try:
            await self._install_one(await self._reserved(p), done, worker)
            if self.closing:   # the stop shut the service down while it went in: no refills, no removal
                raise StartupError(f"{p.tunnel.name}: {STOP_CUT}")
        except BaseException:
            await undone(worker, done)
            raise

    async def _reserved(self, p: ManualPlan) -> ManualPlan:
        """p with both SAs starting past their persisted limits, a new block persisted first (or the
        last one, which no worker took: seqstate.SeqState.restart's again)."""
        kin = sa_key(p.inbound.spi, Direction.IN, p.inbound.remote)
        kout = sa_key(p.outbound.spi, Direction.OUT, p.outbound.remote)
        try:
            async with self._seq_locks[kin], self._seq_locks[kout]:
                now = time.time()
                # an SA no worker took since its last reservation gets that one again (_hand, review revlate7 F1)
                r_in = await asyncio.to_thread(self.seq[kin].restart, now, True)
                r_out = await asyncio.to_thread(self.seq[kout].restart, now, True)
                sas = [await self._lifetime_left(key, sa, now) for key, sa in ((kin, p.inbound), (kout, p.outbound))]
        except StateError as err:
            raise StartupError(str(err)) from err
        log.info("%s: sequence numbers reserved: out %08x from %d to %d, in %08x accepts %d..%d", p.tunnel.name,
                 p.outbound.spi, r_out[0] + 1, r_out[1], p.inbound.spi, r_in[0] + 1, r_in[1])
        return dataclasses.replace(p, inbound=sas[0], outbound=sas[1]).with_reservations(r_in, r_out)

    async def _lifetime_left(self, key: SaKey, sa: SaSpec, now: float) -> SaSpec:
        """lifetime_left, booked: an SA past its key's hard lifetime is expired (not installed).  The
        caller holds the SA's lock: the mark is in the file (its fsync on a thread, not the event
        loop) before the install goes on and before any other write of that file."""
        st = self.seq[key]
        left = lifetime_left(sa, st, now)
        if isinstance(left, str):
            self.expired[key] = left
            if st.expired is None:   # its life_time ran out while tunsec was down
                await asyncio.to_thread(st.mark_expired, Expired(left, sa.hard.seconds))
            return sa
        self.expired.pop(key, None)
        return left

    def _reserve_more(self, msg: pipe.ReserveLow) -> None:
        key = sa_key(msg.spi, msg.direction, msg.remote)
        log.debug("SA %s %08x reached its reservation's refill point", msg.direction.name.lower(), msg.spi)
        if key not in self.seq:
            return
        if key in self._extending:
            # the worker may have taken the new reservation before we saw its
            # answer; it asks only once per reservation, so ignoring this would
            # leave the SA dropping everything past its limit for good
            self._again[key] = max(self._again.get(key, 0), msg.needed)
            return
        task = self._extending[key] = asyncio.create_task(self._extend(key, msg.needed))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _extend(self, key: SaKey, needed: int) -> None:
        """Persist a further block for an SA, then (only then) let the worker use it."""
        st = self.seq[key]
        try:
            # a reload that removes the tunnel retires st (see _uninstall): it must not write again
            while not self.closing and self.seq.get(key) is st:
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
            self._extending.pop(key, None)
            self._again.pop(key, None)

    async def _install_one(self, p: ManualPlan, done: list[Callable[[int], Any]], worker: WorkerClient) -> None:
        """p's SAs and policies into worker (the one the attempt began with: a retry under way when
        the worker is replaced must not put them into the new one, whose reinstall does); done gets a
        request undoing each that went in."""
        name = p.tunnel.name
        in_gone, out_gone = (sa_key(sa.spi, sa.direction, sa.remote) in self.expired for sa in (p.inbound, p.outbound))
        for sa in [sa for sa, gone in ((p.inbound, in_gone), (p.outbound, out_gone)) if gone]:
            log.warning("%s: SA %s %08x reached its hard lifetime before; not installed again "
                        "(manual keys cannot be renewed: replace them in the config)", name,
                        sa.direction.name.lower(), sa.spi)
        try:
            if not in_gone:
                await self._getspi(worker, p.inbound, done)
                await self._hand(worker, lambda r: pipe.Update(r, p.inbound), p.inbound)   # undone with GETSPI's
            if not out_gone:
                # by its reqid too (ours, IdSpace): an ADD whose answer came late may have been refused
                # for another owner's SA with that SPI and remote, which stays (review revlate9 F1)
                undo = functools.partial(pipe.Delete, spi=p.outbound.spi, direction=Direction.OUT,
                                         remote=p.outbound.remote, reqid=p.outbound.reqid)
                await self._hand(worker, lambda r: pipe.Add(r, p.outbound), p.outbound,
                                 functools.partial(done.append, undo))
            for pol in p.policies:   # also without the outbound SA: its traffic is dropped, not sent in clear
                undo_pol = functools.partial(pipe.SpdDelete, id=pol.id)   # ours (IdSpace): no one else's id
                await unless_refused(worker, lambda r, pol=pol: pipe.SpdAdd(r, pol),  # type: ignore[misc]
                                      functools.partial(done.append, undo_pol))
        except WorkerError as err:
            raise StartupError(f"{name}: installing SAs failed: {err}") from err
        log.info("%s: SAs in %08x / out %08x installed, %d policies", name, p.inbound.spi,
                 p.outbound.spi, len(p.policies))

    @staticmethod
    async def _getspi(worker: WorkerClient, sa: SaSpec, done: list[Callable[[int], Any]]) -> None:
        """sa's inbound SPI taken in worker; answered, its undo in done (the larval SA is ours).  One
        unanswered or cancelled books none: the worker may have refused it for another owner's SA (the
        IKE service's GETSPI range holds manual SPIs too), and a larval SA it did make goes at the
        worker's larval timeout (review revlate12 F1)."""
        await worker.request(lambda r: pipe.GetSpi(r, sa.spi, sa.spi))
        done.append(functools.partial(pipe.Delete, spi=sa.spi, direction=Direction.IN, remote=None))

    async def _hand(self, worker: WorkerClient, make: Callable[[int], pipe.Message], sa: SaSpec,
                    went_in: Callable[[], object] = lambda: None) -> None:
        """The request that gives worker sa with its reservation.  Unless the worker refused it, sa went
        in (went_in: its undo is booked) and its reservation is taken (its state's next restart reserves
        anew): an answer lost, late, or cut by the worker's death may come from a worker that installed
        it, and sent or accepted numbers of it (review revlate7 F1)."""
        def taken() -> None:
            went_in()
            if (st := self.seq.get(sa_key(sa.spi, sa.direction, sa.remote))) is not None:
                st.taken()
        await unless_refused(worker, make, taken)

    async def _send_reserve(self, key: SaKey, limit: int, notify: int) -> None:
        with contextlib.suppress(WorkerError):   # a restarted worker starts past the limit anyway
            await self.worker().request(lambda r: pipe.Reserve(r, key[0], key[1], limit, notify, key[2]))

    # --- worker events -------------------------------------------------------------
    def on_event(self, msg: pipe.Message) -> bool:
        match msg:
            case pipe.ReserveLow() if sa_key(msg.spi, msg.direction, msg.remote) in self.seq:
                self._reserve_more(msg)
                return True
            case pipe.Expire() if (key := sa_key(msg.spi, msg.direction, msg.remote)) in self.seq:
                if msg.hard and (why := self._impossible_expiry(key, msg.reason)) is not None:
                    self._refuse_expiry(msg, why)
                    return True
                what = "hard" if msg.hard else "soft"
                if msg.hard:   # whatever the limit (time, bytes, packets, sequence numbers) the worker removed it
                    self.expired[key] = msg.reason.name.lower()
                    self._persist_expired(key, msg.reason)
                if (held := self._expire_log.admit()) is not None:   # the worker decides how many (F3)
                    log.warning("SA %s %08x reached its %s %s limit%s%s", msg.direction.name.lower(), msg.spi,
                                what, msg.reason.name.lower(), _expire_note(msg), suffix(held))
                return True
            case pipe.Acquire() if (p := self._expired_policy(msg.policy_id)) is not None:
                # its outbound SA expired (logged then): the traffic is dropped (no_sa), once a second
                # an ACQUIRE comes, and nothing here can negotiate a new SA
                log.debug("%s: traffic for policy %d dropped: its outbound SA expired", p.tunnel.name,
                          msg.policy_id)
                return True
        return False

    def _hard_limit(self, key: SaKey, reason: ExpireReason) -> int:
        """The configured hard limit of that kind (bytes, packets, seconds) of the SA; 0 for none."""
        spec = next((sa for p in self.plans for sa in (p.inbound, p.outbound)
                     if sa_key(sa.spi, sa.direction, sa.remote) == key), None)
        hard = spec.hard if spec is not None else Lifetime()
        return {ExpireReason.BYTES: hard.bytes, ExpireReason.PACKETS: hard.packets,
                ExpireReason.TIME: hard.seconds}.get(reason, 0)

    def _impossible_expiry(self, key: SaKey, reason: ExpireReason) -> str | None:
        """Why the worker cannot have removed the manual SA at that hard limit, or None.  A hard
        expiry is persisted and keeps the key out after every restart: one forged by a worker taken
        over would end the tunnel for good.  A manual SA is never larval past its install; it cannot
        run out of sequence numbers before its reservation reaches the last one; nor pass a limit
        that is not configured."""
        st = self.seq[key]
        if reason is ExpireReason.LARVAL_TIMEOUT:
            return "a manual SA is complete from its install on"
        if reason is ExpireReason.SEQ_OVERFLOW:
            return None if st.limit >= st.seq_max else f"its reservation ends at {st.limit}, below {st.seq_max}"
        return None if self._hard_limit(key, reason) else "no such limit is configured for it"

    def _refuse_expiry(self, msg: pipe.Expire, why: str) -> None:
        self.refused_expires += 1
        if (held := self._refused_log.admit()) is not None:
            log.error("SA %s %08x: the worker says it reached its hard %s limit, which it cannot have (%s): "
                      "ignored%s", msg.direction.name.lower(), msg.spi, msg.reason.name.lower(), why, suffix(held))

    def _persist_expired(self, key: SaKey, reason: ExpireReason) -> None:
        """The hard limit the worker removed an SA at goes into its key's state file: a restart does
        not bring the key back while the config keeps that limit.  Written under the SA's lock, as
        its refills are: one write of the file at a time, each with the other's fields."""
        st = self.seq[key]
        # at once in memory: an install or a refill that takes the lock before this write keeps it too
        st.expired = Expired(reason.name.lower(), self._hard_limit(key, reason))
        task = asyncio.create_task(self._write_expired(st, self._seq_locks[key], st.expired))
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    @staticmethod
    async def _write_expired(st: SeqState, lock: asyncio.Lock, expired: Expired) -> None:
        async with lock:
            try:
                await asyncio.to_thread(st.mark_expired, expired)
            except StateError as err:   # it stays expired until this process ends; say why a restart may not
                log.error("%s; a restart would install this SA again", err)

    async def _persisted(self) -> None:
        """Until the hard expiries booked so far are in their files."""
        while self._persisting:
            await asyncio.gather(*self._persisting)

    def _expired_policy(self, policy_id: int) -> ManualPlan | None:
        """The tunnel whose policy this is, if its outbound SA expired."""
        for p in self.plans:
            if sa_key(p.outbound.spi, Direction.OUT, p.outbound.remote) in self.expired and any(
                    pol.id == policy_id for pol in p.policies):
                return p
        return None

    # --- status ----------------------------------------------------------------------
    def status(self, dump: pipe.Reply) -> dict[str, Any]:
        sas = {sa_key(sa.spi, sa.direction, sa.remote): sa for sa in dump.sas}
        return {"tunnels": [*({**self._tunnel_status(p, sas, self.expired), **self._left_out(p)} for p in self.plans),
                            *({**_tunnel_fields(t), "sas": [], "expired": [], "not_installed": why}
                              for t, why in self.not_installed.values())]}

    def _left_out(self, p: ManualPlan) -> dict[str, Any]:
        """A tunnel a restarted worker left out: why, and whether it is tried again (or, its retry ended
        by an internal error, left to a reload)."""
        why = self.retries.reason(p.tunnel.name)
        return {} if why is None else {"not_installed": why, "retrying": self.retries.retrying(p.tunnel.name)}

    @classmethod
    def idle_status(cls) -> dict[str, Any]:
        return {"tunnels": []}

    @staticmethod
    def _tunnel_status(p: ManualPlan, sas: dict[SaKey, SaInfo], expired: dict[SaKey, str]) -> dict[str, Any]:
        keys = (sa_key(p.inbound.spi, Direction.IN, None), sa_key(p.outbound.spi, Direction.OUT, p.outbound.remote))
        return {
            **_tunnel_fields(p.tunnel),
            "sas": [sa_status(sas[k]) for k in keys if k in sas],
            # removed by the worker at a hard lifetime, and not installed again with these keys: the
            # tunnel is dead in that direction (its traffic dropped) until a reload brings new keys
            "expired": [{"spi": f"{k[0]:08x}", "direction": k[1].name.lower(), "reason": expired[k],
                         "hint": "manual keys cannot be renewed: reload with new keys"}
                        for k in keys if k in expired and k not in sas],
        }


def _expire_note(msg: pipe.Expire) -> str:
    """What a manual SA's EXPIRE means for it: nothing renews manual keys.  A soft SEQ_OVERFLOW (the
    fast path's warning SEQ_SOFT_MARGIN numbers before a non-ESN SA's last) comes once per SA and
    worker: the hard stop at the last number stays."""
    if msg.hard:
        return "; removed, manual keys cannot be renewed: replace them in the config"
    if msg.reason is ExpireReason.SEQ_OVERFLOW:
        return (f"; {SEQ_SOFT_MARGIN} sequence numbers left before it stops, manual keys cannot be renewed: "
                "replace them in the config (or use esn)")
    return ""


def _for_the_restart(plans: list[ManualPlan], replaced: set[str]) -> Failed:
    """The reload's line for the tunnels the worker died under (review revreload2 F2): their plans stay
    (ids, sequence state, routes into the TUN: their traffic dropped meanwhile, never sent in clear), and
    the restart's reinstall (the watcher waits for this reload) puts them into the new worker."""
    names = [p.tunnel.name for p in plans]
    gone = ", ".join(n for n in names if n in replaced)
    line = Failed(f"manual tunnels {', '.join(names)} not installed yet"
                  + (f" (the previous version of {gone} removed)" if gone else "")
                  + ": the worker died during the reload; installed by the worker's restart")
    log.error("reload: %s", line)
    return line


def _stop_cut(plans: list[ManualPlan]) -> Failed:
    """The reload's line for the tunnels it did not install before the stop shut the service down."""
    line = Failed(f"manual tunnels {', '.join(p.tunnel.name for p in plans)} not installed: {STOP_CUT}")
    log.error("reload: %s", line)
    return line


def _tunnel_fields(t: ManualTunnel) -> dict[str, Any]:
    """What status says of a manual tunnel's configuration."""
    return {
        "name": t.name,
        "type": "manual",
        "local": f"{t.local_addr}[{t.local_port}]",
        "remote": f"{t.remote_addr}[{t.remote_port}]",
        "esp": str(t.esp),
        "local_ts": [str(ts) for ts in t.local_ts],
        "remote_ts": [str(ts) for ts in t.remote_ts],
    }
