"""Review revrekey F1, through two real IkeServices (test_ikeservice_rekey.Pair: the worker logic and C
fast path in-process): the gateway B answers A's rekey, the install of its new Child SA fails (the
worker refuses its UPDATE: ENOMEM), so B deletes it in the engine (install_failed.delete_in_engine) and
sends the DELETE right behind its answer (the barrier keeps their order).  The answer is lost; B's
DELETE reaches A, which knows no such SPI yet and answers with an empty Delete payload; A's
retransmission then gets the stored answer.  A installs the new Child SA, deletes the old one as its
rekey succeeded, and B removes that too: A sends into an SA B does not have, B has none for A's
traffic, and "left to the peer to start again" never happens (A never heard of the delete)."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import Pair, established, run_tasks

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header


def _refuse_next_update(pair: Pair, side: str) -> None:
    """``side``'s worker refuses the next UPDATE (an install under memory pressure)."""
    worker = pair.workers[side].worker
    real = worker.handle_datagram
    done: list[bool] = []

    def handle(data: bytes) -> list[bytes]:
        msg = pipe.decode(data)
        if isinstance(msg, pipe.Update) and not done:
            done.append(True)
            return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.ENOMEM))]
        return real(data)
    worker.handle_datagram = handle  # type: ignore[method-assign]


def test_a_gateways_failed_rekey_install_whose_answer_is_lost_leaves_both_sides_agreeing() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        _refuse_next_update(pair, "b")
        pair.rekey("a")
        side, data, port = pair.wire.pop(0)               # A's rekey request
        pair.deliver(side, data, port)
        await run_tasks(pair)
        await run_tasks(pair)
        kinds = [(s, decode_header(d).exchange, decode_header(d).is_response) for s, d, _ in pair.wire]
        assert kinds == [("b", ExchangeType.CREATE_CHILD_SA, True), ("b", ExchangeType.INFORMATIONAL, False)]
        answer = pair.wire.pop(0)                          # lost; A's retransmission gets it later
        await pair.settle()                                # B's DELETE reaches A first
        pair.wire.append(answer)                           # the stored answer, resent
        await pair.settle()
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b and a, (a, b)                        # the same Child SA on both sides, and one

    asyncio.run(body())
