"""`tunsec up` as PID 1 (the image's ENTRYPOINT, a container run without ``--init``): an init above it.

PID 1 inherits every orphan of its namespace: the background job an updown script left, a child
of a script killed at its timeout.  asyncio's child watcher waits for the pids it started only
(a pidfd or ``waitpid(pid)`` each), so the control process would leave each of those a zombie for
good (review revupdown F2), and a ``waitpid(-1)`` of its own would race the watcher for the
exit status of the worker and of the scripts.  So, finding itself PID 1 before it reads anything,
`tunsec up` forks: the child goes on as the daemon (PID 2), the parent stays a minimal init, as
tini or ``docker run --init`` would be: it reaps every process that ends, passes the signals a
container gets (stop, reload) to the daemon and exits with the daemon's status.  It holds no
configuration, no key and no socket, and keeps no capability but CAP_KILL (the daemon may change
its user after this fork).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from tunsec import privilege

# what `docker stop`/`kill`, Kubernetes and a terminal send, passed on to the daemon
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
CAP_KILL = 5   # linux/capability.h


def init_if_pid1() -> None:
    """As PID 1: fork; only the child returns (it is the daemon), the parent reaps until it ends."""
    if os.getpid() != 1:
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)   # none is lost between fork and handlers
    try:
        child = os.fork()
    except OSError as err:   # run as the daemon alone: zombies, not no VPN
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        print(f"tunsec: as PID 1, cannot fork an init above the daemon ({err}); "
              "scripts' orphans will not be reaped: run the container with --init", file=sys.stderr)
        return
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    os._exit(_reap(child, old))


def _reap(daemon: int, mask: set[int | signal.Signals]) -> int:
    """Reap every child until ``daemon`` ends; its exit status (128 + N: ended by signal N)."""
    for sig in FORWARDED:
        signal.signal(sig, lambda num, _frame: _forward(daemon, num))
    _shed()
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)   # a handler runs in between (PEP 475 retries the wait)
        except ChildProcessError:   # cannot be while the daemon lives: a bug, say so and stop
            print("tunsec: init: the daemon is gone without its exit status", file=sys.stderr)
            return 1
        if pid == daemon:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _forward(daemon: int, num: int) -> None:
    with contextlib.suppress(ProcessLookupError):   # it ended: its status is read next
        os.kill(daemon, num)


def _shed() -> None:
    """No capability but CAP_KILL (to signal the daemon whatever user it becomes); no-new-privs."""
    try:
        privilege.shed(privilege.mask(CAP_KILL), no_new_privs=True)
    except OSError as err:   # it still reaps: the worse outcome is keeping what it had
        print(f"tunsec: init: cannot drop its capabilities: {err}", file=sys.stderr)
