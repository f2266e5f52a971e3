"""tunsec.pktinfo over real loopback sockets bound to the wildcard: the address a datagram was sent
to, the source an answer leaves from, and ancillary data that is short or names no unicast address."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from conftest import netns_unavailable

from tunsec import pktinfo
from tunsec.bench.netns import netns_socket, scratch_netns


@pytest.fixture
def wildcard() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(5)
    assert pktinfo.enable(s)
    yield s
    s.close()


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def test_recv_says_which_of_our_addresses_the_datagram_was_sent_to(wildcard: socket.socket,
                                                                    peer: socket.socket) -> None:
    port = wildcard.getsockname()[1]
    for dest in ("127.0.0.2", "127.0.0.1", "127.0.0.3"):   # all of 127/8 is ours on loopback
        peer.sendto(dest.encode(), (dest, port))
        data, sender, local = pktinfo.recv(wildcard, 100)
        assert (data, sender, local) == (dest.encode(), peer.getsockname(), dest)


def test_sendto_leaves_from_the_source_asked_for(wildcard: socket.socket, peer: socket.socket) -> None:
    cases = (("127.0.0.5", "127.0.0.5"), (None, "127.0.0.1"), ("0.0.0.0", "127.0.0.1"),
             # not ours: the route's choice rather than no answer at all
             ("192.0.2.77", "127.0.0.1"))
    for source, seen in cases * 2:   # the second round from the ancillary data kept per source
        pktinfo.sendto(wildcard, b"x", peer.getsockname(), source)
        _, sender = peer.recvfrom(10)
        assert sender == (seen, wildcard.getsockname()[1]), source


def test_ancillary_data_that_names_no_unicast_address_or_is_short() -> None:
    def v4(spec_dst: str) -> tuple[int, int, bytes]:
        return (socket.IPPROTO_IP, pktinfo.IP_PKTINFO, struct.pack("=i4s4s", 1, socket.inet_aton(spec_dst), bytes(4)))

    def v6(addr: str) -> tuple[int, int, bytes]:
        return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, socket.inet_pton(socket.AF_INET6, addr) + bytes(4))

    assert pktinfo.local_of([v4("198.51.100.7")]) == "198.51.100.7"
    assert pktinfo.local_of([v6("2001:db8::7")]) == "2001:db8::7"
    for bad in (v4("0.0.0.0"), v4("255.255.255.255"), v4("224.0.0.5"), v6("ff02::1"), v6("::")):
        assert pktinfo.local_of([bad]) is None, bad
    short4 = (socket.IPPROTO_IP, pktinfo.IP_PKTINFO, bytes(11))
    short6 = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, bytes(19))
    assert pktinfo.local_of([short4, short6]) is None
    # other messages are skipped; a short one does not hide a good one after it
    other = (socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(4))
    assert pktinfo.local_of([other, short4, v4("192.0.2.9")]) == "192.0.2.9"
    assert pktinfo.local_of([]) is None


@pytest.fixture
def ns6() -> Iterator[str]:
    """A namespace of the test's own with its loopback up: the host's namespace may have no IPv6
    (a container's, which Docker makes with disable_ipv6=1), a new one has ::1 wherever the kernel
    has IPv6 at all."""
    if (why := netns_unavailable()) is not None:
        pytest.skip(f"NETNS UNAVAILABLE: {why}")
    with scratch_netns("tspi") as name:
        yield name


def test_ipv6_recv_and_sendto(ns6: str) -> None:
    with netns_socket(ns6, socket.AF_INET6, socket.SOCK_DGRAM) as wild, \
            netns_socket(ns6, socket.AF_INET6, socket.SOCK_DGRAM) as peer:
        wild.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        wild.bind(("::", 0))
        peer.bind(("::1", 0))
        wild.settimeout(5)
        peer.settimeout(5)
        assert pktinfo.enable(wild)
        peer.sendto(b"six", ("::1", wild.getsockname()[1]))
        data, sender, local = pktinfo.recv(wild, 100)
        assert (data, sender, local) == (b"six", peer.getsockname()[:2], "::1")
        pktinfo.sendto(wild, b"back", peer.getsockname()[:2], "::1")
        assert peer.recvfrom(10)[1][:2] == ("::1", wild.getsockname()[1])
