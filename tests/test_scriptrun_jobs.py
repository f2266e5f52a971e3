"""The jobs an updown script leaves in the background (tunsec.scriptrun, review revupdown2 F3 and a
remark): their output pipe is read until they close it, and no more than MAX_LINGERING such pipes
are kept; a run cancelled after its script exited (the stop's drain, in the EOF grace) kills no job.

Real scripts (/bin/sh) through tunsec.scriptrun.execute; gates are files, loops bounded guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from test_review_revupdown2_run import _wait_gone
from test_review_revupdown_run import _alive, _script

from tunsec import scriptrun


def _job(tmp_path: Path) -> tuple[tuple[str, ...], Path, Path]:
    """A script leaving a job that holds its output until the gate exists, then writes and exits;
    it writes the job's pid and its own (a line each) to job.pid."""
    gate, pidfile = tmp_path / "gate", tmp_path / "job.pid"
    argv = _script(tmp_path, f"(while [ ! -e {gate} ]; do sleep 0.01; done; echo 'job: done') &\n"
                             f"echo $! > {pidfile}.new; echo $$ >> {pidfile}.new; mv {pidfile}.new {pidfile}\n"
                             "exit 0\n")
    return argv, gate, pidfile


def test_the_pipe_a_job_holds_is_let_go_when_the_job_closes_it(tmp_path: Path) -> None:
    argv, gate, _pidfile = _job(tmp_path)

    async def body() -> tuple[int, int]:
        before = len(scriptrun._lingering)
        outcome = await scriptrun.execute(argv, 30.0, 4096)
        assert outcome.status == 0
        held = len(scriptrun._lingering) - before
        gate.touch()
        for _ in range(3000):   # until the job's end reaches the loop (bounded guard)
            if len(scriptrun._lingering) == before:
                break
            await asyncio.sleep(0.01)
        return held, len(scriptrun._lingering) - before

    try:
        held, left = asyncio.run(body())
    finally:
        gate.touch()
    assert (held, left) == (1, 0)


def test_past_the_bound_a_finished_runs_pipe_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv, gate, _pidfile = _job(tmp_path)
    before = len(scriptrun._lingering)
    monkeypatch.setattr(scriptrun, "MAX_LINGERING", before)   # full already
    try:
        assert asyncio.run(scriptrun.execute(argv, 30.0, 4096)).status == 0
        assert len(scriptrun._lingering) == before
    finally:
        gate.touch()


def test_a_run_cancelled_after_its_script_exited_kills_no_job_it_left(tmp_path: Path) -> None:
    """The drain cancels the runs left at its deadline; one whose script exited already and which
    waits out its EOF grace (a job holds the pipe) must not kill that job (the script's group)."""
    argv, gate, pidfile = _job(tmp_path)

    async def body() -> None:
        task = asyncio.ensure_future(scriptrun.execute(argv, 30.0, 4096))
        for _ in range(3000):   # until the script exited and its exit reached the run (bounded guard)
            if pidfile.exists() and not os.path.exists(f"/proc/{pidfile.read_text().split()[1]}"):
                break
            await asyncio.sleep(0.001)
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(body())
        job = int(pidfile.read_text().split()[0])
        assert _alive(job), "the job the script left was killed with the cancelled run"
        gate.touch()
        _wait_gone(job)
    finally:
        gate.touch()
