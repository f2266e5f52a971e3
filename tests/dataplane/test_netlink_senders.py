"""Review revlate7 R1: the control process's route readers take only the kernel's datagrams.

blockwatch's route dump (_dump) and the prohibit delete's notices (prohibitroute._read) read raw
rtnetlink sockets; another netlink socket of the namespace with CAP_NET_ADMIN may unicast to them,
and on main what it sent was read as the kernel's: a forged RTM_NEWROUTE naming a prohibit route made
the check believe a deleted block was still there (never put back), a forged RTM_DELROUTE with our
request's (port, sequence) in its header made the delete put back a route nobody had.  Real sockets:
the forger is a second netlink socket of this process (root: CAP_NET_ADMIN, which unicast needs);
nothing is changed on the host."""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import ip_network

import pytest

from tunsec.dataplane import blockwatch, prohibitroute
from tunsec.dataplane.netlink import from_kernel
from tunsec.dataplane.prohibitroute import RT_TABLE_MAIN, RTN_PROHIBIT, RTPROT_TUNSEC

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unicast between netlink sockets needs CAP_NET_ADMIN")

NET = ip_network("198.51.100.0/24")
SOCKET = socket.socket   # the forger's, whatever a test puts in blockwatch's place
NLMSG_DONE = 3


def route_message(kind: int, seq: int, pid: int) -> bytes:
    """A prohibit route of tunsec's to NET, as the kernel would word it."""
    dst = struct.pack("=HH", 8, prohibitroute.RTA_DST) + NET.network_address.packed
    body = prohibitroute.RTMSG.pack(socket.AF_INET, NET.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_TUNSEC, 0,
                                    RTN_PROHIBIT, 0) + dst
    return prohibitroute.NLMSG.pack(prohibitroute.NLMSG.size + len(body), kind, 0, seq, pid) + body


def forger() -> socket.socket:
    s = SOCKET(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    s.bind((0, 0))
    return s


def test_from_kernel() -> None:
    assert from_kernel((0, 0)) and from_kernel((0, 64))
    assert not from_kernel((4242, 0)) and not from_kernel(()) and not from_kernel(None)


def test_a_forged_route_does_not_join_the_route_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forged route and a forged end of the dump arrive before the request goes out (the worst
    case: read first); the dump is the kernel's, and has no prohibit route to NET."""
    sent = []

    class Forged(SOCKET):   # type: ignore[misc,valid-type]
        def sendto(self, data: bytes, address: object) -> int:   # type: ignore[override]
            if self.getsockname()[0] == 0:
                self.bind((0, 0))   # the port the request's sendto would autobind, known to the forger first
            port = self.getsockname()[0]
            with forger() as f:
                f.sendto(route_message(blockwatch.RTM_NEWROUTE, 1, 0), (port, 0))
                f.sendto(prohibitroute.NLMSG.pack(prohibitroute.NLMSG.size + 4, NLMSG_DONE, 0, 1, 0) + bytes(4),
                         (port, 0))
            sent.append(port)
            return int(super().sendto(data, address))

    monkeypatch.setattr(blockwatch.socket, "socket", Forged)
    before = blockwatch.FOREIGN.count
    found = blockwatch._dump(socket.AF_INET)
    assert sent, "the dump sent nothing"
    assert (NET, None) not in found, f"a forged route joined the dump: {found}"
    assert blockwatch.FOREIGN.count >= before + 2


def test_a_forged_deletion_notice_is_not_taken_for_ours() -> None:
    """A notice of our request's (port, sequence), unicast by another socket: not a route our delete
    removed (on main it was: delete() would have put it back with add)."""
    with prohibitroute._deletions(4) as events, forger() as f:
        ours = {(4242, 7)}
        f.sendto(route_message(prohibitroute.RTM_DELROUTE, 7, 4242), (events.getsockname()[0], 0))
        before = prohibitroute.FOREIGN.count
        assert prohibitroute._read(events, ours) == []
        assert prohibitroute.FOREIGN.count == before + 1
