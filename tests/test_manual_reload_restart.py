"""A reload that lands while the daemon reinstalls the manual tunnels into a restarted worker
(review of 2026-12-03, item 5): the reload and the reinstall both finish, the new worker holds
exactly the new configuration's SAs and policies, and the worker watcher lives on to restart the
next crash.  The daemon's own _watch_worker and _install_services run; only the worker process is
the worker's logic and C fast path in this process (test_reload_manual's InProcessWorker)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from test_ikeservice_peers import InProcessWorker
from test_reload_manual import conf, tunnel

from tunsec.conf.config import Config, load_config
from tunsec.daemon import Daemon, Sockets
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.runtime import resolved
from tunsec.services.base import StartupError
from tunsec.statedir import init_state_dir

PIDS = itertools.count(90000)


class Proc:
    """The worker process as _watch_worker sees it."""

    def __init__(self) -> None:
        self.pid = next(PIDS)
        self.exited = asyncio.Event()

    async def wait(self) -> int:
        await self.exited.wait()
        return -9


class CrashingWorker(InProcessWorker):
    """An in-process worker with the process face the daemon uses (proc, pid, stop), that can crash."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 send_ike: Callable[[pipe.SendIke], None] = lambda m: None) -> None:
        super().__init__(loop, send_ike)
        self.proc = Proc()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def gone(self) -> bool:
        return self.proc.exited.is_set()

    async def stop(self) -> int:
        self.proc.exited.set()
        return -9

    async def pipe_closed(self) -> None:   # as WorkerClient's: its pipe closes as it exits
        await self.proc.exited.wait()

    def crash(self) -> None:
        self.proc.exited.set()


class Restarting(Daemon):
    """The daemon, with an in-process worker wherever it would start a worker process."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._privilege_given_up = True   # nothing to give up: no process is started
        self.sockets.binds = Sockets.binds_for(self.manual.esp_endpoints())
        self.workers: list[CrashingWorker] = []
        self.hold_next: Callable[[pipe.Message], Awaitable[object] | None] | None = None

    async def _start_worker(self) -> None:
        w = CrashingWorker(asyncio.get_running_loop())
        w.hold, self.hold_next = self.hold_next, None
        self.worker = w  # type: ignore[assignment]
        self.workers.append(w)
        await self._install_services()


def holds_first_getspi(reached: asyncio.Event, release: asyncio.Event
                       ) -> Callable[[pipe.Message], Awaitable[object] | None]:
    """A hold for the new worker: the reinstall's first GETSPI is answered once release is set."""
    def hold(msg: pipe.Message) -> Awaitable[object] | None:
        if not isinstance(msg, pipe.GetSpi) or reached.is_set():
            return None
        reached.set()
        return release.wait()
    return hold


def expected(d: Daemon) -> tuple[set[tuple[int, Direction]], set[tuple[int, object]]]:
    """The SAs and policies (id, selector) of the daemon's plans now."""
    plans = d.manual.plans
    sas = {(sa.spi, sa.direction) for p in plans for sa in (p.inbound, p.outbound)}
    return sas, {(pol.id, pol.selector) for p in plans for pol in p.policies}


def held(w: CrashingWorker) -> tuple[set[tuple[int, Direction]], set[tuple[int, object]]]:
    return ({(sa.spi, sa.direction) for sa in w.dp.sas()},
            {(pol.id, pol.selector) for pol in w.dp.policies()})


async def until(what: Callable[[], bool], timeout: float = 30.0) -> bool:
    async def poll() -> None:
        while not what():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        return False
    return True


