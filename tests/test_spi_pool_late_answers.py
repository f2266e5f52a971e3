"""The SPI pool hands back the SPIs of GETSPIs it gave up on when their answers come late (review
revworker2 F3), counted (status ike_held.spis_late_returned, metric tunsec_ike_spis_late_returned).

A real IkeService over the in-process worker (test_ikeservice_peers.connected), the GETSPI answers
held past a shortened REQUEST_TIMEOUT and then released (test_worker_dump_cap_orphans._slow_refill);
a worker restarted meanwhile (the pool's generation bumped) gets no DELETE for the old one's SPIs.
"""

from __future__ import annotations

import pytest
from test_ikeservice_peers import connected, run
from test_worker_dump_cap_orphans import _larval, _slow_refill

from tunsec.services.ike import spis


def test_late_getspi_answers_are_deleted_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before the change: nothing counted, the late answers' larval SAs stay."""
    monkeypatch.setattr(spis, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        gw = await connected(1)
        pool = gw.service.spi_pool
        before = _larval(gw)
        taken: list[int] = []
        await _slow_refill(gw, taken)
        await gw.settle()
        assert pool.late_returned == len(taken) > 0
        assert not (_larval(gw) - before - set(pool.spis) - set(taken))

    run(body())


def test_late_answers_of_a_replaced_worker_are_left_alone() -> None:
    """A late answer asked of an older worker (generation) names none of the current one's SAs."""
    async def body() -> None:
        gw = await connected(1)
        pool = gw.service.spi_pool
        spi = pool._range()[0] | 5
        pool._late_spi(pool.generation - 1, [spis.pipe.Reply(1, spis.pipe.MsgType.GETSPI, spis.pipe.Errno.OK,
                                                              spi=spi)])
        pool._late_spi(pool.generation, [spis.pipe.Reply(2, spis.pipe.MsgType.GETSPI, spis.pipe.Errno.OK,
                                                          spi=0x00001234)])   # outside the range asked
        assert pool.late_returned == 0

    run(body())
