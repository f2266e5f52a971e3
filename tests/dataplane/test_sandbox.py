"""The worker's sandbox (tunsec.dataplane.sandbox): once set up, a worker taken over through its
packet parsing reads no file but Python's own, connects nowhere over TCP, executes nothing and
signals nobody but itself, not even its spawner of the same uid; it types nothing into the
operator's terminal, forks nothing that outlives it, and changes nothing on the descriptors it
shares with its spawner and the next worker.

The worker here is the real one (tunsec.dataplane.worker.main, with its privilege drop and
sandbox), started as the spawner starts it: by a process already running as tunsec-dp, which
plays the spawner (the same uid, unconfined).  The probe runs where an attacker would: in the
worker's packet thread, started after the sandbox (the thread's target is wrapped to probe
first, then run the real loop).  The stand-in runs in a pseudo-terminal, as `tunsec up` in root's
shell.  Each test starts one worker (~1 s)."""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
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
WORKER = """import ctypes, fcntl, json, os, resource, signal, socket, struct, sys
sys.path.insert(0, sys.argv.pop(1))
probe_fd, secret, tcp_port, tty = int(sys.argv.pop(1)), sys.argv.pop(1), int(sys.argv.pop(1)), int(sys.argv.pop(1))
from tunsec.dataplane import fastpath, worker

def attempt(what):
    try:
        what()
    except OSError as err:
        return type(err).__name__
    return "done"

def fd_of(option):
    return int(sys.argv[sys.argv.index(option) + 1])

def probe():
    ppid = os.getppid()
    def lazy_import():
        import colorsys   # not imported by the worker: read from the standard library now
    def unshare():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) != 0:   # CLONE_NEWUSER (os.unshare is 3.12's)
            raise OSError(ctypes.get_errno(), "unshare")
    def execve():   # a path that does not exist: ENOENT unless refused before it is looked up
        os.execv("/nonexistent/tunsec-probe", ["probe"])
    def fork():   # a child would outlive the worker with its TUN and sockets
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    def connect():
        socket.create_connection(("127.0.0.1", tcp_port), timeout=5).close()
    def tiocsti():   # type a command into the operator's terminal
        for b in b"echo INJECTED-BY-WORKER\\n":
            fcntl.ioctl(tty, 0x5412, bytes([b]))
    def lock_filter():   # drop every datagram, for good, on the socket the next worker gets
        udp = socket.socket(fileno=os.dup(fd_of("--udp4-fd")))
        prog = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))   # BPF_RET|BPF_K 0
        try:
            udp.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", 1, ctypes.addressof(prog)))
            udp.setsockopt(socket.SOL_SOCKET, 44, 1)   # SO_LOCK_FILTER
        finally:
            udp.close()
    def fd_calls(call):
        return lambda: call(fd_of("--tun-fd"))
    found = {
        "read_secret": attempt(lambda: open(secret).close()),
        "read_passwd": attempt(lambda: open("/etc/passwd").close()),
        "read_proc_1": attempt(lambda: open("/proc/1/status").close()),
        "kill_spawner": attempt(lambda: os.kill(ppid, signal.SIGTERM)),
        "signal_self": attempt(lambda: os.kill(os.getpid(), 0)),
        "execve": attempt(execve),
        "fork": attempt(fork),
        "tcp_connect": attempt(connect),
        "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
        "udp_socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
        "unshare": attempt(unshare),
        "lazy_import": attempt(lazy_import),
        "stdin_is_tty": os.isatty(0),
        "own_session": os.getsid(0) == os.getpid(),
        "tiocsti": attempt(tiocsti),
        "lock_filter": attempt(lock_filter),
        "tun_setfl": attempt(fd_calls(lambda fd: fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL)))),
        "tun_setqueue": attempt(fd_calls(lambda fd: fcntl.ioctl(fd, 0x400454d9, struct.pack("i", 0)))),
        "prlimit_spawner": attempt(lambda: resource.prlimit(ppid, resource.RLIMIT_CORE, (0, 0))),
        "prlimit_self": attempt(lambda: resource.prlimit(os.getpid(), resource.RLIMIT_CORE)),
        "setpriority_spawner": attempt(lambda: os.setpriority(os.PRIO_PROCESS, ppid,
                                                              os.getpriority(os.PRIO_PROCESS, ppid))),
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

# the spawner's stand-in, as tunsec-dp, in a terminal (as `tunsec up` in root's shell): starts the
# worker as the spawner does (spawner.start_worker) with a pipe, a TUN stand-in (a datagram socket),
# a UDP socket, the terminal and the probe's fd; reads the probe and the worker's seccomp mode,
# closes the pipe, then checks what the worker left behind: input on the terminal, a UDP socket
# the next worker could not use
SPAWNER = """import json, os, select, signal, socket, subprocess, sys
signalled = []
signal.signal(signal.SIGTERM, lambda *_: signalled.append(1))
src, secret, worker_code, extra, sandboxed = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
sys.path.insert(0, src)
from tunsec.dataplane.spawner import start_worker
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
tun, tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
listener = socket.create_server(("127.0.0.1", 0))
tty = os.open("/dev/tty", os.O_RDWR)
r, w = os.pipe()
fds = {"TUN": tun.fileno(), "UDP": udp.fileno()}
argv = [sys.executable, "-I", "-c", worker_code, src, str(w), secret, str(listener.getsockname()[1]), str(tty),
        "--pipe-fd", str(theirs.fileno()), *[str(fds.get(a, a)) for a in extra]]
