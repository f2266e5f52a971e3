"""A run cancelled while asyncio still connects the script's pipes (the last CI run's failure of
test_review_revupdown2_run's setsid test, under load): the script runs already, since the fork and
exec happen before subprocess_exec returns, and asyncio's own undo of the cancelled set-up kills the
script's pid alone.  What the script started in a session of its own must go with it, as at the
timeout (scriptrun.execute's set-up is shielded and the run killed once it is set up).  Real /bin/sh.

The window is made wide on purpose: the loop's connect_read_pipe (how asyncio connects the
script's output) waits until the test has cancelled the run, then connects as it would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from test_review_revupdown2_run import _session
from test_review_revupdown_run import _alive, _event, _script

from tunsec.updown import environments, run


def _setsid_child(pidfile: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pidfile.read_text())
        return pid if _session(pid) == pid else None
    return None


def test_a_run_cancelled_during_its_set_up_kills_what_the_script_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # the child holds no end of the output pipe: asyncio's undo (on main) waits for the pipe's end
    argv = _script(tmp_path, f"setsid sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {pidfile}\n"
                             "while :; do sleep 0.01; done\n")
    (env,) = environments(_event())

    async def body() -> None:
        loop = asyncio.get_running_loop()
        real, cancelled = loop.connect_read_pipe, asyncio.Event()

        async def connect_after_the_cancel(*args: Any, **kwargs: Any) -> Any:
            await cancelled.wait()
            return await real(*args, **kwargs)

        loop.connect_read_pipe = connect_after_the_cancel   # type: ignore[method-assign]
        task = asyncio.ensure_future(run(argv, env, timeout=600.0))
        for _ in range(3000):   # until the script's child leads a session of its own (bounded guard)
            if _setsid_child(pidfile) is not None:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        cancelled.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(body())
        child = _setsid_child(pidfile) or int(pidfile.read_text())
        assert not _alive(child), "a run cancelled during its set-up left the script's setsid child running"
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
