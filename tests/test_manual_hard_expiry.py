"""A manual SA at its hard lifetime, through the daemon's manual service and the worker's request
and event handling (in process, the real C fast path): the worker removes the SA itself, the
service books it expired (manual keys cannot be renewed), claims the ACQUIREs its policy then
raises without logging each, does not bring the SA back when a new worker starts, and installs
it again only once the config replaces the tunnel's keys."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from test_ikeservice_peers import InProcessWorker, ipv4_udp
from test_reload_manual import KEY_A2, Harness, conf, sa_pair, tunnel

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction
from tunsec.services.manual import sa_key
from tunsec.status import render

OUT_SPI, IN_SPI = 0xC0020001, 0xC0010001
PACKET = ipv4_udp("10.1.0.5", "10.2.1.5", b"x" * 100)   # 128 bytes inside: 7 fit under life_bytes


def limited(key: str | None = None) -> str:
    text = tunnel("site", 1) if key is None else tunnel("site", 1, key)
    return text.replace("    key_out =", "    life_bytes = 1000\n    key_out =")


def events_to_daemon(h: Harness) -> None:
    h.worker.worker.send = lambda data: h.daemon._on_event(pipe.decode(data))


def test_a_manual_sa_at_its_hard_lifetime_is_removed_and_stays_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, limited()))
        events_to_daemon(h)
        await h.start()
        assert h.sas() == sa_pair(1)
        drops = [h.worker.dp.outbound(PACKET)[2] for _ in range(9)]
        assert drops == [Drop.NONE] * 7 + [Drop.LIFETIME] * 2
        h.worker.worker.drain_events()
        assert h.sas() == {(IN_SPI, Direction.IN)}   # removed by the worker, no DELETE sent
        assert not any(isinstance(m, pipe.Delete) for m in h.worker.log)
        svc = h.daemon.manual
        assert set(svc.expired) == {(OUT_SPI, Direction.OUT, svc.plans[0].outbound.remote)}
        assert any("reached its hard bytes limit; removed" in r.getMessage() for r in caplog.records)

        # its traffic: dropped (no_sa), never sent; the ACQUIRE is the manual service's, not logged as unowned
        caplog.clear()
        assert h.worker.dp.outbound(PACKET)[2] is Drop.NO_SA
        h.worker.worker.drain_events()
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]

        # a new worker (the old one died): the expired SA is not installed again, the rest is
        h.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        h.daemon.worker = h.worker  # type: ignore[assignment]
        events_to_daemon(h)
        await svc.worker_restarted()
        assert h.sas() == {(IN_SPI, Direction.IN)}
        assert h.policy_ids() == {p.id for p in svc.plans[0].policies}
        assert h.worker.dp.outbound(PACKET)[2] is Drop.NO_SA   # nothing goes out in clear either

        # new keys in the config: the tunnel is replaced, both SAs are there again
        answer = await h.reload(conf(tmp_path, limited(KEY_A2)))
        assert answer["ok"] and answer["message"] == "manual tunnels replaced: site"
        assert h.sas() == sa_pair(1) and not svc.expired
        assert h.worker.dp.outbound(PACKET)[2] is Drop.NONE

    asyncio.run(body())


async def tunnel_status(h: Harness) -> tuple[dict[str, Any], str]:
    """The tunnel's part of the daemon's answer to `tunsec status`, and the CLI's text of it."""
    # as WorkerClient's (status reads them)
    h.worker.pid, h.worker.malformed, h.worker.late, h.worker.dump_overflows = 4242, 0, 0, 0  # type: ignore[attr-defined]
    h.worker.stderr_dropped = 0  # type: ignore[attr-defined]
    answer = await h.daemon._command(b'{"cmd": "status"}')
    assert answer["ok"], answer
    [t] = answer["status"]["tunnels"]
    return t, render(answer["status"])


