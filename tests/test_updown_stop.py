"""At tunsec's stop the updown scripts' queue is drained (updown.Scripts.drain, review revupdown F1):
the down-clients run until a deadline, then what is left is cancelled, the running scripts' process
groups killed, and the count logged; no up-client starts once the stop began.

Real scripts (/bin/sh); the deadline is the test's parameter (a script that hangs waits for a file
that never comes), nothing waits for a time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from pathlib import Path

import pytest
from test_review_revupdown_run import _alive

from tunsec.policy.selector import Ts
from tunsec.updown import ChildEvent, Scripts


def _event(up: bool) -> ChildEvent:
    return ChildEvent(up, "net", "tunsec0", 7, 3, "192.0.2.1", "192.0.2.2", 4500, "moon.example", "sun.example",
                      (Ts.parse("10.1.0.0/24"),), (Ts.parse("10.2.0.0/16"),))


def test_a_down_client_running_at_the_drain_deadline_is_killed_with_what_it_started(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The down's script starts a child and hangs; the drain's deadline comes: the run is
    cancelled, the script and its child killed (its process group), and the log says one
    down-client was not run, killed while running."""
    pids = tmp_path / "pids"
    path = tmp_path / "updown.sh"
    path.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwhile :; do sleep 0.01; done\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)

    async def body() -> int:
        scripts = Scripts(asyncio.ensure_future)
        assert scripts.submit(3, (str(path),), _event(up=False))
        for _ in range(2000):   # until the script started its child (bounded: a broken build fails)
            if pids.exists() and len(pids.read_text().split()) == 2:
                break
            await asyncio.sleep(0.01)
        return await scripts.drain(asyncio.get_running_loop().time() + 0.2)

    try:
        with caplog.at_level("ERROR", "tunsec.updown"):
            assert asyncio.run(body()) == 1
        left = [int(p) for p in pids.read_text().split()]
        assert left and not any(_alive(p) for p in left), "the script or its child outlived the drain's deadline"
        assert "1 down-client(s) not run at the stop, 1 of them killed while running" in caplog.text
    finally:
        for p in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_no_up_client_is_queued_once_the_stop_began(tmp_path: Path) -> None:
    """An install answered during the stop: its up-client is refused (submit says so: no down
    will be queued for it either), and the drain has nothing to wait for."""
    mark = tmp_path / "ran"

    async def body() -> tuple[bool, int]:
        scripts = Scripts(asyncio.ensure_future)
        drained = await scripts.drain(asyncio.get_running_loop().time() + 5.0)
        return scripts.submit(3, ("/usr/bin/touch", str(mark)), _event(up=True)), drained

    assert asyncio.run(body()) == (False, 0)
    assert not mark.exists()
