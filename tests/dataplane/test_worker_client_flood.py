"""A worker taken over writes its pipe as fast as it can (review of 2026-12-03, F2): the control
process's loop still runs between batches, a DUMP answer in endless parts fails at the cap instead of
growing the process, answers nobody waits for are dropped before their body is decoded, and
malformed messages are logged rate-limited.  A real SOCK_SEQPACKET pair, the worker's end written by a
thread; run on asyncio's loop and on uvloop's (the daemon's), whose readiness must both call the reader
again while the pipe has data."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pipe_codec_data import sa_info

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Errno

CAP_PARTS = 12        # the DUMP cap in the test, in full parts
WRITER_LIMIT = 150    # parts the writer sends at most: where it stops if the client never fails the DUMP


def _run(kind: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(body())


def _pair(cap: int = client_mod.DUMP_MAX_BYTES) -> tuple[WorkerClient, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.settimeout(30)   # a writer the client stopped reading must not hang the test
    wc = WorkerClient(lambda msg: None, dump_max_bytes=cap)
    wc._sock = ours
    asyncio.get_running_loop().add_reader(ours.fileno(), wc._readable)
    return wc, theirs


def _counting_decode(monkeypatch: pytest.MonkeyPatch, big: int, seen: Callable[[], None]) -> list[int]:
    """pipe.decode, counting the datagrams of at least ``big`` bytes it is given."""
    calls = [0]
    real = pipe.decode

    def decode(data: bytes) -> pipe.Message:
        if len(data) >= big:
            calls[0] += 1
            seen()
        return real(data)

    monkeypatch.setattr(pipe, "decode", decode)
    return calls


async def _send_all(worker: socket.socket, datagrams: list[bytes]) -> None:
    """Sent by a thread, as the worker does: more than the pipe holds waits for the loop to read."""
    def send() -> None:
        for data in datagrams:
            worker.send(data)

    await asyncio.get_running_loop().run_in_executor(None, send)


def _big_part(req_id: int) -> bytes:
    """A full DUMP part (flag MORE) of SAs, ~64 KiB: the costliest datagram to decode."""
    return pipe.encode_dump_replies(req_id, [sa_info(i) for i in range(1200)], [], [], [])[0]


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_endless_dump_parts_fail_at_the_cap_while_the_loop_runs(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker answering a DUMP with part after part (flag MORE), never the last: a call_soon heartbeat
    runs between the client's reads while the writer is still writing, the DUMP fails with ENOSPC once
    its parts would pass the cap, no more than the cap is ever held, and what the writer sends after
    that is counted late without being decoded."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", 300.0)   # the cap, not the timeout, ends it
        part = _big_part(1)
        assert pipe.decode(part).more and len(part) > 60_000
        wc, worker = _pair(cap=CAP_PARTS * len(part))
        held_most = [0]

        def seen() -> None:
            held_most[0] = max(held_most[0], sum(p.size for p in wc._parts.values()))

        decoded = _counting_decode(monkeypatch, len(part), seen)
        task = asyncio.ensure_future(wc.request(lambda r: pipe.Dump(r)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        part = _big_part(req.req_id)
        stop, writing = threading.Event(), threading.Event()
        writing.set()
        sent = [0]

        def write() -> None:
            try:
                while not stop.is_set() and sent[0] < WRITER_LIMIT:
                    worker.send(part)
                    sent[0] += 1
            finally:
                writing.clear()

        # beats that came while the writer was writing and after the client had decoded a part: the
        # loop was not held by the reader for as long as the worker wrote
        beats_meanwhile = [0]

        def beat() -> None:
            if writing.is_set():
                beats_meanwhile[0] += decoded[0] > 0
                loop.call_soon(beat)

        writer = loop.run_in_executor(None, write)
        loop.call_soon(beat)
        await asyncio.wait([task, writer], return_when=asyncio.FIRST_COMPLETED)
        assert task.done(), "the writer ran out before the DUMP failed"
        with pytest.raises(WorkerError) as err:
            task.result()
        assert err.value.errno is Errno.ENOSPC
        assert beats_meanwhile[0] > 0
        parts_read = decoded[0]
        # parts sent after the failure, to be counted late: the writer may have been no further ahead
        # than the one part past the cap when the DUMP failed (it and the reader share the CPUs)
        while sent[0] < parts_read + 3 and writing.is_set():
            await asyncio.sleep(0.01)
        stop.set()
        await writer
        # the rest of what the writer sent, read by the loop: the part past the cap, then late ones
        while parts_read + 1 + wc.late < sent[0]:
            await asyncio.sleep(0.01)
        assert wc.dump_overflows == 1 and wc._pending == {} and wc._parts == {}
        assert parts_read == CAP_PARTS and held_most[0] <= CAP_PARTS * len(part)
        assert decoded[0] == parts_read and wc.late == sent[0] - parts_read - 1 > 0   # not decoded: late
        loop.remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    _run(kind, body)


def test_answers_nobody_waits_for_are_dropped_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big answers to a request id nobody waits for are counted late by their header alone, their
    bodies never decoded; the answer to the request that waits is decoded and completes it."""
    async def body() -> None:
        monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", 300.0)
        wc, worker = _pair()
        fut = wc.request_soon(lambda r: pipe.Dump(r))
        await asyncio.sleep(0)
        req = pipe.decode(worker.recv(65536))
        decoded = _counting_decode(monkeypatch, 1000, lambda: None)
        stray = _big_part(req.req_id + 1)
        last = pipe.encode(pipe.Reply(req.req_id + 2, pipe.MsgType.DUMP, Errno.OK))   # a last part, no MORE
        # a malformed one among them too (its length field): late as well, by its header
        await _send_all(worker, [stray] * 20 + [stray[:-4] + bytes(4), last])
        answer = pipe.encode_dump_replies(req.req_id, [sa_info(i) for i in range(10)], [], [], [])
        worker.send(answer[0])
        replies = await fut
        assert len(pipe.join_dump_replies(replies).sas) == 10
        assert wc.late == 22 and wc.malformed == 0 and decoded[0] == 1
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    _run("asyncio", body)


