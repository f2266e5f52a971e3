"""The worker's sandbox (tunsec.dataplane.sandbox): once set up, a worker taken over through its
packet parsing reads no file but Python's own, connects nowhere over TCP, executes nothing and
signals nobody but itself, not even its spawner of the same uid.

The worker here is the real one (tunsec.dataplane.worker.main, with its privilege drop and
sandbox), started as the spawner starts it: by a process already running as tunsec-dp, which
plays the spawner (the same uid, unconfined).  The probe runs where an attacker would: in the
worker's packet thread, started after the sandbox (the thread's target is wrapped to probe
first, then run the real loop).  Each test starts one worker (~1 s)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest
from reachable import python_argv, scratch_dir

from tunsec.conf.tunsec_section import DATAPLANE_USER
from tunsec.dataplane import sandbox
from tunsec.dataplane.client import WorkerFds, worker_args

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes user")

SRC = str(Path(sandbox.__file__).resolve().parents[2])

# the worker, its packet thread's target wrapped: the probe's findings go to fd PROBE_FD as JSON
WORKER = """import ctypes, json, os, signal, socket, sys
sys.path.insert(0, sys.argv.pop(1))
probe_fd, secret, tcp_port = int(sys.argv.pop(1)), sys.argv.pop(1), int(sys.argv.pop(1))
from tunsec.dataplane import fastpath, worker

def attempt(what):
    try:
        what()
    except OSError as err:
        return type(err).__name__
    return "done"

def probe():
    def lazy_import():
        import colorsys   # not imported by the worker: read from the standard library now
    def unshare():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) != 0:   # CLONE_NEWUSER (os.unshare is 3.12's)
            raise OSError(ctypes.get_errno(), "unshare")
    def execve():   # in a child: run, /bin/false would replace the worker itself
        pid = os.fork()
        if pid == 0:
            try:
                os.execv("/bin/false", ["false"])
            finally:
                os._exit(77)
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 77:
            raise PermissionError("execve")
    def connect():
        socket.create_connection(("127.0.0.1", tcp_port), timeout=5).close()
    found = {
        "read_secret": attempt(lambda: open(secret).close()),
        "read_passwd": attempt(lambda: open("/etc/passwd").close()),
        "read_proc_1": attempt(lambda: open("/proc/1/status").close()),
        "kill_spawner": attempt(lambda: os.kill(os.getppid(), signal.SIGTERM)),
        "signal_self": attempt(lambda: os.kill(os.getpid(), 0)),
        "execve": attempt(execve),
        "tcp_connect": attempt(connect),
        "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
        "unshare": attempt(unshare),
        "lazy_import": attempt(lazy_import),
    }
    os.write(probe_fd, json.dumps(found).encode())
    os.close(probe_fd)

real_run = fastpath.Dataplane.run
def run(self, queue=0):
    if queue == 0:
        probe()
    return real_run(self, queue)
fastpath.Dataplane.run = run
sys.exit(worker.main())
"""

# the spawner's stand-in, as tunsec-dp: starts the worker with a pipe, a TUN stand-in (a datagram
# socket) and the probe's fd, reads the probe and the worker's seccomp mode, then closes the pipe
SPAWNER = """import json, os, signal, socket, subprocess, sys
signalled = []
signal.signal(signal.SIGTERM, lambda *_: signalled.append(1))
src, secret, worker_code, extra = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
tun, tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
listener = socket.create_server(("127.0.0.1", 0))
r, w = os.pipe()
argv = [sys.executable, "-I", "-c", worker_code, src, str(w), secret, str(listener.getsockname()[1]),
        "--pipe-fd", str(theirs.fileno()), *[str(tun.fileno()) if a == "TUN" else a for a in extra]]