async def reload_during_reinstall(tmp: Path, new_t2: str) -> None:
    path = tmp / "tunsec.conf"
    path.write_text(conf(tmp, tunnel("t0", 0), tunnel("t1", 1), tunnel("t2", 2)))
    init_state_dir(tmp / "state")
    d = Restarting(resolved(load_config(path)))
    d.manual.prepare()
    await d._start_worker()
    watcher = asyncio.create_task(d._watch_worker())
    try:
        # the worker crashes; the reinstall into its successor is held at its first request
        reached, release = asyncio.Event(), asyncio.Event()
        d.hold_next = holds_first_getspi(reached, release)
        d.workers[0].crash()
        assert await until(reached.is_set)
        # the operator reloads meanwhile: t2 changes
        path.write_text(conf(tmp, tunnel("t0", 0), tunnel("t1", 1), new_t2))
        reload = asyncio.create_task(d._command(json.dumps({"cmd": "reload"}).encode()))
        for _ in range(20):
            await asyncio.sleep(0)
        release.set()
        assert await reload == {"ok": True, "message": "manual tunnels replaced: t2"}
        async with d._reloading:   # the reinstall is done too
            pass
        assert not watcher.done() and not d.stopping.is_set()
        assert held(d.workers[1]) == expected(d)

        # the next crash is restarted, into a worker that gets the new configuration
        d.workers[1].crash()
        assert await until(lambda: len(d.workers) == 3 or watcher.done()), "the watcher never restarted it"
        assert len(d.workers) == 3 and not watcher.done()
        async with d._reloading:
            pass
        assert held(d.workers[2]) == expected(d)
        assert not d.stopping.is_set()
    finally:
        d.stopping.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        d.manual.close()


def test_a_reload_changing_spi_out_during_a_reinstall(tmp_path: Path) -> None:
    """On main the reinstall reached the retired plan of t2: KeyError, the watcher died, and the
    next crash was never restarted."""
    new_t2 = tunnel("t2", 2).replace("0xc0020002", "0xc0020022")

    async def body() -> None:
        await reload_during_reinstall(tmp_path, new_t2)
    asyncio.run(body())


def test_a_reload_changing_only_selectors_during_a_reinstall(tmp_path: Path) -> None:
    """On main the reinstall's GETSPI of t2's old plan failed (the reload had installed its SPI):
    "restarting the worker failed", and tunsec stopped."""
    new_t2 = tunnel("t2", 2).replace("remote_ts = 10.2.2.0/24", "remote_ts = 10.2.2.0/25")

    async def body() -> None:
        await reload_during_reinstall(tmp_path, new_t2)
    asyncio.run(body())


def test_the_watcher_outlives_a_failing_reinstall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Anything a service's reinstall raises is one log line (no traceback); the worker runs, and the
    watcher restarts its next crash."""
    async def body() -> None:
        path = tmp_path / "tunsec.conf"
        path.write_text(conf(tmp_path, tunnel("t0", 0)))
        init_state_dir(tmp_path / "state")
        d = Restarting(resolved(load_config(path)))
        d.manual.prepare()
        await d._start_worker()
        watcher = asyncio.create_task(d._watch_worker())
        reinstall = d.manual.worker_restarted
        calls: list[int] = []

        async def broken_once() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise LookupError("a bug")
            await reinstall()
        d.manual.worker_restarted = broken_once  # type: ignore[method-assign]
        try:
            d.workers[0].crash()
            assert await until(lambda: bool(calls) or watcher.done())
            d.workers[-1].crash()
            assert await until(lambda: len(d.workers) == 3 or watcher.done()), "the watcher never restarted it"
            async with d._reloading:
                pass
            assert not watcher.done() and not d.stopping.is_set()
            assert held(d.workers[2]) == expected(d) and expected(d)[0]
        finally:
            d.stopping.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            d.manual.close()
        lines = [r for r in caplog.records if "reinstalling into the restarted worker failed" in r.getMessage()]
        assert [r.getMessage() for r in lines] == ["reinstalling into the restarted worker failed: LookupError"]
        assert all(r.exc_info is None for r in caplog.records)
    asyncio.run(body())


async def started(tmp: Path, *tunnels: str) -> tuple[Restarting, asyncio.Task[None]]:
    """A daemon with its first worker and the watcher running."""
    (tmp / "tunsec.conf").write_text(conf(tmp, *tunnels))
    init_state_dir(tmp / "state")
    d = Restarting(resolved(load_config(tmp / "tunsec.conf")))
    d.manual.prepare()
    await d._start_worker()
    return d, asyncio.create_task(d._watch_worker())


async def stopped(d: Restarting, watcher: asyncio.Task[None]) -> None:
    d.stopping.set()
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    d.manual.close()


async def restarts_the_next_crash(d: Restarting, watcher: asyncio.Task[None]) -> None:
    """The watcher lives on: the next crash gets a worker with the daemon's plans, each SA once."""
    n = len(d.workers)
    d.workers[-1].crash()
    assert await until(lambda: len(d.workers) == n + 1 or watcher.done()), "the watcher never restarted it"
    async with d._reloading:   # its reinstall is done
        pass
    assert not watcher.done() and not d.stopping.is_set()
    assert held(d.workers[-1]) == expected(d)


