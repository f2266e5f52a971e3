"""The control process's requests, held for the end of the event-loop turn that made them
(WorkerClient._send/_flush), over a real SOCK_SEQPACKET socketpair: none leaves during the turn,
all leave at its end in the order they were made (behind those still waiting for room in a full
pipe), a stopping client sends what it holds before it closes, and a held request the pipe
refuses fails with EIO instead of waiting for an answer that cannot come.  A turn's requests leave
as few datagrams as fit (pipe.batch), which ``_received`` takes apart."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from pipe_batches import messages

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, send_soon
from tunsec.dataplane.pipe import Errno


def _pair() -> tuple[WorkerClient, socket.socket]:
    """A client on one end (its reader on the running loop), the worker's end non-blocking."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    wc = WorkerClient(lambda msg: None)
    wc._sock = ours
    asyncio.get_running_loop().add_reader(ours.fileno(), wc._readable)
    return wc, theirs


def _received(s: socket.socket, datagrams: list[bytes] | None = None) -> list[pipe.Message]:
    """What waits to be read, up to the end of the pipe, batches taken apart; ``datagrams``: each
    datagram as read."""
    out = []
    while True:
        try:
            data = s.recv(pipe.MAX_MESSAGE)
        except BlockingIOError:
            return out
        if not data:
            return out
        if datagrams is not None:
            datagrams.append(data)
        out += [pipe.decode(m) for m in messages(data)]


def _ok(m: pipe.Message) -> bytes:
    if isinstance(m, pipe.GetSpi):
        return pipe.encode(pipe.Reply(m.req_id, m.TYPE, Errno.OK, spi=m.lo))
    return pipe.encode_ok(m.req_id, m.TYPE)   # type: ignore[union-attr]


def _requests(n: int) -> list[Callable[[int], pipe.Message]]:
    """n requests of different kinds, each naming its place (policy id / SPI) to check the order."""
    kinds: list[Callable[[int, int], pipe.Message]] = [
        lambda r, i: pipe.GetSpi(r, 0x1000 + i, 0x1000 + i),
        lambda r, i: pipe.SpdDelete(r, i),
        lambda r, i: pipe.Delete(r, 0x1000 + i, pipe.Direction.IN),
    ]
    return [lambda r, i=i: kinds[i % len(kinds)](r, i) for i in range(n)]   # type: ignore[misc]


def _place(msg: pipe.Message) -> int:
    match msg:
        case pipe.GetSpi():
            return msg.lo - 0x1000
        case pipe.SpdDelete():
            return msg.id
        case pipe.Delete():
            return msg.spi - 0x1000
    raise AssertionError(f"unexpected {msg!r}")


def _close(wc: WorkerClient, theirs: socket.socket) -> None:
    wc._closed()
    theirs.close()


def test_a_turns_requests_leave_together_at_its_end_in_order() -> None:
    """Requests made by several callbacks of one turn (as a burst's GETSPI refill, install and
    SEND_IKE are) reach the worker only after the turn, all of them, in the order they were made,
    with their request ids in that order; answered, each completes its own request."""
    async def body() -> None:
        wc, theirs = _pair()
        loop = asyncio.get_running_loop()
        made: list[asyncio.Future[list[pipe.Reply]]] = []
        during: list[list[pipe.Message]] = []
        builds = _requests(9)

        def callback(part: list[Callable[[int], pipe.Message]]) -> None:
            made.extend(wc.request_soon(b) for b in part)
            during.append(_received(theirs))

        for k in range(3):   # three callbacks in the same turn
            loop.call_soon(callback, builds[3 * k:3 * k + 3])
        await asyncio.sleep(0)   # the callbacks' turn
        await asyncio.sleep(0)   # the turn after: the flush has run before this task resumes
        assert during == [[], [], []]
        datagrams: list[bytes] = []
        reqs = _received(theirs, datagrams)
        assert [_place(m) for m in reqs] == list(range(9))
        assert len(datagrams) == 1   # one batch, one send and one read for the nine
        ids = [m.req_id for m in reqs]
        assert ids == sorted(ids) and len(set(ids)) == 9
        for m in reversed(reqs):
            theirs.send(_ok(m))
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*made)
        assert [a[0].req_id for a in answers] == ids
        assert wc._pending == {}
        _close(wc, theirs)

    asyncio.run(body())


