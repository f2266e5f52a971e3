"""The worker's pipe reader (worker.PipeReader) over a real SOCK_SEQPACKET socketpair: the answers
to a turn's requests leave together after the turn, in order with any event raised meanwhile, at
most BATCH requests per turn; end of file is reported; while answers wait for room, no request is
read (backpressure).  The answers between two events leave as one datagram (pipe.batch), which
``received`` takes apart: the fake requests and answers here are framed as messages (``framed``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from pipe_batches import messages

from tunsec.dataplane.pipe import batch
from tunsec.dataplane.pipe.wire import _HEADER
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


def framed(body: bytes) -> bytes:
    """A message with body after a header that says its length (a reply, as the worker sends)."""
    return _HEADER.pack(1, 1, 0, 1, 1, bytes(3), 16 + len(body)) + body


def body(message: bytes) -> bytes:
    return message[16:]


def received(s: socket.socket, datagrams: list[bytes] | None = None) -> list[bytes]:
    """The bodies of the messages waiting, batches taken apart; ``datagrams``: each datagram read."""
    out = []
    while True:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return out
        if datagrams is not None:
            datagrams.append(data)
        out += [body(m) for m in messages(data)]


def recording(chan: socket.socket, loop: asyncio.AbstractEventLoop) -> tuple[PipeReader, list[bytes]]:
    """A started reader whose handler keeps each request it is given and answers none."""
    handled: list[bytes] = []

    def handle(data: bytes) -> list[bytes]:
        handled.append(data)
        return []

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    return reader, handled


def test_the_answers_of_a_turn_leave_together_after_it_in_order(pair: Pair) -> None:
    control, chan, loop = pair
    seen_before_done: list[list[bytes]] = []

    def handle(data: bytes) -> list[bytes]:
        seen_before_done.append(received(control))   # nothing answered while the turn reads
        return [framed(b"answer " + body(data))]

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    for i in range(5):
        control.send(framed(b"request %d" % i))
    reader.readable()
    assert seen_before_done == [[]] * 5
    datagrams: list[bytes] = []
    assert received(control, datagrams) == [b"answer request %d" % i for i in range(5)]
    assert len(datagrams) == 1 and batch.is_batch(datagrams[0])   # one batch: one read for the five


def test_a_batch_of_requests_is_handled_as_its_requests_in_order(pair: Pair) -> None:
    """A batch from the control process: each request handled alone, in order, and answered."""
    control, chan, loop = pair
    handled: list[bytes] = []

    def handle(data: bytes) -> list[bytes]:
        handled.append(data)
        return [framed(b"answer " + body(data))]

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    requests = [framed(b"request %d" % i) for i in range(5)]
    data, end = batch.pack(requests)
    assert end == 5 and batch.is_batch(data)
    control.send(data)
    control.send(framed(b"alone"))
    reader.readable()
    assert handled == [*requests, framed(b"alone")]
    assert received(control) == [*(b"answer request %d" % i for i in range(5)), b"answer alone"]


def test_a_batch_whose_framing_breaks_is_handled_up_to_the_fault(pair: Pair) -> None:
    """The messages before a framing fault are handled; what follows cannot be told apart and is not."""
    control, chan, loop = pair
    reader, handled = recording(chan, loop)
    good, bad = framed(b"first"), bytearray(framed(b"second"))
    bad[12:16] = (1000).to_bytes(4, "big")   # says it is longer than what is left
    data = bytearray(batch.pack([good, bytes(bad)])[0])
    control.send(bytes(data))
    reader.readable()
    assert handled == [good]


def test_an_event_raised_during_the_turn_keeps_its_place(pair: Pair) -> None:
    control, chan, loop = pair
    reader: PipeReader

    def handle(data: bytes) -> list[bytes]:
        if body(data) == b"2":
            reader.writer.send(framed(b"event"), is_event=True)
        return [framed(b"answer " + body(data))]

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    for i in (1, 2, 3):
        control.send(framed(b"%d" % i))
    reader.readable()
    assert received(control) == [b"answer 1", b"event", b"answer 2", b"answer 3"]


def test_a_turn_reads_at_most_batch_requests_and_the_next_the_rest(pair: Pair) -> None:
    control, chan, loop = pair
    reader = PipeReader(chan, loop, lambda data: [data], lambda: None)
    reader.start()
    n = PipeReader.BATCH + 5
    for i in range(n):
        control.send(framed(i.to_bytes(2, "big")))
    reader.readable()
    assert len(received(control)) == PipeReader.BATCH
    reader.readable()
    assert [int.from_bytes(d, "big") for d in received(control)] == list(range(PipeReader.BATCH, n))


def test_a_turn_counts_a_batchs_requests_towards_batch(pair: Pair) -> None:
    """Requests in batches count one each: a turn reads datagrams until BATCH requests are in (the
    batch that reaches it whole), and the next turn the rest, so batches do not make a turn longer
    for the worker's other work than BATCH requests did."""
    control, chan, loop = pair
    reader, handled = recording(chan, loop)
    per = 10
    requests = [framed(i.to_bytes(2, "big")) for i in range(3 * PipeReader.BATCH)]
    for at in range(0, len(requests), per):
        control.send(batch.pack(requests[at:at + per])[0])
    reader.readable()
    assert len(handled) == -(-PipeReader.BATCH // per) * per   # whole batches, up to the one reaching BATCH
    reader.readable()
    reader.readable()
    reader.readable()
    assert handled == requests


def test_end_of_file_is_reported_after_the_answers_before_it(pair: Pair) -> None:
    control, chan, loop = pair
    ended: list[bool] = []
    reader = PipeReader(chan, loop, lambda data: [data], lambda: ended.append(True))
    reader.start()
    control.send(framed(b"last"))
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
        return [framed(bytes(2000))] * 8     # more than the pipe takes while the control process does not read

    reader = PipeReader(chan, loop, handle, lambda: None)
    reader.start()
    control.send(framed(b"one"))
    reader.readable()
    assert not reader.reading and reader.writer.queue     # answers wait; requests are not read
    control.send(framed(b"two"))
    assert [body(d) for d in handled] == [b"one"]
    while reader.writer.queue:                            # the control process reads: room again
        received(control)
        reader.writer._drain()
    assert reader.reading
    reader.readable()
    assert [body(d) for d in handled] == [b"one", b"two"]
