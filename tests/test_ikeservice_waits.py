"""What an IKE SA's answers wait for in a burst of clients, and what they no longer wait for.

- The make-before-break barrier holds an IKE SA's datagrams while its Child SA installs, not every
  IKE SA's of the same peer address and port (many clients behind one NAT, one charon with many
  identities: one of them installing held every other's IKE_AUTH answer back).
- A refill of the inbound SPI pool asks for one SPI per half-open IKE SA too (each brings an
  IKE_AUTH that takes one), in one round trip, bounded.
- An IKE socket is read a few datagrams per event-loop turn, so the worker's pipe (IKE_AUTHs via
  port 4500, GETSPI and install answers) is read between them.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Coroutine
from typing import Any

from test_ikeservice_peers import InProcessWorker, run

from tunsec.dataplane import pipe
from tunsec.ike.endpoint import Datagram
from tunsec.services.ike import SPI_POOL
from tunsec.services.ike.barrier import Barrier
from tunsec.services.ike.sockets import RECV_BATCH, recv
from tunsec.services.ike.spis import SPI_POOL_BURST, SpiPool

NAT = ("192.0.2.2", 4500)    # every client's address and port: one charon (or one NAT) in front of all


def ike_auth_response(spi_i: bytes, spi_r: bytes) -> bytes:
    return struct.pack("!8s8sBBBBII", spi_i, spi_r, 0x2E, 0x20, 35, 0x20, 1, 28)


def test_an_install_holds_back_only_its_own_ike_sas_datagrams_to_a_shared_address_and_port() -> None:
    queued: list[Datagram] = []
    sent: list[Datagram] = []
    barrier = Barrier(lambda now: queued, sent.append, lambda coro: None, lambda: None)
    a = Datagram(ike_auth_response(b"A" * 8, b"a" * 8), NAT, 4500)
    b = Datagram(ike_auth_response(b"B" * 8, b"b" * 8), NAT, 4500)
    barrier.peer_install_started((NAT, a.data[:16]))     # client A's Child SA is being installed
    queued[:] = [a, b]
    barrier.flush()
    assert sent == [b]                                  # B's answer leaves; A's waits for its install
    queued.clear()
    a2 = Datagram(ike_auth_response(b"A" * 8, b"a" * 8)[:-1] + b"\x01", NAT, 4500)
    queued[:] = [a2]
    barrier.flush()
    assert sent == [b]                                  # A's later datagram stays behind its first
    barrier.peer_install_done((NAT, a.data[:16]))
    assert sent == [b, a, a2]


def _pool(worker: InProcessWorker, half_open: int) -> SpiPool:
    loop = asyncio.get_running_loop()

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
        return loop.create_task(coro)

    barrier = Barrier(lambda now: [], lambda d: None, spawn, lambda: None)
    return SpiPool(lambda: worker, spawn, barrier, lambda *a: None, lambda: None,   # type: ignore[arg-type,return-value]
                   owner=lambda data: None, half_open=lambda: half_open)


def test_a_refill_asks_for_an_spi_per_half_open_ike_sa_in_one_round() -> None:
    async def body() -> None:
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        pool = _pool(worker, half_open=40)
        await pool.refill()
        assert len(pool.spis) == SPI_POOL + 40 == len(set(pool.spis))
        assert sum(isinstance(m, pipe.GetSpi) for m in worker.log) == SPI_POOL + 40
    run(body())


def test_the_half_open_share_of_the_pool_is_bounded() -> None:
    async def body() -> None:
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        pool = _pool(worker, half_open=100_000)   # a flood of half-open SAs does not fill the SAD with larval SAs
        await pool.refill()
        assert len(pool.spis) == SPI_POOL + SPI_POOL_BURST
    run(body())


def test_an_ike_socket_is_read_a_batch_per_turn() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        port = rx.getsockname()[1]
        n = RECV_BATCH + 3
        for i in range(n):
            tx.sendto(bytes([i]) * 30, ("127.0.0.1", port))
        first = [d for d, _, _ in recv(rx, (socket.AF_INET, "127.0.0.1", port))]
        rest = [d for d, _, _ in recv(rx, (socket.AF_INET, "127.0.0.1", port))]
        assert [d[0] for d in first] == list(range(RECV_BATCH))    # the loop turns before the rest
        assert [d[0] for d in rest] == list(range(RECV_BATCH, n))
    finally:
        rx.close()
        tx.close()


class HoldingWorker:
    """The in-process worker, but the answers to UPDATE, ADD and SPDADD wait until ``answer``: what the
    gateway does between sending a Child SA's install and reading its answers."""

    def __init__(self, inner: InProcessWorker) -> None:
        self.inner = inner
        self.held: list[tuple[pipe.Message, asyncio.Future[list[pipe.Reply]], Any]] = []
        self.ids = iter(range(10_000, 20_000))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request_soon(self, build: Any, then: Any = None, failed: Any = None,
                     late: Any = None) -> asyncio.Future[list[pipe.Reply]]:
        built = build(next(self.ids))
        # a Child SA's install comes encoded (pipe.direct): as the worker, read it
        msg = pipe.decode(built) if isinstance(built, bytes) else built
        if not isinstance(msg, pipe.Update | pipe.Add | pipe.SpdAdd):
            return self.inner.request_soon(lambda _r: msg, then, failed)
        fut: asyncio.Future[list[pipe.Reply]] = asyncio.get_running_loop().create_future()
        self.held.append((msg, fut, then))
        return fut

    def answer(self, errno: dict[type, pipe.Errno] | None = None) -> None:
        """Answer what was held, as the pipe's reader does: the future, then its ``then``, no loop turn."""
        for msg, fut, then in self.held:
            replies = [pipe.decode(b) for b in self.inner.worker.handle_datagram(pipe.encode(msg))]
            if errno and type(msg) in errno:
                replies = [pipe.Reply(msg.req_id, msg.TYPE, errno[type(msg)])]
            fut.set_result(replies)   # type: ignore[arg-type]
            if then is not None:
                then(replies)
        self.held.clear()


