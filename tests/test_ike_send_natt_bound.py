"""IKE sent through the worker (SEND_IKE, port 4500) while the worker does not answer: what waits for
the answers stays bounded, and what was given up is counted (status, metrics).

The control process's real pipe client (WorkerClient) over a real SOCK_SEQPACKET socketpair; the
worker's end is this test, which reads the requests and answers only when it is told to (a worker
that hangs, or never answers SEND_IKE).  The clock of the deadline is faked."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from pipe_batches import messages

from tunsec import metrics
from tunsec.dataplane import pipe
from tunsec.dataplane.client import REQUEST_TIMEOUT, WorkerClient
from tunsec.ike.constants import NATT_PORT
from tunsec.ike.endpoint import Datagram
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService
from tunsec.services.ike import sockets as ike_sockets
from tunsec.status import render

GW = "192.0.2.1"
PEER = ("198.51.100.7", 4500)
LIMIT = 16   # NATT_SENDS_MAX for the test: the bound is what is tested, not its size


class SilentWorker:
    """The worker's end of the pipe: reads requests, answers them only in ``answer``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.read: list[pipe.Message] = []

    def drain(self) -> None:
        while True:
            try:
                self.read += [pipe.decode(m) for m in messages(self.sock.recv(pipe.MAX_MESSAGE))]
            except BlockingIOError:
                return

    def answer(self) -> int:
        """OK to every SEND_IKE read so far; how many."""
        self.drain()
        for msg in self.read:
            assert isinstance(msg, pipe.SendIke)
            self.sock.send(pipe.encode_ok(msg.req_id, msg.TYPE))
        n, self.read = len(self.read), []
        return n


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# the rest of a `tunsec status` document, for render()
BASE = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
        "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}


def status(svc: IkeService) -> dict[str, Any]:
    return svc.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))


def test_unanswered_send_ikes_are_bounded_given_up_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ike_sockets, "NATT_SENDS_MAX", LIMIT)

    async def body() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        client = WorkerClient(lambda msg: None)
        client._sock = ours
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), client._readable)
        worker = SilentWorker(theirs)
        svc = IkeService([], lambda: client, {4: GW}, IdSpace())
        socks = svc.sockets
        now = [1000.0]
        socks.clock = lambda: now[0]

        def send(n: int) -> None:
            for i in range(n):
                socks.send(Datagram(b"IKE %d" % i, PEER, NATT_PORT))

        try:
            # the worker reads and never answers: LIMIT wait, the older ones beyond are given up
            send(LIMIT + 10)
            await turns()
            assert len(socks.natt_sends) == LIMIT and len(client._pending) == LIMIT
            assert socks.natt_unanswered == 10
            assert status(svc)["ike_sends_unanswered"] == 10
            assert "send_ike_unanswered" not in status(svc)["ike_drops"]   # ours, not a peer's drop
            text = render({**BASE, **status(svc)}).splitlines()
            assert "IKE sent through the worker (port 4500), given up unanswered: 10" in text
            assert not any("unanswered" in x for x in text if x.startswith("IKE: "))
            # it wakes up and answers them all: the ones still waited for are done, the given-up
            # ones' answers find nobody (the client counts them late), nothing is left waiting
            assert worker.answer() == LIMIT + 10
            await turns()
            assert socks.natt_sends == {} and client._pending == {} and client.late == 10
            assert socks.natt_unanswered == 10
            # a deadline passes with three unanswered: the next send (or the timer) gives them up
            send(3)
            await turns()
            now[0] += REQUEST_TIMEOUT
            send(1)
            await turns()
            assert len(socks.natt_sends) == 1 and len(client._pending) == 1 and socks.natt_unanswered == 13
            now[0] += REQUEST_TIMEOUT
            socks._natt_sweep()   # what the timer runs when nothing is sent any more
            await turns()
            assert socks.natt_sends == {} and client._pending == {} and socks.natt_unanswered == 14
            # a SEND_IKE answered in time is not counted
            send(1)
            await turns()
            worker.answer()
            await turns()
            assert socks.natt_sends == {} and socks.natt_unanswered == 14
            doc = status(svc)
            families = {f.name: f for f in metrics.state_families(doc, True)}
            assert families["tunsec_ike_sends_unanswered"].samples[0].value == 14
            dropped = families["tunsec_ike_requests_dropped"]
            assert "send_ike_unanswered" not in {s.labels.get("reason") for s in dropped.samples}
        finally:
            socks.close()
            loop.remove_reader(ours.fileno())
            ours.close()
            theirs.close()

    asyncio.run(body())


def test_send_ikes_failing_together_log_a_burst_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """A worker that goes fails every SEND_IKE in flight at once, and each datagram after it fails
    too: a burst of warnings, the rest counted in the next one that passes (not a line each)."""
    async def body() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        client = WorkerClient(lambda msg: None)
        client._sock = ours
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), client._readable)
        svc = IkeService([], lambda: client, {4: GW}, IdSpace())
        socks = svc.sockets
        now = [1000.0]
        socks._send_log.clock = lambda: now[0]
        try:
            for i in range(30):
                socks.send(Datagram(b"IKE %d" % i, PEER, NATT_PORT))
            theirs.close()   # the worker goes: the 30 in flight fail
            await turns()
            assert socks.natt_sends == {}
            for i in range(5):   # and so does every one sent after it
                socks.send(Datagram(b"IKE %d" % i, PEER, NATT_PORT))
            now[0] += 60
            socks.send(Datagram(b"IKE", PEER, NATT_PORT))
        finally:
            socks.close()
            ours.close()

    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records if "sending IKE to 198.51.100.7 failed" in r.getMessage()]
    assert len(lines) == 11, lines   # LogLimiter's burst, then the one that says how many were held
    assert lines[-1].endswith("(25 more like it suppressed)"), lines[-1]
