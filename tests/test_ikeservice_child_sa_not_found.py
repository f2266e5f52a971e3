"""Review revrekey F1, the initiator's repair through the IKE service: the peer no longer has our Child
SA (its DELETE of it overtook a lost answer, or it lost its state), so our rekey of it is answered
CHILD_SA_NOT_FOUND.  The engine ends it (DownReason.LOST_BY_PEER) and asks for the child again; the
service holds the lineage meanwhile (services/ike/recreate.py peer_lost): its policies stay in the
worker (the traffic is dropped, never sent around the tunnel) and the new Child SA joins them.

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair)."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import established

from tunsec.dataplane import pipe


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
