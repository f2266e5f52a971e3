"""Several pipe messages in one datagram (BATCH, docs/pipe.md "Batches").

A set-up burst makes ~6 requests per client in each event-loop turn (GETSPI refills, UPDATE, ADD,
SPDADD, IKE_SPI_ADD, SEND_IKE) and the worker answers each: one datagram each was a send and a
receive, a syscall each, per message on both sides.  Both ends now send what one turn made as few
datagrams as fit: a BATCH is a bare 16-byte header (type BATCH_TYPE, request id 0, no flags, no
errno) followed by whole messages back to back, each with its own header, exactly the bytes it
would have been alone.  Nothing about a message changes inside a batch: each is read, checked,
applied and answered as if it had come alone, in the batch's order (so nothing of the (key,
nonce) or ownership rules, nor of any check, depends on the framing).  A batch is framing, not a
message: it is never answered and is not one of MsgType (decode() of one says unknown type).

This module does no I/O (``limit`` asks a socket its send buffer): ``pack`` makes a datagram of
consecutive messages, ``split`` takes one apart, checking the framing (what each message holds is its
decoder's business)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Final

from tunsec.dataplane.pipe.protocol import HEADER_LEN, MAX_MESSAGE, VERSION
from tunsec.dataplane.pipe.wire import _HEADER

BATCH_TYPE: Final = 23   # the header's type byte of a batch; MsgType has no 23 (tests hold it free)
# a batch's bytes at most: a turn of a burst's ~6 requests per client, or their answers, for a dozen
# clients or more in one datagram; not 64 KiB (MAX_MESSAGE, which a DUMP part may take alone): a send
# buffer holds several such batches, and a socket whose buffer is smaller gets smaller ones (``limit``)
BATCH_BYTES: Final = 16384
# messages in one batch at most: as many headers as fill a datagram (every message is one at least)
MAX_BATCHED: Final = MAX_MESSAGE // HEADER_LEN
_ZERO3: Final = bytes(3)
# a header's type byte and total length (docs/pipe.md, Framing), the rest skipped
_LENGTH_AT: Final = struct.Struct("!xB10xI")


def is_batch(data: bytes) -> bool:
    """Whether a datagram is a batch (its framing still to be checked: ``split``)."""
    return len(data) > 1 and data[1] == BATCH_TYPE


def limit(sock: socket.socket) -> int:
    """The batch size for datagrams sent on ``sock``: BATCH_BYTES, or less where its send buffer is
    smaller (a unix datagram longer than the buffer, less its overhead, is refused, EMSGSIZE; a
    buffer set small on purpose, as tests do, still gets batches it takes).  A message longer than
    the limit still goes, alone, as it always did."""
    return max(HEADER_LEN, min(BATCH_BYTES, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2))


def pack(messages: Sequence[bytes], start: int = 0, limit: int = BATCH_BYTES) -> tuple[bytes, int]:
    """The datagram for messages[start:end] and ``end``: as many as fit in ``limit`` bytes together
    (at least one); a batch of two or more, or the one message alone (no batch around it), which is
    also what goes alone when the next would not fit (a DUMP part of 64 KiB, say)."""
    count = len(messages) - start
    if count == 1:
        return messages[start], start + 1
    if start == 0 and count <= MAX_BATCHED and (size := HEADER_LEN + sum(map(len, messages))) <= limit:
        # all of them (a turn's usual few): one pass in C, no loop here
        return b"".join((_HEADER.pack(VERSION, BATCH_TYPE, 0, 0, 0, _ZERO3, size), *messages)), len(messages)
    end, size = start + 1, HEADER_LEN + len(messages[start])
    while end < len(messages) and end - start < MAX_BATCHED and size + len(messages[end]) <= limit:
        size += len(messages[end])
        end += 1
    if end == start + 1:
        return messages[start], end
    header = _HEADER.pack(VERSION, BATCH_TYPE, 0, 0, 0, _ZERO3, size)
    return b"".join((header, *messages[start:end])), end


def split(data: bytes) -> tuple[list[bytes], str | None]:
    """A batch's messages, in order, and what is wrong with its framing (None: nothing).  The messages
    before a framing error are returned (they were whole); what follows it cannot be told apart and
    is not.  Each message is at least a header long and says its own length, which ends it; a
    batch inside a batch is refused (a batch is only ever one level, and each message's own checks
    expect one message)."""
    if len(data) < HEADER_LEN:
        return [], f"{len(data)} bytes is shorter than a header"
    version, kind, errno, req_id, flags, reserved, length = _HEADER.unpack_from(data)
    if version != VERSION or kind != BATCH_TYPE or errno or req_id or flags or reserved != _ZERO3:
        return [], "not a batch header (version 1, type 23, all else 0)"
    if length != len(data) or length > MAX_MESSAGE:
        return [], f"batch header says {length} bytes, datagram has {len(data)}"
    out: list[bytes] = []
    at, end = HEADER_LEN, len(data)
    if at == end:
        return out, "empty batch"
    length_at, append = _LENGTH_AT.unpack_from, out.append
    while at < end:
        if end - at < HEADER_LEN:
            return out, f"{end - at} bytes left after message {len(out)}, shorter than a header"
        kind, size = length_at(data, at)
        if size < HEADER_LEN or size > end - at:
            return out, f"message {len(out)} says {size} bytes, {end - at} left"
        if kind == BATCH_TYPE:
            return out, f"message {len(out)} is a batch"
        append(data[at:at + size])
        at += size
    return out, None
