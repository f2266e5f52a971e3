"""Review revrekey F1, the initiator's repair through the IKE service: the peer no longer has our Child
SA (its DELETE of it overtook a lost answer, or it lost its state), so our rekey of it is answered
CHILD_SA_NOT_FOUND.  The engine ends it (DownReason.LOST_BY_PEER) and asks for the child again; the
service holds the lineage meanwhile (services/ike/recreate.py peer_lost): its policies stay in the
worker (the traffic is dropped, never sent around the tunnel) and the new Child SA joins them.

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_ikeservice_rekey import established

from tunsec.dataplane import pipe
from tunsec.services.ike import churn_log


def test_a_child_sa_the_peer_has_not_is_created_again_in_its_held_lineage() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False                   # B's service still books the Child SA its engine lost
        a = pair.svc["a"]
        old = pair.child("a")
        pair.ike("b")._st.children.clear()     # B's engine no longer has it (A does not know)
        mark = len(pair.timeline)
        pair.rekey("a")                        # A's rekey timer fires: B answers CHILD_SA_NOT_FOUND
        await pair.settle()
        new = pair.child("a")
        assert new.spi_in != old.spi_in
        # the same lineage: its policies were held (never deleted in A's worker) and the new SA is on them
        assert new.reqid == old.reqid
        spd_deletes = [m for k, s, m in pair.timeline[mark:] if k == "pipe" and s == "a"
                       and isinstance(m, pipe.SpdDelete)]
        assert spd_deletes == []
        assert a.events.child_recreate[("tun", "net")] == 1 and not a._recreating
        (b_child,) = pair.ike("b").children
        assert (b_child.spi_out, b_child.spi_in) == (new.spi_in, new.spi_out)

    asyncio.run(body())


def test_the_lines_of_a_peer_that_answers_every_rekey_not_found_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    """Review revrekey2 R3: a peer may answer each of our rekeys CHILD_SA_NOT_FOUND; each re-creation's
    WARNING (recreate.peer_lost) and the Child SA's "deleted" line are the peer's churn
    (churn_log.py): a burst of them, the rest at DEBUG.  Before, every one was written."""
    caplog.set_level(logging.DEBUG, logger="tunsec")
    tries = churn_log.BURST + 2

    def lines(level: int) -> list[str]:
        return [m for r in caplog.records if "no longer has it" in (m := r.getMessage()) and r.levelno == level]

    async def body() -> None:
        pair = await established()
        pair.probing = False
        for _ in range(tries):
            pair.ike("b")._st.children.clear()     # B's engine no longer has it: NOT_FOUND to A's rekey
            pair.rekey("a")
            await pair.settle()
        assert pair.svc["a"].events.child_recreate[("tun", "net")] == tries   # each one counted

    asyncio.run(body())
    assert 0 < len(lines(logging.WARNING)) < tries
    assert len(lines(logging.WARNING)) + len(lines(logging.DEBUG)) >= tries
