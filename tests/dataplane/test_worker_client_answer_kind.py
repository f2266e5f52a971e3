"""An answer is of its request's type, and only a DUMP is answered in parts (docs/pipe.md; review
revpipe F1): WorkerClient over a real SOCK_SEQPACKET pair, the worker's side played by the test as a
worker taken over would.  An answer of another type, or parts for a request other than a DUMP, fail
the request with EINVAL (counted malformed) and leave nothing held; what else comes for it is late."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address

import pytest

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, answered, send_soon
from tunsec.dataplane.pipe import Errno


def _pair(loop: asyncio.AbstractEventLoop) -> tuple[WorkerClient, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.settimeout(30)
    wc = WorkerClient(lambda msg: None)
    wc._sock = ours
    loop.add_reader(ours.fileno(), wc._readable)
    return wc, theirs


async def _recv(theirs: socket.socket) -> pipe.Message:
    return pipe.decode(await asyncio.to_thread(theirs.recv, 65536))


def test_an_answer_of_another_type_fails_the_request() -> None:
    """Fails before the fix: the GETSPI took a RESERVE's answer (its SPI None) as its own."""
    async def body() -> None:
        wc, theirs = _pair(asyncio.get_running_loop())
        task = asyncio.ensure_future(wc.request(lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF)))
        req = await _recv(theirs)
        theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.RESERVE, Errno.OK)))
        with pytest.raises(WorkerError) as err:
            await asyncio.wait_for(task, 30)
        assert err.value.errno is Errno.EINVAL and not err.value.refused
        assert (wc.malformed, wc._pending, wc._parts) == (1, {}, {})
        # its own answer after that is late, and the next request is answered as usual
        theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x4321)))
        task = asyncio.ensure_future(wc.request(lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF)))
        req = await _recv(theirs)
        theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x1234)))
        assert [r.spi for r in await asyncio.wait_for(task, 30)] == [0x1234]
        assert (wc.late, wc.malformed) == (1, 1)
        theirs.close()

    asyncio.run(body())


@pytest.mark.parametrize("kind", [pipe.MsgType.DUMP, pipe.MsgType.SEND_IKE], ids=["dump", "send_ike"])
def test_parts_for_a_request_other_than_dump_are_refused_at_the_first(kind: pipe.MsgType) -> None:
    """Fails before the fix: a SEND_IKE (request_soon, as the IKE service sends them) held every part of
    a DUMP-kind answer (dump), or had parts of its own kind dropped one by one as malformed (send_ike),
    and then counted as answered OK at the last."""
    async def body() -> None:
        wc, theirs = _pair(asyncio.get_running_loop())
        errors: list[WorkerError] = []
        sent = send_soon(wc, "SEND_IKE", lambda r: pipe.SendIke(
            r, b"\0" * 40, pipe.Endpoint(ip_address("192.0.2.1"), 4500)))
        req = await _recv(theirs)
        part = bytearray(pipe.encode(pipe.Reply(req.req_id, kind, Errno.OK)))
        part[8] |= pipe.FLAG_MORE   # the header's flags (a SEND_IKE reply with MORE has no constructor)
        for _ in range(10):
            theirs.send(bytes(part))
        theirs.send(pipe.encode(pipe.Reply(req.req_id, kind, Errno.OK)))
        (outcome,) = await answered([sent])
        if isinstance(outcome, WorkerError):
            errors.append(outcome)
        assert [e.errno for e in errors] == [Errno.EINVAL], outcome
        assert wc._parts == {} and wc._pending == {}
        for _ in range(200):   # the rest of that answer: dropped as late, never held
            if wc.late == 10:
                break
            await asyncio.sleep(0.01)
        assert (wc.malformed, wc.late, wc._parts) == (1, 10, {})
        theirs.close()

    asyncio.run(body())


def test_a_dump_still_takes_its_parts() -> None:
    """Not a change: a DUMP answered in parts of its own type completes with all of them."""
    async def body() -> None:
        wc, theirs = _pair(asyncio.get_running_loop())
        task = asyncio.ensure_future(wc.request(lambda r: pipe.Dump(r), max_bytes=1 << 20))
        req = await _recv(theirs)
        for _ in range(3):
            theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.DUMP, Errno.OK, more=True)))
        theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.DUMP, Errno.OK)))
        replies = await asyncio.wait_for(task, 30)
        assert [r.more for r in replies] == [True, True, True, False]
        assert (wc.malformed, wc.late, wc._parts, wc._pending) == (0, 0, {}, {})
        theirs.close()

    asyncio.run(body())