async def _gateway_holding_installs() -> tuple[Any, HoldingWorker, list[int], list[Datagram]]:
    """A gateway with one site, its installs held; how many were held after each IKE datagram that came
    in on port 4500, and the datagrams that passed its barrier."""
    from test_ikeservice_peers import Gateway

    gw = Gateway(1)
    await gw.start()
    hold = HoldingWorker(gw.worker)
    gw.worker = hold   # the service asks gw.worker each time
    held_after: list[int] = []
    receive_natt = gw.service.receive_natt

    def counting(msg: pipe.Ike) -> None:
        receive_natt(msg)
        held_after.append(len(hold.held))   # before the loop turns again

    gw.service.receive_natt = counting   # type: ignore[method-assign]
    passed: list[Datagram] = []
    send = gw.service.barrier._send
    gw.service.barrier._send = lambda d: (passed.append(d), send(d))   # type: ignore[method-assign,func-returns-value]
    gw.connect(0)
    await gw.settle(wait_tasks=False)
    return gw, hold, held_after, passed


def _auth_answers(passed: list[Datagram]) -> list[Datagram]:
    return [d for d in passed if d.data[18] == 35]


def test_a_new_child_sa_is_installed_in_the_turn_that_negotiated_it_and_answered_when_the_installs_are() -> None:
    async def body() -> None:
        gw, hold, held_after, passed = await _gateway_holding_installs()
        # the IKE_AUTH that brought the ChildSaUp sent UPDATE, ADD and SPDADD before the loop turned
        assert held_after == [3]
        assert [type(m).__name__ for m, _, _ in hold.held] == ["Update", "Add", "SpdAdd"]
        assert not _auth_answers(passed)                  # the IKE_AUTH answer waits for them
        hold.answer()
        assert len(_auth_answers(passed)) == 1            # and leaves as the last answer is read
        await gw.settle()
        assert gw.site_sa(0).children
        held = gw.service.barrier
        assert held.install_holds == 1 and 0 <= held.install_hold_seconds == held.install_hold_max
    run(body())


def test_a_refused_install_answers_the_peer_only_after_its_failure_is_handled() -> None:
    async def body() -> None:
        gw, hold, _, passed = await _gateway_holding_installs()
        hold.answer({pipe.Add: pipe.Errno.EEXIST})
        assert not _auth_answers(passed)        # not from the reader: the install task deals with it first
        await gw.settle()
        assert len(_auth_answers(passed)) == 1
        assert not gw.service.children          # the failed Child SA is forgotten
    run(body())


def test_a_peer_install_releases_its_datagrams_once() -> None:
    queued: list[Datagram] = []
    sent: list[Datagram] = []
    barrier = Barrier(lambda now: queued, sent.append, lambda coro: None, lambda: None)
    a = Datagram(ike_auth_response(b"A" * 8, b"a" * 8), NAT, 4500)
    release = barrier.peer_install((NAT, a.data[:16]))
    twice = barrier.peer_install((NAT, a.data[:16]))     # a second Child SA of the same IKE SA
    queued[:] = [a]
    barrier.flush()
    release()
    release()                                            # again (its task ended too): counts once
    assert sent == []                                    # the other install is still in flight
    twice()
    assert sent == [a]
    assert barrier.install_holds == 1
