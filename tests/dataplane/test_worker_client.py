"""WorkerClient.request over a real SOCK_SEQPACKET pair, the worker's side played by the test:
an answer completes the request, silence past REQUEST_TIMEOUT fails it with EIO and forgets
it, a cancelled request leaves nothing behind for a late answer to trip over."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pipe_batches import Unbatched

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, answered, send_soon
from tunsec.dataplane.pipe import Errno

# REQUEST_TIMEOUT per step, read when a request or answered() starts: short where silence must fail the
# request, long where the answer (or the test's cancel) must come first; a short one there lost that race
# whenever the loaded machine held this process up for its 50 ms
SILENT = 0.05
ANSWERED = 30.0


def _timeout(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", seconds)


def _pair(loop: asyncio.AbstractEventLoop) -> tuple[WorkerClient, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    wc = WorkerClient(lambda msg: None)
    wc._sock = ours
    loop.add_reader(ours.fileno(), wc._readable)
    return wc, Unbatched(theirs)   # type: ignore[return-value]   # a turn's requests may come as one batch


def test_answer_timeout_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        # answered: the replies come back
        _timeout(monkeypatch, ANSWERED)
        task = asyncio.ensure_future(wc.request(lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x1234)))
        replies = await task
        assert [r.spi for r in replies] == [0x1234]
        # never answered: EIO after the timeout, and the request is forgotten
        _timeout(monkeypatch, SILENT)
        with pytest.raises(WorkerError) as err:
            await wc.request(lambda r: pipe.SpdDelete(r, 7))
        assert err.value.errno is Errno.EIO
        assert wc._pending == {}
        worker.recv(65536)
        # cancelled while waiting: a late answer is ignored, the next request still works
        _timeout(monkeypatch, ANSWERED)
        task = asyncio.ensure_future(wc.request(lambda r: pipe.SpdDelete(r, 8)))
        await asyncio.sleep(0.01)
        late = pipe.decode(worker.recv(65536))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        worker.send(pipe.encode(pipe.Reply(late.req_id, pipe.MsgType.SPDDELETE, Errno.OK)))
        nxt = asyncio.ensure_future(wc.request(lambda r: pipe.SpdDelete(r, 9)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.SPDDELETE, Errno.ENOENT)))
        with pytest.raises(WorkerError) as err:
            await nxt
        assert err.value.errno is Errno.ENOENT
        loop.remove_reader(wc._sock.fileno())
        worker.close()

    asyncio.run(body())


def test_answers_awaited_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """answered: requests sent at once (send_soon) and awaited with one timeout, each checked as
    request checks its own: OK replies, a refusal with its errno, silence as EIO (and a late
    answer to it is ignored), a worker that is gone as EIO before anything is sent."""
    # (each answer is in the socket before answered() starts: read in the turn before its timer fires)
    _timeout(monkeypatch, SILENT)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        sent = [send_soon(wc, "GetSpi", lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF)),
                send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 7)),
                send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 8))]
        await asyncio.sleep(0)   # sent at the end of the turn
        reqs = [pipe.decode(worker.recv(65536)) for _ in range(3)]   # all written before any answer
        assert [type(r).__name__ for r in reqs] == ["GetSpi", "SpdDelete", "SpdDelete"]
        worker.send(pipe.encode(pipe.Reply(reqs[0].req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x1234)))
        worker.send(pipe.encode(pipe.Reply(reqs[1].req_id, pipe.MsgType.SPDDELETE, Errno.ENOENT)))
        got = await answered(sent)
        assert not isinstance(got[0], WorkerError) and [r.spi for r in got[0]] == [0x1234]
        assert isinstance(got[1], WorkerError) and got[1].errno is Errno.ENOENT
        assert isinstance(got[2], WorkerError) and got[2].errno is Errno.EIO and "no answer" in str(got[2])
        worker.send(pipe.encode(pipe.Reply(reqs[2].req_id, pipe.MsgType.SPDDELETE, Errno.OK)))   # late
        nxt = send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 9))
        await asyncio.sleep(0)
        req = pipe.decode(worker.recv(65536))
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.SPDDELETE, Errno.OK)))
        assert not isinstance((await answered([nxt]))[0], WorkerError)
        assert wc._pending == {}
        loop.remove_reader(wc._sock.fileno())
        wc._closed()
        (gone,) = await answered([send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 10))])
        assert isinstance(gone, WorkerError) and gone.errno is Errno.EIO
        worker.close()

    asyncio.run(body())


def test_answers_are_handled_before_the_events_read_with_them() -> None:
    """In a burst the worker's IKE events (IKE_AUTHs, costly) queue ahead of install answers (each
    holds a client's IKE_AUTH answer): what was read together, answers first; each kind in order."""
    async def body() -> None:
        ours, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = Unbatched(worker)   # type: ignore[assignment]   # the requests come as one batch
        ours.setblocking(False)
        seen: list[str] = []
        wc = WorkerClient(lambda msg: seen.append(f"event {msg.spi}"))   # type: ignore[union-attr]
        wc._sock = ours
        futs = [wc.request_soon(lambda r: pipe.SpdDelete(r, 7), lambda a: seen.append(f"answer {a[0].req_id}"))
                for _ in range(2)]
        await asyncio.sleep(0)
        ids = [pipe.decode(worker.recv(65536)).req_id for _ in range(2)]   # type: ignore[union-attr]
        worker.send(pipe.encode(pipe.FirstUse(spi=0x1001)))
        worker.send(pipe.encode_ok(ids[0], pipe.MsgType.SPDDELETE))
        worker.send(pipe.encode(pipe.FirstUse(spi=0x1002)))
        worker.send(pipe.encode_ok(ids[1], pipe.MsgType.SPDDELETE))
        wc._readable()
        assert seen == [f"answer {ids[0]}", f"answer {ids[1]}", f"event {0x1001}", f"event {0x1002}"]
        assert all(f.done() for f in futs)
        worker.close()
        wc._readable()    # the end of the pipe: the client closes
        assert wc._sock is None
        ours.close()
    asyncio.run(body())


