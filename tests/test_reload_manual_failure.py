"""A reload or a control request that fails on the host (a full disk, a permission), not on a bug:
the client gets an error answer naming the file and the fix, the log one line, no traceback; a
manual tunnel whose sequence state cannot be written is not reported as added and goes in at the
next reload."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from test_reload_manual import Harness, conf, sa_pair, tunnel

from tunsec import seqstate
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_reload_whose_state_write_fails_is_an_error_logged_once_and_retried_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int) -> None:
    caplog.set_level(logging.INFO)
    seen: dict[str, Any] = {}

    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()
        real = seqstate.write_atomic_at

        def failing(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(seqstate, "write_atomic_at", failing)
        caplog.clear()
        seen["failed"] = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("new", 2)))
        seen["sas"] = h.sas()
        seen["records"] = list(caplog.records)
        monkeypatch.setattr(seqstate, "write_atomic_at", real)
        seen["again"] = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("new", 2)))
        seen["sas_again"] = h.sas()
        h.stop()
    asyncio.run(body())
    failed = seen["failed"]
    assert failed["ok"] is False and "added" not in failed["error"], failed
    assert "manual tunnels new not installed" in failed["error"]
    assert str(tmp_path / "state" / "manual-key-") in failed["error"]
    assert os.strerror(code) in failed["error"]
    fix = "free space" if code == errno.ENOSPC else f"make {tmp_path / 'state'} writable by the user tunsec runs as"
    assert fix in failed["error"], failed
    assert seen["sas"] == sa_pair(1)   # nothing of the new tunnel is left in the worker
    errors = [r for r in seen["records"] if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and failed["error"] in errors[0].getMessage(), [r.getMessage() for r in errors]
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in seen["records"])
    assert seen["again"] == {"ok": True, "message": "manual tunnels added: new"}
    assert seen["sas_again"] == sa_pair(1) | sa_pair(2)


def test_an_oserror_from_a_request_is_answered_on_the_control_socket_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only the client's own socket failing means the client went; the request's OSError is answered."""
    state = tmp_path / "state" / "x.json"
    seen: dict[str, Any] = {}

    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()

        async def full(deadline: object) -> dict[str, Any]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(state))
        h.daemon._reload_command = full  # type: ignore[assignment,method-assign]
        h.worker.pid = None  # type: ignore[attr-defined]   # the gate asks for it (a worker process's)
        await h.daemon._open_control_socket()
        await h.daemon._start_serving()   # what _start_worker does once privilege is given up
        try:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "t.sock"))
            writer.write(json.dumps({"cmd": "reload"}).encode() + b"\n")
            seen["line"] = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
        finally:
            assert h.daemon._server is not None
            h.daemon._server.close()
            h.stop()
    asyncio.run(body())
    answer = json.loads(seen["line"])
    assert answer["ok"] is False, answer
    assert f"{state}: No space left on device; free space (or quota) on the file system of {state.parent}" \
        in answer["error"], answer
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage() == answer["error"]
    assert errors[0].exc_info is None


def test_a_tunnel_the_worker_refuses_leaves_the_sa_that_holds_its_spi_alone(tmp_path: Path) -> None:
    """The new tunnel's inbound SPI is taken in the worker (an SA of someone else's): its GETSPI fails,
    and undoing the failed install removes only what it put in, never that SA."""
    seen: dict[str, Any] = {}

    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
        await h.start()
        taken = 0xC0010002   # tunnel("new", 2)'s spi_in
        await h.worker.request(lambda r: pipe.GetSpi(r, taken, taken))
        seen["before"], seen["policies_before"] = h.sas(), h.policy_ids()
        seen["answer"] = await h.reload(conf(tmp_path, tunnel("keep", 1), tunnel("new", 2)))
        seen["after"] = h.sas()
        seen["policies"] = h.policy_ids()
        seen["plans"] = [p.tunnel.name for p in h.daemon.manual.plans]
        h.stop()
    asyncio.run(body())
    assert seen["answer"]["ok"] is False and "manual tunnels new not installed" in seen["answer"]["error"], seen
    assert (0xC0010002, Direction.IN) in seen["before"]
    assert seen["after"] == seen["before"], seen   # the other SA stays; nothing of new's is left
    assert seen["policies"] == seen["policies_before"]
    assert seen["plans"] == ["keep"]
