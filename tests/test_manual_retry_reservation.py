"""The reservation of a manual tunnel a restarted worker left out, across its retries (review revlate7
F1, R2, F2): a retry gives an SA the block its last reservation persisted while no worker took that
SA (no file written, no number spent); one a worker may have taken (its answer never came) is never
given again; a retry an internal error ended is resumed by a reload.

The daemon's own _watch_worker/_restart_worker/_install_services with the in-process worker of
test_manual_reload_restart, as tests/test_manual_restart_retry.py runs them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable
from pathlib import Path

import pytest
from test_manual_reload_restart import Restarting, stopped, until
from test_manual_reload_restart import started as start_daemon
from test_manual_restart_retry import block, in_worker, plan_of, text_status, unblock, whole
from test_reload_manual import tunnel

from tunsec.dataplane import client, pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.pipe import Direction
from tunsec.seqstate import SeqState, state_file
from tunsec.services.manual import ManualPlan
from tunsec.statedir import init_state_dir

RETRIES = 20


def reservations(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int, int]]:
    """Each of t0's "sequence numbers reserved" lines: (outbound first, outbound last, inbound first)."""
    found = [re.search(r"out [0-9a-f]{8} from (\d+) to (\d+), in [0-9a-f]{8} accepts (\d+)\.\.", r.getMessage())
             for r in caplog.records if r.getMessage().startswith("t0: sequence numbers reserved")]
    return [(int(m[1]), int(m[2]), int(m[3])) for m in found if m is not None]


def on_disk(d: Restarting, p: ManualPlan) -> list[tuple[int, int]]:
    """Which file (inode, mtime) holds each of p's keys' state now: a write renames a new one into place."""
    assert d.manual.dir is not None
    return [(s.st_ino, s.st_mtime_ns) for s in (os.stat(state_file(d.manual.dir.path, sa.key))
                                                 for sa in (p.inbound, p.outbound))]


async def left_out(d: Restarting, watcher: asyncio.Task[None], t0: ManualPlan, tmp: Path) -> tuple[Path, bytes]:
    """t0 left out of the restarted worker (its outbound file unwritable) and retried every 10 ms."""
    path, saved = block(d, t0, tmp)
    d.workers[0].crash()
    assert await until(lambda: len(d.workers) == 2 or watcher.done())
    async with d._reloading:   # the reinstall is over
        pass
    d.manual.retries.interval = 0.01   # RESERVE_RETRY's 1 s, shortened: only the count of retries matters
    assert d.manual.retries.reason("t0") is not None
    return path, saved


