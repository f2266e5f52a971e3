"""Inbound SPIs through the IKE service: no negotiation fails because the pool is empty.

The engine takes inbound SPIs synchronously from a pool the service keeps
topped up with GETSPI.  When the pool is empty (the service just started, or
a burst of negotiations used it up) an IKE_AUTH or CREATE_CHILD_SA request
waits for the refill instead of being answered TEMPORARY_FAILURE, and so does
a rekey this side starts.  A real
IkeService over the in-process worker (see test_ikeservice_peers).
"""

from __future__ import annotations

import asyncio
import struct

from test_ikeservice_peers import SHARED_SPI, Gateway, InProcessWorker, esp_open, run, site_ip

from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.services.ike import HELD_MAX, SPI_POOL


def failures(gw: Gateway, i: int) -> list[NegotiationFailed]:
    return [e for e in gw.site_events[i] if isinstance(e, NegotiationFailed)]


def test_ike_auth_waits_for_an_spi_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.service.spi_pool.spis.clear()          # as if the first refill had not come back yet
        gw.connect(0)
        await gw.settle()
        assert failures(gw, 0) == []
        (child,) = gw.children_of(0)
        assert child.spi_out == SHARED_SPI
        esp, _, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and esp_open(gw.site_key_in(0), esp)[0] == SHARED_SPI
        assert len(gw.service.spi_pool.spis) == SPI_POOL
    run(body())


def test_create_child_sa_waits_for_an_spi_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (old,) = gw.children_of(0)
        gw.service.spi_pool.spis.clear()
        site = gw.site_sa(0)
        site.rekey_child(site.children[0].unique_id)
        await gw.settle()
        assert failures(gw, 0) == []
        (new,) = gw.children_of(0)
        assert new.handle != old.handle and new.spi_out == SHARED_SPI + 1
        assert len([e for e in gw.site_events[0] if isinstance(e, ChildSaUp)]) == 2
    run(body())


def test_held_datagrams_are_bounded() -> None:
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.service.spi_pool.spis.clear()
        # datagrams of IKE SAs (responder SPI set) that no refill has answered yet: a flood
        junk = struct.pack("!8s8sBBBBII", b"\x01" * 8, b"\x02" * 8, 35, 0x20, 37, 0x08, 1, 28)
        for _ in range(HELD_MAX + 10):
            gw.service.receive(junk, (site_ip(0), 500))
        assert gw.service.spi_pool.held_dropped == 10
        await gw.settle()             # the refill lets the held ones in; the engine drops them (no such SA)
        assert len(gw.service.spi_pool.spis) == SPI_POOL
        gw.connect(0)
        await gw.settle()
        assert failures(gw, 0) == [] and len(gw.children_of(0)) == 1
    run(body())


def test_a_soft_expire_rekeys_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        await gw.settle()
        (old,) = gw.children_of(0)
        gw.service.spi_pool.spis.clear()
        assert gw.service.expired(old.spi_in, Direction.IN, hard=False)
        await gw.settle()
        assert failures(gw, 0) == []
        (new,) = gw.children_of(0)
        assert new.handle != old.handle and new.lineage is old.lineage
    run(body())


def test_after_a_worker_restart_more_children_than_the_pool_holds_all_come_back() -> None:
    async def body() -> None:
        n = SPI_POOL + 2
        gw = Gateway(n)
        await gw.start()
        for i in range(n):
            gw.connect(i)
        await gw.settle()
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)   # a new, empty worker
        await gw.service.worker_restarted()
        await gw.settle()
        assert [failures(gw, i) for i in range(n)] == [[]] * n
        assert all(len(gw.children_of(i)) == 1 for i in range(n))
        outs = {str(s.remote.addr) for s in gw.worker.dp.sas() if s.direction is Direction.OUT and s.remote}
        assert outs == {site_ip(i) for i in range(n)}
    run(body())
