"""An outbound SA's EXPIRE that the worker sends while its Child SA moves is not lost.

A peer moves (NAT rebinding): the service MIGRATEs the Child SA's SAs, and from then on the worker
names the outbound SA by (SPI, new endpoint), its EXPIREs too.  The service reads a batch of the
worker's messages answers first, then events, so such an EXPIRE may be handled before the service
has acted on the MIGRATE's answer, while it still books the SA at the old endpoint: a soft EXPIRE
that found no Child SA would leave it unrekeyed until its hard limit cut its traffic.

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway, whose peers all chose the same outbound SPI); the EXPIRE is
read right after the worker's MIGRATE of the outbound SA, before its answer."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from test_ikeservice_peers import connected, run

from tunsec.dataplane.pipe import Direction, Endpoint


def test_an_outbound_expire_read_while_its_sa_moves_rekeys_that_child() -> None:
    async def body() -> None:
        gw = await connected(3, mobike=False)
        before = {i: gw.children_of(i)[0] for i in range(gw.n)}
        migrate = gw.worker.dp.migrate
        found: list[bool] = []

        def migrate_then_expire(spi: int, direction: Direction, new_remote: Endpoint, *args: Any, **kw: Any) -> None:
            migrate(spi, direction, new_remote, *args, **kw)
            if direction is Direction.OUT:   # its soft limit, reported at the endpoint it has now,
                # read before the MIGRATE's answer is (InProcessWorker schedules that after this)
                asyncio.get_running_loop().call_soon(
                    lambda: found.append(gw.service.expired(spi, Direction.OUT, False, new_remote)))

        gw.worker.dp.migrate = migrate_then_expire  # type: ignore[method-assign]
        gw.nat[1] = ("198.51.100.201", 40000)
        gw.site_sa(1).send_liveness()
        await gw.settle()
        moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
        assert found == [True]   # the moving Child SA's, not "not ours"
        (after,) = [c for c in gw.service.children.values() if c.remote == moved]
        assert after.handle != before[1].handle and after.reqid == before[1].reqid   # rekeyed in its lineage
        assert after.remote == moved   # where its peer is now
        for i in (0, 2):   # the same outbound SPI, other peers: untouched
            assert gw.children_of(i) == [before[i]]

    run(body())