proc = start_worker(argv, [theirs.fileno(), tun.fileno(), udp.fileno(), w, tty], stderr=subprocess.PIPE)
theirs.close()
os.close(w)
found = json.loads(os.read(r, 65536) or b"{}")
signal.pthread_sigmask(signal.SIG_BLOCK, [])   # a signal sent before the probe answered is handled by now
status = {k: v.strip() for k, v in (ln.split(":", 1) for ln in open(f"/proc/{proc.pid}/status") if ":" in ln)}
ours.close()   # the pipe's end: the worker stops
_, err = proc.communicate(timeout=30)
typed = os.read(0, 200).decode() if select.select([0], [], [], 0)[0] else ""
received = None
if sandboxed == "yes":   # else the filter is locked on it: the datagram would never come
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"ESP", udp.getsockname())
    udp.settimeout(30)
    try:
        received = udp.recv(100).decode()
    except OSError as e:
        received = type(e).__name__
try:
    udp.setsockopt(socket.SOL_SOCKET, 27, 0)   # SO_DETACH_FILTER
    detach = "done"
except OSError as e:
    detach = type(e).__name__
print("RESULT " + json.dumps({"probe": found, "seccomp": status.get("Seccomp"), "code": proc.returncode,
                              "log": err.decode(), "spawner_signalled": bool(signalled), "typed": typed,
                              "udp_received": received, "detach_filter": detach,
                              "parent_reads_secret": open(secret).read()}), flush=True)
"""


def _in_terminal(argv: list[str]) -> tuple[int, str]:
    """argv run in a pseudo-terminal of its own (its controlling tty); its exit status, its output."""
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.chdir("/")
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    out = b""
    try:
        while select.select([master], [], [], 90)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the terminal's last user is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def run_worker(sandboxed: bool) -> dict[str, Any]:
    pw = pwd.getpwnam(DATAPLANE_USER)
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all", "--"]
    with scratch_dir("tunsec-sandbox-") as d:
        secret = d / "swanctl.conf"   # readable by the worker's user: only the sandbox keeps it out
        secret.write_text("secret-of-the-control-process\n")
        secret.chmod(0o644)
        args = worker_args(WorkerFds(-1), 1400, 30, "info", "text", sandbox=sandboxed)
        args[args.index("--tun-fd") + 1] = "TUN"
        args[args.index("--udp4-fd") + 1] = "UDP"
        code, text = _in_terminal([*python_argv(setpriv), "-I", "-c", SPAWNER, SRC, str(secret), WORKER,
                                   json.dumps(args), "yes" if sandboxed else "no"])
    results = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert code == 0 and results, text
    out: dict[str, Any] = json.loads(results[-1][len("RESULT "):])
    assert out["parent_reads_secret"] == "secret-of-the-control-process\n"   # the uid may; so only the sandbox
    assert out["code"] == 0, out["log"]   # it ran its loop and stopped cleanly when the pipe closed
    return out


def test_the_worker_once_set_up_reads_connects_executes_and_signals_nothing_outside() -> None:
    out = run_worker(sandboxed=True)
    probe = out["probe"]
    abi = sandbox.landlock_abi()
    if abi:   # files are Landlock's alone: a kernel without it (not enabled at boot, a container refusing it) reads
        assert probe["read_secret"] == "PermissionError", out
        assert probe["read_passwd"] == "PermissionError"
        assert probe["read_proc_1"] == "PermissionError"
    else:     # ... and the worker says what it lacks
        assert "worker sandbox: seccomp; missing: landlock (" in out["log"], out["log"]
    assert probe["kill_spawner"] == "PermissionError" and not out["spawner_signalled"]   # same uid, yet refused
    assert probe["signal_self"] == "done"
    assert probe["execve"] == "PermissionError"
    assert probe["netlink"] == "PermissionError"
    assert probe["udp_socket"] == "PermissionError"   # it makes no socket once set up
    assert probe["unshare"] == "PermissionError"
    assert probe["lazy_import"] == "done"
    assert out["seccomp"] == "2"   # SECCOMP_MODE_FILTER
    if abi >= 4:
        assert probe["tcp_connect"] == "PermissionError"
    if abi:
        assert f"worker sandbox: landlock ABI {abi}" in out["log"], out["log"]
    assert "seccomp" in out["log"] and "Traceback" not in out["log"]


def test_the_worker_types_nothing_into_the_terminal_and_leaves_nothing_behind() -> None:
    out = run_worker(sandboxed=True)
    probe = out["probe"]
    assert not probe["stdin_is_tty"] and probe["own_session"]
    assert probe["tiocsti"] == "PermissionError" and out["typed"] == "", out
    assert probe["fork"] == "PermissionError"
    assert probe["lock_filter"] == "PermissionError"
    assert out["udp_received"] == "ESP" and out["detach_filter"] == "FileNotFoundError"   # no filter on it
    assert probe["tun_setfl"] == "PermissionError" and probe["tun_setqueue"] == "PermissionError"
    assert probe["prlimit_spawner"] == "PermissionError" and probe["prlimit_self"] == "done"
    assert probe["setpriority_spawner"] == "PermissionError"


def test_worker_sandbox_no_leaves_it_unconfined_and_says_so() -> None:
    out = run_worker(sandboxed=False)
    probe = out["probe"]
    assert probe["read_secret"] == "done" and probe["execve"] == "FileNotFoundError" and probe["fork"] == "done"
    assert probe["kill_spawner"] == "done" and out["spawner_signalled"]
    assert probe["udp_socket"] == "done" and probe["prlimit_spawner"] == "done"
    # what the filter would refuse works, and outlives the worker: the locked filter stays on the
    # stand-in's socket; the terminal is out of reach all the same (not the worker's controlling one)
    assert probe["lock_filter"] == "done" and out["detach_filter"] == "PermissionError"
    assert probe["tiocsti"] == "PermissionError" and out["typed"] == ""
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
