"""WorkerClient.gone: what the watcher asks when a restarted worker's reinstall failed (a worker
that died then is restarted again, one that cannot be started stops tunsec).  A real child process
and a real SOCK_SEQPACKET pipe; the worker's end is closed as a dead worker's is."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError


async def waiting_child() -> asyncio.subprocess.Process:
    """A process that lives until its stdin closes."""
    return await asyncio.create_subprocess_exec(sys.executable, "-c", "import sys; sys.stdin.read()",
                                                stdin=asyncio.subprocess.PIPE)


def test_a_client_never_started_is_not_gone() -> None:
    assert WorkerClient(lambda m: None).gone is False


def test_a_worker_whose_pipe_refuses_a_send_is_gone_before_its_eof_is_read() -> None:
    async def body() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        client = WorkerClient(lambda m: None)
        client._sock = ours   # no reader: the EOF is not read
        client.proc = child = await waiting_child()
        try:
            assert client.gone is False
            theirs.close()   # the worker's end, as at its death
            with pytest.raises(WorkerError):
                await client.request(lambda r: pipe.Flush(r))
            assert client.gone is True and child.returncode is None
        finally:
            assert child.stdin is not None
            child.stdin.close()
            await child.wait()
            ours.close()
    asyncio.run(body())


def test_a_worker_that_exited_or_whose_pipe_closed_is_gone() -> None:
    async def body() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        client = WorkerClient(lambda m: None)
        client._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), client._readable)
        client.proc = child = await waiting_child()
        try:
            assert client.gone is False
            theirs.close()
            for _ in range(10):   # the reader sees the EOF
                await asyncio.sleep(0)
            assert client._sock is None and client.gone is True
        finally:
            assert child.stdin is not None
            child.stdin.close()
            await child.wait()
        # the exit alone (the pipe still open) says it too
        other = WorkerClient(lambda m: None)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        other._sock, other.proc = a, child
        assert other.gone is True
        a.close()
        b.close()
    asyncio.run(body())