def test_an_awaited_request_is_sent_before_its_waiter_sleeps() -> None:
    """request() awaits its answer right after making it: the turn ends there and the request
    leaves; a worker that answers what it reads completes it (and send_soon's batch with it)."""
    async def body() -> None:
        wc, theirs = _pair()
        loop = asyncio.get_running_loop()

        def worker_answers() -> None:
            for m in _received(theirs):
                theirs.send(_ok(m))

        loop.add_reader(theirs.fileno(), worker_answers)
        soon = send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 1))
        async with asyncio.timeout(5):
            replies = await wc.request(lambda r: pipe.SpdDelete(r, 2))
            assert replies[0].errno is Errno.OK
            assert (await soon[1])[0].req_id < replies[0].req_id
        loop.remove_reader(theirs.fileno())
        _close(wc, theirs)

    asyncio.run(body())


def test_held_requests_queue_behind_a_full_pipe_in_order() -> None:
    """The worker reads nothing for a while: a turn's requests fill the pipe, the rest and the next
    turns' wait for room; when the worker reads, it gets every one, in the order made."""
    async def body() -> None:
        wc, theirs = _pair()
        # a small send buffer: batches pack the requests tighter than one datagram each did
        wc._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)   # type: ignore[union-attr]
        builds = _requests(3000)
        for start in range(0, len(builds), 1000):   # three turns of 1000
            for b in builds[start:start + 1000]:
                wc.request_soon(b)
            await asyncio.sleep(0)
        assert wc._outq, "the pipe never filled: the test proves nothing"
        got: list[pipe.Message] = []
        async with asyncio.timeout(10):
            while len(got) < len(builds):
                got += _received(theirs)
                await asyncio.sleep(0)   # the client's writer (_drain) sends what waits
        assert [_place(m) for m in got] == list(range(len(builds)))
        _close(wc, theirs)

    asyncio.run(body())


def test_a_stopping_client_sends_what_it_holds_then_closes() -> None:
    async def body() -> None:
        wc, theirs = _pair()
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())   # type: ignore[union-attr]
        futs = [wc.request_soon(b) for b in _requests(3)]
        await wc.stop()   # in the same turn: no flush has run
        assert [_place(m) for m in _received(theirs)] == [0, 1, 2]   # (_received reads up to the end)
        for f in futs:   # nobody answers a closed pipe: the requests fail, none waits on
            assert isinstance(f.exception(), WorkerError)
        theirs.close()

    asyncio.run(body())


def test_a_held_request_the_pipe_refuses_fails_at_once() -> None:
    """The worker's end closes before the turn's end: the held requests cannot be sent; each fails
    with EIO then (SEND_IKE's future, say, does not wait for an answer that cannot come), and
    nothing of them stays pending (the two went as one batch: each of its requests fails)."""
    async def body() -> None:
        wc, theirs = _pair()
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())   # type: ignore[union-attr]
        futs = [wc.request_soon(b) for b in _requests(2)]
        theirs.close()
        await asyncio.sleep(0)
        for f in futs:
            err = f.exception()
            assert isinstance(err, WorkerError) and err.errno is Errno.EIO
        assert wc._pending == {}
        wc._closed()

    asyncio.run(body())


def test_requests_beyond_send_queue_max_are_refused_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "SEND_QUEUE_MAX", 3)

    async def body() -> None:
        wc, theirs = _pair()
        builds = _requests(4)
        for b in builds[:3]:
            wc.request_soon(b)
        with pytest.raises(WorkerError) as err:
            wc.request_soon(builds[3])
        assert err.value.errno is Errno.EIO and len(wc._pending) == 3
        await asyncio.sleep(0)
        assert [_place(m) for m in _received(theirs)] == [0, 1, 2]
        _close(wc, theirs)

    asyncio.run(body())
