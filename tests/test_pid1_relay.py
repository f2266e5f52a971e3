"""The PID-1 init passes signals on through pipes the kernel turns into the signal itself
(tunsec.pid1: O_ASYNC, F_SETOWN, F_SETSIG; review revupdown2 F1), to a daemon as tunsec's is:
single-threaded at its privilege drop (privilege.drop refuses otherwise), of another user, under
uvloop's signal handling.  Two ways the relay could go wrong that the stand-ins of
tests/test_pid1.py would not see: a thread in the daemon to read the pipe (the drop refuses it),
and a signal the daemon sends itself from a Python signal handler, which uvloop dispatches twice
(a SIGHUP: two reloads; seen in the image before this test).

Real processes: PID 1 of a PID namespace of its own (unshare), entered through cli.main(["up",
...]), the daemon's start replaced by the stand-in below; the test signals PID 1 from outside, as
`docker kill --signal HUP` and `docker stop` do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from test_review_revupdown2_pid1 import _namespace_init

_DAEMON = textwrap.dedent("""
    import os, signal, sys
    import uvloop
    import tunsec.cli
    from tunsec import privilege
    privilege.shed(((1 << 41) - 1) & ~privilege.mask(5))   # no CAP_KILL, as in Docker's recipe
    def daemon():
        if os.getpid() == 1:
            print("second tunsec up in PID 1", flush=True)
            return False
        threads = len(os.listdir("/proc/self/task"))   # privilege.drop needs 1
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        async def main():
            import asyncio
            loop = asyncio.get_running_loop()
            stop = loop.create_future()
            loop.add_signal_handler(signal.SIGHUP, lambda: print("hup", flush=True))
            loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
            print(f"ready {threads}", flush=True)
            await asyncio.wait_for(stop, 120)   # a guard: a broken build fails, not hangs
        uvloop.run(main())
        os._exit(0)
    tunsec.cli._harden = daemon
    sys.exit(tunsec.cli.main(["up", "-c", "/nonexistent/tunsec.conf"]))
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_signal_passed_on_reaches_a_single_threaded_uvloop_daemon_once() -> None:
    pytest.importorskip("uvloop")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _DAEMON],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", "1"], "the daemon was not single-threaded at its drop"
        init = _namespace_init(proc.pid)
        os.kill(init, signal.SIGHUP)   # a reload
        assert proc.stdout.readline().strip() == "hup"
        os.kill(init, signal.SIGTERM)   # a stop
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.split() == [], f"after one SIGHUP and the stop: {out!r} (stderr {err!r})"
    assert "Traceback" not in err, err
    assert proc.returncode == 0, (proc.returncode, out, err)
