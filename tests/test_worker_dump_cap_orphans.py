"""Review revworker2 F3: GETSPIs given up on leave larval SAs in a healthy worker for good, outside dump_cap.

h/fixworker (review revworker F5) holds a DUMP answer to worker_distrust.dump_cap: 128 KiB plus 512
bytes per SA or policy the services count (IkeService: worker_claims.entries: the Child SAs, lingering
inbound SAs, policies, and SPI_POOL + SPI_POOL_BURST + 2 x half-open larval SAs); past it `tunsec
status`, every scrape and the accounting sample fail with ENOSPC.  But the SPI pool asks its GETSPIs
with larval_seconds=0 (no larval timeout: spis.py _start_refill) and gives them up after
REQUEST_TIMEOUT (GiveUp); an answer that comes later is dropped as late (client.py), and the larval
SA the worker made for it is never deleted by anyone: nothing counts it, nothing times it out, it
stays until the worker restarts.  A worker that is slow, not lying (a burst on a loaded 2-core box: 10 s
without an answer), so leaks up to SPI_POOL + SPI_POOL_BURST (288) SAs per episode, and on a small
gateway some 1,200 of them are past the cap's slack: from then on a DUMP of a healthy worker fails,
and `tunsec status` and metrics with it, until the worker is restarted.

A real IkeService over the in-process worker (the C fast path's SAD, test_ikeservice_peers.connected)
whose GETSPI answers are held past a shortened REQUEST_TIMEOUT (the worker applied them: the larval
SAs exist), then released, as a slow worker's come.  The DUMP is the worker's own (Worker._dump, the
bytes it would write on the pipe), measured against dump_cap([the service]).
"""

from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_peers import connected, run

from tunsec import worker_distrust
from tunsec.dataplane import pipe
from tunsec.services.ike import spis

SLOW_EPISODES = 90   # each: the pool emptied, its refill's GETSPIs answered after the timeout


def _larval(gw: object) -> set[int]:
    return {sa.spi for sa in gw.worker.dp.sas() if sa.state == "larval"}   # type: ignore[attr-defined]


async def _slow_refill(gw: object, taken: list[int]) -> None:
    """The pool emptied (its SPIs taken, as a burst of IKE_AUTHs would), the refill's GETSPIs answered
    only after the pool gave them up."""
    svc = gw.service   # type: ignore[attr-defined]
    pool = svc.spi_pool
    release = asyncio.Event()
    gw.worker.hold = lambda m: release.wait() if isinstance(m, pipe.GetSpi) else None   # type: ignore[attr-defined]
    while pool.spis:
        taken.append(pool.take())
    await asyncio.sleep(3 * spis.REQUEST_TIMEOUT)   # given up (GiveUp cancels them)
    gw.worker.hold = None   # type: ignore[attr-defined]
    release.set()           # the late answers: dropped
    for _ in range(10):
        await asyncio.sleep(0)
    await pool.refill()


def test_getspis_answered_late_leave_no_larval_sa_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on main: after one slow refill the worker holds larval SAs that neither the pool nor any
    negotiation has (the late answers' SPIs), and nothing removes them."""
    monkeypatch.setattr(spis, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        gw = await connected(1)
        taken: list[int] = []
        await _slow_refill(gw, taken)
        await gw.settle()
        orphans = _larval(gw) - set(gw.service.spi_pool.spis) - set(taken)
        assert not orphans, f"{len(orphans)} larval SAs in the worker that nobody holds or will delete"

    run(body())


def test_a_healthy_but_slow_workers_dump_stays_within_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on main: after SLOW_EPISODES slow refills a gateway with one Child SA has a worker whose
    DUMP (its own bytes, as it writes them) is larger than dump_cap: `tunsec status` would fail
    with ENOSPC, for good.  The SPIs the test took are handed back (DELETE), as the engine does with
    those it does not use, so only what the late answers left remains."""
    monkeypatch.setattr(spis, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        gw = await connected(1)
        for _ in range(SLOW_EPISODES):
            taken: list[int] = []
            await _slow_refill(gw, taken)
            for spi in taken:
                await gw.worker.request(lambda r, spi=spi: pipe.Delete(r, spi=spi, direction=pipe.Direction.IN))
        await gw.settle()
        answer = gw.worker.worker._dump(pipe.Dump(1))
        size, cap = sum(map(len, answer)), worker_distrust.dump_cap([gw.service])
        assert size <= cap, f"a healthy worker's DUMP is {size} bytes, the cap {cap}: ENOSPC " \
                            f"({len(_larval(gw))} larval SAs, the pool holds {len(gw.service.spi_pool.spis)})"

    run(body())
