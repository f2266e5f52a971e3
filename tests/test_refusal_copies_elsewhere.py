"""Review revresp3 (of h/fixresp2): the refusal in our answer along paths the merge's own tests do not
drive through two IkeServices.  Both pass on main (9e45d620) and fail before the merge (5c911e23): they
are coverage for what h/fixresp2 fixed, not proofs of a bug.

- copies of the peer's CREATE_CHILD_SA from other IP addresses (a MOBIKE peer's retransmission on its
  new path; anyone who saw the request) while the answer is parked: all are parked by the IKE SPIs and
  all become the refusal;
- a copy resent while the SPI pool's barrier is up (collected in the endpoint, not parked) while the
  original is parked in the barrier: refused_answer must find both (review revresp F1's second half)."""

from __future__ import annotations

import asyncio
import ipaddress

from test_ikeservice_install_failed_answer_lost import _refuse_next_update
from test_ikeservice_peers import run
from test_ikeservice_refusal_resent import _b_answers, _turns
from test_ikeservice_rekey import Pair, established

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.message import decode_header


def _copy_from(pair: Pair, request: bytes, ip: str, port: int) -> None:
    """A's request again, as if from ``ip``:``port``."""
    pair.svc["b"].receive_natt(pipe.Ike(data=request, remote=Endpoint(ipaddress.ip_address(ip), port),
                                        local=Endpoint(ipaddress.ip_address(pair.ip("b")), 4500)))


async def _rekey_parked(pair: Pair) -> tuple[bytes, int, asyncio.Future[None]]:
    """A rekeys; B's install (its UPDATE) is held and will fail; B's answer waits in the barrier."""
    pair.probing = False
    _refuse_next_update(pair, "b")
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pair.workers["b"].hold = lambda msg: gate if isinstance(msg, pipe.Update) else None
    pair.rekey("a")
    side, request, port = pair.wire.pop(0)
    assert side == "a"
    mark = len(pair.timeline)
    pair.deliver(side, request, port)
    await _turns()
    assert _b_answers(pair, mark, decode_header(request).message_id) == []
    return request, mark, gate


def _one_answer_one_child(pair: Pair, mark: int, request: bytes) -> None:
    answers = _b_answers(pair, mark, decode_header(request).message_id)
    assert len(answers) >= 2 and len(set(answers)) == 1, \
        f"B sent {len(answers)} answers, {len(set(answers))} different, to one request"
    a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
    b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
    assert a == b and len(a) == 1, (a, b)   # both sides keep the old Child SA


def test_copies_from_other_addresses_while_the_answer_is_parked_all_get_the_refusal() -> None:
    async def body() -> None:
        pair = await established()
        request, mark, gate = await _rekey_parked(pair)
        for ip, port in (("198.51.100.7", 4500), ("198.51.100.8", 1024), (pair.ip("a"), 4500)):
            _copy_from(pair, request, ip, port)
            await _turns()
        gate.set_result(None)                 # the UPDATE's ENOMEM comes in
        await pair.settle()
        _one_answer_one_child(pair, mark, request)
    run(body())


def test_a_copy_collected_behind_the_spi_pools_barrier_gets_the_refusal_too() -> None:
    async def body() -> None:
        pair = await established()
        request, mark, gate = await _rekey_parked(pair)
        barrier = pair.svc["b"].barrier
        barrier.install_started()             # the SPI pool is refilled: B's datagrams wait in the endpoint
        _copy_from(pair, request, pair.ip("a"), 4501)
        await _turns()
        gate.set_result(None)
        await _turns(50)
        barrier.install_done()
        await pair.settle()
        _one_answer_one_child(pair, mark, request)
    run(body())
