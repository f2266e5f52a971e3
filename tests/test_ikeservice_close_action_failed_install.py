"""Review revrekey2 F1: with close_action = start on both sides, a gateway whose install of the peer's
rekey fails brings the child up twice.

B (tunsec) answers A's rekey of Child SA C with C', C''s install fails in B's worker (ENOMEM), so B
deletes C' (install_failed.delete_in_engine -> IkeSa.delete_child -> informational.delete_ours, which
since h/fixrekey1 marks C as not rekeyed again).  A got the answer: it installs C' and deletes C as
its rekey succeeded.  B's DELETE of C' is lost once and its retransmission reaches A after A's DELETE
of C was answered.  Now each side sees the end of its last Child SA of the child as the peer's doing:
B reports C "deleted by peer" (before h/fixrekey1: "rekeyed", as C had been rekeyed by the peer), A
reports C' "deleted by peer"; close_action = start runs on both, each asks for the child, each answers
the other's request: two Child SAs of one child, each with its own keys, for good (each is rekeyed as
its own).  Before h/fixrekey1 only A re-created it (this test passed on b43cbc25).

A strongSwan peer needs no loss: its child_delete runs close_action for a passive DELETE of an
installed Child SA (C') even while its own DELETE of C is out, and strongSwan 6's child_rekey, when
B's DELETE of C' overtakes a lost answer, deletes C and re-establishes the child itself, while B's
close_action runs on that DELETE of C.

Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair); close_action's one-second
delay passes on the event loop's clock.  Since h/fixresp B refuses the rekey in its answer instead
(ike/child_refusal.py): there is no DELETE of C' any more, and the test checks that both sides keep
the one Child SA C (no close_action)."""

from __future__ import annotations

import asyncio

from test_ikeservice_install_failed_answer_lost import _refuse_next_update
from test_ikeservice_rekey import Pair, established, run_tasks

from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header


def _net_child_sas(pair: Pair, side: str) -> list[tuple[int, int]]:
    """``side``'s Child SAs of child "net" in its engine, as (A's inbound SPI, A's outbound SPI)."""
    spis = [(c.spi_in, c.spi_out) for c in pair.ike(side).children if c.name == "net"]
    return sorted(spis if side == "a" else [(o, i) for i, o in spis])


def test_a_failed_install_of_the_peers_rekey_does_not_bring_the_child_up_twice() -> None:
    async def body() -> None:
        pair = await established(close_action="start")
        pair.probing = False
        _refuse_next_update(pair, "b")                    # B's install of A's rekey fails
        pair.rekey("a")
        pair.deliver(*pair.wire.pop(0))                   # A's rekey request: B answers, then deletes C'
        await run_tasks(pair)
        await run_tasks(pair)
        kinds = [(s, decode_header(d).exchange, decode_header(d).is_response) for s, d, _ in pair.wire]
        # since h/fixresp B refuses A's rekey in its answer (TEMPORARY_FAILURE): no DELETE of C' to lose,
        # A keeps C, and its rekey is tried again later
        assert kinds == [("b", ExchangeType.CREATE_CHILD_SA, True)]
        await pair.settle()
        await asyncio.sleep(1.5)                          # close_action's delay (1 s) on either side
        await pair.settle()
        a, b = _net_child_sas(pair, "a"), _net_child_sas(pair, "b")
        assert a == b, (a, b)
        assert len(a) == 1, f"two Child SAs of one child on both sides: {[(hex(i), hex(o)) for i, o in a]}"
        assert len(pair.svc["a"].children) <= 1 and len(pair.svc["b"].children) <= 1

    asyncio.run(body())
