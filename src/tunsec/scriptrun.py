"""One run of a program the control process starts for a peer's event (an updown script).

What asyncio's ``Process.communicate()`` does not give (review revupdown F3-F5):

- the run ends when the script exits, not when its output ends: a job it left in the background
  (``dnsmasq ... &``) may hold the pipe for good; what the script wrote before it exited is read
  (the pipe's end, or ``_EOF_GRACE`` while a job keeps it open), then the pipe is closed;
- only the first ``limit`` bytes of the output are kept (they are what is logged); the rest is
  read and dropped, so a script writing megabytes costs the control process no memory;
- at the timeout, and when the run is cancelled (tunsec stopping past its deadline), the
  script's process group is killed (the script leads it: ``start_new_session``), so what it
  started (a hung ``curl``) goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# after the script's exit, how long a job it left holding its output may delay the end of the run;
# what the script itself wrote is in the pipe already and is read in the loop's next round
_EOF_GRACE = 0.2
# a process group killed with SIGKILL: how long its processes may take to go (a bound: one stuck in
# an uninterruptible sleep, on a dead NFS server, goes when the kernel lets it)
_EXIT_WAIT = 5.0
_GONE_POLL = 0.01   # seconds between two looks at a killed group (it has no descriptor to wait on)


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


def kill_group(pid: int | None) -> None:
    """SIGKILL to the process group ``pid`` leads (the script and what it started)."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


async def _killed(pid: int | None, proto: _Head) -> None:
    """Kill the group, wait for the script's exit, then until the rest of its group has gone
    (a killed process needs the CPU once to die: the run says it ended when it has); bounded."""
    kill_group(pid)
    loop = asyncio.get_running_loop()
    end = loop.time() + _EXIT_WAIT
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proto.exited), _EXIT_WAIT)
    while pid is not None and loop.time() < end:
        try:
            os.killpg(pid, 0)   # the script reaped: only what it started answers (zombies too, until reaped)
        except (ProcessLookupError, PermissionError):
            return
        await asyncio.sleep(_GONE_POLL)


async def execute(argv: Sequence[str], timeout: float, limit: int, **popen: Any) -> Outcome:
    """Run ``argv`` in a session of its own, stdin /dev/null, stdout and stderr one pipe; ``popen``:
    the rest of Popen's arguments (env, executable, pass_fds).  OSError/ValueError: not started."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.subprocess_exec(
        lambda: _Head(limit, loop), *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, **popen)
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
        with contextlib.suppress(asyncio.CancelledError):   # not left running behind a stopped tunsec
            await _killed(transport.get_pid(), proto)
        raise
    finally:
        transport.close()   # our end of the pipe: a job still holding it gets EPIPE if it writes
