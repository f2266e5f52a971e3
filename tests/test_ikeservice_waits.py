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


async def _gateway_holding_installs() -> tuple[Any, asyncio.Event, list[list[str]], list[Datagram]]:
    """A gateway with one site whose installs' answers (UPDATE, ADD, SPDADD) are read only once the
    returned event is set (the worker applied them as they came); the requests each IKE datagram that
    came in on port 4500 made before the loop turned, and the datagrams that passed its barrier."""
    from test_ikeservice_peers import Gateway

    gw = Gateway(1)
    await gw.start()
    gate = asyncio.Event()
    gw.worker.hold = lambda msg: gate.wait() if isinstance(msg, pipe.Update | pipe.Add | pipe.SpdAdd) else None
    made: list[list[str]] = []
    receive_natt = gw.service.receive_natt

    def counting(msg: pipe.Ike) -> None:
        before = len(gw.worker.log)
        receive_natt(msg)
        made.append([type(m).__name__ for m in gw.worker.log[before:]])   # before the loop turns again

    gw.service.receive_natt = counting   # type: ignore[method-assign]
    passed: list[Datagram] = []
    send = gw.service.barrier._send
    gw.service.barrier._send = lambda d: (passed.append(d), send(d))   # type: ignore[method-assign,func-returns-value]
    gw.connect(0)
    await gw.settle(wait_tasks=False)
    return gw, gate, made, passed


def _auth_answers(passed: list[Datagram]) -> list[Datagram]:
    return [d for d in passed if d.data[18] == 35]


def test_a_new_child_sa_is_installed_in_the_turn_that_negotiated_it_and_its_answer_follows_in_the_pipe() -> None:
    """The IKE_AUTH that brought the ChildSaUp sent UPDATE, ADD and SPDADD before the loop turned, and
    its answer after them through the worker (SEND_IKE), which applies requests in the order they
    come: the answer does not wait for the install's answers, nothing is held."""
    async def body() -> None:
        gw, gate, made, passed = await _gateway_holding_installs()
        assert made == [["Update", "Add", "SpdAdd", "SendIke"]]
        assert len(_auth_answers(passed)) == 1 and gw.site_sa(0).children   # the site is up already
        assert not gw.children_of(0)[0].out_installed                       # the answers not read yet
        gate.set()
        await gw.settle()
        assert gw.children_of(0)[0].out_installed and gw.children_of(0)[0].install is None
        held = gw.service.barrier
        assert (held.install_waits, held.install_holds) == (0, 0)
    run(body())


def test_a_refused_install_is_removed_again_after_its_answer_went_to_the_peer() -> None:
    """The worker refuses the ADD: the answer had gone to the peer behind the install's requests (it
    gets the same answer as when it waited for them); the failed Child SA is forgotten and what of it
    did go in leaves the worker."""
    async def body() -> None:
        from test_ikeservice_peers import Gateway

        gw = Gateway(1)
        await gw.start()
        handle = gw.worker.worker.handle_datagram

        def refuse_add(data: bytes) -> list[bytes]:
            msg = pipe.decode(data)
            if isinstance(msg, pipe.Add):
                return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, pipe.Errno.EEXIST))]
            return list(handle(data))
        gw.worker.worker.handle_datagram = refuse_add  # type: ignore[method-assign]
        gw.connect(0)
        await gw.settle()
        types = [type(m).__name__ for m in gw.worker.log]
        assert types.index("SendIke", types.index("Add")) > types.index("SpdAdd")   # the answer behind the install
        assert gw.site_sa(0).children
        assert not gw.service.children                     # the failed Child SA is forgotten
        assert not [sa for sa in gw.worker.dp.sas() if sa.state != "larval"]   # nothing of it stays (the SPI
        assert not gw.worker.dp.policies()                                       # pool's larval SAs aside)
    run(body())


def test_a_datagram_the_worker_sends_passes_an_install_whose_requests_are_in_the_pipe_ahead_of_it() -> None:
    """Only what goes through the pipe (SEND_IKE), only once every install of its IKE SA is in the
    pipe, and never past a datagram of its IKE SA parked before it."""
    queued: list[Datagram] = []
    sent: list[Datagram] = []
    barrier = Barrier(lambda now: queued, sent.append, lambda coro: None, lambda: None,
                      through_pipe=lambda d: d.local_port == 4500)
    a = Datagram(ike_auth_response(b"A" * 8, b"a" * 8), NAT, 4500)
    flow = (NAT, a.data[:16])
    first, second = barrier.peer_install(flow), barrier.peer_install(flow)
    first.queued()
    queued[:] = [a]
    barrier.flush()
    assert sent == []                      # the second install's requests are not in the pipe yet
    second.queued()
    queued[:] = [a2 := Datagram(a.data[:-1] + b"\x02", NAT, 4500)]
    barrier.flush()
    assert sent == []                      # a is parked before it: no overtaking
    first()
    second()
    assert sent == [a, a2] and barrier.install_holds == 1
    sent.clear()
    third = barrier.peer_install(flow)
    third.queued()
    own = Datagram(a.data, NAT, 500)       # from our own socket (port 500): not ordered by the pipe
    queued[:] = [Datagram(a.data, NAT, 4500)]
    barrier.flush()
    assert len(sent) == 1                  # through the pipe, behind the install: not held
    queued[:] = [own]
    barrier.flush()
    assert len(sent) == 1                  # held for the install's answers
    third()
    assert sent[1:] == [own]


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
