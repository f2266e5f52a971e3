"""The control process's one watch of the host's addresses (services/addr_feed.py, h/fixwatch, review
revlate4 F1): which notices tell the worker of an address added (the pipe's ADDR_ADDED: the worker
holds no netlink socket of its own), a turn's addresses in notices of 16, any address for what was
lost or did not parse (tests/test_addr_feed_gained.py: only addresses the host gains); and the
bursts handed to each subscriber.  The notices are pyroute2's encoding of the kernel's
(a reference of its own, not the parser's reading); the end-to-end path with real netlink, the real
worker handling and the fast path is tests/dataplane/test_review_revcsmall_source_back.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from test_review_revperf_host_addresses import NEEDS_ROOT, run_in_own_netns

from tunsec.dataplane import pipe
from tunsec.services.addr_feed import AddressFeed, added_addresses
from tunsec.services.addrwatch import AddressChange, InterfaceAddress


def notice(kind: int, family: int, flags: int, attrs: list[tuple[str, Any]]) -> bytes:
    m = ifaddrmsg()
    m["header"]["type"] = kind
    m["family"], m["prefixlen"], m["flags"], m["index"] = family, 24 if family == socket.AF_INET else 64, flags, 2
    m["attrs"] = attrs
    m.encode()
    return bytes(m.data)


LIFE = ("IFA_CACHEINFO", {"ifa_preferred": 500, "ifa_valid": 1000, "cstamp": 1, "tstamp": 2})
V4_PTP = notice(RTM_NEWADDR, socket.AF_INET, 0x80, [("IFA_ADDRESS", "192.0.2.9"), ("IFA_LOCAL", "192.0.2.5"),
                                                    ("IFA_LABEL", "eth0"), ("IFA_FLAGS", 0x80), LIFE])
V6 = notice(RTM_NEWADDR, socket.AF_INET6, 0, [("IFA_ADDRESS", "2001:db8::5"), ("IFA_FLAGS", 0x100), LIFE])
TENTATIVE = notice(RTM_NEWADDR, socket.AF_INET6, 0x40, [("IFA_ADDRESS", "2001:db8::6"), ("IFA_FLAGS", 0x40)])
DAD_FAILED = notice(RTM_NEWADDR, socket.AF_INET6, 0, [("IFA_ADDRESS", "2001:db8::8"), ("IFA_FLAGS", 0x48)])
OPTIMISTIC = notice(RTM_NEWADDR, socket.AF_INET6, 0x44, [("IFA_ADDRESS", "2001:db8::7")])
GONE = notice(RTM_DELADDR, socket.AF_INET, 0x80, [("IFA_LOCAL", "192.0.2.5")])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_only_addresses_added_are_read() -> None:
    # ours on a point-to-point link is IFA_LOCAL (IFA_ADDRESS is the far end)
    assert added_addresses(V4_PTP) == ([ip("192.0.2.5")], True)
    assert added_addresses(V6) == ([ip("2001:db8::5")], True)
    # none yet: DAD under way (IFA_FLAGS over ifa_flags), or failed; an optimistic one may be a source
    assert added_addresses(TENTATIVE) == ([], True)
    assert added_addresses(DAD_FAILED) == ([], True)
    assert added_addresses(OPTIMISTIC) == ([ip("2001:db8::7")], True)
    assert added_addresses(GONE) == ([], True)
    assert added_addresses(V4_PTP + TENTATIVE + V6 + GONE + OPTIMISTIC) == (
        [ip("192.0.2.5"), ip("2001:db8::5"), ip("2001:db8::7")], True)


def test_what_does_not_parse_is_said() -> None:
    assert added_addresses(V4_PTP + V6[:30]) == ([ip("192.0.2.5")], False)   # cut short
    assert added_addresses(V4_PTP + b"\x14\0\0") == ([ip("192.0.2.5")], False)
    bad_attr = bytearray(V6)
    bad_attr[16 + 8] = 0xff   # the first attribute's length overruns the notice
    assert added_addresses(bytes(bad_attr)) == ([], False)
    no_address = notice(RTM_NEWADDR, socket.AF_INET, 0, [("IFA_LABEL", "eth0")])
    assert added_addresses(no_address) == ([], False)


@given(st.binary(max_size=600), st.integers(0, 4 * 600), st.integers(0, 255))
def test_any_read_is_taken_apart_without_a_traceback(junk: bytes, at: int, byte: int) -> None:
    """Whatever a read holds (junk, or real notices with one byte changed): addresses or "did not
    parse", never an exception on the event loop."""
    real = bytearray(V4_PTP + V6 + TENTATIVE + OPTIMISTIC)
    real[at % len(real)] = byte
    for data in (junk, bytes(real), bytes(real) + junk):
        added, _whole = added_addresses(data)
        assert all(a.version in (4, 6) for a in added)


class Worker:
    def __init__(self) -> None:
        self.told: list[pipe.AddrAdded] = []
        self.up = True

    def notify(self, msg: pipe.AddrAdded) -> bool:
        # what the pipe carries (and the worker decodes) is what was meant
        assert pipe.decode(pipe.encode(msg)) == msg
        self.told.append(msg)
        return self.up


def run(reads: list[bytes | None], worker: Worker) -> AddressFeed:
    """reads fed to a feed as its watch would, in one event-loop turn; then that turn's end."""
    feed = AddressFeed(lambda: worker)  # type: ignore[arg-type,return-value]

    async def main() -> None:
        for data in reads:
            feed._read(data)
        await asyncio.sleep(0)   # the end of the turn: one notice for it

    asyncio.run(main())
    return feed


