"""Review revrekey F1, through two real IkeServices (test_ikeservice_rekey.Pair: the worker logic and C
fast path in-process): the gateway B answers A's rekey, the install of its new Child SA fails (the
worker refuses its UPDATE: ENOMEM).  B used to send its answer (success) and a DELETE right behind it;
with the answer lost, A installed the stored answer its retransmission got and deleted the old Child
SA: A sent into an SA B did not have.  Now the answer, still held by B's barrier, becomes
TEMPORARY_FAILURE and no DELETE follows (h/fixresp, ike/child_refusal.py): the answer is lost, A's
retransmission gets the refusal, both sides keep the old Child SA, and A's rekey, tried again, succeeds
once B's worker takes it."""

from __future__ import annotations

import asyncio
import time

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
        before = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        _refuse_next_update(pair, "b")
        pair.rekey("a")
        request = pair.wire.pop(0)                         # A's rekey request
        pair.deliver(*request)
        await run_tasks(pair)
        await run_tasks(pair)
        kinds = [(s, decode_header(d).exchange, decode_header(d).is_response) for s, d, _ in pair.wire]
        assert kinds == [("b", ExchangeType.CREATE_CHILD_SA, True)]   # refused in the answer: no DELETE
        pair.wire.pop(0)                                   # lost
        pair.wire.append(request)                          # A's retransmission gets the stored refusal
        await pair.settle()
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b == before, (a, b, before)            # the old Child SA, on both sides
        retry_rekey(pair, "a")                             # A tries again: B's worker takes it now
        await pair.settle()
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b and len(a) == 1 and a != before, (a, b, before)   # the same Child SA on both sides, and one

    asyncio.run(body())


def retry_rekey(pair: Pair, side: str) -> None:
    """``side``'s engine a little over 10 s later: a rekey the peer refused for now (2-10 s) goes again."""
    svc = pair.svc[side]
    svc.endpoint.handle_timer(time.monotonic() + 11.0)
    svc._pump()
