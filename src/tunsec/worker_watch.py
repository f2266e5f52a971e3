"""How the daemon learns that its worker is gone: it exited, or it closed its pipe and runs on.

A worker that closes its pipe but does not exit (taken over, or a bug) answers nothing any more:
every request would fail for good, and the daemon, waiting for its exit alone, would neither replace
nor stop it (review revpipe R1).  Its pipe's end is now as good as its exit: the worker is given
EXIT_GRACE to exit (one that dies closes its pipe a moment before its exit is reaped), then killed
(SIGKILL: by pid, our child, or through the spawner, whose child it is), and restarted as a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib

from tunsec.dataplane.client import WorkerClient

EXIT_GRACE = 2.0   # seconds a worker whose pipe closed has to exit before it is killed


async def ended(worker: WorkerClient) -> str:
    """Wait until the worker exits, or has closed its pipe and not exited EXIT_GRACE later (it is
    killed then); what ended it, for the log ("exited with status N", or that it was killed)."""
    proc = worker.proc
    assert proc is not None
    exited = asyncio.ensure_future(proc.wait())
    closed = asyncio.ensure_future(worker.pipe_closed())
    try:
        await asyncio.wait((exited, closed), return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await asyncio.wait((exited,), timeout=EXIT_GRACE)
    finally:
        closed.cancel()
        if not exited.done():   # cancelled (the stop), or the worker runs on
            exited.cancel()
    if exited.done() and not exited.cancelled():
        return f"exited with status {exited.result()}"
    with contextlib.suppress(OSError):   # gone meanwhile
        proc.kill()
    return f"closed its pipe but did not exit within {EXIT_GRACE:.0f} s; killed it"