def test_the_worker_is_told_each_address_added_once_per_turn() -> None:
    worker = Worker()
    feed = run([V4_PTP, TENTATIVE, V6, V4_PTP], worker)
    assert worker.told == [pipe.AddrAdded(addrs=(ip("192.0.2.5"), ip("2001:db8::5")))]
    assert feed.notices == 1
    worker = Worker()
    run([GONE, TENTATIVE], worker)   # nothing added: nothing told
    assert worker.told == []


def test_lost_or_unreadable_notices_are_any_address() -> None:
    many = b"".join(notice(RTM_NEWADDR, socket.AF_INET, 0, [("IFA_LOCAL", f"192.0.2.{n}")]) for n in range(1, 18))
    cases: list[list[bytes | None]] = [[None], [V6, None], [V6 + V4_PTP[:20]], [many + V4_PTP[:20]]]
    for reads in cases:
        worker = Worker()
        run(reads, worker)
        assert worker.told == [pipe.AddrAdded()], reads   # none named: any


def test_no_worker_loses_the_notice_quietly() -> None:
    worker = Worker()
    worker.up = False
    feed = run([V6], worker)
    assert len(worker.told) == 1 and feed.notices == 0


class Listener:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def apply(self, changes: Sequence[AddressChange]) -> None:
        self.calls.append(list(changes))

    def resync(self) -> None:
        self.calls.append("resync")


def test_one_watch_hands_each_burst_and_change_to_every_subscriber() -> None:
    feed = AddressFeed(lambda: Worker())  # type: ignore[arg-type,return-value]
    bursts: list[str] = []
    listener = Listener()
    ike = feed.subscribe(lambda: bursts.append("ike"), listener)
    other = feed.subscribe(lambda: bursts.append("other"))
    feed._burst()
    assert bursts == ["ike", "other"]
    change = (True, InterfaceAddress(2, ip("192.0.2.5")))
    feed.apply([change])   # as the watch hands it each change read (its listener)
    feed.resync()
    assert listener.calls == [[change], "resync"]
    ike.close()   # the daemon's feed: a subscriber that goes leaves it running for the rest
    feed._burst()
    feed.apply([change])
    assert bursts == ["ike", "other", "other"] and listener.calls == [[change], "resync"]
    other.close()


def test_the_daemon_owns_the_one_watch_and_its_ike_service_subscribes() -> None:
    from test_ikeservice_terminate import CONF

    from tunsec.conf.config import parse_config
    from tunsec.daemon import Daemon

    daemon = Daemon(parse_config(CONF, "swanctl.conf"))
    assert daemon.ike is not None and daemon.ike.addresses is daemon.addresses
    ike = daemon.ike

    async def main() -> None:
        daemon.addresses.start()
        ike._watch_addresses()   # as IkeService.start does: no watch of its own
        sub = ike._addr_watch
        assert sub is not None and sub.feed is daemon.addresses and not sub.owned
        ike.close()   # the service goes: the daemon's watch stays
        assert daemon.addresses.running and ike._addr_watch is None
        daemon.addresses.close()

    asyncio.run(main())


_FORGED = """
import asyncio, json, socket, struct, subprocess
from tunsec.services.addr_feed import AddressFeed

class Worker:
    told = []
    def notify(self, msg):
        self.told.append([str(a) for a in msg.addrs] or ["any"])
        return True

def notice(addr):
    raw = socket.inet_aton(addr)
    body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 1) + struct.pack("=HH", 8, 2) + raw
    return struct.pack("=IHHII", 16 + len(body), 20, 0, 0, 0) + body

async def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    worker = Worker()
    feed = AddressFeed(lambda: worker)
    feed.start()
    port = feed._watch._sock.getsockname()[0]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as forger:
        forger.bind((0, 0))
        forger.sendto(notice("192.0.2.66"), (port, 0))   # not the kernel's: dropped
    await asyncio.sleep(0.3)
    forged = list(worker.told)
    subprocess.run(["ip", "addr", "add", "10.66.0.1/32", "dev", "lo"], check=True)
    for _ in range(500):
        if worker.told != forged:
            break
        await asyncio.sleep(0.01)
    print(json.dumps({"forged": forged, "real": worker.told}))
    feed.close()

asyncio.run(main())
"""


@NEEDS_ROOT
def test_the_worker_is_told_of_the_kernels_notices_alone() -> None:
    """Real netlink in a namespace of its own: an RTM_NEWADDR another netlink socket unicasts to the
    watch tells the worker nothing (review revlate6's rule, which the worker's notices follow too); the
    kernel's for an address added tells it that address."""
    out = json.loads(run_in_own_netns(_FORGED).splitlines()[-1])
    assert out == {"forged": [], "real": [["10.66.0.1"]]}, out


def test_a_malformed_notice_is_refused_and_answered_by_nothing() -> None:
    """ADDR_ADDED with a port, more than 16 addresses, or a request id: a PipeError the worker logs
    (worker.handle_decoded), never an answer (a notice has none) nor a traceback."""
    good = bytearray(pipe.encode(pipe.AddrAdded(addrs=(ip("192.0.2.5"),))))
    with_port = bytearray(good)
    with_port[16 + 4 + 2:16 + 4 + 4] = (4500).to_bytes(2, "big")   # the endpoint's port
    with_id = bytearray(good)
    with_id[4:8] = (7).to_bytes(4, "big")
    many = bytearray(pipe.encode(pipe.AddrAdded(addrs=tuple(ip(f"192.0.2.{n}") for n in range(16)))))
    extra = bytes(good[16:])
    many += extra
    many[12:16] = len(many).to_bytes(4, "big")
    for data in (with_port, with_id, many):
        try:
            pipe.decode(bytes(data))
        except pipe.PipeError as err:
            assert pipe.error_reply(err) is None, err
        else:
            raise AssertionError(f"decoded {bytes(data).hex()}")
