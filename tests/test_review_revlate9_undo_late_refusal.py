"""Review revlate9 F1: the undo of an ADD whose answer never came deletes whatever SA holds that
(SPI, OUT, remote), also one the worker refused the ADD for (h/fixretry, services/manual.py
_install_one/_unless_refused).

An ADD the worker answered with an errno installed nothing and is not undone; one whose answer did not
come in time (REQUEST_TIMEOUT) counts as installed, and the attempt's undo sends DELETE (spi_out, OUT,
remote).  But the worker may well have refused that ADD (EEXIST: another SA already holds the
(SPI, remote), e.g. an IKE Child SA whose peer at that address picked the manual tunnel's outbound SPI as
its inbound one; its refusal was late, not absent): the DELETE then removes that other SA, which its
owner still believes installed (its traffic dropped until a rekey), one tunnel's retry ending another's
SA.  Before h/fixretry an unanswered ADD was not undone (it left our SA behind instead, review
revlate7).

The daemon's own watcher and reinstall with the in-process worker of test_manual_reload_restart (as
tests/test_manual_retry_reservation.py runs them); the worker does each request at once and only its
answer to t0's ADD is held past the (shortened) timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from pathlib import Path

import pytest
from test_manual_reload_restart import Restarting, stopped, until
from test_manual_reload_restart import started as start_daemon
from test_manual_restart_retry import plan_of, unblock
from test_manual_retry_reservation import left_out
from test_reload_manual import tunnel

from tunsec.dataplane import client, pipe
from tunsec.dataplane.pipe import Direction


def outbound_keys(d: Restarting, spi: int) -> list[int]:
    """The reqids of the current worker's outbound SAs with that SPI."""
    return [sa.reqid for sa in d.workers[-1].dp.sas() if sa.spi == spi and sa.direction is Direction.OUT]


def test_the_undo_of_an_add_refused_late_leaves_the_other_sa_alone(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            # another owner's outbound SA to the same remote with t0's outbound SPI (its own key and reqid)
            theirs = dataclasses.replace(t0.outbound, key=bytes(range(20)), reqid=0x7777, seq_start=0,
                                         seq_limit=0, seq_notify=0)
            await d.manual.worker().request(lambda r: pipe.Add(r, theirs))
            assert outbound_keys(d, t0.outbound.spi) == [0x7777]
            held: list[pipe.Message] = []

            def late_answer_to_t0_add(msg: pipe.Message) -> Awaitable[object] | None:
                if not held and isinstance(msg, pipe.Add) and msg.sa.reqid == t0.reqid:
                    held.append(msg)
                    return asyncio.sleep(0.3)   # done (refused: EEXIST) at once, answered after the timeout
                return None
            d.workers[-1].hold = late_answer_to_t0_add
            monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)
            retries = d.manual.retries
            unblock(path, saved)
            retries.interval = 3600.0   # after the attempt whose ADD is answered late, no other
            assert await until(lambda: bool(held) and "Add" in (retries.reason("t0") or ""), 30), \
                retries.reason("t0")
            await asyncio.sleep(0.5)   # the late answer came; the undo is long done
            assert outbound_keys(d, t0.outbound.spi) == [0x7777], (
                "t0's attempt installed nothing (the worker refused its ADD: EEXIST), yet its undo deleted "
                f"the other owner's outbound SA {t0.outbound.spi:#010x}: now {outbound_keys(d, t0.outbound.spi)}")
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
