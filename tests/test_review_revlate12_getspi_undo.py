"""Review revlate12 F1: the undo fixstop books for a manual tunnel's GETSPI whose answer is not known
(cancelled by the stop, or unanswered within REQUEST_TIMEOUT) deletes the inbound SA of that SPI whoever
holds it.  A GETSPI the worker refused because another SA (an IKE Child SA's: manual SPIs may lie in IKE's
range, as the demo's 0xc0010001 does) holds that SPI is followed by DELETE(SPI, in), which takes that SA.

Harness as tests/test_reload_cut.py (the real ManualService, the worker's logic and C fast path in process:
a request is applied when sent, its answer held by the test)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_reload_manual import Harness, conf, tunnel
from test_reload_stopping import _stoppable, _turns

from tunsec import daemon as daemon_module
from tunsec import reload_cut
from tunsec.dataplane import client, pipe
from tunsec.dataplane.pipe import Direction

OTHERS = 0xC0010002   # the SPI tunnel late (n = 2) is configured with, held by another SA first


async def _others_inbound_sa(h: Harness) -> None:
    """An inbound SA of SPI OTHERS that is not the manual service's (as an IKE Child SA's would be): larval
    by GETSPI, then keyed by UPDATE, as the IKE service installs one."""
    template = h.daemon.manual.plans[0].inbound
    theirs = dataclasses.replace(template, spi=OTHERS)
    await h.worker.request(lambda r: pipe.GetSpi(r, OTHERS, OTHERS))
    await h.worker.request(lambda r: pipe.Update(r, theirs))


async def _late_reload_held(tmp_path: Path) -> tuple[Harness, asyncio.Event, asyncio.Future[Any]]:
    """A started Harness (tunnel keep), the other SA in, and a `tunsec reload` adding tunnel late
    (spi_in OTHERS): the worker applies late's GETSPI (refusing it: the SPI is taken) but its answer waits."""
    h = Harness(tmp_path, conf(tmp_path, tunnel("keep", 1)))
    await h.start()
    _stoppable(h)
    h.worker.gone = False   # type: ignore[attr-defined]  # as WorkerClient's: running
    await _others_inbound_sa(h)
    reached, gate = asyncio.Event(), asyncio.Event()

    def hold(msg: pipe.Message) -> Any:
        if isinstance(msg, pipe.GetSpi) and msg.lo == OTHERS:
            reached.set()
            return gate.wait()
        return None
    h.worker.hold = hold
    h.path.write_text(conf(tmp_path, tunnel("keep", 1), tunnel("late", 2)))
    reload = asyncio.ensure_future(h.daemon._command(b'{"cmd": "reload"}'))
    await reached.wait()
    return h, gate, reload


def _others_left(h: Harness) -> bool:
    return (OTHERS, Direction.IN) in h.sas()


def test_a_reload_cut_by_the_stop_leaves_another_sas_inbound_spi_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop cuts the reload while late's GETSPI (refused by the worker: the SPI is another SA's) waits for
    its answer.  The undo must not delete the other SA.  On main: DELETE(0xc0010002, in) is sent and the other
    SA is gone."""
    monkeypatch.setattr(daemon_module, "RELOAD_STOP_WAIT", 0.05, raising=False)
    monkeypatch.setattr(reload_cut, "RELOAD_CUT_WAIT", 0.5, raising=False)

    async def body() -> dict[str, Any]:
        h, gate, reload = await _late_reload_held(tmp_path)
        try:
            assert _others_left(h)
            await h.daemon.shutdown()
            await reload
            gate.set()
            await _turns()
            deletes = [m for m in h.worker.log if isinstance(m, pipe.Delete) and m.spi == OTHERS]
            return {"others left": _others_left(h), "deletes of its SPI": len(deletes)}
        finally:
            gate.set()
            h.stop()

    assert asyncio.run(body()) == {"others left": True, "deletes of its SPI": 0}


def test_a_getspi_unanswered_in_time_leaves_another_sas_inbound_spi_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stop: a plain reload whose GETSPI gets no answer within REQUEST_TIMEOUT (a busy worker; refused,
    the SPI being another SA's).  The attempt fails, and its undo must not delete the other SA.  On main:
    DELETE(0xc0010002, in) is sent and the other SA is gone while tunsec runs on."""
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.2, raising=False)

    async def body() -> dict[str, Any]:
        h, gate, reload = await _late_reload_held(tmp_path)
        try:
            answer = await reload
            gate.set()
            await _turns()
            return {"ok": answer.get("ok"), "others left": _others_left(h)}
        finally:
            gate.set()
            h.stop()

    assert asyncio.run(body()) == {"ok": False, "others left": True}
