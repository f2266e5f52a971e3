"""`tunsec reload` at the worst moment (review revreload2): during the stop (F1) and while the worker
dies under it (F2).  The daemon's control command, the real ManualService, Daemon.shutdown and the
worker's logic and C fast path in process (test_reload_manual's Harness).

F1: once the stop began a reload is refused ("tunsec is stopping: reload refused"), also one that
waited for a worker restart; one under way when the stop began ends before the services shut down,
and the stop waits for it no longer than RELOAD_STOP_WAIT.  F2: a tunnel whose install the worker's
death cut keeps its plan and goes into the restarted worker; one whose state file failed is dropped,
as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from test_ikeservice_peers import InProcessWorker
from test_reload_manual import KEY_A, Harness, conf, derived, sa_pair, tunnel

from tunsec import daemon as daemon_module
from tunsec import seqstate
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.seqstate import state_file

REFUSED = {"ok": False, "error": "tunsec is stopping: reload refused"}


async def _stopped() -> None:
    """The in-process worker has no process: Daemon.shutdown's worker.stop() has nothing to do."""


def _stoppable(h: Harness) -> None:
    h.worker.stop = _stopped   # type: ignore[attr-defined]


async def _turns(n: int = 20) -> None:
    """n turns of the event loop: what is runnable runs (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _reload_under_way(tmp_path: Path) -> tuple[Harness, asyncio.Event, asyncio.Task[dict[str, Any]]]:
    """A started Harness (tunnel keep) and a `tunsec reload` adding tunnel late, under way: the
    worker's answer to late's GETSPI (0xc0010002) waits for the gate returned."""
    h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
    await h.start()
    _stoppable(h)
    reached, gate = asyncio.Event(), asyncio.Event()

    def hold(msg: pipe.Message) -> Awaitable[object] | None:
        if isinstance(msg, pipe.GetSpi) and msg.lo == 0xC0010002:
            reached.set()
            return gate.wait()
        return None
    h.worker.hold = hold
    reload = asyncio.create_task(h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("late", 2))))
    await reached.wait()
    return h, gate, reload


def worker_dies_at_an_install(h: Harness) -> None:
    """h's worker dies at the first request of an install (GETSPI, UPDATE, ADD, SPDADD): that one fails
    as WorkerClient's does once its pipe closed (gone), as does the worker's `gone`."""
    dead = h.worker
    real = dead.request

    async def request(build: Any, max_bytes: int | None = None) -> list[pipe.Reply]:
        msg = build(1)   # only to see what it is
        if isinstance(msg, (pipe.GetSpi, pipe.Add, pipe.Update, pipe.SpdAdd)):
            dead.gone = True   # type: ignore[attr-defined]
            raise WorkerError(type(msg).__name__, Errno.EIO, gone=True)
        return await real(build, max_bytes)

    dead.gone = False   # type: ignore[attr-defined]
    dead.request = request   # type: ignore[method-assign]


def test_a_reload_waiting_for_a_worker_restart_when_the_stop_begins_is_answered_refused(tmp_path: Path) -> None:
    """The watcher holds the reloads off during a restart; the stop cancels it; the reload waiting
    for the lock then runs in the stop: it must be answered (refused), and put nothing in.  Before
    the fix it was applied in full: "manual tunnels added: late", ok."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()
        _stoppable(h)
        restarting = asyncio.Event()

        async def restart() -> None:   # as _watch_worker: the lock held from the death to the reinstall
            async with h.daemon._reloading:
                restarting.set()
                await asyncio.Event().wait()   # its back-off, never over: the stop cancels it
        h.daemon._tasks = [asyncio.create_task(restart())]
        await restarting.wait()
        reload = asyncio.create_task(h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("late", 2))))
        await _turns()
        assert not reload.done()   # it waits for the restart
        await h.daemon.shutdown()
        try:
            assert await reload == REFUSED
            assert h.sas() == sa_pair(1)
            assert [p.tunnel.name for p in h.daemon.manual.plans] == ["keep"]
        finally:
            h.stop()
    asyncio.run(body())


def test_the_stop_waits_for_a_reload_under_way_before_the_services_shut_down(tmp_path: Path) -> None:
    """A `tunsec reload` installing a tunnel when the stop begins: the manual service is shut down
    only after it (never a tunnel installed into a service already shut down, its sequence number
    refills stopped).  Before the fix the services shut down at once, under the reload."""
    async def body() -> None:
        h, gate, reload = await _reload_under_way(tmp_path)
        stop = asyncio.create_task(h.daemon.shutdown())
        await _turns()
        try:
            assert h.daemon.stopping.is_set()
            assert not h.daemon.manual.closing, "the manual service shut down under a reload under way"
            gate.set()
            assert await reload == {"ok": True, "message": "manual tunnels added: late"}
            await stop
            assert h.daemon.manual.closing
            # and one asked now is refused at once
            assert await h.reload(conf(tmp_path, tunnel("keep", 1))) == REFUSED
            assert h.sas() == sa_pair(1) | sa_pair(2)
        finally:
            gate.set()
            h.stop()
    asyncio.run(body())


def test_a_reload_that_outlasts_the_stops_wait_does_not_hold_the_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A reload stuck on a worker that does not answer: the stop waits RELOAD_STOP_WAIT for it, says
    so, and goes on (the services shut down, the worker stops)."""
    monkeypatch.setattr(daemon_module, "RELOAD_STOP_WAIT", 0.05, raising=False)

    async def body() -> None:
        h, gate, reload = await _reload_under_way(tmp_path)
        try:
            await h.daemon.shutdown()
            assert h.daemon.manual.closing
        finally:
            gate.set()
            await reload
            h.stop()
    asyncio.run(body())
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "at shutdown: a reload is still running after 0.05 s; the stop goes on without it" in said, said


def test_a_tunnel_a_reload_adds_while_the_worker_dies_goes_into_the_restarted_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dies at the install of `late`; `bad`'s state file then cannot be written.  late is
    kept (the restart installs it; the answer says so), bad is dropped as before (not installed until
    a reload; the restart leaves it out).  Before the fix late was dropped too."""
    bad_files = {state_file(tmp_path / "state", bytes.fromhex(derived(KEY_A, 3, d)[2:])).name for d in ("in", "out")}
    real_write = seqstate.write_atomic_at

    def write(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
        if name in bad_files:
            raise OSError(5, "Input/output error")
        real_write(dir_fd, name, data, owner)

    async def body() -> dict[str, Any]:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()
        worker_dies_at_an_install(h)
        monkeypatch.setattr(seqstate, "write_atomic_at", write)
        answer = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("late", 2), tunnel("bad", 3)))
        seen = {"answer": answer, "plans": [p.tunnel.name for p in h.daemon.manual.plans],
                "not_installed": sorted(h.daemon.manual.not_installed)}
        h.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)   # the restart
        h.daemon.worker = h.worker  # type: ignore[assignment]
        await h.daemon.manual.worker_restarted()
        seen["sas"] = h.sas()
        await h.daemon.manual.shutdown()
        h.stop()
        return seen

    seen = asyncio.run(body())
    answer = seen["answer"]
    assert answer["ok"] is False, answer
    assert ("manual tunnels late not installed yet: the worker died during the reload; installed by the "
            "worker's restart") in answer["error"], answer
    assert "manual tunnels bad not installed: " in answer["error"] and "Input/output error" in answer["error"]
    assert "added" not in answer["error"], answer
    assert (seen["plans"], seen["not_installed"]) == (["keep", "late"], ["bad"])
    assert seen["sas"] == sa_pair(1) | sa_pair(2)
