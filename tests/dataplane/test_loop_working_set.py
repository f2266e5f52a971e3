"""A packet loop's working set is in memory from its start, not brought in by its first clients.

The loop's receive slots are 64 KiB apart (a UDP GRO run can fill one), so each small datagram
of a batch (IKE, a keepalive, a ping) lands on a page of its own, and its flow cache is hashed,
so a hundred flows touch all of it: ~0.3 MiB per loop that the first hundred road warriors used
to bring in (docs/benchmarks.md "Scale"; bench/mem_stages.py).  Every gateway that carries
traffic uses them, so the loop faults them in when it starts, and a gateway's memory per client
measures its clients (csrc/loop.c, prefault_working_set).
"""

from __future__ import annotations

import socket
import threading
import time

from esp_ref import total_drops
from tunsec.dataplane._fastpath import ffi, lib

from tunsec.dataplane.fastpath import Dataplane


def test_every_receive_slot_and_the_flow_cache_are_in_memory_once_the_loop_runs() -> None:
    dp = Dataplane()
    tun, tun_inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    for s in (tun_inside, udp):
        s.setblocking(False)   # the loop reads each until EAGAIN, as the worker's own
    dp.set_fds(tun_inside.fileno(), udp.fileno())
    loop = threading.Thread(target=dp.run, daemon=True)
    loop.start()
    try:
        # one ESP datagram for an SPI nobody has: once it is counted, the loop has made its
        # buffers and received into its first slot (only that one: the others stay as they are)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"\x12\x34\x56\x78" + bytes(60), udp.getsockname())
        deadline = time.monotonic() + 30
        while total_drops(dp) == 0:
            assert time.monotonic() < deadline, "the loop never counted the datagram"
            time.sleep(0.01)
        missing = ffi.new("int *")
        slots = lib.ts_test_loop_resident(dp._dp, 0, missing)
        assert slots == lib.TS_BATCH
        assert missing[0] == 0
    finally:
        dp.stop()
        loop.join(5)
        for s in (tun, tun_inside, udp):
            s.close()
