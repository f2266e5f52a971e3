"""One run of a program the control process starts for a peer's event (an updown script).

What asyncio's ``Process.communicate()`` does not give (review revupdown F3-F5):

- the run ends when the script exits, not when its output ends: a job it left in the background
  (``dnsmasq ... &``) may hold the pipe for good; what the script wrote before it exited is read
  (the pipe's end, or ``_EOF_GRACE`` while a job keeps it open); the pipe of a job still holding
  it is read and dropped until its end in the background (at most ``MAX_LINGERING`` such pipes),
  so that the job's writes do not end it with SIGPIPE (review revupdown2 F3; the script runs with
  the default signal actions, as strongSwan's updown does, so not SIGPIPE ignored);
- only the first ``limit`` bytes of the output are kept (they are what is logged); the rest is
  read and dropped, so a script writing megabytes costs the control process no memory;
- at the timeout, and when the run is cancelled (tunsec stopping past its deadline), the
  script's process group is killed (the script leads it: ``start_new_session``), so what it
  started (a hung ``curl``) goes with it, and so are its descendants in sessions of their own
  (``setsid``: tunsec.descendants, review revupdown2 F4).  A script that exited is not killed
  (the drain cancelling a run in its ``_EOF_GRACE``): the jobs it left are meant to stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunsec.descendants import descendants

# after the script's exit, how long a job it left holding its output may delay the end of the run;
# what the script itself wrote is in the pipe already and is read in the loop's next round
_EOF_GRACE = 0.2
# a process group killed with SIGKILL: how long its processes may take to go (a bound: one stuck in
# an uninterruptible sleep, on a dead NFS server, goes when the kernel lets it)
_EXIT_WAIT = 5.0
_GONE_POLL = 0.01   # seconds between two looks at a killed group (it has no descriptor to wait on)
# pipes of finished runs still held by a job the script left, read to their end: a bound (scripts
# that each leave a job writing to its output for good); past it a run's pipe is closed at its end
MAX_LINGERING = 64
_lingering: set[asyncio.SubprocessTransport] = set()


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` the exit status (negative: a signal), None: killed at its timeout."""

    status: int | None
    output: bytes   # its first bytes, up to the limit


class _Head(asyncio.SubprocessProtocol):
    """Keeps the first ``limit`` bytes of the output; says when the process exited and the pipe ended."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.head = bytearray()
        self.limit = limit
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        _resolve(self.eof)

    def process_exited(self) -> None:
        _resolve(self.exited)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def kill_group(pid: int | None) -> list[int]:
    """SIGKILL to the process group ``pid`` leads (the script and what it started) and to the
    script's descendants in other groups (read first: its death would hand them to the init);
    the latter's pids."""
    if pid is None:
        return []
    others = [p for p in descendants(pid) if _group(p) != pid]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for p in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    return others


def _group(pid: int) -> int | None:
    with contextlib.suppress(ProcessLookupError):
        return os.getpgid(pid)
    return None


def _answers(pid: int, group: bool) -> bool:
    """The process (group) is still there (zombies too, until reaped)."""
    try:
        os.killpg(pid, 0) if group else os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _killed(pid: int | None, proto: _Head) -> None:
    """Kill the group, wait for the script's exit, then until the rest of its group and its other
    descendants have gone (a killed process needs the CPU once to die: the run says it ended when
    it has); bounded."""
    others = kill_group(pid)
    loop = asyncio.get_running_loop()
    end = loop.time() + _EXIT_WAIT
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proto.exited), _EXIT_WAIT)
    while pid is not None and loop.time() < end:
        others = [p for p in others if _answers(p, group=False)]
        if not _answers(pid, group=True) and not others:   # the script reaped: only what it started answers
            return
        await asyncio.sleep(_GONE_POLL)


async def execute(argv: Sequence[str], timeout: float, limit: int, **popen: Any) -> Outcome:
    """Run ``argv`` in a session of its own, stdin /dev/null, stdout and stderr one pipe; ``popen``:
    the rest of Popen's arguments (env, executable, pass_fds).  OSError/ValueError: not started."""
    loop = asyncio.get_running_loop()
    setup = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _Head(limit, loop), *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, **popen))
    try:   # shielded: asyncio's own undo of a cancelled set-up kills the script alone, not what it started
        transport, proto = await asyncio.shield(setup)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await _undo_started(setup)
        raise
    try:
        try:
            await asyncio.wait_for(asyncio.shield(proto.exited), timeout)
        except TimeoutError:
            await _killed(transport.get_pid(), proto)
            return Outcome(None, bytes(proto.head))
        if len(proto.head) < limit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.eof), _EOF_GRACE)
        return Outcome(transport.get_returncode(), bytes(proto.head))
    except asyncio.CancelledError:
        if not proto.exited.done():   # not left running behind a stopped tunsec (an exited one's jobs stay)
            with contextlib.suppress(asyncio.CancelledError):
                await _killed(transport.get_pid(), proto)
        raise
    finally:
        _close(transport, proto)


async def _undo_started(setup: asyncio.Future[tuple[asyncio.SubprocessTransport, _Head]]) -> None:
    """A run cancelled while asyncio connected its pipes: the script runs already (and may have
    started processes in sessions of their own); once the set-up ends, killed as at the timeout."""
    try:
        transport, proto = await asyncio.shield(setup)
    except Exception:   # not started (OSError, ValueError): nothing runs
        return
    try:
        if not proto.exited.done():
            await _killed(transport.get_pid(), proto)
    finally:
        _close(transport, proto)


def _close(transport: asyncio.SubprocessTransport, proto: _Head) -> None:
    """Our end of the pipe: closed now if its end came, else once a job the script left closes it."""
    if proto.eof.done() or not proto.exited.done() or len(_lingering) >= MAX_LINGERING:
        transport.close()   # past the bound: a job still holding it gets SIGPIPE if it writes
        return
    _lingering.add(transport)
    proto.eof.add_done_callback(lambda _: _unlinger(transport))


def _unlinger(transport: asyncio.SubprocessTransport) -> None:
    _lingering.discard(transport)
    transport.close()
