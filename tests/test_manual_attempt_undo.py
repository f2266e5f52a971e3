"""A manual tunnel's attempt that does not finish leaves nothing of it in the worker, whatever ends
it (review revlate9 F2): before, only a StartupError was undone, so an attempt cancelled after its
SAs went in (the daemon's stop, a task cancelled while it waits for an answer) left them there while
the service held the tunnel out.  The undo goes on to its end although the cancellation came first,
and the cancellation is raised after it.

The daemon's own watcher and reinstall with the in-process worker of test_manual_reload_restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest
from test_manual_reload_restart import started as start_daemon
from test_manual_reload_restart import stopped, until
from test_manual_restart_retry import in_worker, plan_of, unblock
from test_manual_retry_reservation import left_out
from test_reload_manual import tunnel

from tunsec.dataplane import pipe


def test_an_attempt_cancelled_after_its_sas_went_in_leaves_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            held: list[pipe.Message] = []
            never = asyncio.Event()

            def hold_first_policy(msg: pipe.Message) -> Awaitable[object] | None:
                if not held and isinstance(msg, pipe.SpdAdd) and msg.policy.id == t0.policies[0].id:
                    held.append(msg)
                    return never.wait()   # done at once, its answer never comes
                return None
            d.workers[-1].hold = hold_first_policy
            retries = d.manual.retries
            r = retries.by_name["t0"]
            unblock(path, saved)
            assert await until(lambda: bool(held), 30), retries.reason("t0")
            assert (t0.inbound.spi, pipe.Direction.IN) in in_worker(d, t0)
            assert r.task is not None
            r.task.cancel()   # while it waits for the policy's answer
            with pytest.raises(asyncio.CancelledError):
                await r.task
            left = in_worker(d, t0)
            assert left == set(), f"the cancelled attempt left {left} in the worker"
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
