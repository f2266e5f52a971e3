"""Review revrekey F2: a rekey responder's standby timeout (installs.STANDBY_TIMEOUT, 10 s) moves its
traffic to the new Child SA whether or not the initiator has the answer yet.  When the answer is lost
(the CREATE_CHILD_SA response, or the retransmitted request: two datagrams under load), the
initiator gets the stored answer only with a later retransmission of its request (RFC 7296 §2.1:
4 s, then 11.2 s, 24.2 s ... with the defaults), and until then it has no inbound SA for the new
Child SA: everything the responder sends from the timeout on is dropped there.  The old Child SA,
which both sides still have (the initiator deletes it only once it has the answer), would have
carried it.  Two real IkeServices with the in-process worker (test_ikeservice_rekey.Pair): every
pipe request and datagram is followed by a packet each way through both dataplanes."""

from __future__ import annotations

import asyncio

from test_ikeservice_rekey import established, fire_timers, run_tasks

from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header


def _is_rekey_answer(side: str, data: bytes) -> bool:
    hdr = decode_header(data)
    return side == "b" and hdr.exchange == ExchangeType.CREATE_CHILD_SA and hdr.is_response


def test_a_responders_standby_timeout_does_not_send_on_an_sa_the_initiator_has_no_answer_for() -> None:
    async def body() -> None:
        pair = await established()
        old_b = pair.child("b")
        pair.rekey("a")                                   # A rekeys; B answers
        lost: list[tuple[str, bytes, int]] = []
        while pair.wire or any(s._tasks for s in pair.svc.values()):
            if pair.wire:
                side, data, port = pair.wire.pop(0)
                if _is_rekey_answer(side, data):
                    lost.append((side, data, port))       # B's answer is lost on the way
                else:
                    pair.deliver(side, data, port)
            await run_tasks(pair)
        assert lost, "B did not answer"
        new_b = next(c for c in pair.svc["b"].children.values() if c.handle != old_b.handle)
        assert new_b.standby is not None                  # B still sends on the old Child SA
        assert pair.failures == []
        fire_timers(pair.svc["b"])                        # 10 s later: B's standby timeout
        await run_tasks(pair)
        await run_tasks(pair)
        pair.probe("after B's standby timeout, A still without the answer")
        # A retransmits its request (not modelled here: the engine's timer runs on the real clock)
        # and gets the stored answer only then; meanwhile nothing B sends may be lost
        assert pair.failures == []
        pair.wire.extend(lost)                            # the answer, resent, arrives at last
        await pair.settle()

    asyncio.run(body())


def test_the_answer_arriving_after_the_first_timeout_ends_the_standby_at_the_old_sas_delete() -> None:
    """The wait past STANDBY_TIMEOUT ends as the standby always did: the initiator, with our answer at
    last, sends its DELETE of the old Child SA, and B moves to the new SA then (its timer goes)."""
    async def body() -> None:
        pair = await established()
        b = pair.svc["b"]
        old_b = pair.child("b")
        pair.rekey("a")
        lost: list[tuple[str, bytes, int]] = []
        while pair.wire or any(s._tasks for s in pair.svc.values()):
            if pair.wire:
                side, data, port = pair.wire.pop(0)
                if _is_rekey_answer(side, data):
                    lost.append((side, data, port))
                else:
                    pair.deliver(side, data, port)
            await run_tasks(pair)
        new_b = next(c for c in b.children.values() if c.handle != old_b.handle)
        fire_timers(b)                                    # STANDBY_TIMEOUT: B waits on
        await run_tasks(pair)
        assert new_b.standby is not None and new_b.standby_timer in b._timers
        pair.wire.extend(lost)                            # the answer reaches A at last
        await pair.settle()
        assert new_b.standby is None and new_b.out_installed
        assert new_b.standby_timer not in b._timers
        assert set(b.children) == {new_b.handle}
        assert all(p.out_spi == new_b.spi_out for p in pair.workers["b"].dp.policies())
        assert pair.failures == []

    asyncio.run(body())
