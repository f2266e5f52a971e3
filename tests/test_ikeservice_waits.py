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
                   half_open=lambda: half_open)


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
