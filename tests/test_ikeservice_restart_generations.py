"""What an older worker's SAs are named by, across any number of worker restarts.

- SPI generations (SpiPool, GENERATIONS parts of the GETSPI range) come round again after 16
  restarts: a Child SA whose rekeys the peer never answered still holds its first worker's SPI; then
  that SPI is retired, never taken for the current worker's, and its DELETE never reaches the new
  worker, which may have handed that very number to another Child SA.
- A removal queued before a restart (the peer's DELETE of a Child SA, handled while another change
  held the lock) deletes nothing in the new worker: there the peer may have reused its SPI for its new
  Child SA, which is named by the same (SPI, peer) (Lineage.worker).
- (K5) A rekey held for an SPI (as the restart's rekeys are) follows its IKE SA's successor.
Two real IkeServices with in-process workers (test_ikeservice_restart_spis.RestartablePair)."""

from __future__ import annotations

import asyncio

from test_ikeservice_peers import run
from test_ikeservice_rekey import RecordingWorker
from test_ikeservice_restart_spis import RestartablePair, pair_up

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.services.ike.spis import GENERATIONS


async def restart_handing_out(pair: RestartablePair, side: str, spi: int | None) -> list[tuple[str, bytes, int]]:
    """pair.restart, the new worker's first GETSPI answered with ``spi`` (if not None)."""
    in_flight = list(pair.wire)
    pair.wire.clear()
    pair.probing = False
    new = RecordingWorker(side, pair)
    if spi is not None:
        real, calls = new.dp.getspi, iter(range(1 << 20))
        new.dp.getspi = lambda lo=256, hi=0xFFFFFFFF: (  # type: ignore[method-assign]
            real(spi, spi) if next(calls) == 0 else real(lo, hi))
    pair.workers[side] = pair.current[side] = new
    await pair.svc[side].worker_restarted()
    for _ in range(5):
        await asyncio.sleep(0)
    return in_flight


def deletes(pair: RestartablePair, side: str, spi: int) -> list[pipe.Delete]:
    return [m for m in pair.workers[side].log if isinstance(m, pipe.Delete) and m.spi == spi]


def test_an_spi_that_survives_more_restarts_than_there_are_generations_is_never_current() -> None:
    """A's Child SA keeps its first worker's inbound SPI through GENERATIONS + 1 restarts (B never
    sees A's rekeys).  At the GENERATIONS-th its range is the current one's again: the SPI is not
    issued(), the new worker's GETSPI answer with that same number is not taken, and when the stale
    Child SA is deleted no DELETE of the number reaches the worker (where it would remove the SA the
    worker gave the number to)."""
    async def body() -> None:
        pair = await pair_up()
        a = pair.svc["a"]
        sa = pair.ike("a")
        (child,) = sa.children
        stale = child.spi_in
        for n in range(1, GENERATIONS + 2):
            forced = stale if n == GENERATIONS else None
            await restart_handing_out(pair, "a", forced)   # its rekey's CREATE_CHILD_SA is lost
            assert [c.spi_in for c in sa.children if c.unique_id == child.unique_id] == [stale]
            assert not a.spi_pool.issued(stale), n
            if n == GENERATIONS:
                assert a.spi_pool.retired_refused == 1
                assert stale not in a.spi_pool.spis
                await pair.settle()
                # the worker's larval SA under that number, not used, is handed back
                assert deletes(pair, "a", stale) and stale not in pair.sa_spis("a", Direction.IN)
                pair.workers["a"].log.clear()
        # the new worker issues the number after all (as another Child SA's, here a larval one): the
        # stale Child SA's removal must not DELETE it
        pair.workers["a"].dp.getspi(stale, stale)
        sa.delete_child(child.unique_id)
        a._pump()
        await pair.settle()
        assert deletes(pair, "a", stale) == []
        assert stale in {s.spi for s in pair.workers["a"].dp.sas()}
    run(body())


def test_a_removal_queued_before_a_restart_deletes_nothing_in_the_new_worker() -> None:
    """B deletes the Child SA while A's changes are held (another change ahead of it, waiting for the
    old worker); A's worker restarts, then B creates the Child SA again, reusing its old inbound SPI.
    When A's queued removal of the old Child SA runs, it sends no DELETE to the new worker: not of
    the outbound SA (the same SPI and peer as the new one's), nor of the old inbound SPI."""
    async def body() -> None:
        pair = await pair_up()
        a = pair.svc["a"]
        (old,) = a.children.values()
        await a._changes.acquire()   # what holds the lock ahead of the removal
        try:
            for ch in pair.ike("b").children:
                pair.ike("b").delete_child(ch.unique_id)
            pair.svc["b"]._pump()
            while pair.wire:   # not settle: it waits for A's tasks, the removal among them
                pair.deliver(*pair.wire.pop(0))
                for _ in range(5):
                    await asyncio.sleep(0)
            assert pair.ike("a").children == []   # A's ChildSaDown is handled, its removal queued
            await restart_handing_out(pair, "a", None)
        finally:
            a._changes.release()
        await pair.settle()
        assert deletes(pair, "a", old.spi_out) == [] and deletes(pair, "a", old.spi_in) == []
        # B's new Child SA takes its old inbound SPI again (B's worker removed that SA, the number is free)
        b = pair.svc["b"]
        pair.workers["b"].dp.getspi(old.spi_out, old.spi_out)
        b.spi_pool.spis.appendleft(old.spi_out)
        b.initiate("tun", "net")
        await pair.settle()
        (new,) = a.children.values()
        assert new.spi_out == old.spi_out
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())


def test_a_rekey_held_for_an_spi_follows_its_ike_sa_rekeyed_meanwhile() -> None:
    """(K5) A's Child SA rekey waits for an inbound SPI (the pool empty, the GETSPI answers held
    back); meanwhile B rekeys the IKE SA, whose Child SA moves to the successor.  When the SPIs come,
    the held rekey runs in the successor (found by the IKE SA's handle), not dropped with the old SA."""
    async def body() -> None:
        pair = await pair_up()
        a = pair.svc["a"]
        old_sa = pair.ike("a")
        (child,) = old_sa.children
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pair.workers["a"].hold = lambda msg: gate if isinstance(msg, pipe.GetSpi) else None
        a.spi_pool.spis.clear()
        assert a._child_of_sa(child.spi_in, Direction.IN) is not None
        a.expired(child.spi_in, Direction.IN, hard=False)   # a soft EXPIRE: rekey it, with an SPI to come
        assert a.spi_pool.starved
        pair.ike("b").rekey()
        pair.svc["b"]._pump()
        # the IKE rekey goes straight into A's engine (a datagram of port 500 is not held for SPIs)
        while pair.wire:
            side, data, _port = pair.wire.pop(0)
            pair.deliver(side, data, 500)
            for _ in range(5):
                await asyncio.sleep(0)
        assert old_sa.state.value == "rekeyed" and pair.ike("a") is not old_sa
        assert [c.unique_id for c in pair.ike("a").children] == [child.unique_id]
        pair.workers["a"].hold = None
        gate.set_result(None)
        await pair.settle()
        (now,) = pair.ike("a").children
        assert now.spi_in != child.spi_in   # rekeyed
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())
