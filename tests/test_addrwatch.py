"""The rtnetlink parsing of services/addrwatch.py: what counts as an address change."""

from __future__ import annotations

import struct

from tunsec.services.addrwatch import RTM_DELADDR, RTM_NEWADDR, address_events


def nlmsg(mtype: int, body: bytes = b"\0" * 8) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + body + b"\0" * (-length % 4)


def test_address_messages_are_counted_and_others_ignored() -> None:
    data = nlmsg(RTM_NEWADDR) + nlmsg(16) + nlmsg(RTM_DELADDR, b"\1" * 5)
    assert address_events(data) == 2


def test_a_malformed_message_ends_the_datagram_without_error() -> None:
    bad_length = struct.pack("=IHHII", 4, RTM_NEWADDR, 0, 0, 0)   # shorter than its own header
    assert address_events(nlmsg(RTM_NEWADDR) + bad_length + nlmsg(RTM_NEWADDR)) == 1
    assert address_events(b"\x14\0\0") == 0
