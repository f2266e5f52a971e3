"""The worker's pipe reader (worker.PipeReader) over a real SOCK_SEQPACKET socketpair: the answers
to a turn's requests leave together after the turn, in order with any event raised meanwhile, at
most BATCH requests per turn; end of file is reported; while answers wait for room, no request is
read (backpressure)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tunsec.dataplane.worker import PipeReader

Pair = tuple[socket.socket, socket.socket, asyncio.AbstractEventLoop]   # control's end, the worker's, a loop


@pytest.fixture
def pair() -> Iterator[Pair]:
    control, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control.setblocking(False)
    worker.setblocking(False)
    loop = asyncio.new_event_loop()
    yield control, worker, loop
    loop.close()
    control.close()
    worker.close()


def received(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(65536))
        except BlockingIOError:
            return out


def test_the_answers_of_a_turn_leave_together_after_it_in_order(pair: Pair) -> None:
    control, chan, loop = pair
    seen_before_done: list[list[bytes]] = []

    def handle(data: bytes) -> list[bytes]:
        seen_before_done.append(received(control))   # nothing answered while the turn reads
        return [b"answer " + data]

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    for i in range(5):
        control.send(b"request %d" % i)
    reader.readable()
    assert seen_before_done == [[]] * 5
    assert received(control) == [b"answer request %d" % i for i in range(5)]


def test_an_event_raised_during_the_turn_keeps_its_place(pair: Pair) -> None:
    control, chan, loop = pair
    reader: PipeReader

    def handle(data: bytes) -> list[bytes]:
        if data == b"2":
            reader.writer.send(b"event", is_event=True)
        return [b"answer " + data]

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    for i in (1, 2, 3):
        control.send(b"%d" % i)
    reader.readable()
    assert received(control) == [b"answer 1", b"event", b"answer 2", b"answer 3"]


def test_a_turn_reads_at_most_batch_requests_and_the_next_the_rest(pair: Pair) -> None:
    control, chan, loop = pair
    reader = PipeReader(chan, loop, lambda data: [data], lambda: None)
    reader.start()
    n = PipeReader.BATCH + 5
    for i in range(n):
        control.send(i.to_bytes(2, "big"))
    reader.readable()
    assert len(received(control)) == PipeReader.BATCH
    reader.readable()
    assert [int.from_bytes(d, "big") for d in received(control)] == list(range(PipeReader.BATCH, n))


def test_end_of_file_is_reported_after_the_answers_before_it(pair: Pair) -> None:
    control, chan, loop = pair
    ended: list[bool] = []
    reader = PipeReader(chan, loop, lambda data: [data], lambda: ended.append(True))
    reader.start()
    control.send(b"last")
    control.shutdown(socket.SHUT_WR)
    reader.readable()
    assert ended == [True]
    assert received(control) == [b"last"]


def test_no_request_is_read_while_answers_wait_for_room(pair: Pair) -> None:
    control, chan, loop = pair
    chan.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    handled: list[bytes] = []

    def handle(data: bytes) -> list[bytes]:
        handled.append(data)
        return [bytes(2000)] * 8     # more than the pipe takes while the control process does not read

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    control.send(b"one")
    reader.readable()
    assert not reader.reading and reader.writer.queue     # answers wait; requests are not read
    control.send(b"two")
    assert handled == [b"one"]
    while reader.writer.queue:                            # the control process reads: room again
        received(control)
        reader.writer._drain()
    assert reader.reading
    reader.readable()
    assert handled == [b"one", b"two"]
