"""Reading a pipe end message by message although a datagram may be a batch of them (pipe.batch):
for the tests that play one side of the pipe with a raw socket and read what the other side sent
one message per ``recv``, as it was before batches."""

from __future__ import annotations

import collections
import socket
from typing import Any

from tunsec.dataplane.pipe import batch


class Unbatched:
    """A socket whose ``recv`` gives one message at a time: a batch's messages one after the other
    (its framing asserted whole); any other call goes to the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting: collections.deque[bytes] = collections.deque()
        self.batches = 0   # batches read, for the tests that count them

    def recv(self, size: int = 1 << 17) -> bytes:
        if self.waiting:
            return self.waiting.popleft()
        data = self.sock.recv(size)
        if not batch.is_batch(data):
            return data
        messages, wrong = batch.split(data)
        assert wrong is None, wrong
        self.batches += 1
        self.waiting.extend(messages)
        return self.waiting.popleft()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def messages(data: bytes) -> list[bytes]:
    """A datagram's messages: a batch's, or the datagram itself."""
    if not batch.is_batch(data):
        return [data]
    out, wrong = batch.split(data)
    assert wrong is None, wrong
    return out
