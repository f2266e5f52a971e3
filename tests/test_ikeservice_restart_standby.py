"""Review revnonce R2: a rekey responder's held-back outbound SA (ChildState.standby) and a worker
restart.  The daemon starts the new worker, then reinstalls the services one after the other
(daemon._start_worker, services.base.reinstall: the manual service first); until the IKE service's
worker_restarted cancels its timers, a standby timer that fires ADDs that rekey's outbound SA into
the new worker, where the Child SA is then rekeyed anew and its removal deletes nothing (its lineage
is the old worker's generation): an orphan SA until the next restart.

Two real IkeServices with in-process workers (test_ikeservice_restart_spis.RestartablePair); B
answers A's rekey, its answer is lost (B holds the new outbound SA back), B's worker dies (the daemon
tells the services at once: worker_died), its successor starts, and B's standby timers would fire
before B's IKE service is reinstalled.  And the daemon's watcher (its own _watch_worker, an
in-process worker: test_manual_reload_restart.Restarting) tells every service before it starts the
new worker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_ikeservice_peers import run
from test_ikeservice_rekey import RecordingWorker, fire_timers
from test_ikeservice_restart_spis import RestartablePair, pair_up
from test_manual_reload_restart import Restarting, until
from test_reload_manual import conf, tunnel

from tunsec.conf.config import load_config
from tunsec.dataplane.pipe import Direction
from tunsec.runtime import resolved
from tunsec.services.manual import ManualService
from tunsec.statedir import init_state_dir


async def _answer_lost(pair: RestartablePair) -> None:
    """What A sends reaches B; what B sends is lost."""
    for _ in range(20):
        while pair.wire:
            side, data, port = pair.wire.pop(0)
            if side == "a":
                pair.deliver(side, data, port)
        for _ in range(5):
            await asyncio.sleep(0)


def test_a_standby_timer_firing_before_the_ike_service_is_reinstalled_leaves_no_orphan_sa() -> None:
    async def body() -> None:
        pair = await pair_up()
        b = pair.svc["b"]
        pair.rekey("a")
        await _answer_lost(pair)
        (held,) = [s for s in b.children.values() if s.standby is not None]
        standby_spi = held.spi_out
        # B's worker dies (the daemon tells the services), the new one is up; while the services before
        # IKE reinstall, B's standby timers would run out (the first waits for the peer's
        # retransmissions, the second ADDs)
        b.worker_died()
        pair.wire.clear()
        pair.workers["b"] = pair.current["b"] = RecordingWorker("b", pair)
        for _ in range(3):
            fire_timers(b)
            for _ in range(10):
                await asyncio.sleep(0)
        await b.worker_restarted()
        await pair.settle()
        outs = {s.spi for s in pair.workers["b"].dp.sas() if s.direction is Direction.OUT}
        ours = {s.spi_out for s in b.children.values() if s.out_installed}
        assert outs <= ours, (
            f"B's new worker holds outbound SAs no Child SA of B's has: {sorted(map(hex, outs - ours))} "
            f"(the held-back one: {standby_spi:#x})")

    run(body())


def test_the_watcher_tells_every_service_of_the_death_before_it_starts_the_new_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before the fix: nothing told the services before their reinstall (worker_restarted)."""
    told: list[int] = []   # how many workers the daemon had started when it told the manual service
    monkeypatch.setattr(ManualService, "worker_died", lambda self: told.append(len(d.workers)), raising=False)
    path = tmp_path / "tunsec.conf"
    path.write_text(conf(tmp_path, tunnel("t0", 0)))
    init_state_dir(tmp_path / "state")
    d = Restarting(resolved(load_config(path)))

    async def body() -> None:
        d.manual.prepare()
        await d._start_worker()
        watcher = asyncio.create_task(d._watch_worker())
        try:
            d.workers[0].crash()
            assert await until(lambda: len(d.workers) == 2 or watcher.done())
            async with d._reloading:   # the reinstall is done
                pass
        finally:
            d.stopping.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            d.manual.close()
        assert told == [1], told

    asyncio.run(body())
