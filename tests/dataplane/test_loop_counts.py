"""The batch loop counts every datagram it drops, by reason (csrc/loop.c: "Every drop is counted
once by reason"), as ts_dp_inbound does the same datagram: a probe leaves its trace in `tunsec status`."""

from __future__ import annotations

import socket
import threading
import time

from tunsec.dataplane.fastpath import Dataplane


def test_an_empty_datagram_on_4500_is_counted_malformed() -> None:
    """A zero-length datagram went through inbound_batch's segment loop zero times, uncounted
    (review revfast F5).  A keepalive after it marks the point where the loop has seen both: one
    socket's datagrams are taken in order."""
    dp = Dataplane()
    tun, tun_inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    for s in (tun_inside, udp):
        s.setblocking(False)
    dp.set_fds(tun_inside.fileno(), udp.fileno())
    loop = threading.Thread(target=dp.run, daemon=True)
    loop.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"", udp.getsockname())
            peer.sendto(b"\xff", udp.getsockname())   # a NAT keepalive, counted as such
        deadline = time.monotonic() + 30   # a hang guard only, not a timing assertion
        while dp.drops()["keepalive"] == 0:
            assert time.monotonic() < deadline, "the loop never counted the keepalive"
            time.sleep(0.01)
        assert {k: v for k, v in dp.drops().items() if v} == {"malformed": 1, "keepalive": 1}
    finally:
        dp.stop()
        loop.join(5)
        for s in (tun, tun_inside, udp):
            s.close()
