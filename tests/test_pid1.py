"""`tunsec up` as PID 1 (the image's ENTRYPOINT without --init) keeps an init above the daemon
(tunsec.pid1, review revupdown F2): the daemon gets the signals a container is sent, and the
container's exit status is the daemon's.  (That the init reaps the scripts' orphans:
tests/test_review_revupdown_run.py::test_a_control_process_that_is_pid_1_reaps_what_its_scripts_left.)

Run as PID 1 of a PID namespace of its own (unshare), through the entry point (cli.main up): where
cmd_up hardens the process, the test's daemon takes over."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

# the daemon (PID 2) sends SIGTERM to PID 1, as `docker stop` does from outside, and waits for it
_STOPPED = textwrap.dedent("""
    import os, signal, sys
    import tunsec.cli
    assert os.getpid() == 1
    def daemon():
        assert os.getpid() != 1 and os.getppid() == 1
        signal.signal(signal.SIGTERM, lambda *_: os._exit(3))
        signal.signal(signal.SIGHUP, lambda *_: print("reload", flush=True))
        os.kill(1, signal.SIGHUP)
        os.kill(1, signal.SIGTERM)
        while True:
            signal.pause()
    tunsec.cli._harden = daemon
    sys.exit(tunsec.cli.main(["up", "-c", "/nonexistent/tunsec.conf"]))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_the_init_of_a_pid_1_tunsec_passes_on_signals_and_the_daemons_exit_status() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _STOPPED],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    assert out.stdout.split() == ["reload"], out.stdout


# the daemon, handling only what tunsec's does (TERM, INT, HUP), is sent SIGUSR1, SIGUSR2 and SIGQUIT through
# PID 1 before its stop: they must not end it (review revlate10 R2: passed on, they killed it uncleanly)
_UNHANDLED = _STOPPED.replace('    os.kill(1, signal.SIGHUP)\n',
                              '    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):\n'
                              '        os.kill(1, sig)\n'
                              '    import time; time.sleep(0.3)\n'
                              '    os.kill(1, signal.SIGHUP)\n')


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_signals_the_daemon_does_not_handle_do_not_end_it() -> None:
    assert _UNHANDLED != _STOPPED
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _UNHANDLED],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, (out.returncode, out.stderr)   # its own clean stop, not 128 + SIGUSR1
    assert out.stdout.split() == ["reload"], out.stdout
