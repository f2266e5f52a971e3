"""WorkerClient.request over a real SOCK_SEQPACKET pair, the worker's side played by the test:
an answer completes the request, silence past REQUEST_TIMEOUT fails it with EIO and forgets
it, a cancelled request leaves nothing behind for a late answer to trip over."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Errno


def _pair(loop: asyncio.AbstractEventLoop) -> tuple[WorkerClient, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    wc = WorkerClient(lambda msg: None)
    wc._sock = ours
    loop.add_reader(ours.fileno(), wc._readable)
    return wc, theirs


def test_answer_timeout_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        wc, worker = _pair(loop)
        # answered: the replies come back
        task = asyncio.ensure_future(wc.request(lambda r: pipe.GetSpi(r, 256, 0xFFFFFFFF)))
        await asyncio.sleep(0.01)
        req = pipe.decode(worker.recv(65536))
        worker.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, Errno.OK, spi=0x1234)))
        replies = await task
        assert [r.spi for r in replies] == [0x1234]
        # never answered: EIO after the timeout, and the request is forgotten
        with pytest.raises(WorkerError) as err:
            await wc.request(lambda r: pipe.SpdDelete(r, 7))
        assert err.value.errno is Errno.EIO
        assert wc._pending == {}
        worker.recv(65536)
        # cancelled while waiting: a late answer is ignored, the next request still works
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
