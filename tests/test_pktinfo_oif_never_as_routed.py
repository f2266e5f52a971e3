"""Review revfull4 F1: pktinfo.sendto with an output interface (SEND_IKE's OIF, port 500's uplink) must
not quietly leave as routed when the kernel refuses that interface (gone: ENODEV/ENXIO after a PPP,
LTE or USB uplink was recreated and its ifindex changed): on a full-tunnel hub "as routed" is into the
TUN, the very thing the OIF is there to avoid, and nothing counts it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tunsec import pktinfo

NO_SUCH_IFINDEX = 0x7FFF_FFF0   # no interface has it: what a stale ifindex of a recreated uplink is


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.3)
    yield s
    s.close()


def test_a_send_by_an_interface_that_is_gone_does_not_leave_as_routed(receiver: socket.socket) -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            pktinfo.sendto(sender, b"ike", receiver.getsockname(), None, NO_SUCH_IFINDEX)
        except OSError:
            return   # refused, for the caller to count: what the OIF asks
        try:
            data = receiver.recv(64)
        except TimeoutError:
            return   # dropped
        pytest.fail(f"the datagram asked to leave by ifindex {NO_SUCH_IFINDEX} (gone) left as routed "
                    f"instead ({data!r} arrived): on a full-tunnel hub, into the TUN, uncounted")
    finally:
        sender.close()
