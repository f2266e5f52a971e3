"""A manual tunnel a restarted worker cannot take (review revrestart F1): left out, as a reload leaves
one it cannot install (nothing of it in the worker, its routes kept: its traffic is dropped), shown in
status, tried again every RESERVE_RETRY until it goes in; the other tunnels and the services after
the manual one are reinstalled whatever it raised.

The daemon's own _watch_worker, _restart_worker and _install_services run, with the in-process
worker of test_manual_reload_restart (the worker's logic and C fast path in this process)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from pathlib import Path

import pytest
from test_manual_reload_restart import Restarting, holds_first_getspi, stopped, until
from test_manual_reload_restart import started as start_daemon
from test_reload_manual import conf, tunnel
from test_review_revrestart_reinstall_state import Recorder

from tunsec import seqstate
from tunsec.conf.config import load_config
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.runtime import resolved
from tunsec.seqstate import state_file
from tunsec.services.base import StartupError
from tunsec.services.manual import ManualPlan
from tunsec.statedir import init_state_dir
from tunsec.status import render


def plan_of(d: Restarting, name: str) -> ManualPlan:
    return next(p for p in d.manual.plans if p.tunnel.name == name)


def in_worker(d: Restarting, p: ManualPlan) -> set[object]:
    """What of p the current worker holds: its SAs (spi, direction) and its policies' ids."""
    w = d.workers[-1]
    sas = {(sa.spi, sa.direction) for sa in w.dp.sas()}
    return sas & {(p.inbound.spi, Direction.IN), (p.outbound.spi, Direction.OUT)} | {
        pol.id for pol in w.dp.policies()} & {pol.id for pol in p.policies}


def whole(p: ManualPlan) -> set[object]:
    return {(p.inbound.spi, Direction.IN), (p.outbound.spi, Direction.OUT), *(pol.id for pol in p.policies)}


def block(d: Restarting, p: ManualPlan, tmp: Path) -> tuple[Path, bytes]:
    """p's outbound key's state file made unreplaceable (a directory takes its name: the rename into
    place fails for real); its content, to put back."""
    path = state_file(d.manual.dir.path if d.manual.dir else tmp / "state", p.outbound.key)
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()
    (path / "x").write_bytes(b"")
    return path, saved


def unblock(path: Path, saved: bytes) -> None:
    (path / "x").unlink()
    path.rmdir()
    path.write_bytes(saved)


# the rest of a `tunsec status` document, for render()
BASE = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
        "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}


async def text_status(d: Restarting) -> tuple[dict[str, object], str]:
    """The manual service's part of status (t0's entry) and its text."""
    doc = d.manual.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
    t0 = next(t for t in doc["tunnels"] if t["name"] == "t0")
    return t0, render({**BASE, **doc})