def test_a_truncated_expire_from_the_worker_is_a_counted_drop() -> None:
    """An EXPIRE cut short (its LIFETIME_CURRENT half there, or the datagram ending inside it)
    reaches no service: it is dropped and counted (tunsec status: worker.malformed), and the
    next, whole EXPIRE still gets through with its counters."""
    whole = pipe.Expire(spi=0x1000, direction=pipe.Direction.IN, hard=True, reason=pipe.ExpireReason.TIME,
                        current=pipe.Lifetime(bytes=5000, packets=40, seconds=60))
    data = pipe.encode(whole)
    length = len(data) - 12
    header_fixed = data[:12] + length.to_bytes(4, "big")   # the length field agrees with the cut
    # the last extension (LIFETIME_CURRENT, 28 bytes) keeps its header's length of 28 but only 16 of it
    cut_inside = header_fixed + data[16:-12]

    async def body() -> tuple[list[pipe.Message], int]:
        loop = asyncio.get_running_loop()
        ours, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        events: list[pipe.Message] = []
        wc = WorkerClient(events.append)
        wc._sock = ours
        loop.add_reader(ours.fileno(), wc._readable)
        for datagram in (data[:-12], cut_inside, data[:20], data):
            worker.send(datagram)
        async with asyncio.timeout(10):
            while not events:   # the whole one comes last (SOCK_SEQPACKET keeps the order)
                await asyncio.sleep(0.005)
        loop.remove_reader(ours.fileno())
        worker.close()
        ours.close()
        return events, wc.malformed

    events, malformed = asyncio.run(body())
    assert events == [whole] and malformed == 3


def test_a_request_given_up_on_is_forgotten_and_its_late_answer_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that never answers (hung, the message lost): the request is forgotten when its
    waiter gives up, not when an answer comes (a leak otherwise); an answer coming after that is
    counted (status: worker late_answers) and matched to nothing, not to a newer request."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        _timeout(monkeypatch, SILENT)
        # answered's timeout (request_soon, no timer of its own)
        (got,) = await answered([send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 7))])
        assert isinstance(got, WorkerError) and got.errno is Errno.EIO
        await asyncio.sleep(0)   # the cancelled future's callbacks
        assert wc._pending == {} and wc._parts == {}
        unanswered = pipe.decode(worker.recv(65536))
        # request's timeout, and a request whose task is cancelled
        with pytest.raises(WorkerError):
            await wc.request(lambda r: pipe.SpdDelete(r, 8))
        _timeout(monkeypatch, ANSWERED)   # the cancel, not the timeout, ends this one
        task = asyncio.ensure_future(wc.request(lambda r: pipe.SpdDelete(r, 9)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wc._pending == {}
        late = [unanswered, *(pipe.decode(worker.recv(65536)) for _ in range(2))]
        # a newer request is waiting when the late answers come: they are not taken for its answer
        nxt = send_soon(wc, "SpdDelete", lambda r: pipe.SpdDelete(r, 10))
        await asyncio.sleep(0)
        req = pipe.decode(worker.recv(65536))
        assert req.req_id not in {m.req_id for m in late}
        for m in late:
            worker.send(pipe.encode(pipe.Reply(m.req_id, pipe.MsgType.SPDDELETE, Errno.ENOENT)))
        await asyncio.sleep(0.01)
        assert wc.late == 3 and not nxt[1].done()
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.SPDDELETE, Errno.OK)))
        assert not isinstance((await answered([nxt]))[0], WorkerError)
        assert wc._pending == {} and wc.late == 3
        loop.remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    asyncio.run(body())