def test_status_shows_a_manual_sa_that_expired_until_new_keys_replace_it(tmp_path: Path) -> None:
    """The worker removed the outbound SA at its hard bytes limit: `tunsec status` still names it, as
    expired, why, and what brings the tunnel back; after a reload with new keys it is a live SA again."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, limited()))
        events_to_daemon(h)
        await h.start()
        t, _ = await tunnel_status(h)
        assert t["expired"] == [] and {sa["spi"] for sa in t["sas"]} == {f"{IN_SPI:08x}", f"{OUT_SPI:08x}"}
        for _ in range(8):
            h.worker.dp.outbound(PACKET)
        h.worker.worker.drain_events()
        assert h.sas() == {(IN_SPI, Direction.IN)}

        t, text = await tunnel_status(h)
        assert [sa["spi"] for sa in t["sas"]] == [f"{IN_SPI:08x}"]
        assert t["expired"] == [{"spi": f"{OUT_SPI:08x}", "direction": "out", "reason": "bytes",
                                 "hint": "manual keys cannot be renewed: reload with new keys"}]
        assert (f"  out SPI {OUT_SPI:08x} expired: hard bytes limit reached, removed, traffic dropped; "
                "manual keys cannot be renewed: reload with new keys") in text.splitlines()

        answer = await h.reload(conf(tmp_path, limited(KEY_A2)))
        assert answer["ok"], answer
        t, text = await tunnel_status(h)
        assert t["expired"] == [] and "expired" not in text
        assert {(sa["spi"], sa["direction"]) for sa in t["sas"]} == {(f"{IN_SPI:08x}", "in"),
                                                                     (f"{OUT_SPI:08x}", "out")}

    asyncio.run(body())


def with_limit(line: str) -> str:
    """The tunnel with one more lifetime setting (``life_time = 3600``)."""
    return tunnel("site", 1).replace("    key_out =", f"    {line}\n    key_out =")


def test_a_restarted_daemon_does_not_install_a_key_past_its_hard_limit_until_the_limit_is_raised(
        tmp_path: Path) -> None:
    """The limit the worker removed the SA at is kept in the key's state file: a new daemon (same
    state_dir, same config) leaves the SA out and status says why; a config that raises the limit
    is the operator's call and brings it back."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, limited()))
        events_to_daemon(h)
        await h.start()
        for _ in range(8):
            h.worker.dp.outbound(PACKET)
        h.worker.worker.drain_events()
        assert h.sas() == {(IN_SPI, Direction.IN)}

        await h.daemon.manual.shutdown()   # as the daemon's exit: the expiry's write (a task) is done
        h.stop()
        again = Harness(tmp_path, conf(tmp_path, limited()))   # tunsec restarted: a new process's state
        await again.start()
        assert again.sas() == {(IN_SPI, Direction.IN)} and not again.adds(OUT_SPI)
        t, _ = await tunnel_status(again)
        assert [(e["spi"], e["reason"]) for e in t["expired"]] == [(f"{OUT_SPI:08x}", "bytes")]

        again.stop()
        raised = Harness(tmp_path, conf(tmp_path, limited().replace("life_bytes = 1000", "life_bytes = 2000")))
        await raised.start()
        assert raised.sas() == sa_pair(1) and not raised.daemon.manual.expired

    asyncio.run(body())


