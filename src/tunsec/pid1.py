"""`tunsec up` as PID 1 (the image's ENTRYPOINT, a container run without ``--init``): an init above it.

PID 1 inherits every orphan of its namespace: the background job an updown script left, a child
of a script killed at its timeout.  asyncio's child watcher waits for the pids it started only
(a pidfd or ``waitpid(pid)`` each), so the control process would leave each of those a zombie for
good (review revupdown F2), and a ``waitpid(-1)`` of its own would race the watcher for the
exit status of the worker and of the scripts.  So, finding itself PID 1 before it reads anything,
`tunsec up` forks: the child goes on as the daemon (PID 2), the parent stays a minimal init, as
tini or ``docker run --init`` would be: it reaps every process that ends, passes the signals a
container gets (stop, reload) to the daemon and exits with the daemon's status.  It holds no
configuration, no key, no socket and no capability.

The signals go to the daemon over a pipe made before the fork, not with kill(2): the daemon may
change its user after the fork (``user = tunsec``), and an init without CAP_KILL (Docker's recipe
drops it) may not signal another user's process (review revupdown2 F1: EPERM ended the init, and
the kernel SIGKILLed the daemon with it).  A thread of the daemon reads each signal's number and
sends the signal to its own process, where the daemon's handlers take it as they would a kill.
The init never returns into ``tunsec up`` (it would be a second daemon in PID 1): whatever
happens, it ends with os._exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from tunsec import privilege

# what `docker stop`/`kill`, Kubernetes and a terminal send, passed on to the daemon
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def init_if_pid1() -> None:
    """As PID 1: fork; only the child returns (it is the daemon), the parent reaps until it ends."""
    if os.getpid() != 1:
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)   # none is lost between fork and handlers
    try:
        relay, feed = os.pipe()   # close-on-exec: no script or worker inherits either end
        child = os.fork()
    except OSError as err:   # run as the daemon alone: zombies, not no VPN
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        print(f"tunsec: as PID 1, cannot fork an init above the daemon ({err}); "
              "scripts' orphans will not be reaped: run the container with --init", file=sys.stderr)
        return
    if child == 0:
        os.close(feed)
        _receive(relay)   # its thread inherits the blocked mask: the signals reach the daemon's other threads
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    os.close(relay)
    code = 1
    try:
        code = _reap(child, feed, old)
    except BaseException as err:   # a bug: said in one line; PID 1 must not go on as a second `tunsec up`
        print(f"tunsec: init: {err!r}", file=sys.stderr)
    finally:
        os._exit(code)


def _reap(daemon: int, feed: int, mask: set[int | signal.Signals]) -> int:
    """Reap every child until ``daemon`` ends; its exit status (128 + N: ended by signal N)."""
    os.set_blocking(feed, False)   # a daemon that stopped reading costs a line, never a hung init
    for sig in FORWARDED:
        signal.signal(sig, lambda num, _frame: _forward(feed, num))
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


def _forward(feed: int, num: int) -> None:
    """The signal's number down the pipe to the daemon (see the module docstring)."""
    try:
        os.write(feed, bytes([num]))
    except BrokenPipeError:   # the daemon ended (its reader with it): its status is read next
        pass
    except OSError as err:   # full (a daemon not reading): said, the init goes on reaping
        print(f"tunsec: init: cannot pass signal {num} to the daemon: {err}", file=sys.stderr)


def _receive(relay: int) -> None:
    """In the daemon: a thread sends itself each signal the init passes on (process-directed, as a kill)."""
    def run() -> None:
        with contextlib.suppress(OSError):   # the pipe's end closed under it: nothing more can come
            while data := os.read(relay, 64):   # b"": the init is gone
                for num in data:
                    os.kill(os.getpid(), num)
    threading.Thread(target=run, name="pid1-signals", daemon=True).start()


def _shed() -> None:
    """No capability (it signals the daemon over the pipe); no-new-privs."""
    try:
        privilege.shed(0, no_new_privs=True)
    except OSError as err:   # it still reaps: the worse outcome is keeping what it had
        print(f"tunsec: init: cannot drop its capabilities: {err}", file=sys.stderr)
