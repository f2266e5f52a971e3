"""A worker that closes its pipe but does not exit is killed and restarted as a dead one (review revpipe
R1, worker_watch.py).

Before, the daemon's watcher waited for the worker's exit alone: a worker (taken over, or with a bug)
that closed its pipe and ran on answered nothing any more, every request failed for good, and it was
neither replaced nor stopped.  Here the worker is a real process started by the real
WorkerClient.start on a real pipe (a stand-in for the worker's program: it closes its end of the pipe
and sleeps); the daemon's own _watch_worker, _restart_worker and reinstall run, its successor the
in-process worker of test_manual_reload_restart.Restarting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from test_manual_reload_restart import Restarting, expected, held, until
from test_reload_manual import conf, tunnel

from tunsec.conf.config import load_config
from tunsec.dataplane import client as client_mod
from tunsec.dataplane.client import WorkerClient, WorkerFds
from tunsec.runtime import resolved
from tunsec.statedir import init_state_dir

# the worker's program: its pipe closed, it runs on (as a worker taken over may)
STAND_IN = """import os, sys, time
os.close(int(sys.argv[sys.argv.index("--pipe-fd") + 1]))
time.sleep(600)
"""


def test_a_worker_that_closes_its_pipe_and_runs_on_is_killed_and_restarted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Fails before the fix: no restart within 30 s, the worker still runs.  (It is killed EXIT_GRACE,
    2 s, after its pipe closed.)"""
    monkeypatch.setattr(client_mod, "worker_command", lambda: [sys.executable, "-c", STAND_IN])

    async def body() -> tuple[int | None, bool, int]:
        path = tmp_path / "tunsec.conf"
        path.write_text(conf(tmp_path, tunnel("t0", 0)))
        init_state_dir(tmp_path / "state")
        d = Restarting(resolved(load_config(path)))
        d.manual.prepare()
        await d._start_worker()   # the in-process worker, the tunnel installed
        real = WorkerClient(d._on_event)
        await real.start(WorkerFds(-1), 1400, 30, "info")
        assert real.proc is not None
        pid = real.proc.pid
        d.worker = real   # the worker the watcher watches now: it has closed its pipe (or is about to)
        watcher = asyncio.create_task(d._watch_worker())
        try:
            restarted = await until(lambda: len(d.workers) == 2, 30)
            async with d._reloading:   # the reinstall is done
                pass
            return real.proc.returncode, restarted and held(d.workers[1]) == expected(d), d.worker_restarts
        finally:
            d.stopping.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if real.proc.returncode is None:   # what this test started, by pid
                os.kill(pid, signal.SIGKILL)
                await real.proc.wait()
            d.manual.close()

    code, restarted, restarts = asyncio.run(body())
    assert restarted and restarts == 1, "the worker was not restarted"
    assert code == -signal.SIGKILL, f"the worker's exit: {code}"
    assert "closed its pipe but did not exit" in caplog.text
