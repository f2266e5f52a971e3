"""The refusal in our answer (ike/child_refusal.py) must be the only answer the peer can get for that
request (review revresp F1).  The barrier parked the answer per flow (address, port and IKE SPIs), so a
copy of the request from another port (the peer's NAT's new mapping, a MOBIKE peer's retransmission from
its new path), answered from the stored response at once, left in another flow: the success while the
install was pending, and the refusal after it failed.  Now the barrier parks by the IKE SPIs alone and
the refusal is made only while every copy handed out is held (install_failed.refused_answer)."""

from __future__ import annotations

import asyncio
import ipaddress

from test_ikeservice_install_failed_answer_lost import _refuse_next_update
from test_ikeservice_peers import run
from test_ikeservice_rekey import Pair, established

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _b_answers(pair: Pair, mark: int, message_id: int) -> list[bytes]:
    """The CREATE_CHILD_SA responses B sent since ``mark`` for request ``message_id``."""
    return [m for kind, side, m in pair.timeline[mark:] if kind == "send" and side == "b"
            and decode_header(m).exchange == ExchangeType.CREATE_CHILD_SA and decode_header(m).is_response
            and decode_header(m).message_id == message_id]


def _copy_from_new_port(pair: Pair, request: bytes, port: int) -> None:
    """A's request again from A's address and another port (a NAT's new mapping)."""
    pair.svc["b"].receive_natt(pipe.Ike(data=request, remote=Endpoint(ipaddress.ip_address(pair.ip("a")), port),
                                        local=Endpoint(ipaddress.ip_address(pair.ip("b")), 4500)))


def test_a_retransmission_from_a_new_port_while_the_answer_is_parked_gets_no_success_the_refusal_contradicts() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        before = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        _refuse_next_update(pair, "b")                      # B's install of the rekey fails ...
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pair.workers["b"].hold = lambda msg: gate if isinstance(msg, pipe.Update) else None   # ... slowly
        pair.rekey("a")
        side, request, port = pair.wire.pop(0)              # A's rekey request
        assert side == "a"
        message_id = decode_header(request).message_id
        mark = len(pair.timeline)
        pair.deliver(side, request, port)
        await _turns()
        assert _b_answers(pair, mark, message_id) == []     # B's answer parked: its install is pending
        _copy_from_new_port(pair, request, 4501)            # A retransmits, its NAT mapped a new port
        await _turns()
        gate.set_result(None)                               # the UPDATE's ENOMEM comes in
        await pair.settle()
        answers = _b_answers(pair, mark, message_id)
        # one answer for one request: the peer must not get a success that the refusal then contradicts
        assert len(set(answers)) == 1, f"B sent {len(set(answers))} different answers to request {message_id}"
        a = {(c.spi_in, c.spi_out) for c in pair.svc["a"].children.values()}
        b = {(c.spi_out, c.spi_in) for c in pair.svc["b"].children.values()}
        assert a == b and len(a) == 1, (a, b, before)       # both sides agree on one Child SA
    run(body())
