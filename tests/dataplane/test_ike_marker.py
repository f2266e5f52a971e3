"""IKE on port 4500 after the non-ESP marker, through the cffi module: only a whole IKE header whose
length field is the message's goes up to the control process, and each sender (its address) has a
share of the event queue that its events give back as they are read.  Anyone can send these,
spoofed and before any state; established peers' DPD, rekeys and MOBIKE arrive the same way."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from esp_ref import c_addr, ike_message, total_drops
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane.fastpath import Dataplane, Drop, EventType
from tunsec.dataplane.pipe import Endpoint

MARKER = b"\0\0\0\0"
SHARE = 32   # TS_IKE_PER_SOURCE


def _from(address: str, port: int = 4500) -> Endpoint:
    return Endpoint(ipaddress.ip_address(address), port)


def _ike_events(dp: Dataplane) -> list[tuple[bytes, Endpoint | None]]:
    return [(e.data, e.remote) for e in dp.events() if e.type is EventType.IKE]


def _slot(dp: Dataplane, ep: Endpoint) -> int:
    return int(lib.ts_test_ike_source_slot(dp._dp, c_addr(ep)))


def _apart(dp: Dataplane, other: Endpoint) -> Endpoint:
    """A sender whose share is not other's: the slots are a keyed hash of the address (a random key
    per context), so now and then two addresses share one, and with it one share."""
    return next(ep for i in range(1, 255) if _slot(dp, ep := _from(f"198.51.100.{i}")) != _slot(dp, other))


def test_a_whole_header_after_the_marker_goes_up_without_it() -> None:
    dp = Dataplane()
    nat = _from("203.0.113.9", 33333)
    assert dp.inbound(MARKER + ike_message(b"payload"), nat) == (b"", Drop.NONE)
    assert _ike_events(dp) == [(ike_message(b"payload"), nat)]
    assert total_drops(dp) == 0


def _with_length(body: bytes, length: int) -> bytes:
    return body[:24] + struct.pack("!I", length) + body[28:]


JUNK = {
    "the proof's junk": b"A" * 996,
    "short of a header": ike_message()[:27],
    "length one more": _with_length(ike_message(b"x"), 30),
    "length one less": _with_length(ike_message(b"x"), 28),
    "length counting the marker": _with_length(ike_message(b"x" * 100), 132),
    "length zero": _with_length(ike_message(b"x"), 0),
    "length 2^32-1": _with_length(ike_message(b"x"), 0xFFFF_FFFF),
    "three letters": b"ike",
}


@pytest.mark.parametrize("after", JUNK.values(), ids=JUNK.keys())
def test_anything_else_after_the_marker_is_a_counted_malformed_drop(after: bytes) -> None:
    dp = Dataplane()
    assert dp.inbound(MARKER + after, _from("203.0.113.9")) == (b"", Drop.MALFORMED)
    assert dp.drops()["malformed"] == 1 and total_drops(dp) == 1
    assert list(dp.events()) == []


def test_one_sender_gets_its_share_and_every_other_sender_still_gets_through() -> None:
    dp = Dataplane()
    flooder = _from("203.0.113.9", 33333)
    peer = _apart(dp, flooder)
    # the reviewer's flood: 2,000 junk datagrams, none queued
    for _ in range(2000):
        assert dp.inbound(MARKER + JUNK["the proof's junk"], flooder)[1] is Drop.MALFORMED
    # well-formed ones: a share queued, the rest counted
    verdicts = [dp.inbound(MARKER + ike_message(bytes([i % 256])), flooder)[1] for i in range(200)]
    assert verdicts == [Drop.NONE] * SHARE + [Drop.IKE_SOURCE_LIMIT] * (200 - SHARE)
    assert dp.drops()["ike_source_limit"] == 200 - SHARE and dp.drops()["malformed"] == 2000
    assert dp.drops()["queue_full"] == 0
    # a peer's DPD still goes up
    assert dp.inbound(MARKER + ike_message(b"dpd", message_id=7), peer) == (b"", Drop.NONE)
    events = _ike_events(dp)
    assert events[-1] == (ike_message(b"dpd", message_id=7), peer)
    assert [remote for _, remote in events[:-1]] == [flooder] * SHARE
    # read: the flooder's share is back, whole and no more
    verdicts = [dp.inbound(MARKER + ike_message(), flooder)[1] for _ in range(SHARE + 1)]
    assert verdicts == [Drop.NONE] * SHARE + [Drop.IKE_SOURCE_LIMIT]


def test_the_share_is_per_address_whatever_the_port() -> None:
    """A NAT gives one host many ports, and so does a flooder: they count as one sender, also from
    port 500 where IKE has no marker."""
    dp = Dataplane()
    for port in range(1000, 1000 + SHARE):
        assert dp.inbound(MARKER + ike_message(), _from("203.0.113.9", port))[1] is Drop.NONE
    assert dp.inbound(MARKER + ike_message(), _from("203.0.113.9", 2000))[1] is Drop.IKE_SOURCE_LIMIT
    assert dp.inbound(ike_message(), _from("203.0.113.9", 500))[1] is Drop.IKE_SOURCE_LIMIT
    assert len(_ike_events(dp)) == SHARE


def test_one_ipv6_host_has_one_senders_share_whatever_address_of_its_64_it_sends_from() -> None:
    """A host holds its whole /64 and may send from any address of it: 600 unauthenticated IKE
    datagrams from as many addresses of one /64 took 256 places in the queue, and another client's
    IKE_SA_INIT was then dropped QUEUE_FULL (review revfast F1).  Now they are one sender's share."""
    dp = Dataplane()
    verdicts = [dp.inbound(MARKER + ike_message(bytes([i % 256])), _from(f"2001:db8:1:2::{i + 1:x}"))[1]
                for i in range(600)]
    assert verdicts.count(Drop.NONE) == SHARE
    assert dp.drops()["ike_source_limit"] == 600 - SHARE
    assert dp.inbound(MARKER + ike_message(b"hello"), _from("198.51.100.7"))[1] is Drop.NONE
    assert len(_ike_events(dp)) == SHARE + 1
