"""Review revupdown2 F1: the PID-1 init of `tunsec up` (tunsec.pid1) fails at the first stop when it
has no CAP_KILL and the daemon changed its user, and its failure ends the daemon with SIGKILL.

docker/compose.yaml's and docs/containers.md's recipe for Docker: run the image as root (`user:
"0"`), `cap_drop: [ALL]` and `cap_add: [NET_ADMIN, NET_BIND_SERVICE, SETUID, SETGID]` (no KILL),
`user = tunsec` in tunsec { }: the daemon (PID 2) becomes uid 990, the init (PID 1) stays uid 0
without any capability.  `docker stop` sends SIGTERM to PID 1; the init's handler
(pid1._forward) calls os.kill(daemon, SIGTERM), which the kernel refuses (EPERM: neither uid
matches, no CAP_KILL).  _forward suppresses ProcessLookupError only: the PermissionError leaves
the handler, os.waitpid in _reap, init_if_pid1 (its os._exit is never reached), cmd_up and
cli.main: PID 1 ends with a traceback and status 1, and its end makes the kernel SIGKILL the
daemon: no DELETE to any peer, no down-client (h/fixupdown's drain never runs), no accounting
Stop, and the exit status is the init's, not the daemon's.  (Had cmd_up caught it, the init would
go on as a second `tunsec up` in PID 1: the stand-in says so if it is started there.)

Real processes: PID 1 of a PID namespace of its own (unshare, as tests/test_pid1.py), entered
through cli.main(["up", ...]); the daemon's start (cmd_up's _harden) is replaced by a stand-in
that drops its user as privilege.drop does and exits 0 at SIGTERM.  The test sends SIGTERM to the
namespace's PID 1 from outside, as `docker stop` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

_PROGRAM = textwrap.dedent("""
    import os, signal, sys
    import tunsec.cli
    from tunsec import privilege
    assert os.getpid() == 1
    # the container's capabilities: every one but CAP_KILL (here only KILL is missing, so that
    # nothing else can be what fails)
    every = (1 << 41) - 1
    privilege.shed(every & ~privilege.mask(5))
    assert not privilege.has_cap(5)
    def daemon():
        if os.getpid() == 1:   # the init came back into cmd_up: a second `tunsec up`
            print("second tunsec up in PID 1", flush=True)
            return False
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))   # a clean stop: the daemon's own status
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)   # tunsec { user = ... }, as privilege.drop does
        print("daemon ready", flush=True)
        got = signal.sigtimedwait([signal.SIGTERM], 120)   # a guard: a broken build fails, not hangs
        os._exit(0 if got else 4)
    tunsec.cli._harden = daemon
    sys.exit(tunsec.cli.main(["up", "-c", "/nonexistent/tunsec.conf"]))
""")


def _namespace_init(unshare: int) -> int:
    """The host pid of the PID namespace's PID 1: unshare --fork's only child."""
    for _ in range(2000):   # bounded: a broken build fails
        with open(f"/proc/{unshare}/task/{unshare}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise AssertionError("unshare started no child")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_stop_reaches_a_daemon_that_changed_its_user_under_an_init_without_cap_kill() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _PROGRAM],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "daemon ready"
        os.kill(_namespace_init(proc.pid), signal.SIGTERM)   # docker stop
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "second tunsec up" not in out, (out, err)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, (proc.returncode, out, err)
