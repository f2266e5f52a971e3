"""Review revrekey F4: the worker's FIRST_USE (one for every rekey a peer makes: standby.first_use)
and EXPIRE (installs.expired -> _child_of_sa) events find their Child SA by a pass over every Child
SA of every peer (``IkeService.children``), in the control process's one thread.  A gateway with
50,000 Child SAs walks 50,000 of them per peer rekey (~1 ms each with slotted stand-ins), and one
authenticated peer rekeying in a loop makes every one of its rekeys cost that, on top of its own
share; clients that came up in a burst rekey in a burst too (rand_time spreads them over minutes).
Inbound SPIs are unique in the worker: an index by spi_in (kept with ``children``) answers in O(1)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

from test_ikeservice_rekey import established, settle_holding_a_delete

from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.services.ike import child_index, traps
from tunsec.services.ike.state import ChildState

OTHERS = 2000   # other peers' Child SAs on the gateway


class Walked(dict[int, ChildState]):
    """The service's Child SAs, counting how many are looked at."""

    walked = 0

    def values(self) -> Iterator[ChildState]:  # type: ignore[override]
        for state in super().values():
            self.walked += 1
            yield state


def test_a_first_use_and_an_expire_look_at_their_own_child_sa_not_at_every_peers() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        b = pair.svc["b"]
        old_b = pair.child("b")
        pair.rekey("a")                                   # A rekeys; B answers and holds its new SA back
        await settle_holding_a_delete(pair)
        new_b = next(c for c in b.children.values() if c.handle != old_b.handle)
        assert new_b.standby is not None
        # the gateway's other Child SAs (stand-ins of other peers'), booked before these two
        others = {10**6 + i: dataclasses.replace(old_b, handle=10**6 + i, spi_in=0xD0000000 + i,
                                                 spi_out=0xE0000000 + i) for i in range(OTHERS)}
        walked = Walked({**others, **b.children})
        b.children = walked
        assert b.first_use(new_b.spi_in)                  # the peer sends on the new Child SA
        first_use = walked.walked
        walked.walked = 0
        b.expired(0xCFFFFFFF, Direction.IN, hard=False)   # an EXPIRE no booked Child SA has (a lingering SA)
        expire = walked.walked
        assert max(first_use, expire) < 10, (first_use, expire)

    asyncio.run(body())


def test_an_acquire_asks_whether_its_child_is_up_without_a_pass_over_every_child_sa() -> None:
    """The remark of review revrekey F4: a trap's ACQUIRE (traps._under_way) asked whether its child is
    up by a pass over every peer's Child SAs; the index counts them by (connection, child)."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        b = pair.svc["b"]
        mine = pair.child("b")
        others = {10**6 + i: dataclasses.replace(mine, handle=10**6 + i, spi_in=0xD0000000 + i,
                                                 spi_out=0xE0000000 + i) for i in range(OTHERS)}
        walked = Walked({**others, **b.children})
        b.children = walked
        assert traps._under_way(b, mine.conn, mine.child)
        assert not traps._under_way(b, mine.conn, "other")
        assert walked.walked == 0

    asyncio.run(body())


def test_the_index_follows_bookings_moves_and_two_child_sas_of_one_outbound_name() -> None:
    """ChildIndex, by itself: two Child SAs whose outbound SAs have one name (two peers behind one
    address and port that chose one SPI) are found oldest first, the second once the first is
    unbooked; a Child SA that moved is found at its new peer only, one being moved at both; the
    count by (connection, child) follows every booking."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        svc = pair.svc["b"]
        mine = pair.child("b")
        child_index.unbook(svc, mine)
        assert not svc.children and not svc.child_index.has(mine.conn, mine.child)
        one = dataclasses.replace(mine, handle=1, spi_in=0xD0000001)
        two = dataclasses.replace(mine, handle=2, spi_in=0xD0000002)
        for state in (one, two):
            child_index.book(svc, state)
        index = svc.child_index
        assert list(index.outbound(mine.spi_out, mine.remote)) == [one, two]
        assert list(index.inbound(0xD0000002)) == [two]
        child_index.unbook(svc, one)
        assert list(index.outbound(mine.spi_out, mine.remote)) == [two]
        assert list(index.inbound(0xD0000001)) == []
        assert index.has(mine.conn, mine.child)
        there = Endpoint(mine.remote.addr, 4501)
        index.move(two, (there, two.local))
        assert index.moving(two.spi_out, there) is two and list(index.outbound(two.spi_out, mine.remote)) == [two]
        index.set_remote(two, there)
        index.move(two, None)
        assert two.remote == there and two.moving_to is None and index.moving(two.spi_out, there) is None
        assert list(index.outbound(two.spi_out, there)) == [two]
        assert list(index.outbound(two.spi_out, mine.remote)) == []
        index.set_remote(one, there)                      # unbooked: it stays out of the index
        assert list(index.outbound(two.spi_out, there)) == [two]
        child_index.unbook(svc, two)
        child_index.unbook(svc, two)                      # (twice: no error)
        assert not index.has(mine.conn, mine.child) and list(index.outbound(two.spi_out, there)) == []

    asyncio.run(body())
