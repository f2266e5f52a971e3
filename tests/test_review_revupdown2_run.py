"""Review revupdown2: one updown run (tunsec.scriptrun.execute through tunsec.updown.run) and the
processes a script leaves or starts.  Real scripts (/bin/sh); nothing waits for a time to pass
(gates are files; loops are bounded guards only).

F3: when the script has exited, the run closes its end of the output pipe (transport.close()) after
at most _EOF_GRACE; a background job the script left, still holding the pipe as its stdout, is
killed by SIGPIPE at its next write (subprocess restores SIGPIPE's default action in the child).
h/fixupdown says the job "keeps running" and "gets EPIPE if it writes"; it dies instead.
F4: at the timeout, the run kills the script's process group; a child the script put in a session
of its own (`setsid`, a daemonizing tool: `ssh -f`, `dhclient`, `openvpn --daemon`) is in none of
it and lives on as the service user, one per run that timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from test_review_revupdown_run import _alive, _event, _script

from tunsec.updown import environments, run


def _wait_gone(pid: int) -> None:
    for _ in range(3000):   # bounded guard (30 s): a broken build fails, not hangs
        if not _alive(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still running")


def _session(pid: int) -> int | None:
    """The session id of ``pid`` (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_a_background_job_the_script_left_is_not_killed_when_it_writes_after_the_run(tmp_path: Path) -> None:
    """The script starts a job in the background without redirecting it (`(sleep 5; flush;
    echo flushed) &`, a `dnsmasq` that logs to stdout) and exits 0.  The run ends at the script's
    exit (F5 of review revupdown); the job must go on and do its work, as the change note says.
    On main the job's first write after the run hits the closed pipe: SIGPIPE kills it, and what it
    was to do after that line is never done."""
    gate, done, pidfile = tmp_path / "gate", tmp_path / "done", tmp_path / "job.pid"
    argv = _script(tmp_path, f"(while [ ! -e {gate} ]; do sleep 0.01; done; echo 'job: flushing'; touch {done}) &\n"
                             f"echo $! > {pidfile}\nexit 0\n")
    (env,) = environments(_event())
    try:
        assert asyncio.run(run(argv, env, timeout=30.0))
        gate.touch()   # the job goes on, after the run has ended
        _wait_gone(int(pidfile.read_text()))
        assert done.exists(), "the script's background job was killed (SIGPIPE) when it wrote after the run"
    finally:
        gate.touch()


def test_a_child_in_a_session_of_its_own_goes_with_a_script_killed_at_its_timeout(tmp_path: Path) -> None:
    """The script starts a child in a session of its own and hangs; at the timeout the run kills
    the script's process group.  The child must not outlive it (h/fixupdown: "what it started (a
    hung curl) goes with it").  On main it lives on."""
    pidfile = tmp_path / "child.pid"
    argv = _script(tmp_path, f"setsid sleep 300 &\necho $! > {pidfile}\nwhile :; do sleep 0.01; done\n")
    (env,) = environments(_event())

    async def body() -> bool:
        task = asyncio.ensure_future(run(argv, env, timeout=600.0))
        for _ in range(3000):   # until the child leads its own session (bounded guard)
            if pidfile.exists() and pidfile.read_text().strip() and _session(int(pidfile.read_text())) \
                    == int(pidfile.read_text()):
                break
            await asyncio.sleep(0.01)
        task.cancel()   # as the stop's drain does at its deadline; the timeout takes the same path
        with contextlib.suppress(asyncio.CancelledError):
            return await task
        return False

    try:
        asyncio.run(body())
        child = int(pidfile.read_text())
        assert not _alive(child), "the script's child in a session of its own outlived the kill of its group"
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
