"""Review revrekey2 F2 through two IkeServices and a worker restart: A's worker dies right after A
answered B's rekey of Child SA C (the answer, C', is lost with it); the restart rekeys A's Child SAs
into the new worker at once, C' among them (restart.py), before B has the answer.  B answers that
rekey CHILD_SA_NOT_FOUND; A takes it as "the peer no longer has it" (create_child_sa._lost_by_peer):
ends C', asks for the child again and DELETEs C'.  B's retransmission then gets the stored answer,
which B refuses (its SPI was in A's DELETE: DELETED_BY_PEER), and keeps C; A keeps C too (rekeyed by
the peer, it waits for B's DELETE of it).  Both engines now hold two Child SAs of one child (and A's
new worker only one of them).  Before h/fixrekey1 the rekey of C' was refused and retried, and B
installed C' from its retransmission: one Child SA (passed on b43cbc25).

test_ikeservice_restart_spis.RestartablePair: two real IkeServices with in-process workers, A's
replaced by a new one."""

from __future__ import annotations

import asyncio

from test_ikeservice_peers import run
from test_ikeservice_restart_spis import pair_up

from tunsec.ike.message import decode_header


def test_a_child_sa_rekeyed_after_a_worker_restart_before_the_peer_got_its_answer_stays_one() -> None:
    async def body() -> None:
        pair = await pair_up()
        pair.probing = False
        pair.rekey("b")
        pair.deliver(*pair.wire.pop(0))            # B's rekey of C reaches A: A answers with C'
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight = await pair.restart("a")        # A's worker dies, the answer with it
        (answer,) = [x for x in in_flight if x[0] == "a" and decode_header(x[1]).is_response]
        await pair.settle()                        # A's rekeys into the new worker, C''s among them
        pair.wire.append(answer)                   # B's retransmission gets the stored answer
        await pair.settle()
        a = sorted((c.spi_in, c.spi_out) for c in pair.ike("a").children)
        b = sorted((c.spi_out, c.spi_in) for c in pair.ike("b").children)
        assert a == b, (a, b)
        assert len(a) == 1, f"{len(a)} Child SAs of child net in both engines"

    run(body())
