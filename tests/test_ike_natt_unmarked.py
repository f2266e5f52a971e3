"""Review revcsmall F1: on port 4500 an IKE_SA_INIT response goes back the way its request came.

The worker's IKE event says whether the datagram came without the non-ESP marker; the control
process remembers who sent an IKE_SA_INIT request so (services/ike/unmarked.py) and SEND_IKE
carries the decision (``unmarked``).  Before, the worker decided by port alone
(``constants.natt_marks``: every IKE_SA_INIT response to port 500 unmarked), so a client whose port
4500 a NAT maps to public port 500 and that starts from its 4500, marked (strongSwan's
reauthentication), got an answer it drops as ESP; and a client whose port 500 a NAT maps to
another port (``remote_port = 4500``, unmarked) got a marked one.  Here: IkeSockets with a worker
that records the SEND_IKEs it is asked for; the real charon cases are in
tests/interop/test_review_revcsmall_natt500.py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from tunsec.dataplane import pipe
from tunsec.ike.constants import IKE_VERSION, NATT_PORT, ExchangeType, HeaderFlag
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike.sockets import IkeSockets
from tunsec.services.ike.unmarked import UnmarkedPeers

PEER = "192.0.2.7"


def header(exchange: int, flags: int) -> bytes:
    """A bare IKE header (28 bytes, no payloads) of the given exchange and flags."""
    return bytes(range(1, 9)) + bytes(8) + struct.pack("!BBBBII", 0, IKE_VERSION, exchange, flags, 0, 28)


INIT = header(ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR)
INIT_ANSWER = header(ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE)
AUTH_ANSWER = header(ExchangeType.IKE_AUTH, HeaderFlag.RESPONSE)


class RecordingWorker:
    """request_soon's caller side: the SEND_IKEs asked for, never answered."""

    def __init__(self) -> None:
        self.sent: list[pipe.SendIke] = []

    def request_soon(self, make: Callable[[int], pipe.SendIke], then: Any, failed: Any) -> asyncio.Future[Any]:
        self.sent.append(make(len(self.sent) + 1))
        return asyncio.get_running_loop().create_future()


def sockets() -> tuple[IkeSockets, RecordingWorker]:
    worker = RecordingWorker()
    return IkeSockets([], {4: "192.0.2.1"}, worker=lambda: worker, spawn=lambda c: None), worker  # type: ignore[arg-type,return-value]


def answer(s: IkeSockets, worker: RecordingWorker, data: bytes, port: int) -> bool:
    """Whether our ``data`` to the peer's port leaves port 4500 without the marker."""
    s.send(Datagram(data, (PEER, port), NATT_PORT))
    msg = worker.sent[-1]
    assert msg.data == data and msg.remote.port == port
    # the worker's own rule, as worker._send_ike has it
    return msg.unmarked


def test_a_marked_ike_sa_init_from_port_500_is_answered_marked() -> None:
    async def run() -> None:
        s, worker = sockets()
        s.came_natt((PEER, 500), INIT, False)   # a client's 4500 the NAT shows as 500, starting from it
        assert not answer(s, worker, INIT_ANSWER, 500)
    asyncio.run(run())


def test_an_unmarked_ike_sa_init_from_any_port_is_answered_unmarked_and_only_that() -> None:
    async def run() -> None:
        s, worker = sockets()
        for port in (500, 40500):   # remote_port = 4500 from its 500, which a NAT may give another
            s.came_natt((PEER, port), INIT, True)
            assert answer(s, worker, INIT_ANSWER, port)
            # its later messages (it floats to 4500, but whatever it does) are marked, and so is the
            # answer to another port of the same address
            assert not answer(s, worker, AUTH_ANSWER, port)
            assert not answer(s, worker, INIT_ANSWER, port + 1)
            # its retransmission marked (or a marked datagram from there): marked again
            s.came_natt((PEER, port), INIT, False)
            assert not answer(s, worker, INIT_ANSWER, port)
    asyncio.run(run())


def test_an_unmarked_header_that_is_no_ike_sa_init_request_unmarks_nothing() -> None:
    async def run() -> None:
        s, worker = sockets()
        s.came_natt((PEER, 500), AUTH_ANSWER, True)   # the fast path says unmarked only of requests
        s.came_natt((PEER, 501), INIT_ANSWER, True)
        assert not answer(s, worker, INIT_ANSWER, 500)
        assert not answer(s, worker, INIT_ANSWER, 501)
        assert len(s.unmarked) == 0
    asyncio.run(run())


def test_the_record_is_bounded_and_ends_with_the_half_open_time() -> None:
    now = [100.0]
    peers = UnmarkedPeers(ttl=30.0, limit=3, clock=lambda: now[0])
    keys = [(NATT_PORT, PEER, 1000 + i) for i in range(5)]
    for key in keys:
        peers.came(key, INIT, True)
    # the oldest go first: no more than the limit kept, however many ports one sender uses
    assert len(peers) == 3
    assert [peers.answers_unmarked(k, INIT_ANSWER) for k in keys] == [False, False, True, True, True]
    # a request's half-open SA may be answered for the half-open timeout, then it is forgotten
    now[0] += 29.0
    assert peers.answers_unmarked(keys[4], INIT_ANSWER)
    now[0] += 1.0
    assert not peers.answers_unmarked(keys[4], INIT_ANSWER)
    peers.came((NATT_PORT, PEER, 9), INIT, True)   # a note sweeps the expired ones from the front
    assert len(peers) == 1
