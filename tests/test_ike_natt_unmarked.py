"""Review revcsmall F1: on port 4500 an IKE_SA_INIT response goes back the way its request came.

The worker's IKE event says whether the datagram came without the non-ESP marker; the engine gives
the answer to such an IKE_SA_INIT request the mark (``Datagram.unmarked``, ike/unmarked.py) and
SEND_IKE carries it (``unmarked``).  Before, the worker decided by port alone
(``constants.natt_marks``: every IKE_SA_INIT response to port 500 unmarked), so a client whose port
4500 a NAT maps to public port 500 and that starts from its 4500, marked (strongSwan's
reauthentication), got an answer it drops as ESP; and a client whose port 500 a NAT maps to
another port (``remote_port = 4500``, unmarked) got a marked one.  Here: a real responder engine,
and IkeSockets with a worker that records the SEND_IKEs it is asked for; the real charon cases are
in tests/interop/test_review_revcsmall_natt500.py, a spoofer's in test_review_revnatt_unmarked.py."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from ike.endpoint_dos_data import A, cfg, cookie_of, init_request, with_cookie, with_spi

from tunsec.dataplane import pipe
from tunsec.ike.constants import IKE_VERSION, NATT_PORT, ExchangeType, HeaderFlag
from tunsec.ike.endpoint import Datagram, DosLimits, IkeEndpoint
from tunsec.services.ike.sockets import IkeSockets

PEER = "192.0.2.7"


def header(exchange: int, flags: int) -> bytes:
    """A bare IKE header (28 bytes, no payloads) of the given exchange and flags."""
    return bytes(range(1, 9)) + bytes(8) + struct.pack("!BBBBII", 0, IKE_VERSION, exchange, flags, 0, 28)


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


def test_send_ike_carries_the_datagrams_mark() -> None:
    async def run() -> None:
        s, worker = sockets()
        for data, unmarked in ((INIT_ANSWER, False), (INIT_ANSWER, True), (AUTH_ANSWER, False)):
            s.send(Datagram(data, (PEER, 500), NATT_PORT, None, unmarked))
            assert worker.sent[-1].data == data and worker.sent[-1].unmarked is unmarked
    asyncio.run(run())


def answers(b: IkeEndpoint, request: bytes, src: tuple[str, int], unmarked: bool, now: float = 1.0) -> list[Datagram]:
    b.receive(request, src, now, None, unmarked)
    return b.datagrams_to_send(now)


def test_an_unmarked_ike_sa_init_request_is_answered_unmarked_and_a_marked_one_marked() -> None:
    b = IkeEndpoint([cfg(False)])
    request = init_request()
    for i, port in enumerate((500, 40500)):   # remote_port = 4500 from its 500, which a NAT may give another
        (answer,) = answers(b, with_spi(request, i), (A, port), True)
        assert answer.unmarked and answer.addr == (A, port)
    # a client's 4500 the NAT shows as 500, starting from it, marked
    (answer,) = answers(b, with_spi(request, 7), (A, 500), False)
    assert not answer.unmarked


def test_a_copy_of_the_request_is_answered_the_way_it_came() -> None:
    """The answer stored for a retransmission goes back as that copy came (a NAT's new mapping, a
    client that floats): the mark is the request's, not the peer's."""
    b = IkeEndpoint([cfg(False)])
    request = init_request()
    (first,) = answers(b, request, (A, 500), True)
    (again,) = answers(b, request, (A, 500), False, 2.0)
    (third,) = answers(b, request, (A, 500), True, 3.0)
    assert first.data == again.data == third.data and b.sa_count == 1
    assert (first.unmarked, again.unmarked, third.unmarked) == (True, False, True)


def test_a_cookie_demand_goes_back_the_way_its_request_came() -> None:
    b = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold=0))
    request = init_request()
    (demand,) = answers(b, request, (A, 500), True)
    assert demand.unmarked and cookie_of(demand.data)
    (answer,) = answers(b, with_cookie(request, cookie_of(demand.data)), (A, 500), True)
    assert answer.unmarked and b.half_open == 1


def test_nothing_but_the_ike_sa_init_answer_is_unmarked() -> None:
    """The initiator's IKE_AUTH (marked, after it floated) and everything the gateway sends later
    go marked: an unauthenticated header must not unmark a marking peer's messages."""
    a, b = IkeEndpoint([cfg(True)]), IkeEndpoint([cfg(False)])
    a.initiate("conn", "net", 0.0)
    seen: list[Datagram] = []
    for _ in range(6):
        for d in a.datagrams_to_send(1.0):
            b.receive(d.data, (A, 500), 1.0, None, _is_init_request(d.data))
        for d in b.datagrams_to_send(1.0):
            seen.append(d)
            a.receive(d.data, d.addr, 1.0)
    assert len(seen) == 2 and b.established_count == 1   # IKE_SA_INIT and IKE_AUTH answered
    assert [d.unmarked for d in seen] == [True, False]
    # an unmarked header that is no IKE_SA_INIT request unmarks nothing
    b.receive(AUTH_ANSWER, (A, 500), 2.0, None, True)
    b.receive(INIT_ANSWER, (A, 500), 2.0, None, True)
    assert not any(d.unmarked for d in b.datagrams_to_send(2.0))


def _is_init_request(data: bytes) -> bool:
    return data[18] == ExchangeType.IKE_SA_INIT and not data[19] & HeaderFlag.RESPONSE
