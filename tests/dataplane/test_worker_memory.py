"""The worker's request path keeps nothing per rekey, not even in CPython's free lists.

A soak (bench/soak.py: two peers rekeying every few seconds, `status` polled)
once showed the worker growing 11-21 KiB/min in the Python allocator's arenas
with no live object behind it: a ``tuple(<generator>)`` (``dataclasses.fields()``
in the pipe codec's Lifetime checks) turned one 10-slot tuple into a 3-slot one
on every decoded lifetime, and the free list of 3-tuples kept each of them
(2000 of them, 128 KiB, before it is full), as the control process's `status`
path did (tests/test_ike_memory.py).  gc.get_objects() does not see free lists;
tracemalloc does (a tuple in a free list stays allocated).

Here the worker's own request handler (worker.Worker over the real C fast path)
answers what a Child SA rekey sends through the pipe - GETSPI, UPDATE, ADD,
SPDADD, DUMP, SEND_IKE (a real UDP socket), DELETE x2, SPDDELETE - encoded
before counting, so only the worker's decode -> dispatch -> encode runs while
memory is counted, and reports an IKE datagram arriving on port 4500 (the C
inbound path queues the event, the worker encodes it), with the collector off
so nothing is cleared behind the count's back.  A packet each way runs on every
new SA pair, and the C side's gauge (fastpath.live_allocations: SA entries and
cipher contexts allocated and not freed) must be back where it was.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import ipaddress
import os
import socket
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from esp_ref import esp_seal, ike_message, ipv4_udp

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Drop, live_allocations
from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
from tunsec.dataplane.worker import Worker

A, B = ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("10.2.0.0/24")
LOCAL = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
PEER = Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)
PACKET_OUT = ipv4_udp("10.1.0.5", "10.2.0.5", b"out")
PACKET_IN = ipv4_udp("10.2.0.5", "10.1.0.5", b"in")


@dataclass(frozen=True)
class Rekey:
    """What the control process sends the worker for one Child SA rekey, encoded, and the traffic."""

    install: list[bytes]    # GETSPI, UPDATE, ADD, SPDADD, DUMP, SEND_IKE
    remove: list[bytes]     # DELETE x2 (the SAs of this rekey), SPDDELETE
    esp_in: bytes           # an ESP packet for the new inbound SA


def rekey(k: int, ike_peer: Endpoint) -> Rekey:
    spi_in, spi_out, ids = 0xC0000000 + k, 0xD0000000 + k, 100 * k
    common = dict(alg=Alg.AES128GCM16, esn=False, reqid=1, local=LOCAL, remote=PEER,
                  soft=Lifetime(), hard=Lifetime(seconds=10))
    inbound = SaSpec(spi=spi_in, direction=Direction.IN, key=os.urandom(20), replay_window=4096,
                     selectors=(Selector.from_networks(B, A),), **common)   # type: ignore[arg-type]
    outbound = SaSpec(spi=spi_out, direction=Direction.OUT, key=os.urandom(20), replay_window=0,
                      selectors=(Selector.from_networks(A, B),), **common)  # type: ignore[arg-type]
    policy = Policy(id=1000 + k, priority=100, action=Action.PROTECT, reqid=1, selector=Selector.from_networks(A, B))
    install: list[pipe.Message] = [
        pipe.GetSpi(ids + 1, spi_in, spi_in, larval_seconds=0), pipe.Update(ids + 2, inbound),
        pipe.Add(ids + 3, outbound), pipe.SpdAdd(ids + 4, policy), pipe.Dump(ids + 5),
        pipe.SendIke(ids + 6, os.urandom(300), ike_peer),
    ]
    remove: list[pipe.Message] = [
        pipe.Delete(ids + 7, spi_in, Direction.IN), pipe.Delete(ids + 8, spi_out, Direction.OUT, PEER),
        pipe.SpdDelete(ids + 9, policy.id),
    ]
    return Rekey([pipe.encode(m) for m in install], [pipe.encode(m) for m in remove],
                 esp_seal(inbound.key, spi_in, 1, PACKET_IN, 4))


@pytest.fixture
def worker() -> Iterator[Worker]:
    loop = asyncio.new_event_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    reported = collections.Counter[int]()   # events sent up the pipe, by message type

    def send(data: bytes) -> None:
        reported[data[1]] += 1

    w = Worker(Dataplane(), send, {4: udp}, loop)
    yield w
    w.timers.cancel_all()
    w.dp.flush()
    udp.close()
    loop.close()
    assert reported[pipe.MsgType.IKE] > 0, "the IKE datagrams were reported upward"


@pytest.fixture
def ike_peer() -> Iterator[Endpoint]:
    """Where SEND_IKE sends: a socket of ours on loopback (its buffer drops what it cannot hold)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield Endpoint(ipaddress.ip_address("127.0.0.1"), s.getsockname()[1])


def answer(w: Worker, datagrams: list[bytes]) -> None:
    for data in datagrams:
        for reply in w.handle_datagram(data):
            assert reply[2:4] == b"\0\0", f"refused: {pipe.decode(reply)}"   # the header's errno: OK


def run(w: Worker, r: Rekey, ike: bytes) -> None:
    answer(w, r.install)
    w.dp.inbound(ike, PEER)   # an IKE datagram on port 4500 (non-ESP marker): an event to report
    w.drain_events()
    assert w.dp.outbound(PACKET_OUT)[2] is Drop.NONE   # a packet each way on the new SAs
    assert w.dp.inbound(r.esp_in, PEER)[1] is Drop.NONE
    answer(w, r.remove)


def test_rekeys_through_the_request_path_hold_no_memory(worker: Worker, ike_peer: Endpoint) -> None:
    warm, counted = 50, 500
    cycles = [rekey(k, ike_peer) for k in range(warm + counted)]
    ike = bytes(4) + ike_message(os.urandom(272))
    for r in cycles[:warm]:
        run(worker, r, ike)
    tracing = tracemalloc.is_tracing()
    gc.collect()   # a full collection also empties CPython's free lists: the count starts from none
    gc.disable()
    c_before = live_allocations()   # process-wide: taken after the collection frees other tests' Dataplanes
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for r in cycles[warm:]:
            run(worker, r, ike)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        gc.enable()
        if not tracing:
            tracemalloc.stop()
    # nothing is left installed, and the timers of the deleted SAs are gone (the heap's lazily
    # skipped entries are bounded by its compaction)
    assert worker.dp.sas() == [] and worker.dp.policies() == []
    assert live_allocations() == c_before, "(SA entries, cipher contexts) allocated in C and not freed"
    assert worker.timers.epoch == {}
    assert len(worker.timers.heap) <= 64
    # what stays is bounded, whatever the number of rekeys (~20-30 KiB): up to 64 skipped timer
    # entries with their keys waiting for the compaction, and the free lists' tuples of the most
    # alive at once; the 3-tuples of the lifetimes' fields() filled their free list, 2000 of them
    # (128 KiB), within a few hundred rekeys
    assert grown < 64 * 1024, f"{counted} rekeys through the worker's request path kept {grown} bytes"
