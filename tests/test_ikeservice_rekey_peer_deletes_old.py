"""Review revdel3 F1 through the real IKE services: we rekey a Child SA, the peer answers and then
deletes the old Child SA itself (its hard lifetime), and that DELETE reaches us before the answer.

Two real IkeServices with the worker's logic and C fast path in process (test_ikeservice_rekey's
Pair).  The new Child SA must come up here as the rekey of the old one: on the old one's lineage
(same reqid, its policies never taken out and put back, no updown down and up), and carry traffic
both ways.  h/fixdelete2's engine discarded it (and deleted it at the peer too); a ChildSaDown of
the old one before the new one's ChildSaUp would have ended the lineage in the service and started
a new one (a down/up flap of the tunnel's policies)."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import CCSA, INFO, Pair, deliver_one, established, fire_timers

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction


def _spd_changes(pair: Pair, side: str, mark: int) -> list[object]:
    return [pair.timeline[i][2] for i in pair.after(mark, "pipe", side,
                                                     lambda m: isinstance(m, (pipe.SpdAdd, pipe.SpdDelete)))]


async def _peer_deletes_old_before_answering(pair: Pair) -> int:
    """A rekeys; B answers, then B's old Child SA reaches its hard lifetime (B deletes it); B's
    DELETE reaches A before B's answer.  The timeline mark taken before A's rekey."""
    mark = len(pair.timeline)
    old_b = pair.child("b")
    pair.rekey("a")
    await deliver_one(pair, "a", CCSA, False)   # B answers: its new Child SA is up (the answer waits)
    assert len(pair.svc["b"].children) == 2
    # the worker's hard EXPIRE of B's old inbound SA: B deletes the old Child SA
    assert pair.svc["b"].expired(old_b.spi_in, Direction.IN, hard=True)
    await deliver_one(pair, "b", INFO, False)   # B's DELETE of the old Child SA overtakes its answer
    await deliver_one(pair, "b", CCSA, True)    # then the answer to A's rekey
    await pair.settle()
    return mark


def test_the_new_child_sa_carries_the_lineage_on_after_the_peers_delete_of_the_old_one() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        old_a, old_b = pair.child("a"), pair.child("b")
        lineage_a, lineage_b = old_a.lineage, old_b.lineage
        mark = await _peer_deletes_old_before_answering(pair)
        assert len(pair.svc["a"].children) == 1, "A installed no Child SA: the rekey's new one was discarded"
        a, b = pair.child("a"), pair.child("b")
        assert a.spi_in != old_a.spi_in and b.spi_in != old_b.spi_in
        assert (a.spi_in, a.spi_out) == (b.spi_out, b.spi_in)
        # the same lineage on both sides: no new reqid, no policy taken out and put back
        assert (a.lineage, b.lineage) == (lineage_a, lineage_b)
        assert _spd_changes(pair, "a", mark) == [] and _spd_changes(pair, "b", mark) == []
        # the new Child SA carries traffic, both ways, through both dataplanes
        assert (pair.traffic("a", 5), pair.traffic("b", 5)) == (5, 5)
        # the old SAs go (A's inbound one after lingering), the new ones stay
        for side in "ab":
            fire_timers(pair.svc[side])
        await pair.settle()
        for side in "ab":
            assert pair.sa_spis(side, Direction.IN) == {pair.child(side).spi_in}
            assert pair.sa_spis(side, Direction.OUT) == {pair.child(side).spi_out}
        assert (pair.traffic("a", 5), pair.traffic("b", 5)) == (5, 5)

    asyncio.run(body())
