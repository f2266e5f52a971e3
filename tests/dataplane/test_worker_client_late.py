"""request_soon's ``late``: the answer to a request given up on, wanted after all (review revworker2 F3).

A GETSPI answered after its waiter gave up made a larval SA that only the answer names; WorkerClient
counted the answer and dropped it undecoded, so the SPI pool could never DELETE that SA.  Over a real
SOCK_SEQPACKET pair, the worker's side played by the test (as test_worker_client.py): a given-up
request's late answer goes to its ``late`` handler, once; an answer in time, or a failure, never does;
the request id is not reused while its late answer is still wanted; the table is bounded.
"""

from __future__ import annotations

import asyncio

import pytest
from test_worker_client import _pair

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError, answered, send_soon
from tunsec.dataplane.late_answers import LateAnswers
from tunsec.dataplane.pipe import Errno

SILENT = 0.05


def _getspi(r: int) -> pipe.GetSpi:
    return pipe.GetSpi(r, 0xC0000000, 0xC0FFFFFF, larval_seconds=0)


def test_a_late_answer_goes_to_the_late_handler_of_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before the change (request_soon had no ``late``; the late answer was dropped undecoded)."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        seen: list[tuple[str, int | None]] = []
        monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", SILENT)
        given_up = send_soon(wc, "GetSpi", _getspi, late=lambda a: seen.append(("late", a[0].spi)))
        (got,) = await answered([given_up])
        assert isinstance(got, WorkerError)
        await asyncio.sleep(0)   # the cancelled future's callbacks: forgotten, its handler kept
        req = pipe.decode(worker.recv(65536))
        # an answer in time: ``then``, never ``late``; nothing kept for it afterwards
        monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", 30.0)
        in_time = send_soon(wc, "GetSpi", _getspi, then=lambda a: seen.append(("then", a[0].spi)),
                            late=lambda a: seen.append(("late of the answered", a[0].spi)))
        await asyncio.sleep(0)
        req2 = pipe.decode(worker.recv(65536))
        assert req2.req_id != req.req_id
        worker.send(pipe.encode(pipe.Reply(req2.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0xC0000002)))
        await answered([in_time])
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0xC0000001)))
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0xC0000003)))  # again
        worker.send(pipe.encode(pipe.Reply(req2.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0xC0000004)))
        await asyncio.sleep(0.05)
        assert seen == [("then", 0xC0000002), ("late", 0xC0000001)], seen
        assert wc.late == 3 and wc._pending == {}
        assert not wc._late.holds(req.req_id) and not wc._late.holds(req2.req_id)
        loop.remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    asyncio.run(body())


def test_a_failed_request_never_calls_late_and_a_wanted_id_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before the change (no ``late``).  The worker gone: the request fails, its handler is
    dropped.  A given-up request whose late answer is wanted keeps its id: a newer request drawing
    the same number would take that late answer for its own."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        seen: list[object] = []
        monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", SILENT)
        (got,) = await answered([send_soon(wc, "GetSpi", _getspi, late=seen.append)])
        assert isinstance(got, WorkerError)
        await asyncio.sleep(0)
        wanted = pipe.decode(worker.recv(65536)).req_id
        wc._last_id = wanted - 1   # the next id would be the wanted one's
        nxt = wc.request_soon(_getspi, late=seen.append)
        await asyncio.sleep(0)
        assert pipe.decode(worker.recv(65536)).req_id != wanted
        loop.remove_reader(wc._sock.fileno())
        wc._closed()   # the worker went: the pending request fails, nothing is wanted any more
        await asyncio.sleep(0)
        assert nxt.done() and isinstance(nxt.exception(), WorkerError)
        assert seen == [] and not wc._late.holds(wanted)
        worker.close()

    asyncio.run(body())


def test_the_given_up_requests_remembered_are_bounded() -> None:
    """A hung worker never answers: the oldest given-up requests are forgotten past ``kept``."""
    late = LateAnswers(kept=2)
    for req_id in (1, 2, 3):
        late.want(req_id, lambda a: None)
        late.ended(req_id, given_up=True)
    late.want(4, lambda a: None)
    late.ended(4, given_up=False)   # answered in time
    assert [late.holds(i) for i in (1, 2, 3, 4)] == [False, True, True, False]
    assert late.forgotten == 1
    assert late.take(2) is not None and late.take(2) is None