proc = subprocess.Popen(argv, pass_fds=[theirs.fileno(), tun.fileno(), w], cwd="/", stderr=subprocess.PIPE, text=True)
theirs.close()
os.close(w)
found = json.loads(os.read(r, 65536) or b"{}")
signal.pthread_sigmask(signal.SIG_BLOCK, [])   # a signal sent before the probe answered is handled by now
status = {k: v.strip() for k, v in (ln.split(":", 1) for ln in open(f"/proc/{proc.pid}/status") if ":" in ln)}
ours.close()   # the pipe's end: the worker stops
_, err = proc.communicate(timeout=30)
print(json.dumps({"probe": found, "seccomp": status.get("Seccomp"), "code": proc.returncode, "log": err,
                  "spawner_signalled": bool(signalled),
                  "parent_reads_secret": open(secret).read()}))
"""


def run_worker(sandboxed: bool) -> dict[str, Any]:
    pw = pwd.getpwnam(DATAPLANE_USER)
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all", "--"]
    with scratch_dir("tunsec-sandbox-") as d:
        secret = d / "swanctl.conf"   # readable by the worker's user: only the sandbox keeps it out
        secret.write_text("secret-of-the-control-process\n")
        secret.chmod(0o644)
        args = worker_args(WorkerFds(-1), 1400, 30, "info", "text", sandbox=sandboxed)
        args[args.index("--tun-fd") + 1] = "TUN"
        r = subprocess.run([*python_argv(setpriv), "-I", "-c", SPAWNER, SRC, str(secret), WORKER, json.dumps(args)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    assert out["parent_reads_secret"] == "secret-of-the-control-process\n"   # the uid may; so only the sandbox
    assert out["code"] == 0, out["log"]   # it ran its loop and stopped cleanly when the pipe closed
    return out


def test_the_worker_once_set_up_reads_connects_executes_and_signals_nothing_outside() -> None:
    out = run_worker(sandboxed=True)
    probe = out["probe"]
    assert probe["read_secret"] == "PermissionError", out
    assert probe["read_passwd"] == "PermissionError"
    assert probe["read_proc_1"] == "PermissionError"
    assert probe["kill_spawner"] == "PermissionError" and not out["spawner_signalled"]   # same uid, yet refused
    assert probe["signal_self"] == "done"
    assert probe["execve"] == "PermissionError"
    assert probe["netlink"] == "PermissionError"
    assert probe["unshare"] == "PermissionError"
    assert probe["lazy_import"] == "done"
    assert out["seccomp"] == "2"   # SECCOMP_MODE_FILTER
    abi = sandbox.landlock_abi()
    if abi >= 4:
        assert probe["tcp_connect"] == "PermissionError"
    if abi:
        assert f"worker sandbox: landlock ABI {abi}" in out["log"], out["log"]
    assert "seccomp" in out["log"] and "Traceback" not in out["log"]


def test_worker_sandbox_no_leaves_it_unconfined_and_says_so() -> None:
    out = run_worker(sandboxed=False)
    probe = out["probe"]
    assert probe["read_secret"] == "done" and probe["execve"] == "done"
    assert probe["kill_spawner"] == "done" and out["spawner_signalled"]
    assert out["seccomp"] == "0"
    assert "worker not sandboxed (tunsec { worker_sandbox = no })" in out["log"]


def test_the_outcome_names_what_is_missing() -> None:
    full = sandbox.Outcome(7, ("landlock ABI 7 (...)", "seccomp"), ())
    assert full.sandboxed and "missing" not in full.line() and full.gauge == 3
    old = sandbox.Outcome(3, ("landlock ABI 3 (files read-only under the Python path)", "seccomp"),
                          ("landlock TCP rules (ABI 4, this kernel has 3)",))
    assert old.line().endswith("; missing: landlock TCP rules (ABI 4, this kernel has 3)") and old.gauge == 3
    no_landlock = sandbox.Outcome(0, ("seccomp",), ("landlock (...)",))
    assert no_landlock.gauge == sandbox.GAUGE_SECCOMP
    none = sandbox.Outcome(0, (), ("landlock (...)", "seccomp (...)"))
    assert not none.sandboxed and none.line().startswith("sandbox: none; missing: ") and none.gauge == 0