def test_a_tunnel_whose_state_cannot_be_written_at_a_restart_is_left_out_and_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On main tunsec stopped.  Now: nothing of t0 in the new worker (its inbound key's file was
    writable, but no SA of a tunnel whose reservations are not all on disk goes in), its route kept,
    t1 reinstalled, status and one log line say why (path, errno, fix); once the file can be written
    again t0 goes in by itself, past the limit the earlier worker had reserved."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0, t1 = plan_of(d, "t0"), plan_of(d, "t1")
            before = json.loads(state_file(tmp_path / "state", t0.outbound.key).read_text())["limit"]
            path, saved = block(d, t0, tmp_path)
            caplog.clear()
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            async with d._reloading:   # the reinstall is over
                pass
            assert not d.stopping.is_set()
            assert in_worker(d, t0) == set(), "an SA of t0 went in without its reservation on disk"
            assert in_worker(d, t1) == whole(t1)
            assert any(net == t0.tunnel.remote_ts[0].networks()[0] for net, _ in d.manual.routes())
            entry, text = await text_status(d)
            assert entry["retrying"] is True and str(path) in str(entry["not_installed"])
            assert f"not installed, traffic dropped tried again every second: {entry['not_installed']}" in text
            errors = [r.getMessage() for r in caplog.records
                      if r.levelno >= logging.ERROR and str(path) in r.getMessage()]
            assert len(errors) == 1 and "Is a directory (EISDIR)" in errors[0] and "move it away" in errors[0], errors
            assert "tried again every" in errors[0]
            assert all(r.exc_info is None for r in caplog.records)
            unblock(path, saved)
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            entry, _ = await text_status(d)
            assert "not_installed" not in entry
            assert json.loads(path.read_text())["limit"] > before
            out = next(sa for sa in d.workers[-1].dp.sas() if sa.spi == t0.outbound.spi)
            assert out.seq >= before   # past every number the dead worker may have sent
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_a_tunnel_the_restarted_worker_refuses_is_left_out_without_a_trace_and_retried(tmp_path: Path) -> None:
    """The new worker takes t0's inbound SA and refuses its outbound one: the inbound SA is taken out
    again (a half tunnel would answer nothing), t1 goes in; once the worker takes it, t0 goes in."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0, t1 = plan_of(d, "t0"), plan_of(d, "t1")
            refusing = True
            reached, release = asyncio.Event(), asyncio.Event()
            d.hold_next = holds_first_getspi(reached, release)
            d.workers[0].crash()
            assert await until(reached.is_set)
            w1 = d.workers[1]
            handle = w1.worker.handle_datagram

            def refuse_t0_out(data: bytes) -> list[bytes]:
                msg = pipe.decode(data)
                if refusing and isinstance(msg, pipe.Add) and msg.sa.spi == t0.outbound.spi:
                    return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, pipe.Errno.EINVAL))]
                return handle(data)
            w1.worker.handle_datagram = refuse_t0_out  # type: ignore[method-assign]
            release.set()
            async with d._reloading:
                pass
            await asyncio.sleep(0)
            assert not d.stopping.is_set() and len(d.workers) == 2
            assert in_worker(d, t0) == set() and in_worker(d, t1) == whole(t1)
            assert "installing SAs failed" in str(d.manual.retries.reason("t0"))
            refusing = False
            assert await until(lambda: in_worker(d, t0) == whole(t0), 30), "t0 never went in"
            assert d.manual.retries.reason("t0") is None
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_a_reload_removing_a_left_out_tunnel_ends_its_retries(tmp_path: Path) -> None:
    """t0 left out at a restart, then removed by a reload: no retry of it runs any more (its file
    writable again, nothing of it goes into the worker), and its route goes with it."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = block(d, t0, tmp_path)
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            async with d._reloading:
                pass
            assert d.manual.retries.reason("t0") is not None
            (tmp_path / "tunsec.conf").write_text(conf(tmp_path, tunnel("t1", 1)))
            answer = await d._command(json.dumps({"cmd": "reload"}).encode())
            assert answer == {"ok": True, "message": "manual tunnels removed: t0"}, answer
            assert d.manual.retries.by_name == {}
            unblock(path, saved)
            await asyncio.sleep(d.manual.retries.interval * 3)
            assert in_worker(d, t0) == set()
            assert not any(net == t0.tunnel.remote_ts[0].networks()[0] for net, _ in d.manual.routes())
        finally:
            await stopped(d, watcher)
    asyncio.run(body())


def test_every_service_is_reinstalled_whatever_one_before_it_raised(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The manual service's reinstall fails on an error nobody foresaw: the service after it (IKE's
    place) is reinstalled all the same; the failure is said once, and tunsec runs on.  On main the
    loop ended at the first error."""
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0))
        other = Recorder()
        d.services.append(other)

        async def broken() -> None:
            raise LookupError("a bug")
        d.manual.worker_restarted = broken  # type: ignore[method-assign]
        try:
            d.workers[0].crash()
            assert await until(lambda: other.reinstalled > 0 or watcher.done(), 30)
            async with d._reloading:
                pass
            assert other.reinstalled == 1 and not d.stopping.is_set() and not watcher.done()
        finally:
            await stopped(d, watcher)
        said = [r.getMessage() for r in caplog.records if "restarted worker failed" in r.getMessage()]
        assert said == ["reinstalling into the restarted worker failed: LookupError"]
    asyncio.run(body())


def test_a_state_file_that_cannot_be_written_at_the_start_refuses_it_naming_path_errno_and_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start is where whoever starts tunsec looks: a key's state that cannot be written (here the
    disk answers EIO) refuses it, as an unwritable state_dir does; nothing of the tunnels goes in.
    The error names the file, the errno and what to do (on main: "Input/output error; make DIR
    writable by the user tunsec runs as", which was not the fix)."""
    def failing(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    async def body() -> None:
        (tmp_path / "tunsec.conf").write_text(conf(tmp_path, tunnel("t0", 0), tunnel("t1", 1)))
        init_state_dir(tmp_path / "state")
        d = Restarting(resolved(load_config(tmp_path / "tunsec.conf")))
        d.manual.prepare()
        monkeypatch.setattr(seqstate, "write_atomic_at", failing)
        try:
            with pytest.raises(StartupError) as err:
                await d._start_worker()
        finally:
            d.manual.close()
        text = str(err.value)
        assert str(tmp_path / "state" / "manual-key-") in text and "Input/output error (EIO)" in text, text
        assert f"the storage of {tmp_path / 'state'} failed (an I/O error): check the kernel log" in text, text
        assert d.workers[0].dp.sas() == [] and d.workers[0].dp.policies() == []
    asyncio.run(body())
