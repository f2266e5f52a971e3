"""Review revdel5 F2: the traffic of a Child SA held for our rekey (the peer deleted it while the
rekey was out: CreateChildTask.takes_peer_delete) is lost from RADIUS accounting when the worker
ends the SA at its hard lifetime during the hold.

While held, the old Child SA is out of its IKE SA's list, so the service no longer finds it
(child_index.still_held): its hard EXPIRE, which carries the SA's final counters, has no owner and is
not a Child SA being deleted either (Accounting.expired drops it).  When the rekey's answer comes,
the old Child SA goes down as REKEYED; its DELETEs find nothing (the worker removed the SAs), so
the traffic after the last DUMP is in no record.  Two real IkeServices with the worker and the C
fast path in process (test_radius_accounting_expire.AcctPair), a real UDP accounting server.  Fixed
(h/fixdel6): _child_of_sa finds a held Child SA (IkeSa.held_children, rekey_hold.py), its EXPIRE has its owner."""
from __future__ import annotations

import asyncio

from test_ikeservice_rekey import CCSA, INFO, deliver_one, fire_timers
from test_radius_accounting import until
from test_radius_accounting_expire import accounted, octets

from tunsec.dataplane.pipe import Direction
from tunsec.dataplane.worker import TimerKind
from tunsec.radius.causes import Cause


def test_a_hard_expiry_of_a_child_sa_held_for_our_rekey_is_accounted() -> None:
    async def main() -> tuple[tuple[int, int], tuple[int, int], int]:
        pair, acct, server, handle = await accounted(0)
        pair.probing = False
        old_a, old_b = pair.child("a"), pair.child("b")
        worker = pair.workers["a"]
        seen = worker.dp.get(old_a.spi_in, Direction.IN).counters["bytes"]
        assert pair.traffic("a", 4) == 4 and pair.traffic("b", 3) == 3   # after the last DUMP
        out_key = (old_a.spi_out, Direction.OUT, old_a.remote)
        final = (worker.dp.get(old_a.spi_in, Direction.IN).counters["bytes"], worker.dp.get(*out_key).counters["bytes"])
        pair.rekey("a")
        await deliver_one(pair, "a", CCSA, False)   # B answers (the answer waits on the wire)
        assert pair.svc["b"].expired(old_b.spi_in, Direction.IN, hard=True)   # B deletes the old one
        await deliver_one(pair, "b", INFO, False)   # its DELETE overtakes the answer: A holds the old one
        assert all(c.unique_id != old_a.unique_id for c in pair.ike("a").children)
        for key in ((old_a.spi_in, Direction.IN, None), out_key):
            worker.worker._timer_fired(key, TimerKind.HARD)   # A's hard lifetime of the old SAs, during the hold
        await deliver_one(pair, "b", CCSA, True)    # the answer: the new Child SA replaces the old one
        await pair.settle()
        assert pair.child("a").spi_in != old_a.spi_in
        fire_timers(pair.svc["a"])   # the old inbound SA's linger ends: its DELETE
        await pair.settle()
        acct.stop(handle, Cause.USER_REQUEST)
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        (record,) = server.of("Stop")
        return octets(record), final, seen

    stop_octets, final, seen_in = asyncio.run(main())
    assert final[0] > seen_in
    assert stop_octets == final, "the traffic only the held Child SA's hard EXPIRE knew is in no record"
