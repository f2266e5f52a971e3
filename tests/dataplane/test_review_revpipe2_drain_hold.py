"""Review revpipe2 F1, F2: a drain of the fast path's event queue has no end under a flood, and is held whole.

The worker's eventfd reader (worker.serve) is ``PipeWriter.holding(Worker.drain_events)``.  The drain
(``Dataplane.events_encoding_ike``) reads until the C queue is empty, and each event it reads gives its
sender's share in C back at once (csrc/events.c ts_dp_next_event), so while a flood of IKE datagrams to
port 4500 goes on at the rate the drain reads (~3.4 us an event in Python here, ~300,000 a second), the
packet thread refills the queue as the drain empties it (256 unknown IKE events, 32 per sender slot) and
the drain does not return before the flood ends.

F2 (before h/perf100c too): meanwhile the worker's event loop runs nothing else: no request of the control
process is read (installs, SEND_IKE: every peer's IKE answers), no timer fires (larval expiry, lifetimes).

F1 (h/perf100c's ``holding``): what the drain sends is kept in a list and leaves, in batches, only when the
drain returns.  Before, each event went its own way as it was read: into the pipe, else into the writer's
queues, whose bounds (MAX_IKE events, MAX_IKE_BYTES, the per-sender shares) push the oldest out.  Now none
of those bounds applies until the drain returns: the worker keeps every IKE datagram of the flood (up to
10,000 bytes each) for as long as the drain runs.

The proof runs the real C fast path (its event queue and per-sender shares, ``Dataplane.inbound``, the
path the packet thread takes), the real ``Worker.drain_events`` and the real ``PipeWriter.holding``, over
a real socket pair whose other end (the control process, busy) reads nothing.  What the packet thread does
while the drain runs is played in the drain's own path: after every REFILL_EVERY events read, the flood's
next datagrams from 64 senders reach the queue (those the shares then take), ROUNDS times.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from esp_ref import ike_message

from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.dataplane.pipeio import PipeWriter
from tunsec.dataplane.worker import Worker

MARKER = b"\0\0\0\0"
SENDERS = [Endpoint(ipaddress.ip_address(f"203.0.{n // 200}.{n % 200 + 1}"), 4500) for n in range(64)]
DATAGRAM = MARKER + ike_message(bytes(9000))   # under the fast path's MAX_IKE_MESSAGE (10,000)
REFILL_EVERY = 128   # events the drain reads between two of the packet thread's turns
ROUNDS = 40
TS_EVENT_CAP = 1024   # csrc/internal.h: the fast path's event queue


def _flood(dp: Dataplane) -> int:
    """What the packet thread takes of the flood in one of its turns: every sender until its share (or
    the queue's room for unknown IKE) is full; how many were queued."""
    queued = 0
    for sender in SENDERS:
        while dp.inbound(DATAGRAM, sender)[1] is Drop.NONE:
            queued += 1
    return queued


def _held_bytes(writer: PipeWriter) -> tuple[int, int]:
    """The IKE events the writer keeps now, held by the drain's turn or waiting in its queues, and their bytes."""
    held = [item if isinstance(item, bytes) else item[0] for item in (writer._held or [])]
    count = len(held) + len(writer.ike) + len(writer.ike_known) + len(writer.ike_proven)
    return count, sum(map(len, held)) + writer.ike_bytes


class _Flooded:
    """The worker's event path over the real fast path, a pipe nobody reads, and a flood whose next
    datagrams reach the queue after every REFILL_EVERY events the drain reads (ROUNDS times)."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.loop = asyncio.new_event_loop()
        self.dp = Dataplane()
        self.writer = PipeWriter(self.ours, self.loop, lambda pause: None)
        self.worker = Worker(self.dp, self._send, {}, self.loop)
        self.read = self.rounds = 0
        self.peak = (0, 0)   # the IKE events the writer kept at its worst, and their bytes
        assert _flood(self.dp) > REFILL_EVERY   # the flood has begun: the queue holds its share of it

    def _send(self, data: bytes) -> None:   # Worker.send as worker.serve wires it, the packet thread's turns played
        self.writer.send(data, is_event=True)
        self.read += 1
        if self.read % REFILL_EVERY == 0 and self.rounds < ROUNDS:
            self.rounds += 1
            assert _flood(self.dp) > 0
        count, size = _held_bytes(self.writer)
        self.peak = (max(self.peak[0], count), max(self.peak[1], size))

    def wake_up(self) -> int:
        """One call of the event queue's eventfd reader (worker.serve); how many events it read."""
        before = self.read
        self.writer.holding(self.worker.drain_events)()
        return self.read - before

    def close(self) -> None:
        if self.writer._writing:
            self.loop.remove_writer(self.ours.fileno())
        self.loop.close()
        self.ours.close()
        self.theirs.close()


def test_a_drain_under_a_flood_keeps_no_more_than_the_writers_bounds() -> None:
    """F1: what the writer keeps for IKE events, held by the drain or waiting in its queues, stays within
    its own bounds (MAX_IKE, MAX_IKE_BYTES) at every moment, as when each event went its own way."""
    flooded = _Flooded()
    try:
        while flooded.rounds < ROUNDS:   # the wake-ups the flood makes, however many events each reads
            assert flooded.wake_up() > 0
        count, size = flooded.peak
        assert count <= PipeWriter.MAX_IKE, f"{count} IKE events kept at once (MAX_IKE {PipeWriter.MAX_IKE})"
        assert size <= PipeWriter.MAX_IKE_BYTES, f"{size} bytes kept (MAX_IKE_BYTES {PipeWriter.MAX_IKE_BYTES})"
    finally:
        flooded.close()


def test_one_wake_up_reads_no_more_than_the_queue_holds() -> None:
    """F2: one call of the eventfd's reader reads at most what the fast path's queue holds (TS_EVENT_CAP,
    1,024), then gives the loop back (the eventfd stays readable while events are left: it is called
    again); while the flood refills the queue as fast as it is read, no request is read and no timer
    runs until the flood stops."""
    flooded = _Flooded()
    try:
        first = flooded.wake_up()
        assert first <= TS_EVENT_CAP, f"one wake-up read {first} events, the flood's {flooded.rounds} refills"
        while flooded.rounds < ROUNDS:   # what is left is read by the next wake-ups
            assert flooded.wake_up() > 0
    finally:
        flooded.close()
