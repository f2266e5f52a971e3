"""A reload of IKE connections that meets a worker restart (review of 2026-12-03, J): while the
worker is down, and while the watcher starts its successor.  The daemon's own reload, _watch_worker
and _install_services run, into a real IkeService (test_reload_ike's gateway: the worker's logic and
C fast path in-process, the peers' IKE engines wired to it in memory)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from test_ikeservice_peers import GW, Gateway, InProcessWorker, assert_reaches_only_its_site, run
from test_manual_reload_restart import CrashingWorker, until
from test_reload_ike import SECRET, ConfiguredGateway, conf, conn

from tunsec.conf.config import Config, load_config
from tunsec.daemon import Daemon
from tunsec.dataplane.client import WorkerClient
from tunsec.runtime import resolved
from tunsec.services.ike import IkeService


class WatchedDaemon(Daemon):
    """The daemon, with an in-process worker (the gateway's) wherever it would start a worker process."""

    def __init__(self, cfg: Config, gw: WatchedGateway) -> None:
        super().__init__(cfg)
        self.gw = gw
        self._privilege_given_up = True   # nothing to give up: no process is started
        self.ike = gw.service
        self.services = [self.manual, gw.service]
        self.sockets.binds = {4: (GW, 4500)}
        self.worker = gw.worker  # type: ignore[assignment]
        self.workers: list[CrashingWorker] = [gw.worker]

    async def _start_worker(self) -> None:
        w = CrashingWorker(asyncio.get_running_loop(), self.gw._natt_out)
        self.gw.worker = self.worker = w  # type: ignore[assignment]
        self.workers.append(w)
        await self._install_services()


class WatchedGateway(ConfiguredGateway):
    """test_reload_ike's gateway, its worker one that can crash and its daemon's watcher running."""

    worker: CrashingWorker
    daemon: WatchedDaemon

    async def start(self) -> None:
        await Gateway.start(self)
        self.worker = CrashingWorker(asyncio.get_running_loop(), self._natt_out)
        old = self.service
        cfg = resolved(load_config(self.path))
        self.service = IkeService(cfg.connections, lambda: self.worker, {4: GW}, old.ids)  # type: ignore[arg-type,return-value]
        await self.service.start()
        self.service.sockets.by_key = old.sockets.by_key
        self.daemon = WatchedDaemon(cfg, self)
        self.watcher = asyncio.create_task(self.daemon._watch_worker())

    async def stop(self) -> None:
        self.daemon.stopping.set()
        self.watcher.cancel()
        await asyncio.gather(self.watcher, return_exceptions=True)


def test_a_reload_while_the_worker_is_down(tmp_path: Path) -> None:
    """The reload lands between the worker's death and its restart (poc_reload_worker_down).  On
    main the trap policy's SPDADD raised out of the reload: daemon.cfg stayed old while the service
    had the new connections, "started" (after the trap one) was never initiated, and `tunsec reload`
    got no answer.  Now the reload completes; the restart's reinstall puts the trap policy in."""
    async def body() -> None:
        gw = ConfiguredGateway(3)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0)))
        await gw.start()
        gw.worker = WorkerClient(lambda m: None)  # type: ignore[assignment]   # its worker died: not running
        gw.path.write_text(conf(conn("keep", 0), conn("trapped", 1, "trap"), conn("started", 2, "start")))
        answer = await gw.daemon._command(json.dumps({"cmd": "reload"}).encode())
        assert answer == {"ok": True, "message": "IKE connections added: trapped, started"}
        assert [c.name for c in gw.daemon.cfg.connections] == ["keep", "trapped", "started"]
        # the watcher's new worker, and the reinstall into it
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)
        await gw.service.worker_restarted()
        await gw.settle()
        assert_reaches_only_its_site(gw, 2)   # "started" came up
        traps = [p for p in gw.worker.dp.policies() if p.id in gw.service.trap_policies]
        assert [str(p.selector.dst_lo) for p in traps] == ["10.2.2.0"]
        assert set(gw.service.trap_policies.values()) == {("trapped", "net")}
    run(body())


def test_a_reload_overlapping_the_new_workers_start_leaves_no_trap_policy_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload reads its file while the watcher starts the new worker (poc_trap_orphan, through
    the daemon).  On main the reload installed the trap policy into the new worker, then the
    reinstall forgot it without SPDDELETE and installed it again: the first policy, its id released,
    outlived the removal of its connection and kept dropping that subnet's traffic."""
    async def body() -> None:
        gw = WatchedGateway(2)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0)))
        await gw.start()
        d = gw.daemon
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
            answer = await gw.reload(conf(conn("keep", 0), conn("trapped", 1, "trap")))
            assert answer == {"ok": True, "message": "IKE connections added: trapped"}
            async with d._reloading:   # the reinstall is done
                pass
            assert len(d.workers) == 2 and not gw.watcher.done() and not d.stopping.is_set()
            policies = d.workers[1].dp.policies()
            assert [(p.id, str(p.selector.dst_lo)) for p in policies] == [(pid, "10.2.2.0")
                                                                          for pid in gw.service.trap_policies]
            assert len(policies) == 1

            answer = await gw.reload(conf(conn("keep", 0)))
            assert answer == {"ok": True, "message": "IKE connections removed: trapped"}
            assert d.workers[1].dp.policies() == [] and gw.service.trap_policies == {}
        finally:
            await gw.stop()
    run(body())


def test_a_reload_that_fails_unforeseen_is_answered_and_logged_once(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """An exception out of a service's reload (a bug): `tunsec reload` gets an answer, SIGHUP's task
    ends without an exception for asyncio to report, and each says it in one log line."""
    async def body() -> None:
        gw = ConfiguredGateway(1)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn("keep", 0)))
        await gw.start()

        async def broken(cfg: Config) -> list[str]:
            raise LookupError(SECRET)   # the exception's text: never logged
        gw.service.reload = broken  # type: ignore[method-assign]
        gw.path.write_text(conf(conn("keep", 0), conn("new", 0, "trap")))
        answer = await gw.daemon._command(json.dumps({"cmd": "reload"}).encode())
        assert answer["ok"] is False and "internal error (LookupError)" in answer["error"], answer
        gw.daemon._on_sighup()
        (task,) = gw.daemon._reloads
        await task
        assert task.exception() is None
    run(body())
    lines = [r for r in caplog.records if "failed: LookupError" in r.getMessage()]
    assert len(lines) == 2 and all(r.exc_info is None for r in caplog.records)
    assert not any(SECRET in r.getMessage() for r in caplog.records)
