"""The relay of a worker's stderr (tunsec.dataplane.stderr_relay) on its own: a writer that floods
costs the control process no more than BYTES read a window, and nothing is lost uncounted."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from tunsec import logs
from tunsec.dataplane import stderr_relay


def test_past_bytes_a_window_reading_pauses_until_the_window_ends(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(stderr_relay, "CHUNK", 4096)
    monkeypatch.setattr(stderr_relay, "BYTES", 4096)
    monkeypatch.setattr(stderr_relay, "WINDOW", 0.1)
    monkeypatch.setattr(stderr_relay, "LINES", 100)
    caplog.set_level(logging.INFO)
    lines = 400
    r, w = os.pipe()
    os.write(w, (b"x" * 99 + b"\n") * lines)   # 40000 bytes: within the pipe's buffer
    os.close(w)

    async def run() -> tuple[bool, bool, int]:
        relay = stderr_relay.StderrRelay(r, 4321, "text")
        for _ in range(100):
            await asyncio.sleep(0)
            if relay._paused:
                break
        paused_early = relay._paused and not relay.done.is_set()   # one CHUNK read, the rest waits
        await asyncio.wait_for(relay.done.wait(), 60)
        return paused_early, relay._fd is None, relay.dropped
    paused_early, closed, dropped = asyncio.run(run())
    passed = [rec for rec in caplog.records if rec.getMessage() == "x" * 99]
    assert paused_early and closed
    assert passed and all(rec.process == 4321 for rec in passed)
    assert len(passed) + dropped == lines, (len(passed), dropped)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_line_in_no_format_of_the_worker_is_a_warning_as_text(fmt: str) -> None:
    line = stderr_relay.parse(b'Traceback (most recent call last): {"level": 1}', fmt)
    assert line == stderr_relay.Line(logging.WARNING, stderr_relay.UNFORMATTED,
                                     'Traceback (most recent call last): {"level": 1}')
    assert stderr_relay.parse(b"[" * 5000, "json").logger == stderr_relay.UNFORMATTED   # too deep: text
    # a logger name the worker chose is kept only if it is one of tunsec's shape
    assert stderr_relay.parse(b'{"level": "info", "logger": "x\\u001b[2J", "msg": "m"}', "json").logger == \
        "tunsec.worker"


def test_under_systemd_a_relayed_line_is_the_worker_s_with_its_priority(caplog: pytest.LogCaptureFixture) -> None:
    """The control process's journald format (no timestamp, syslog priority), the worker's name and pid."""
    caplog.set_level(logging.INFO)
    r, w = os.pipe()
    os.write(w, b"2026-12-04 00:00:00,000 tunsec-worker[1] ERROR cannot sandbox the worker\n")
    os.close(w)

    async def run() -> None:
        relay = stderr_relay.StderrRelay(r, 4321, "text")
        await asyncio.wait_for(relay.done.wait(), 30)
    asyncio.run(run())
    [record] = [rec for rec in caplog.records if rec.process == 4321]
    assert logs.TextFormatter("tunsec", journald=True).format(record) == \
        "<3>tunsec-worker[4321] ERROR cannot sandbox the worker"
