"""The SPI pool after the worker refused GETSPI (its SAD full): a datagram does not ask again each time.

Every datagram under any IKE SA's SPIs that found the pool empty used to send a whole batch of
GETSPIs (up to SPI_POOL + SPI_POOL_BURST) and raise the SPI barrier, however often the worker
refused: junk that a half-open SA's peer sends under the SPIs its one IKE_SA_INIT got, unencrypted,
which the engine then drops, was enough (review revinit F2).  Now a datagram asks again at most once
every REFUSED_RETRY; a real need (take) still asks each time.  A real IkeService over the
in-process worker (see test_ikeservice_peers).
"""

from __future__ import annotations

import asyncio
import time

from test_ikeservice_peers import Gateway, run, site_ip
from test_ikeservice_spis import _of_sa

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno
from tunsec.services.ike import spis


async def _refusing_gateway(asked: list[int]) -> Gateway:
    """Site 0 up; the worker then refuses every GETSPI (counted in ``asked``), the pool is empty, and
    site 1 (the attacker, from its own address) has a half-open IKE SA it never authenticates."""
    gw = Gateway(2)
    await gw.start()
    gw.connect(0)
    await gw.settle()
    worker = gw.worker.worker
    real = worker.handle_datagram

    def refusing(data: bytes) -> list[bytes]:
        msg = pipe.decode(data)
        if isinstance(msg, pipe.GetSpi):
            asked.append(msg.req_id)
            return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.ENOSPC))]
        return list(real(data))
    worker.handle_datagram = refusing  # type: ignore[method-assign]
    gw.service.spi_pool.spis.clear()
    gw.connect(1)
    (init,) = gw.sites[1].datagrams_to_send(time.monotonic())
    gw.service.receive(init.data, (site_ip(1), 500))
    gw.service._pump()
    for _ in range(20):
        await asyncio.sleep(0)
    assert gw.service.endpoint.half_open == 1
    return gw


async def _junk(gw: Gateway, n: int) -> None:
    junk = _of_sa(gw, 1)   # the half-open SA's SPIs, nothing its peer encrypted: the engine drops each
    for _ in range(n):
        gw.service.receive(junk, (site_ip(1), 4500))
        gw.service._pump()
        for _ in range(5):
            await asyncio.sleep(0)   # the batch is answered (refused) before the next datagram


def test_junk_under_a_half_open_sas_spis_does_not_ask_a_refusing_worker_for_spis_again_and_again() -> None:
    async def body() -> None:
        asked: list[int] = []
        gw = await _refusing_gateway(asked)
        pool = gw.service.spi_pool
        now = [time.monotonic()]   # the refusals so far were stamped on the real clock
        pool.clock = lambda: now[0]
        before = len(asked)
        await _junk(gw, 100)
        assert len(asked) == before, f"{len(asked) - before} GETSPIs for 100 junk datagrams"
        # the worker may have room again: a datagram REFUSED_RETRY later asks once more, one batch
        now[0] += spis.REFUSED_RETRY
        await _junk(gw, 100)
        assert 0 < len(asked) - before <= pool.target
    run(body())
