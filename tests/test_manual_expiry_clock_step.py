"""Review revmanual F1: a manual key removed at its hard ``life_time`` comes back after the wall
clock is stepped back (an NTP correction, a VM restored, an RTC-less box booting with an old
clock): the persisted ``time`` expiry is ignored and the time left is computed again from the
key's first use on the wall clock, which now says the key was barely used.

docs/configuration.md promises that an SA removed at a hard limit "stays removed, also in a worker
restarted after a crash and after a restart of tunsec (the limit reached is kept in the key's state
file), until a reload replaces the tunnel's keys or raises that limit"."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from test_manual_hard_expiry import IN_SPI, OUT_SPI, tunnel_status, with_limit
from test_reload_manual import Harness, conf

from tunsec.seqstate import state_file

T0 = 1_800_000_000.0


def test_a_key_past_its_life_time_stays_out_after_the_clock_is_stepped_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed at t0 with life_time = 3600; a restart at t0 + 3600 finds it past its life_time and
    books it expired (``time``, in the key's state file).  The clock is then stepped back by 50
    minutes (the wall clock says t0 + 600): the restart after that must still leave the key out,
    the limit (3600) being what it was when it was reached."""
    now = [T0]
    monkeypatch.setattr("tunsec.services.manual.time.time", lambda: now[0])
    text = conf(tmp_path, with_limit("life_time = 3600"))
    running: list[Harness] = []

    async def start_at(t: float) -> Harness:   # a restart: the one before ends first
        now[0] = T0 + t
        for old in running:
            old.stop()
        h = Harness(tmp_path, text)
        running.append(h)
        await h.start()
        return h

    async def body() -> None:
        await start_at(0)
        h = await start_at(3600)
        assert h.sas() == set()
        out_key = bytes.fromhex(conf_key(text, "key_out"))
        doc = json.loads(state_file(tmp_path / "state", out_key).read_text())
        assert doc["expired"] == {"reason": "time", "limit": 3600}   # booked: the limit reached is on disk

        h = await start_at(600)   # the same state, the same config, the wall clock 50 minutes behind
        installed = [(m.sa.spi, m.sa.hard.seconds) for m in h.requests_for(OUT_SPI) + h.requests_for(IN_SPI)]
        assert installed == [], f"a key past its life_time installed again, with (SPI, seconds left) {installed}"
        t, _ = await tunnel_status(h)
        assert sorted((e["direction"], e["reason"]) for e in t["expired"]) == [("in", "time"), ("out", "time")]

    asyncio.run(body())


def conf_key(text: str, name: str) -> str:
    """The hex of a key setting (``key_out = 0x...``) in the configuration text."""
    m = re.search(rf"\b{name} = 0x([0-9a-f]+)", text)
    assert m is not None
    return m[1]