def test_life_time_counts_from_the_keys_first_use_not_from_each_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed at t0 with life_time = 3600 (rekey_time = 3000): a restart at t0 + 2400 installs both
    SAs with 1200 s (and 600 s) left, one at t0 + 3600 installs neither, and status says time."""
    now = [1_800_000_000.0]
    monkeypatch.setattr("tunsec.services.manual.time.time", lambda: now[0])
    text = conf(tmp_path, with_limit("life_time = 3600\n    rekey_time = 3000"))

    running: list[Harness] = []

    async def start_at(t: float) -> Harness:   # a restart: the one before ends first
        now[0] = 1_800_000_000.0 + t
        for old in running:
            old.stop()
        h = Harness(tmp_path, text)
        running.append(h)
        await h.start()
        return h

    async def body() -> None:
        h = await start_at(0)
        assert {(m.sa.hard.seconds, m.sa.soft.seconds) for m in h.requests_for(OUT_SPI) + h.requests_for(IN_SPI)} \
            == {(3600, 3000)}
        h = await start_at(2400)
        assert {(m.sa.hard.seconds, m.sa.soft.seconds) for m in h.requests_for(OUT_SPI) + h.requests_for(IN_SPI)} \
            == {(1200, 600)}
        h = await start_at(3600)
        assert h.sas() == set() and not h.requests_for(OUT_SPI) and not h.requests_for(IN_SPI)
        t, _ = await tunnel_status(h)
        assert sorted((e["direction"], e["reason"]) for e in t["expired"]) == [("in", "time"), ("out", "time")]

    asyncio.run(body())


def test_a_hard_expiry_while_a_refill_writes_the_same_file_waits_for_it_and_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The worker removes the outbound SA at its hard limit while a refill of that SA is writing the
    key's state file (in a thread, stopped here in its fsync): the expiry's write waits for the
    refill's, then the file holds both, the refill's limit and `expired`, and a restart leaves the
    SA out.  Written at once (it was), both wrote one temporary file: a corrupt state file or a lost
    `expired`."""
    paused, go = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread() and not paused.is_set():
            paused.set()
            assert go.wait(60)
        real_fsync(fd)

    async def run() -> None:
        h = Harness(tmp_path, conf(tmp_path, limited()))
        events_to_daemon(h)
        await h.start()
        svc = h.daemon.manual
        remote = svc.plans[0].outbound.remote
        st = svc.seq[sa_key(OUT_SPI, Direction.OUT, remote)]
        before = st.limit
        monkeypatch.setattr(os, "fsync", fsync)
        svc.on_event(pipe.ReserveLow(spi=OUT_SPI, direction=Direction.OUT, remote=remote, needed=before + 1))
        assert await asyncio.to_thread(paused.wait, 60)
        for _ in range(8):
            h.worker.dp.outbound(PACKET)
        h.worker.worker.drain_events()   # the hard EXPIRE
        assert h.sas() == {(IN_SPI, Direction.IN)} and svc.expired
        for _ in range(20):   # whatever the event loop would run meanwhile
            await asyncio.sleep(0)
        assert "expired" not in json.loads(st.path.read_text())   # it waits for the refill's write
        go.set()
        while svc._background or svc._persisting:
            await asyncio.gather(*svc._background, *svc._persisting)
        doc = json.loads(st.path.read_text())
        assert doc["expired"] == {"reason": "bytes", "limit": 1000} and doc["limit"] == st.limit > before
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert sorted(p.name for p in st.path.parent.iterdir() if p.name.endswith(".tmp")) == []

        await svc.shutdown()
        h.stop()
        again = Harness(tmp_path, conf(tmp_path, limited()))   # tunsec restarted
        await again.start()
        assert again.sas() == {(IN_SPI, Direction.IN)} and not again.adds(OUT_SPI)
        again.stop()

    async def body() -> None:
        try:
            await run()
        finally:   # a failure above must not leave the refill's thread waiting
            go.set()

    asyncio.run(body())


def test_a_key_found_past_its_life_time_at_install_is_marked_off_the_loop_before_anything_goes_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart past life_time marks both SAs expired in their state files: the fsync of that mark
    runs on a thread, not the event loop (other peers' IKE waits otherwise), and the mark is in the
    file before the install sends the worker anything (its policies, which drop the traffic)."""
    now = [1_800_000_000.0]
    monkeypatch.setattr("tunsec.services.manual.time.time", lambda: now[0])
    text = conf(tmp_path, with_limit("life_time = 3600"))
    real_fsync = os.fsync
    fsyncs_on_loop: list[int] = []

    def fsync(fd: int) -> None:
        if threading.current_thread() is threading.main_thread():
            fsyncs_on_loop.append(fd)
        real_fsync(fd)

    async def body() -> None:
        h = Harness(tmp_path, text)
        await h.start()
        files = {sa.direction: h.daemon.manual.seq[sa_key(sa.spi, sa.direction, sa.remote)].path
                 for sa in (h.daemon.manual.plans[0].inbound, h.daemon.manual.plans[0].outbound)}
        h.stop()
        now[0] += 3600
        again = Harness(tmp_path, text)
        seen: list[tuple[str, set[str]]] = []   # each request, and the directions whose file holds the mark then

        def hold(msg: pipe.Message) -> None:
            seen.append((type(msg).__name__, {d.name for d, f in files.items() if "expired" in json.loads(
                f.read_text())}))
        again.worker.hold = hold
        again.daemon.manual.prepare()   # opening the state directory: the daemon's start, before IKE runs
        monkeypatch.setattr(os, "fsync", fsync)
        await again.daemon.manual.start()
        assert fsyncs_on_loop == []
        assert seen and {name for name, _ in seen} == {"SpdAdd"}   # the policies only: no SA of a spent key
        assert all(marked == {"IN", "OUT"} for _, marked in seen), seen
        assert {json.loads(f.read_text())["expired"]["reason"] for f in files.values()} == {"time"}
        again.stop()

    asyncio.run(body())