def test_retries_the_worker_refuses_write_no_state_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """R2: the worker refuses t0's inbound SA (before the outbound is sent): each retry gives both SAs
    the reservation the first one persisted, and neither key's file is written again (on main both
    were rewritten and fsync'd at every retry, each a block further).  Once accepted, t0 goes in with
    that reservation."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            w1 = d.workers[1]
            handle = w1.worker.handle_datagram
            refused = 0
            refusing = True

            def refuse_t0_in(data: bytes) -> list[bytes]:
                nonlocal refused
                msg = pipe.decode(data)
                if refusing and isinstance(msg, pipe.Update) and msg.sa.spi == t0.inbound.spi:
                    refused += 1
                    return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, pipe.Errno.EINVAL))]
                return handle(data)
            w1.worker.handle_datagram = refuse_t0_in  # type: ignore[method-assign]
            caplog.set_level(logging.INFO, logger="tunsec")
            caplog.clear()
            unblock(path, saved)
            assert await until(lambda: refused >= 2), "the retries never reached the worker"
            files = on_disk(d, t0)
            assert await until(lambda: refused >= RETRIES), "the retries stopped"
            assert on_disk(d, t0) == files, f"{refused} refused retries rewrote t0's state files"
            refusing = False
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            reserved = reservations(caplog)
            assert len(set(reserved)) == 1, f"{len(reserved)} retries reserved {sorted(set(reserved))}"
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_an_add_whose_answer_never_came_is_not_given_again(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker installed t0's outbound SA but its answer never came (a hung worker): that worker may
    send under it, so the attempt's undo deletes it and the next retry starts the SA past that
    reservation, not at its start (the fix's "refused" rule: only a refusal gives it again).  On main
    the undo left the SA in the worker (only an answered ADD was undone) and every retry after it
    failed on EEXIST: t0 never went in."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            w1 = d.workers[1]
            held: list[pipe.Message] = []
            hung = asyncio.Event()   # never set: that answer never comes

            def hold_t0_out(msg: pipe.Message) -> Awaitable[object] | None:
                if not held and isinstance(msg, pipe.Add) and msg.sa.spi == t0.outbound.spi:
                    held.append(msg)
                    return hung.wait()
                return None
            w1.hold = hold_t0_out
            monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)
            caplog.set_level(logging.INFO, logger="tunsec")
            caplog.clear()
            unblock(path, saved)
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            assert held, "the Add was never held"
            (first, last, _), *rest = reservations(caplog)
            assert rest, "t0 went in without a retry"
            assert rest[-1][0] > last, (f"the outbound SA the hung worker took ({first}..{last}) was given "
                                        f"again: {rest[-1][0]}..{rest[-1][1]}")
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_a_reload_resumes_a_retry_an_internal_error_ended(tmp_path: Path) -> None:
    """F2: the retry ended by an internal error says "until a reload" (not "tried again every
    second"), and a reload that leaves t0 as it is tries it again: t0 goes in (on main such a reload
    did nothing for t0: it stayed out until the next worker restart)."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            retries = d.manual.retries
            r = retries.by_name["t0"]
            attempt = retries.attempt

            async def broken(p: ManualPlan, worker: WorkerClient) -> None:
                raise RuntimeError("a bug")

            retries.attempt = broken
            assert r.task is not None
            await asyncio.wait_for(asyncio.shield(r.task), 30)
            unblock(path, saved)
            entry, text = await text_status(d)
            assert entry["retrying"] is False and "until a reload installs it" in text, (entry, text)
            retries.attempt = attempt
            answer = await d._command(json.dumps({"cmd": "reload"}).encode())
            assert answer.get("ok") is True, answer
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "the reload did not try t0 again"
            assert retries.reason("t0") is None
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_restart_gives_an_untaken_reservation_again(tmp_path: Path) -> None:
    """SeqState: a restart asked for the last reservation again (again=True) gives it without writing
    while no worker took it; once taken, or once the limit moved (a refill), it reserves past it; and
    without again it always does (on main: one block more for each restart)."""
    init_state_dir(tmp_path)
    st = SeqState.open(tmp_path, "t0", 0x100, Direction.OUT, bytes(20), False)
    first = st.restart(1.0)
    inode = os.stat(st.path).st_ino
    assert st.restart(2.0, again=True) == first and os.stat(st.path).st_ino == inode
    st.taken()
    second = st.restart(3.0, again=True)
    assert second[0] == first[1] and os.stat(st.path).st_ino != inode
    st.extend(4.0)
    third = st.restart(5.0, again=True)
    assert third[0] > second[1]
    assert st.restart(6.0)[0] == third[1]


def test_a_policy_whose_answer_never_came_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for t0's policy: the worker added it but its answer never came; the attempt's undo
    deletes it (its id is ours): nothing of the left-out t0 stays in the worker (a reload removing t0
    deletes nothing of it).  On main only an answered SPDADD was undone: the policy stayed."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            held: list[pipe.Message] = []
            hung = asyncio.Event()   # never set

            def hold_t0_policy(msg: pipe.Message) -> Awaitable[object] | None:
                if not held and isinstance(msg, pipe.SpdAdd) and msg.policy.id == t0.policies[0].id:
                    held.append(msg)
                    return hung.wait()
                return None
            d.workers[1].hold = hold_t0_policy
            monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)
            retries = d.manual.retries
            unblock(path, saved)
            retries.interval = 3600.0   # after the attempt whose SPDADD hangs, no other for the test's time
            assert await until(lambda: "SpdAdd" in (retries.reason("t0") or ""), 30), retries.reason("t0")
            assert held, "the SPDADD was never held"
            assert in_worker(d, t0) == set(), f"t0 left out, yet the worker holds {in_worker(d, t0)}"
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
