"""The rtnetlink parsing of services/addrwatch.py: what an address change says, and what a datagram
that does not parse leads to (no exception: the listener lists every address again)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import struct

from tunsec.services.addrwatch import (
    IFA_ADDRESS,
    IFA_LOCAL,
    RTM_DELADDR,
    RTM_NEWADDR,
    AddressChange,
    AddressWatch,
    InterfaceAddress,
    address_changes,
    dump_addresses,
)


def nlmsg(mtype: int, body: bytes = b"\0" * 8) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + body + b"\0" * (-length % 4)


def attr(atype: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), atype) + value + b"\0" * (-len(value) % 4)


def addr_msg(mtype: int, family: int, index: int, prefixlen: int, *attrs: bytes) -> bytes:
    return nlmsg(mtype, struct.pack("=BBBBI", family, prefixlen, 0, 0, index) + b"".join(attrs))


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


IP = ipaddress.ip_address


def test_an_address_added_and_removed_is_read_with_its_interface() -> None:
    data = addr_msg(RTM_NEWADDR, socket.AF_INET, 3, 24, attr(IFA_ADDRESS, v4("192.0.2.9")),
                    attr(IFA_LOCAL, v4("192.0.2.9"))) \
        + addr_msg(RTM_DELADDR, socket.AF_INET6, 4, 64, attr(IFA_ADDRESS, v6("2001:db8::9")))
    changes, whole = address_changes(data)
    assert whole
    assert changes == [(True, InterfaceAddress(3, IP("192.0.2.9"), 24, IP("192.0.2.9"))),
                       (False, InterfaceAddress(4, IP("2001:db8::9")))]   # IPv6: by interface and address


def test_a_point_to_point_link_gives_its_local_address_not_the_other_end() -> None:
    data = addr_msg(RTM_NEWADDR, socket.AF_INET, 5, 32, attr(IFA_ADDRESS, v4("10.0.0.2")),
                    attr(IFA_LOCAL, v4("10.0.0.1")))
    ((added, which),), _ = address_changes(data)
    assert added and which.local == IP("10.0.0.1") and which.peer == IP("10.0.0.2")


def test_other_messages_and_families_are_no_change() -> None:
    data = nlmsg(16) + addr_msg(RTM_NEWADDR, socket.AF_PACKET, 1, 0, attr(IFA_ADDRESS, b"\1" * 6))
    assert address_changes(data) == ([], True)


def test_a_malformed_message_is_reported_lost_after_the_changes_before_it() -> None:
    good = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 8, attr(IFA_LOCAL, v4("127.0.0.2")))
    first: AddressChange = (True, InterfaceAddress(1, IP("127.0.0.2"), 8, None))
    bad_length = struct.pack("=IHHII", 4, RTM_NEWADDR, 0, 0, 0)   # shorter than its own header
    overrun = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 8, struct.pack("=HH", 40, IFA_LOCAL) + v4("10.0.0.1"))
    wrong_size = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 8, attr(IFA_LOCAL, v6("::1")))
    no_address = addr_msg(RTM_DELADDR, socket.AF_INET6, 1, 64)
    short_body = nlmsg(RTM_NEWADDR, b"\2\0\0")
    for bad in (bad_length, overrun, wrong_size, no_address, short_body, b"\x14\0\0"):
        assert address_changes(good + bad + good) == ([first], False), bad


def test_no_datagram_raises() -> None:
    rng = random.Random(7)
    seed = addr_msg(RTM_NEWADDR, socket.AF_INET6, 2, 64, attr(IFA_ADDRESS, v6("2001:db8::1")), attr(8, b"\0" * 4))
    for _ in range(3000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        address_changes(bytes(data[:rng.randint(0, len(data))]))   # a result, never an exception


def test_the_dump_has_the_loopback_address() -> None:
    assert IP("127.0.0.1") in {a.local for a in dump_addresses()}


class _Socket:
    """What the kernel would send, one datagram per recv, then nothing more for now."""

    def __init__(self, *datagrams: bytes | OSError | tuple[bytes, int]) -> None:
        self.datagrams = list(datagrams)

    def recvfrom(self, size: int) -> tuple[bytes, tuple[int, int]]:
        """A datagram, from the kernel (port id 0, one of the address groups) or (data, port id) another's."""
        if not self.datagrams:
            raise BlockingIOError
        got = self.datagrams.pop(0)
        if isinstance(got, OSError):
            raise got
        if isinstance(got, tuple):
            return got[0], (got[1], 0)
        return got, (0, 0x10)


class _Listener:
    def __init__(self) -> None:
        self.applied: list[AddressChange] = []
        self.resyncs = 0

    def apply(self, changes: list[AddressChange]) -> None:
        self.applied += changes

    def resync(self) -> None:
        self.resyncs += 1


def _read(*datagrams: bytes | OSError | tuple[bytes, int], foreign: list[int] | None = None) -> tuple[_Listener, int]:
    """The watch reading ``datagrams`` (one wakeup), then its burst settled: the listener, and how many
    reports the watch made (and in ``foreign``, how many datagrams it dropped as not the kernel's)."""
    listener, reports = _Listener(), []
    foreign = [] if foreign is None else foreign

    async def run() -> None:
        watch = AddressWatch(lambda: reports.append(1), settle=0.01, listener=listener)
        watch._sock = _Socket(*datagrams)  # type: ignore[assignment]
        watch._readable()
        await asyncio.sleep(0.05)
        watch._sock = None
        watch.close()
        foreign.append(watch.foreign)
    asyncio.run(run())
    return listener, len(reports)


def test_the_watch_hands_its_listener_each_change_and_no_resync() -> None:
    add = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 32, attr(IFA_LOCAL, v4("10.9.0.1")))
    listener, reports = _read(add, addr_msg(RTM_DELADDR, socket.AF_INET, 1, 32, attr(IFA_LOCAL, v4("10.9.0.1"))))
    assert [a for a, _ in listener.applied] == [True, False] and listener.resyncs == 0 and reports == 1


def test_a_malformed_datagram_makes_the_listener_list_all_again() -> None:
    add = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 32, attr(IFA_LOCAL, v4("10.9.0.1")))
    listener, reports = _read(add, b"\xff" * 20)
    assert len(listener.applied) == 1 and listener.resyncs == 1 and reports == 1


def test_an_overflow_makes_the_listener_list_all_again() -> None:
    listener, reports = _read(OSError(105, "No buffer space available"))   # ENOBUFS: changes were missed
    assert listener.applied == [] and listener.resyncs == 1 and reports == 1


def test_datagrams_not_from_the_kernel_are_dropped_counted_and_cost_no_listing() -> None:
    """Review revlate6 F1: another netlink socket's unicast (port id not 0), well formed or not, is
    neither applied nor a reason to list every address again; the kernel's notices around it are."""
    add = addr_msg(RTM_NEWADDR, socket.AF_INET, 1, 32, attr(IFA_LOCAL, v4("10.9.0.1")))
    forged = addr_msg(RTM_DELADDR, socket.AF_INET, 1, 32, attr(IFA_LOCAL, v4("10.9.0.1")))
    dropped: list[int] = []
    listener, reports = _read((forged, 4242), add, (b"\xff" * 20, 77), (forged, 4242), foreign=dropped)
    assert [a for a, _ in listener.applied] == [True] and listener.resyncs == 0 and reports == 1
    assert dropped == [3]
