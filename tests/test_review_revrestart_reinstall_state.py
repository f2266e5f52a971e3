"""Review revrestart F1: one manual key whose sequence state cannot be written when the worker is
restarted (a full disk, EIO, a read-only remount; here its file's name taken by a directory, so the
rename into place fails for real) ends tunsec as a whole: the daemon's reinstall stops at the manual
service's StartupError, the services after it (the IKE service) are never reinstalled, the other
manual tunnels neither, and _restart_worker takes the failure for a worker that cannot be started
("restarting the worker failed"): tunsec stops.  While running, the same failure in a refill is a
logged error and a retry (manual.py _extend), and in a reload a tunnel "not installed" beside the
others (manual.py reload).

The daemon's own _watch_worker, _restart_worker and _install_services run, with the in-process
worker of test_manual_reload_restart (the worker's logic and C fast path in this process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_manual_reload_restart import started as start_daemon
from test_manual_reload_restart import stopped, until
from test_reload_manual import tunnel

from tunsec.conf.config import Config
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import state_file
from tunsec.services.base import Service


class Recorder(Service):
    """A service after the manual one in the daemon's list, as the IKE service is: it records being
    reinstalled into the new worker."""

    name = "recorder"

    def __init__(self) -> None:
        self.reinstalled = 0

    async def start(self) -> None:
        return None

    async def worker_restarted(self) -> None:
        self.reinstalled += 1

    def on_event(self, msg: pipe.Message) -> bool:
        return False

    def status(self, dump: pipe.Reply) -> dict[str, object]:
        return {}

    def worker_entries(self) -> int:
        return 0

    async def shutdown(self) -> None:
        return None

    async def reload(self, cfg: Config) -> list[str]:
        return []


def test_one_unwritable_key_state_at_a_worker_restart_does_not_stop_tunsec(tmp_path: Path) -> None:
    """On main: d.stopping is set (tunsec exits 1), t1 and the service after manual are never put
    into the new worker.  Expected: t0 is left out (its traffic dropped, as a reload leaves a tunnel
    it cannot install, and retried), t1 and the other services are reinstalled, tunsec runs on."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        other = Recorder()
        d.services.append(other)
        try:
            t0 = next(p for p in d.manual.plans if p.tunnel.name == "t0")
            # t0's outbound key's state file cannot be replaced any more
            path = state_file(d.manual.dir.path if d.manual.dir else tmp_path / "state", t0.outbound.key)
            path.unlink()
            path.mkdir()
            (path / "x").write_bytes(b"")
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            await until(lambda: watcher.done() or other.reinstalled > 0, 10)
            async with d._reloading:   # the reinstall is over, whatever its outcome
                pass
            assert not d.stopping.is_set(), "tunsec gave up: every tunnel (IKE ones too) is gone"
            assert other.reinstalled == 1, "the service after manual (IKE) was never reinstalled"
            t1 = next(p for p in d.manual.plans if p.tunnel.name == "t1")
            held = {(sa.spi, sa.direction) for sa in d.workers[-1].dp.sas()}
            assert {(t1.inbound.spi, Direction.IN), (t1.outbound.spi, Direction.OUT)} <= held
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
