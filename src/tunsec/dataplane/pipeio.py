"""The worker's end of the pipe: PipeWriter (what leaves, and what waits when the control process
does not keep up) and PipeReader (requests in, in batches, with backpressure)."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("tunsec.worker")

MAX_DATAGRAM = 65536


class PipeWriter:
    """Sends on the non-blocking pipe; what does not fit waits here until it does.

    While answers wait, requests are not read (backpressure on a control
    process that sends faster than it reads); events beyond MAX_QUEUED are
    dropped and counted rather than held without bound."""

    MAX_QUEUED = 8192

    def __init__(self, chan: socket.socket, loop: asyncio.AbstractEventLoop,
                 pause_reading: Callable[[bool], None]) -> None:
        self.chan = chan
        self.loop = loop
        self.pause_reading = pause_reading
        self.queue: collections.deque[bytes] = collections.deque()
        self.dropped_events = 0
        self._held: list[tuple[bytes, bool]] | None = None

    def hold(self) -> None:
        """Keep what is sent from now on, in order, until release() (PipeReader's batches)."""
        self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for data, is_event in held or ():
            self.send(data, is_event)

    def send(self, data: bytes, is_event: bool = False) -> None:
        if self._held is not None:
            self._held.append((data, is_event))
            return
        if self.queue:
            if is_event and len(self.queue) >= self.MAX_QUEUED:
                self.dropped_events += 1
                return
            self.queue.append(data)
            return
        try:
            self.chan.send(data)
        except BlockingIOError:
            self.queue.append(data)
            self.loop.add_writer(self.chan.fileno(), self._drain)
            self.pause_reading(True)
        except OSError as err:
            # the control process is gone; the reader sees EOF and ends the worker
            log.debug("pipe: %s", err)

    def _drain(self) -> None:
        while self.queue:
            try:
                self.chan.send(self.queue[0])
            except BlockingIOError:
                return
            except OSError as err:
                log.error("pipe: %s", err)
                self.queue.clear()
                break
            self.queue.popleft()
        self.loop.remove_writer(self.chan.fileno())
        self.pause_reading(False)
        if self.dropped_events:
            log.warning("%d events dropped while the control process was not reading", self.dropped_events)
            self.dropped_events = 0


class PipeReader:
    """Reads the control process's requests and hands each to ``handle``; the answers (and any event
    raised meanwhile) to the requests read in one turn, at most BATCH of them, leave together after
    the turn, in order.  The control process then reads them in one wake-up instead of being woken,
    and the worker preempted, once per answer: a set-up burst sends ~5 requests per client, most of
    them pipelined.  ``on_readable`` is what the loop calls (a bench wraps it to time the worker)."""

    BATCH = 64

    def __init__(self, chan: socket.socket, loop: asyncio.AbstractEventLoop,
                 handle: Callable[[bytes], list[bytes]], on_eof: Callable[[], None]) -> None:
        self.chan = chan
        self.loop = loop
        self.handle = handle
        self.on_eof = on_eof
        self.writer = PipeWriter(chan, loop, self.pause)
        self.reading = False
        self.on_readable: Callable[[], None] = self.readable

    def start(self) -> None:
        self.pause(False)

    def pause(self, pause: bool) -> None:
        """Backpressure: no requests are read while answers wait in the writer."""
        if pause and self.reading:
            self.loop.remove_reader(self.chan.fileno())
        elif not pause and not self.reading:
            self.loop.add_reader(self.chan.fileno(), self.on_readable)
        self.reading = not pause

    def readable(self) -> None:
        writer = self.writer
        writer.hold()
        try:
            for _ in range(self.BATCH):   # then the loop's other callbacks; still readable: called again
                try:
                    data = self.chan.recv(MAX_DATAGRAM)
                except BlockingIOError:
                    return
                except OSError as err:
                    log.error("pipe: %s", err)
                    data = b""
                if not data:
                    self.on_eof()
                    return
                for answer in self.handle(data):
                    writer.send(answer)
                if not self.reading:
                    return
        finally:
            writer.release()