def test_malformed_messages_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """Each malformed datagram is counted; only a burst of them is logged, the rest summed up in the
    next line that passes (loglimit), so a worker cannot flood the control process's log."""
    async def body() -> None:
        wc, worker = _pair()
        bad = bytearray(pipe.encode(pipe.FirstUse(spi=0x1234)))
        bad[0] = 9   # an unknown version
        await _send_all(worker, [bytes(bad)] * 200)
        while wc.malformed < 200:
            await asyncio.sleep(0.01)
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    with caplog.at_level(logging.ERROR, logger="tunsec.pipe"):
        _run("asyncio", body)
    lines = [r for r in caplog.records if "malformed message from the worker" in r.getMessage()]
    assert 1 <= len(lines) <= 10


def test_bare_dump_parts_count_as_half_a_datagram_each() -> None:
    """Parts of 16 bytes (flag MORE, nothing in them) each count as PART_MIN_BYTES against the cap:
    a flood of them fails the DUMP after cap / PART_MIN_BYTES parts instead of holding millions."""
    async def body() -> None:
        wc, worker = _pair(cap=8 * client_mod.PART_MIN_BYTES)
        fut = wc.request_soon(lambda r: pipe.Dump(r))
        await asyncio.sleep(0)
        req = pipe.decode(worker.recv(65536))
        bare = pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.DUMP, Errno.OK, more=True))
        await _send_all(worker, [bare] * 100)
        with pytest.raises(WorkerError) as err:
            await fut
        assert err.value.errno is Errno.ENOSPC
        while wc.late < 100 - 9:
            await asyncio.sleep(0.01)
        assert wc.dump_overflows == 1 and wc._parts == {}
        asyncio.get_running_loop().remove_reader(wc._sock.fileno())
        wc._closed()
        worker.close()

    _run("asyncio", body)
