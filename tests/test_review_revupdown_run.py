"""Review revupdown: how one updown run (tunsec.updown.run) treats the script's output and the
processes the script starts.  Real scripts (/bin/sh); nothing waits for a time to pass.

F2: run() keeps everything the script writes (communicate()), though it logs 4,096 bytes of it:
a script that writes megabytes holds as many in the control process, 8 runs at once.
F3: at its timeout run() kills the script's process only: what the script started lives on (its
session is its own: start_new_session), and where tunsec is PID 1 (the image's ENTRYPOINT) every
such orphan becomes a zombie of the control process, never reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from tunsec.policy.selector import Ts
from tunsec.updown import ChildEvent, environments, parse_command, run

MIB = 1 << 20


def _event() -> ChildEvent:
    return ChildEvent(True, "net", "tunsec0", 7, 3, "192.0.2.1", "192.0.2.2", 4500, "moon.example", "sun.example",
                      (Ts.parse("10.1.0.0/24"),), (Ts.parse("10.2.0.0/16"),))


def _script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "updown.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return parse_command(str(path))


def test_a_script_writing_megabytes_is_not_kept_whole_in_the_control_process(tmp_path: Path) -> None:
    """The script writes 64 MiB (a verbose tool, `set -x` in a loop) and exits 0.  Only 4,096
    bytes reach the log; what the control process held for it must stay small.  On main the
    Python heap peaked above 64 MiB for this one run (communicate() reads to the end)."""
    argv = _script(tmp_path, "head -c 67108864 /dev/zero | tr '\\0' x\n")
    (env,) = environments(_event())
    tracemalloc.start()
    try:
        assert asyncio.run(run(argv, env))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"{peak / MIB:.0f} MiB held for one script's output"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is dead too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_script_killed_at_its_timeout_leaves_nothing_it_started_running(tmp_path: Path) -> None:
    """The script starts a child (a hung `curl`, `ping`: here `sleep`) and hangs itself; at the
    timeout it is killed.  Its child must go with it (it is in the script's own process group,
    start_new_session).  On main it lives on as an orphan of the service user, once per run."""
    pidfile = tmp_path / "child.pid"
    argv = _script(tmp_path, f"sleep 300 >/dev/null 2>&1 &\necho $! > {pidfile}\nexec sleep 300\n")
    (env,) = environments(_event())
    assert not asyncio.run(run(argv, env, timeout=0.5))
    child = int(pidfile.read_text())
    try:
        assert not _alive(child), "the script's child outlived the script killed at its timeout"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


# Run as PID 1 of a new PID namespace, as `tunsec up` is in the image (ENTRYPOINT, no init), through
# the entry point (cli.main(["up", ...])): the daemon's start is replaced by the runs, where cmd_up
# hardens the process, after what it does first (pid1.init_if_pid1: an init above the daemon).  The
# script exits at once, leaving a short background job; prints the zombies of PID 1 after.
_PID1 = textwrap.dedent("""
    import asyncio, os, sys
    import tunsec.cli
    from tunsec.updown import environments, parse_command, run
    from tunsec.updown import ChildEvent
    from tunsec.policy.selector import Ts
    ev = ChildEvent(True, "net", "tunsec0", 7, 3, "192.0.2.1", "192.0.2.2", 4500, "moon", "sun",
                    (Ts.parse("10.1.0.0/24"),), (Ts.parse("10.2.0.0/16"),))
    assert os.getpid() == 1
    async def main():
        for _ in range(5):   # five connects of a client
            assert await run(parse_command(sys.argv[1]), environments(ev)[0])
        done = sys.argv[2]
        for _ in range(2000):   # until the five background jobs ended (bounded: a broken build fails)
            if len(os.listdir(done)) == 5:
                break
            await asyncio.sleep(0.01)
        for _ in range(500):   # until PID 1 reaped them (bounded: on main they stay, 5 s)
            if (zombies := count()) == 0:
                break
            await asyncio.sleep(0.01)
        print(zombies, flush=True)
    def daemon():
        asyncio.run(main())
        raise SystemExit(0)   # the daemon's start is not what this test is about
    def count():
        zombies = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                zombies += fields[0] == "Z" and fields[1] == "1"
        return zombies
    tunsec.cli._harden = daemon
    sys.exit(tunsec.cli.main(["up", "-c", "/nonexistent/tunsec.conf"]))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_control_process_that_is_pid_1_reaps_what_its_scripts_left(tmp_path: Path) -> None:
    """The docker image runs `tunsec up` as PID 1.  A script that leaves a background job (a
    `logger`, `conntrack -D ... &`, a child that outlived a timeout) hands it to PID 1 when it
    exits; when the job ends it must be reaped.  On main each is a zombie for good: a client that
    connects in a loop fills the container's PID space (pids-limit, then pid_max)."""
    done = tmp_path / "done"
    done.mkdir()
    script = tmp_path / "updown.sh"
    script.write_text(f'#!/bin/sh\n(sleep 0.05; touch {done}/$$) >/dev/null 2>&1 &\nexit 0\n')
    script.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _PID1,
                          str(script), str(done)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(os.listdir(done)) == 5
    assert int(out.stdout.strip()) == 0, f"{out.stdout.strip()} zombies of PID 1 after five runs"


def test_a_script_that_exits_leaving_a_job_with_its_output_open_has_finished(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The script starts a job in the background without redirecting it (`dnsmasq ... &`, `ip
    monitor ... &`, `(sleep 5; flush) &`) and exits 0.  run() must say it succeeded, not hold its
    IKE SA's turn, a slot and the peer's share until the timeout.  On main it waits for the end of
    the output (the job keeps the pipe open) and kills nothing: `killed after ... without finishing`,
    a failure, each connect of each client."""
    pidfile = tmp_path / "job.pid"
    argv = _script(tmp_path, f"sleep 300 &\necho $! > {pidfile}\nexit 0\n")
    (env,) = environments(_event())
    try:
        with caplog.at_level("ERROR", "tunsec.updown"):
            ok = asyncio.run(run(argv, env, timeout=3.0))
        assert "without finishing" not in caplog.text
        assert ok
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        # main leaves the run's transport open: collected here, not inside pytest's report (a
        # finalizer run in the middle of its AST parsing made CPython 3.11 raise SystemError)
        gc.collect()
