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

The signals go to the daemon through pipes made before the fork, not with kill(2): the daemon may
change its user after the fork (``user = tunsec``), and an init without CAP_KILL (Docker's recipe
drops it) may not signal another user's process (review revupdown2 F1: EPERM ended the init, and
the kernel SIGKILLed the daemon with it).  One pipe per forwarded signal; its read end is the
daemon's for O_ASYNC (F_SETOWN), with that signal as the one the kernel sends when data arrives
(F_SETSIG).  The init writes a byte to pass a signal on and reads it back at once (it holds the
read end too): the kernel delivers the signal itself, checked against the credentials of the read
end's owner, not the writer's, and the daemon takes it exactly as a kill (no handler of ours in
the daemon, no thread: the privilege drop needs it single-threaded; uvloop's signal handling sees
an ordinary signal).  The init sets the pipes up right after the fork, the signals still blocked,
so none is lost; after its privilege drop the daemon owns the pipes again (``reown``), so that the
owner's credentials are its new ones (a user namespace's root is not the kernel's root).
The init never returns into ``tunsec up`` (it would be a second daemon in PID 1): whatever
happens, it ends with os._exit.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys

from tunsec import privilege

# what `docker stop`, Kubernetes and a terminal send, passed on to the daemon: the signals it handles.
# Not SIGQUIT, SIGUSR1, SIGUSR2 (review revlate10 R2): the daemon has no handler for them, so passed on
# they ended it without a clean stop (no DELETEs, the kill switch kept), where PID 1 alone (no handler:
# the kernel ignores them) never did.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_relays: list[int] = []   # in the daemon below an init: the pipes' read ends (none: no init above it)


def init_if_pid1() -> None:
    """As PID 1: fork; only the child returns (it is the daemon), the parent reaps until it ends."""
    global _relays
    if os.getpid() != 1:
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)   # none is lost between fork and handlers
    pipes: list[tuple[int, int]] = []
    try:
        pipes += [os.pipe() for _ in FORWARDED]   # close-on-exec: no script or worker inherits them
        child = os.fork()
    except OSError as err:   # run as the daemon alone: zombies, not no VPN
        _close_all(pipes)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        print(f"tunsec: as PID 1, cannot fork an init above the daemon ({err}); "
              "scripts' orphans will not be reaped: run the container with --init", file=sys.stderr)
        return
    if child == 0:
        for _, feed in pipes:
            os.close(feed)
        _relays = [relay for relay, _ in pipes]   # kept for reown
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    code = 1
    try:
        code = _reap(child, _relay_to(child, pipes), old)
    except BaseException as err:   # a bug: said in one line; PID 1 must not go on as a second `tunsec up`
        print(f"tunsec: init: {err!r}", file=sys.stderr)
    finally:
        os._exit(code)


def _close_all(pipes: list[tuple[int, int]]) -> None:
    for relay, feed in pipes:
        os.close(relay)
        os.close(feed)


def _relay_to(daemon: int, pipes: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Each pipe's read end raises its signal in ``daemon`` when written to; signal -> (read, write)."""
    ends = {}
    for sig, (relay, feed) in zip(FORWARDED, pipes, strict=True):
        fcntl.fcntl(relay, fcntl.F_SETSIG, sig)
        fcntl.fcntl(relay, fcntl.F_SETOWN, daemon)
        fcntl.fcntl(relay, fcntl.F_SETFL, os.O_NONBLOCK | os.O_ASYNC)
        os.set_blocking(feed, False)
        ends[int(sig)] = (relay, feed)
    return ends


def _reap(daemon: int, ends: dict[int, tuple[int, int]], mask: set[int | signal.Signals]) -> int:
    """Reap every child until ``daemon`` ends; its exit status (128 + N: ended by signal N)."""
    for sig in FORWARDED:
        signal.signal(sig, lambda num, _frame: _forward(ends[num]))
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


def _forward(ends: tuple[int, int]) -> None:
    """A byte down the signal's pipe (the kernel signals the daemon), then read back: the pipe stays empty."""
    relay, feed = ends
    try:
        os.write(feed, b"\0")
        os.read(relay, 64)
    except OSError as err:   # not expected (the pipe is emptied each time): said, the init goes on reaping
        print(f"tunsec: init: cannot pass a signal on to the daemon: {err}", file=sys.stderr)


def reown() -> None:
    """In the daemon, after it changed its user: the owner of the pipes' read ends with its new
    credentials, which the kernel checks when it sends the signal (see the module docstring)."""
    for relay in _relays:
        fcntl.fcntl(relay, fcntl.F_SETOWN, os.getpid())


def _shed() -> None:
    """No capability (it signals the daemon over the pipe); no-new-privs."""
    try:
        privilege.shed(0, no_new_privs=True)
    except OSError as err:   # it still reaps: the worse outcome is keeping what it had
        print(f"tunsec: init: cannot drop its capabilities: {err}", file=sys.stderr)