def test_a_reload_overlapping_the_new_workers_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload reads its file while the watcher starts the new worker (review 2026-12-03 J,
    poc_reload_across_spawn).  On main the new worker was started outside the reload lock: the
    reload installed t2 into it, then the reinstall installed t2 again (GETSPI ENOSPC), "restarting
    the worker failed", and tunsec stopped."""
    async def body() -> None:
        d, watcher = await started(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        read = load_config

        def read_once_restarted(path: Path, **kw: bool) -> Config:   # the reload's thread: the file is read once
            bound = time.monotonic() + 30                 # the new worker exists (or was never started)
            while len(d.workers) < 2 and time.monotonic() < bound:
                time.sleep(0.01)
            return read(path, **kw)
        monkeypatch.setattr("tunsec.daemon.load_config", read_once_restarted)
        try:
            d.workers[0].crash()
            assert await until(lambda: d.worker_restarts == 1)   # the watcher is restarting it
            (tmp_path / "tunsec.conf").write_text(conf(tmp_path, tunnel("t0", 0), tunnel("t1", 1), tunnel("t2", 2)))
            answer = await d._command(json.dumps({"cmd": "reload"}).encode())
            assert answer == {"ok": True, "message": "manual tunnels added: t2"}
            async with d._reloading:
                pass
            assert len(d.workers) == 2 and not watcher.done() and not d.stopping.is_set()
            assert held(d.workers[1]) == expected(d) and len(expected(d)[0]) == 6
            await restarts_the_next_crash(d, watcher)
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_a_worker_dying_during_its_reinstall_is_restarted_again(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The restarted worker dies while the manual tunnels go into it (poc_crash_during_reinstall): a
    second death within the crash-loop budget (MAX_RESTARTS), restarted as such.  On main its
    failed UPDATE was taken for a worker that cannot be started: tunsec stopped after 2 deaths."""
    async def body() -> None:
        d, watcher = await started(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            reached, release = asyncio.Event(), asyncio.Event()
            d.hold_next = holds_first_getspi(reached, release)
            d.workers[0].crash()
            assert await until(reached.is_set)
            w1 = d.workers[1]
            w1.crash()   # it dies: what it is asked from now on fails

            def dead(data: bytes) -> list[bytes]:
                msg = pipe.decode(data)
                assert not isinstance(msg, pipe.Reply)
                return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, pipe.Errno.EIO))]
            w1.worker.handle_datagram = dead  # type: ignore[method-assign]
            release.set()
            assert await until(lambda: len(d.workers) == 3 or watcher.done()), "no third worker"
            async with d._reloading:
                pass
            assert not watcher.done() and not d.stopping.is_set() and d.worker_restarts == 2
            assert held(d.workers[2]) == expected(d) and len(expected(d)[0]) == 4
            await restarts_the_next_crash(d, watcher)
        finally:
            await stopped(d, watcher)
        said = [r.getMessage() for r in caplog.records if "died while its tunnels were reinstalled" in r.getMessage()]
        assert said == [f"the restarted worker {w1.pid} died while its tunnels were reinstalled: "
                        "t0: installing SAs failed: Update: EIO"]
    asyncio.run(body())


def test_a_worker_that_cannot_be_started_stops_tunsec(tmp_path: Path) -> None:
    """A restart that starts no worker at all is not a death to retry: tunsec stops."""
    async def body() -> None:
        d, watcher = await started(tmp_path, tunnel("t0", 0))

        async def unstartable() -> None:
            raise StartupError("starting the dataplane worker: no such user")
        d._start_worker = unstartable  # type: ignore[method-assign]
        try:
            d.workers[0].crash()
            assert await until(watcher.done)
            assert d.stopping.is_set() and len(d.workers) == 1
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
