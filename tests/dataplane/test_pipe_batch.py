"""Several pipe messages in one datagram (pipe.batch, docs/pipe.md "Batches"): what ``pack`` makes
and ``split`` takes apart, every framing fault refused with the messages before it kept; both ends of
the pipe send a turn's messages as one batch and read a batch as its messages, in order (a batch the
pipe refuses fails each request in it: test_request_batch.py's held requests the pipe refuses)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pipe_batches import messages

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.pipe import Errno, MsgType, batch
from tunsec.dataplane.pipe.wire import _HEADER
from tunsec.dataplane.pipeio import PipeWriter


def _ok(req_id: int) -> bytes:
    return pipe.encode_ok(req_id, MsgType.SPDDELETE)


def _requests(n: int) -> list[bytes]:
    return [pipe.encode(pipe.SpdDelete(i + 1, i)) for i in range(n)]


def test_batch_type_is_no_message_type_and_decode_refuses_a_batch() -> None:
    """A batch is framing: no MsgType has its number, and decode() of one (a batch is never one
    message) says unknown type, as for any unknown number."""
    assert batch.BATCH_TYPE not in {int(t) for t in MsgType}
    data, end = batch.pack(_requests(2))
    assert end == 2 and batch.is_batch(data)
    with pytest.raises(pipe.PipeError) as err:
        pipe.decode(data)
    assert err.value.errno is Errno.ETYPE


def test_pack_and_split_give_back_the_messages_byte_for_byte_in_order() -> None:
    reqs = _requests(5)
    data, end = batch.pack(reqs)
    assert end == 5
    assert data[:16] == _HEADER.pack(1, batch.BATCH_TYPE, 0, 0, 0, bytes(3), len(data))
    assert batch.split(data) == (reqs, None)
    assert [pipe.decode(m) for m in batch.split(data)[0]] == [pipe.SpdDelete(i + 1, i) for i in range(5)]


def test_one_message_goes_alone_and_a_long_one_is_never_wrapped() -> None:
    one = _requests(1)
    assert batch.pack(one) == (one[0], 1)
    long = pipe.encode(pipe.SendIke(9, bytes(20000), pipe.Endpoint(ipaddress.ip_address("192.0.2.1"), 500)))
    reqs = [*_requests(2), long, *_requests(2)]
    datagrams, at = [], 0
    while at < len(reqs):
        data, at = batch.pack(reqs, at, 16384)
        datagrams.append(data)
    assert datagrams[1] == long   # over the limit: alone, as it always went
    assert [m for d in datagrams for m in messages(d)] == reqs
    assert all(len(d) <= 16384 for d in datagrams if d is not long)


@given(st.lists(st.integers(16, 3000), min_size=1, max_size=60), st.integers(16, 20000))
def test_pack_never_exceeds_its_limit_and_loses_nothing(sizes: list[int], limit: int) -> None:
    msgs = [_HEADER.pack(1, 1, 0, i + 1, 0, bytes(3), n) + bytes(n - 16) for i, n in enumerate(sizes)]
    out, at = [], 0
    while at < len(msgs):
        data, end = batch.pack(msgs, at, limit)
        assert end > at
        assert end == at + 1 or len(data) <= limit
        if end == at + 1:
            assert data == msgs[at]
        out += messages(data)
        at = end
    assert out == msgs


def _bad(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


@pytest.mark.parametrize("fault", [
    "short", "version", "errno", "req_id", "flags", "reserved", "length", "empty", "inner_short", "inner_len_small",
    "inner_len_over", "nested", "tail",
])
def test_split_refuses_every_framing_fault_and_keeps_what_came_before(fault: str) -> None:
    reqs = _requests(3)
    good, _ = batch.pack(reqs)
    second = 16 + len(reqs[0])   # where the second message starts
    header_faults = {
        "short": good[:15],
        "version": _bad(good, 0, b"\x02"),
        "errno": _bad(good, 2, b"\x00\x01"),
        "req_id": _bad(good, 4, b"\x00\x00\x00\x01"),
        "flags": _bad(good, 8, b"\x01"),
        "reserved": _bad(good, 9, b"\x01"),
        "length": _bad(good, 12, (len(good) + 1).to_bytes(4, "big")),
        "empty": _HEADER.pack(1, batch.BATCH_TYPE, 0, 0, 0, bytes(3), 16),
    }
    if fault in header_faults:
        kept, wrong = batch.split(header_faults[fault])
        assert kept == [] and wrong
        return
    if fault == "inner_short":   # 8 bytes after the first message: no header
        data = good[:second] + bytes(8)
    elif fault == "inner_len_small":
        data = _bad(good, second + 12, (15).to_bytes(4, "big"))
    elif fault == "inner_len_over":
        data = _bad(good, second + 12, (len(good)).to_bytes(4, "big"))
    elif fault == "nested":
        data = _bad(good, second + 1, bytes([batch.BATCH_TYPE]))
    else:   # "tail": a whole first message, then 3 bytes
        data = good[:second] + b"\x01\x02\x03"
    data = _bad(data, 12, len(data).to_bytes(4, "big"))   # the outer length right: the fault is inside
    kept, wrong = batch.split(data)
    assert kept == reqs[:1] and wrong


def test_limit_follows_a_small_send_buffer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        assert batch.limit(a) == batch.BATCH_BYTES   # the default buffer holds several
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        small = batch.limit(a)
        assert small < batch.BATCH_BYTES
        data, end = batch.pack([bytes([1, 1]) + bytes(10) + (600).to_bytes(4, "big") + bytes(584)] * 20, 0, small)
        a.send(data)   # the kernel takes it (a datagram over the buffer would be EMSGSIZE)
        assert 1 < end < 20 and len(b.recv(65536)) == len(data)
    finally:
        a.close()
        b.close()


def _writer() -> tuple[PipeWriter, socket.socket, socket.socket, asyncio.AbstractEventLoop]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = asyncio.new_event_loop()
    return PipeWriter(ours, loop, lambda pause: None), ours, theirs, loop


def _datagrams(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


_EVENT = pipe.encode(pipe.FirstUse(spi=0x1001))
_IKE = pipe.encode(pipe.Ike(data=bytes(40), remote=pipe.Endpoint(ipaddress.ip_address("198.51.100.1"), 4500)))


def test_the_worker_writer_sends_a_turn_as_one_batch_in_order() -> None:
    """PipeWriter.release with nothing waiting: the turn's answers and the event raised among them
    leave as one datagram, in their order."""
    writer, ours, theirs, loop = _writer()
    try:
        held = writer.hold()
        held += [_ok(1), _ok(2)]
        writer.send(_EVENT, is_event=True)
        held += [_ok(3), _ok(4), _ok(5)]
        writer.release()
        datagrams = _datagrams(theirs)
        assert len(datagrams) == 1
        assert [pipe.decode(m) for m in messages(datagrams[0])] == [
            pipe.Reply(1, MsgType.SPDDELETE, Errno.OK), pipe.Reply(2, MsgType.SPDDELETE, Errno.OK),
            pipe.FirstUse(spi=0x1001), *(pipe.Reply(i, MsgType.SPDDELETE, Errno.OK) for i in (3, 4, 5))]
    finally:
        loop.close()
        ours.close()
        theirs.close()


def test_behind_what_waits_the_answers_between_two_events_go_together() -> None:
    """Something waits in the writer's queue already: each held item takes its own way behind it
    (answers batched between two events, the event alone), in order."""
    writer, ours, theirs, loop = _writer()
    try:
        writer.queue.append((_ok(9), False))   # as if the pipe had had no room for it
        writer.events_waiting = 1
        held = writer.hold()
        held += [_ok(1), _ok(2)]
        writer.send(_EVENT, is_event=True)
        held += [_ok(3)]
        writer.release()
        assert [len(messages(d)) for d, _ in writer.queue] == [1, 2, 1, 1]
        writer._drain()
        got = [pipe.decode(m) for d in _datagrams(theirs) for m in messages(d)]
        assert got == [pipe.Reply(i, MsgType.SPDDELETE, Errno.OK) for i in (9, 1, 2)] + [
            pipe.FirstUse(spi=0x1001), pipe.Reply(3, MsgType.SPDDELETE, Errno.OK)]
    finally:
        loop.close()
        ours.close()
        theirs.close()


def test_a_drain_of_ike_events_leaves_together_or_into_their_queues() -> None:
    """PipeWriter.holding (the worker's drain of the fast path's events): the IKE events of one drain
    leave as one datagram; when the pipe has no room, each goes to its queue and shares, as alone."""
    writer, ours, theirs, loop = _writer()
    try:
        def drain() -> None:
            for _ in range(5):
                writer.send(_IKE, is_event=True)

        writer.holding(drain)()
        datagrams = _datagrams(theirs)
        assert [len(messages(d)) for d in datagrams] == [5]
        while True:   # the pipe full
            try:
                ours.send(bytes(4096))
            except BlockingIOError:
                break
        writer.holding(drain)()
        assert len(writer.ike) == 5 and writer.ike_bytes == 5 * len(_IKE)
        writer.loop.remove_writer(ours.fileno())
    finally:
        loop.close()
        ours.close()
        theirs.close()


def _client() -> tuple[WorkerClient, socket.socket, list[pipe.Message]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    events: list[pipe.Message] = []
    wc = WorkerClient(events.append)
    wc._sock = ours
    return wc, theirs, events


def test_the_client_reads_a_batch_as_its_answers_and_events_in_order() -> None:
    """A batch from the worker: each answer completes its request, answers before the events read
    with them (as for separate datagrams), each kind in order."""
    async def body() -> None:
        wc, theirs, events = _client()
        seen: list[int] = []
        futs = [wc.request_soon(lambda r: pipe.SpdDelete(r, 7), lambda a: seen.append(a[0].req_id)) for _ in range(3)]
        wc.flush()
        ids = [pipe.decode(m).req_id for m in messages(theirs.recv(65536))]   # type: ignore[union-attr]
        assert len(ids) == 3
        data, _ = batch.pack([_ok(ids[0]), pipe.encode(pipe.FirstUse(spi=0x1001)), _ok(ids[1]), _ok(ids[2])])
        theirs.send(data)
        wc._readable()
        assert seen == ids and all(f.done() for f in futs)
        assert events == [pipe.FirstUse(spi=0x1001)]
        assert wc.malformed == 0 and wc._pending == {}
        wc._closed()
        theirs.close()

    asyncio.run(body())


def test_a_batch_from_the_worker_with_a_framing_fault_counts_malformed_after_what_came_before() -> None:
    async def body() -> None:
        wc, theirs, _ = _client()
        futs = [wc.request_soon(lambda r: pipe.SpdDelete(r, 7)) for _ in range(2)]
        wc.flush()
        ids = [pipe.decode(m).req_id for m in messages(theirs.recv(65536))]   # type: ignore[union-attr]
        data, _ = batch.pack([_ok(ids[0]), _ok(ids[1])])
        broken = data[:16 + 16] + bytes(8)   # the second answer cut to 8 bytes
        theirs.send(broken[:12] + len(broken).to_bytes(4, "big") + broken[16:])
        wc._readable()
        assert futs[0].done() and not futs[1].done()
        assert wc.malformed == 1
        wc._closed()
        theirs.close()

    asyncio.run(body())


def test_requests_waiting_for_room_leave_in_batches_in_order() -> None:
    """A full pipe: what waits in the client goes out in batches as room comes, all of it, in order."""
    async def body() -> None:
        wc, theirs, _ = _client()
        wc._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)   # type: ignore[union-attr]
        for _ in range(400):
            wc.request_soon(lambda r: pipe.SpdDelete(r, 7))
        wc.flush()
        assert wc._outq, "the pipe never filled: the test proves nothing"
        got: list[int] = []
        datagrams = 0
        async with asyncio.timeout(10):
            while len(got) < 400:
                try:
                    data = theirs.recv(65536)
                except BlockingIOError:
                    await asyncio.sleep(0)   # the client's writer (_drain) sends what waits
                    continue
                datagrams += 1
                got += [pipe.decode(m).req_id for m in messages(data)]   # type: ignore[union-attr]
        assert got == sorted(got) and len(set(got)) == 400
        assert datagrams < 400 / 4   # batches, not one datagram a request
        wc._closed()
        theirs.close()

    asyncio.run(body())
