"""The address feed tells the worker only the addresses the host gains, in notices of 16 (review
revlate8 F2, services/addr_feed.py): an address changed (`ip addr change`, a SLAAC renewal), one the
host has on another interface already, or 17 of them in one turn are no "any address", which makes
every SA whose source is gone pay one more refused send.  Notices as pyroute2 encodes the kernel's
(tests/test_addr_feed.py); with real netlink: tests/test_review_revlate8_addr_feed_changes.py."""

from __future__ import annotations

import asyncio
import socket

from test_addr_feed import LIFE, V6, Worker, ip
from test_addr_feed import notice as notice_on_2

from tunsec.dataplane import pipe
from tunsec.services.addr_feed import AddressFeed
from tunsec.services.addrwatch import RTM_DELADDR, RTM_NEWADDR


def notice(kind: int, addr: str, index: int = 2, flags: int = 0) -> bytes:
    data = bytearray(notice_on_2(kind, socket.AF_INET6, flags, [("IFA_ADDRESS", addr), LIFE]))
    data[16 + 4:16 + 8] = index.to_bytes(4, "little")   # ifaddrmsg's interface index, after the header
    return bytes(data)


def turns(reads: list[list[bytes | None]], worker: Worker) -> AddressFeed:
    """Each list of reads fed to one feed in an event-loop turn of its own."""
    feed = AddressFeed(lambda: worker)  # type: ignore[arg-type,return-value]

    async def main() -> None:
        for turn in reads:
            for data in turn:
                feed._read(data)
            await asyncio.sleep(0)

    asyncio.run(main())
    return feed


def told(worker: Worker) -> list[list[str]]:
    return [[str(a) for a in msg.addrs] or ["any"] for msg in worker.told]


def test_more_than_sixteen_addresses_added_are_told_in_notices_of_sixteen() -> None:
    worker = Worker()
    added = [f"2001:db8::{n:x}" for n in range(1, 34)]
    feed = turns([[b"".join(notice(RTM_NEWADDR, a) for a in added)]], worker)
    assert told(worker) == [added[:16], added[16:32], added[32:]]
    assert feed.notices == 3


def test_an_address_changed_or_held_already_is_not_told_again() -> None:
    worker = Worker()
    turns([[V6], [V6], [notice(RTM_NEWADDR, "2001:db8::5", index=3)]], worker)   # renewed; on a second link
    assert told(worker) == [["2001:db8::5"]]


def test_an_address_the_host_lost_and_has_again_is_told_again() -> None:
    gone = notice(RTM_DELADDR, "2001:db8::5")
    other_link = notice(RTM_NEWADDR, "2001:db8::5", index=3)
    worker = Worker()
    turns([[V6], [other_link], [gone], [V6]], worker)   # never without it: told once
    assert told(worker) == [["2001:db8::5"]]
    worker = Worker()
    turns([[V6], [gone], [V6]], worker)
    assert told(worker) == [["2001:db8::5"], ["2001:db8::5"]]


def test_an_address_tentative_again_is_told_when_its_dad_ends() -> None:
    tentative = notice(RTM_NEWADDR, "2001:db8::5", flags=0x40)   # a link flap: DAD once more
    worker = Worker()
    turns([[V6], [tentative], [V6]], worker)
    assert told(worker) == [["2001:db8::5"], ["2001:db8::5"]]


def test_lost_notices_say_any_and_forget_what_the_host_had() -> None:
    worker = Worker()
    turns([[V6], [None], [V6]], worker)   # its removal may have been lost: the next notice tells it
    assert worker.told == [pipe.AddrAdded(addrs=(ip("2001:db8::5"),)), pipe.AddrAdded(), pipe.AddrAdded(
        addrs=(ip("2001:db8::5"),))]