def test_request_ids_wrap_within_32_bits_and_skip_those_still_waited_for() -> None:
    """The pipe's request id is 32 bits (0 is for events): after 2**32-1 the ids go round to 1,
    never to an id whose request still waits for its answer (its answer would be taken for the new
    one's)."""
    async def body() -> None:
        wc, worker = _pair(asyncio.get_running_loop())
        wc._last_id = client_mod.REQ_ID_MAX - 1
        waiting = [wc.request_soon(lambda r: pipe.SpdDelete(r, 7)) for _ in range(2)]
        await asyncio.sleep(0)
        ids = [pipe.decode(worker.recv(65536)).req_id for _ in range(2)]
        assert ids == [client_mod.REQ_ID_MAX, 1]
        wc._last_id = client_mod.REQ_ID_MAX - 1    # round again while both still wait
        wc.request_soon(lambda r: pipe.SpdDelete(r, 8))
        await asyncio.sleep(0)
        assert pipe.decode(worker.recv(65536)).req_id == 2
        assert not any(f.done() for f in waiting)
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    asyncio.run(body())


def test_an_answer_in_parts_completes_once_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DUMP answered in several datagrams completes its request with all of them, in order; one
    whose last part never comes fails with EIO and its parts are forgotten; a malformed answer (a
    GETSPI's SPI below 256) is a counted drop that completes nothing."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        _timeout(monkeypatch, ANSWERED)
        drops = [(f"drop{i}", i) for i in range(4000)]
        task = asyncio.ensure_future(wc.request(lambda r: pipe.Dump(r)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        parts = pipe.encode_dump_replies(req.req_id, [], [], drops)
        assert len(parts) > 1
        for data in parts:
            worker.send(data)
        replies = await task
        assert [r.more for r in replies] == [True] * (len(parts) - 1) + [False]
        assert pipe.join_dump_replies(replies).drops == tuple(drops)
        assert wc._pending == {} and wc._parts == {}
        # the last part never comes
        _timeout(monkeypatch, SILENT)
        task = asyncio.ensure_future(wc.request(lambda r: pipe.Dump(r)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        worker.send(pipe.encode_dump_replies(req.req_id, [], [], drops)[0])
        with pytest.raises(WorkerError) as err:
            await task
        assert err.value.errno is Errno.EIO
        assert wc._pending == {} and wc._parts == {}
        # a malformed answer: dropped and counted, the request still waits for its real answer
        fut = wc.request_soon(lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF))
        await asyncio.sleep(0)
        req = pipe.decode(worker.recv(65536))
        good = pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x1234))
        worker.send(good[:-4] + (5).to_bytes(4, "big"))
        await asyncio.sleep(0.01)
        assert wc.malformed == 1 and not fut.done()
        worker.send(good)
        assert [r.spi for r in await fut] == [0x1234]
        loop.remove_reader(wc._sock.fileno())
        worker.close()

    asyncio.run(body())


def test_request_soons_failed_hook_gets_the_error_and_then_does_not() -> None:
    """``failed`` is called with the WorkerError when the worker goes (answered: ``then`` only; given
    up: neither), and the future's error counts as retrieved: asyncio logs no "never retrieved"."""
    async def body() -> None:
        ours, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = Unbatched(worker)   # type: ignore[assignment]   # the requests come as one batch
        ours.setblocking(False)
        seen: list[str] = []
        wc = WorkerClient(lambda msg: None)
        wc._sock = ours

        def soon() -> asyncio.Future[list[pipe.Reply]]:
            return wc.request_soon(lambda r: pipe.SpdDelete(r, 7), lambda a: seen.append(f"answer {a[0].req_id}"),
                                   lambda err: seen.append(f"failed {err.errno.name}"))
        answered_, given_up, lost = soon(), soon(), soon()
        await asyncio.sleep(0)
        ids = [pipe.decode(worker.recv(65536)).req_id for _ in range(3)]   # type: ignore[union-attr]
        worker.send(pipe.encode_ok(ids[0], pipe.MsgType.SPDDELETE))
        wc._readable()
        given_up.cancel()
        await asyncio.sleep(0)
        worker.close()
        wc._readable()    # the end of the pipe: what still waits fails
        assert seen == [f"answer {ids[0]}", "failed EIO"]
        assert lost._log_traceback is False   # retrieved (before the test looks at it)
        assert answered_.result()[0].errno is Errno.OK and given_up.cancelled()
        assert isinstance(lost.exception(), WorkerError)
        ours.close()
    asyncio.run(body())
