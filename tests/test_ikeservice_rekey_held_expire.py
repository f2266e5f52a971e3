"""Review revdel5 F2 (the EXPIRE itself): a Child SA held for our rekey (the peer deleted it while the
rekey was out: CreateChildTask.takes_peer_delete) reaches its soft or hard lifetime.  The EXPIRE is
the service's (expired() True: its counters have an owner, radius_edge._acct_expired) and asks
nothing more of the engine: no second rekey (one is out), no delete of a Child SA the engine no
longer lists (sa.delete_child would raise KeyError).  The Child SA ends with the rekey.  Two real
IkeServices with the worker and the C fast path in process (test_ikeservice_rekey.Pair)."""
from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_rekey import CCSA, INFO, deliver_one, established, run_tasks

from tunsec.dataplane.pipe import Direction
from tunsec.ike.message import decode_header


def requests_on_wire(pair: object, side: str, exchange: int) -> int:
    return sum(1 for src, data, _ in pair.wire  # type: ignore[attr-defined]
               if src == side and (h := decode_header(data)).exchange == exchange and not h.is_response)


@pytest.mark.parametrize("hard", [False, True])
def test_an_expire_of_a_child_sa_held_for_our_rekey_asks_nothing_more(hard: bool) -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        old_a, old_b = pair.child("a"), pair.child("b")
        pair.rekey("a")
        await deliver_one(pair, "a", CCSA, False)   # B answers (the answer waits on the wire)
        assert pair.svc["b"].expired(old_b.spi_in, Direction.IN, hard=True)   # B deletes the old one
        await deliver_one(pair, "b", INFO, False)   # its DELETE overtakes the answer: A holds the old one
        sa = pair.ike("a")
        assert sa._pending is not None and sa._pending.task.holds_old("net")  # type: ignore[attr-defined]
        assert all(c.unique_id != old_a.unique_id for c in sa.children)
        assert pair.svc["a"].expired(old_a.spi_in, Direction.IN, hard=hard), "the held Child SA's EXPIRE is ours"
        assert [c.unique_id for c in sa.held_children()] == [old_a.unique_id]
        await run_tasks(pair)
        assert requests_on_wire(pair, "a", CCSA) == 0, "no second rekey of the held Child SA"
        assert requests_on_wire(pair, "a", INFO) == 0, "no DELETE of the held Child SA"
        await deliver_one(pair, "b", CCSA, True)    # the answer: the new Child SA replaces the old one
        await pair.settle()
        assert sa.held_children() == []
        assert pair.child("a").spi_in != old_a.spi_in
        assert pair.traffic("a", 2) == 2 and pair.traffic("b", 2) == 2
    asyncio.run(body())
