"""Review revpipe F2: a worker taken over outlives the control process that owns it.

privileges.md: the spawner and the worker "end with" the control process: "its death stops them too,
by the parent-death signal".  The spawner's is SIGKILL (spawner.main), the worker's SIGTERM
(worker._die_with_parent), which a taken-over worker handles or ignores as it likes; and its seccomp
filter allows every prctl but PR_SET_DUMPABLE, so it may also clear the parent-death signal
(PR_SET_PDEATHSIG 0).  When the control process dies without its clean stop (kill -9, a crash, the
OOM killer: review revpipe F1 shows the worker itself can grow the control process's memory), the
spawner dies by its SIGKILL and the worker is left running, re-parented, with the TUN queue(s), the
port-4500 ESP sockets and every Child SA's keys, and no control process to stop, restart or watch
it.  Outside a cgroup kill (bare `tunsec up`, a supervisor that signals the main process only; the
worker has a session of its own, so no process-group kill reaches it either) it stays for good; a
restarted tunsec with several queues (SO_REUSEPORT sockets, a multi-queue TUN) then shares its
TUN's flows and port 4500 with it.

The proof runs the real chain: a stand-in for the control process (root) starts the real spawner
(Spawner.start: it becomes tunsec-dp) and through it the real worker (WorkerClient.start), whose
packet thread plays the attacker once the sandbox is on (the target wrapped, as test_sandbox.py
does): it clears its parent-death signal and no longer stops when told (its stop blocks, as code
that does not return).  The test then kills the stand-in with SIGKILL, as a kill -9 of tunsec
would, and waits for the worker to end.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from reachable import python_argv

from tunsec.conf.tunsec_section import DATAPLANE_USER
from tunsec.dataplane import spawner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes user")

SRC = str(Path(spawner.__file__).resolve().parents[2])

# the worker: tunsec.dataplane.worker.main, its first packet thread's target wrapped to play the
# attacker first (after the privilege drop and the sandbox: what a packet that took it over can do)
WORKER = """import ctypes, json, os, sys, threading
sys.path.insert(0, sys.argv.pop(1))
probe = int(sys.argv.pop(1))
from tunsec.dataplane import fastpath, worker

def attack():
    libc = ctypes.CDLL(None, use_errno=True)
    cleared = libc.prctl(1, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    found = {"pid": os.getpid(), "clear_pdeathsig": "done" if cleared == 0 else os.strerror(ctypes.get_errno())}
    os.write(probe, json.dumps(found).encode() + b"\\n")
    os.close(probe)

real_run = fastpath.Dataplane.run
def run(self, queue=0):
    if queue == 0:
        attack()
    return real_run(self, queue)
fastpath.Dataplane.run = run
fastpath.Dataplane.stop = lambda self: threading.Event().wait()   # told to stop, it does not
sys.exit(worker.main())
"""

# the spawner: spawner.main as the daemon starts it, its workers started with WORKER
SPAWNER = """import sys
sys.path.insert(0, sys.argv.pop(1))
worker_code, probe = sys.argv.pop(1), sys.argv.pop(1)
from tunsec.dataplane import client, spawner
client.worker_command = lambda: [sys.executable, "-I", "-c", worker_code, sys.path[0], probe]
sys.exit(spawner.main())
"""

# the control process's stand-in (root): the real Spawner.start and WorkerClient.start, as
# Daemon._start_spawner and _start_worker call them; prints the pids and the attacker's probe, then waits
CONTROL = """import asyncio, json, os, sys
src, spawner_code, worker_code, user = sys.argv[1:5]
sys.path.insert(0, src)
from tunsec.dataplane import spawner
from tunsec.dataplane.client import WorkerClient, WorkerFds, worker_args

async def main():
    r, w = os.pipe()   # the attacker's probe: a descriptor every worker inherits (the spawner's keep)
    spawner.spawner_command = lambda: [sys.executable, "-I", "-c", spawner_code, src, worker_code, str(w)]
    fds = WorkerFds(-1)
    args = worker_args(fds, 1400, 30, "info", "text")
    sp = await spawner.Spawner.start(user, [w], args, "info", "text")
    wc = WorkerClient(lambda msg: None)
    await wc.start(fds, 1400, 30, "info", spawner=sp)
    os.close(w)
    line = b""
    while not line.endswith(b"\\n"):
        chunk = await asyncio.to_thread(os.read, r, 4096)
        if not chunk:
            break
        line += chunk
    print("READY " + json.dumps({"spawner": sp.proc.pid, "worker": wc.pid, "probe": json.loads(line or b"{}")}),
          flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """pid runs (a zombie, dead and not reaped yet by whoever inherited it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _ready(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + 60
    while b"READY " not in out and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("READY ")]
    assert lines, out.decode(errors="replace")
    return dict(json.loads(lines[0][len("READY "):]))


def test_a_worker_taken_over_ends_with_the_control_process_that_was_killed() -> None:
    """Fails on main: the stand-in (the control process) and the spawner are dead, the worker still
    runs 20 s later (re-parented, holding what the daemon handed it)."""
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([*python_argv(), "-c", CONTROL, SRC, SPAWNER, WORKER, DATAPLANE_USER],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/")
    worker = spawned = 0
    try:
        ready = _ready(proc)
        worker, spawned = int(str(ready["worker"])), int(str(ready["spawner"]))
        probe = ready["probe"]
        assert isinstance(probe, dict) and probe.get("pid") == worker, ready   # the attacker ran in that worker
        proc.send_signal(signal.SIGKILL)   # kill -9 of the control process: no clean stop
        proc.wait(timeout=30)
        assert _gone_within(spawned, 30), "the spawner outlived the control process"   # its SIGKILL
        assert _gone_within(worker, 20), (
            f"worker {worker} still runs after its control process and spawner died (it cleared its "
            f"parent-death signal: {probe.get('clear_pdeathsig')}; the signal was SIGTERM anyway)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in (worker, spawned):   # what this test started, by pid
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
