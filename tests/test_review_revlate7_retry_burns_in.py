"""Review revlate7 F1 (of h/fixrestart; F2 at the end): every retry of a tunnel a restarted worker left out reserves
a new block for both of its SAs, though nothing of the last one was used.  When only the outbound
key's state file cannot be written, each retry persists the inbound SA's reservation first and then
fails: the inbound limit climbs by a block (MIN_BLOCK_IN) a second for as long as the tunnel is left
out, and once it goes in its receiver refuses, as replays, every number the peer sends up to there
(the peer's sender never restarted: it is below the first block).  An hour left out is 57,600
numbers: a peer pinging once a second is not heard for 16 hours.

The daemon's own _watch_worker/_restart_worker/_install_services with the in-process worker of
test_manual_reload_restart, as tests/test_manual_restart_retry.py runs them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest
from test_manual_reload_restart import started as start_daemon
from test_manual_reload_restart import stopped, until
from test_manual_restart_retry import block, in_worker, plan_of, text_status, unblock, whole
from test_reload_manual import tunnel

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.seqstate import MIN_BLOCK_IN, MIN_BLOCK_OUT, state_file
from tunsec.services.manual import ManualPlan

RETRIES = 20


def first_numbers(caplog: pytest.LogCaptureFixture, pattern: str) -> list[int]:
    """The first number of each of t0's "sequence numbers reserved" lines (the install's log) pattern finds."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("t0: sequence numbers reserved")]
    found = [int(m.group(1)) for line in lines if (m := re.search(pattern, line))]
    assert found, lines
    return found


def test_retries_of_a_left_out_tunnel_do_not_move_its_receivers_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            in_file = state_file(tmp_path / "state", t0.inbound.key)
            before = json.loads(in_file.read_text())["limit"]   # the dead worker's receiver accepted up to here
            retries = d.manual.retries
            retries.interval = 0.01   # RESERVE_RETRY's 1 s, shortened: only the count of retries matters
            attempts = 0
            attempt = retries.attempt

            async def counted(p: ManualPlan, worker: WorkerClient) -> None:
                nonlocal attempts
                attempts += 1
                await attempt(p, worker)

            retries.attempt = counted
            path, saved = block(d, t0, tmp_path)   # the outbound key's file only
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            assert await until(lambda: attempts >= RETRIES), "the retries never ran"
            caplog.set_level(logging.INFO, logger="tunsec")
            caplog.clear()
            unblock(path, saved)
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            accepts = first_numbers(caplog, r"in [0-9a-f]{8} accepts (\d+)\.\.")
            # the receiver that went in starts one block past the dead worker's, as a plain restart's does;
            # on main it starts past a block for every failed retry (the peer's numbers below: replays)
            assert accepts[-1] <= before + 1 + MIN_BLOCK_IN, (
                f"after {attempts} retries the inbound SA accepts from {accepts[-1]}, "
                f"the dead worker's limit was {before}")
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_retries_refused_by_the_worker_do_not_spend_the_senders_numbers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same for the sending SA when the restarted worker refuses the tunnel: each refused retry
    persists another MIN_BLOCK_OUT (65,536) numbers nothing was sent under; a 32-bit SA (no ESN)
    has 65,536 such blocks, so a tunnel refused for about 18 hours is past its last number when it
    finally goes in (and each refused hour costs 5.5% of its numbers)."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            out_file = state_file(tmp_path / "state", t0.outbound.key)
            before = json.loads(out_file.read_text())["limit"]   # the dead worker sent below this
            path, saved = block(d, t0, tmp_path)   # left out at the reinstall, before anything was reserved for it
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            async with d._reloading:   # the reinstall is over
                pass
            retries = d.manual.retries
            retries.interval = 0.01   # RESERVE_RETRY's 1 s, shortened: only the count of retries matters
            assert retries.reason("t0") is not None
            w1 = d.workers[1]
            handle = w1.worker.handle_datagram
            refused = 0
            refusing = True

            def refuse_t0_out(data: bytes) -> list[bytes]:
                nonlocal refused
                msg = pipe.decode(data)
                if refusing and isinstance(msg, pipe.Add) and msg.sa.spi == t0.outbound.spi:
                    refused += 1
                    return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, pipe.Errno.EINVAL))]
                return handle(data)
            w1.worker.handle_datagram = refuse_t0_out  # type: ignore[method-assign]
            unblock(path, saved)
            assert await until(lambda: refused >= RETRIES), "the retries never reached the worker"
            caplog.set_level(logging.INFO, logger="tunsec")
            caplog.clear()
            refusing = False
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            starts = first_numbers(caplog, r"out [0-9a-f]{8} from (\d+) to")
            # one block past the dead worker's reservation at most, as a plain restart's; on main a block
            # more for every refused retry
            assert starts[-1] <= before + 1 + MIN_BLOCK_OUT, (
                f"after {refused} refused retries the outbound SA starts at {starts[-1]}, "
                f"the dead worker's limit was {before}")
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_a_retry_ended_by_an_internal_error_is_not_shown_as_retrying(tmp_path: Path) -> None:
    """Review revlate7 F2 (low): a retry that meets an internal error (Retries._run's `except Exception`:
    "this tunnel stays out until a reload") ends, but its entry stays in Retries.by_name, so status
    keeps saying `retrying: true` and "tried again every second" while nothing tries it again."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            retries = d.manual.retries
            retries.interval = 0.01
            path, saved = block(d, t0, tmp_path)
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            async with d._reloading:   # the reinstall is over: t0 left out, its retry started
                pass
            r = retries.by_name["t0"]

            async def broken(p: ManualPlan, worker: WorkerClient) -> None:
                raise RuntimeError("a bug")

            retries.attempt = broken
            assert r.task is not None
            await asyncio.wait_for(asyncio.shield(r.task), 30)   # the retry ended on the internal error
            unblock(path, saved)
            entry, text = await text_status(d)
            assert in_worker(d, t0) == set()
            assert entry.get("retrying") is not True and "tried again every second" not in text, (
                f"nothing retries t0 any more, yet status says: {entry}")
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
