"""The worker's IKE events straight from the C event's fields to their pipe message
(pipe.encode_ike_event, Dataplane.events_encoding_ike): held to the general way, C event -> Event ->
Worker._event_message -> pipe.encode, byte for byte, and to it alone where the message cannot carry
the event."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from esp_ref import ike_message
from hypothesis import given, settings
from hypothesis import strategies as st

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Event, EventType, _endpoint
from tunsec.dataplane.pipe import Endpoint, Ike
from tunsec.dataplane.worker import Worker
from tunsec.ike.constants import NON_ESP_MARKER

A = ipaddress.ip_address


def _general(data: bytes, family: int, raw: bytes, port: int, local_family: int, local_raw: bytes,
             local_port: int) -> bytes | None:
    """The general way's message for these C event fields (None: it sends none)."""
    ev = Event(type=EventType.IKE, remote=_endpoint(family, raw, port),
               local=_endpoint(local_family, local_raw, local_port), data=data)
    msg = Worker._event_message(ev)
    return None if msg is None else pipe.encode(msg)


families = st.sampled_from([0, 4, 6, 5])
raws = st.binary(min_size=16, max_size=16)
ports = st.integers(0, 65535)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), family=families, raw=raws, port=ports,
       local_family=families, local_raw=raws, local_port=ports)
def test_an_ike_event_encoded_from_its_fields_is_the_general_ways_message(
        data: bytes, family: int, raw: bytes, port: int, local_family: int, local_raw: bytes,
        local_port: int) -> None:
    fields = (data, family, raw, port, local_family, local_raw, local_port)
    quick = pipe.encode_ike_event(*fields)
    general = _general(*fields)
    # the same message, or none where the general way makes none (it then judges the event itself)
    assert quick == general
    if quick is not None:
        assert isinstance(pipe.decode(quick), Ike)


@pytest.mark.parametrize("size", [pipe.MAX_IKE_DATA - 1, pipe.MAX_IKE_DATA, pipe.MAX_IKE_DATA + 1])
@pytest.mark.parametrize("family", [4, 6])
def test_the_largest_ike_messages_and_one_too_large(size: int, family: int) -> None:
    fields = (bytes(size), family, bytes(range(16)), 4500, family, bytes(range(16, 32)), 4500)
    assert pipe.encode_ike_event(*fields) == _general(*fields)
    assert (pipe.encode_ike_event(*fields) is None) == (size > pipe.MAX_IKE_DATA)


def test_ipv4_addresses_ignore_what_c_left_after_their_four_bytes() -> None:
    raw, local_raw = bytes([198, 51, 100, 7]) + b"\xff" * 12, bytes([192, 0, 2, 1]) + b"\x01" * 12
    quick = pipe.encode_ike_event(b"ike", 4, raw, 4500, 4, local_raw, 4500)
    assert quick == pipe.encode(Ike(data=b"ike", remote=Endpoint(A("198.51.100.7"), 4500),
                                    local=Endpoint(A("192.0.2.1"), 4500)))


@settings(max_examples=100, deadline=None)
@given(tail=st.binary(max_size=572), v6=st.booleans(), with_local=st.booleans(),
       port=st.integers(1, 65535).filter(lambda p: p != 500))
def test_the_worker_reports_an_ike_message_as_the_general_way_did(tail: bytes, v6: bool, with_local: bool,
                                                                   port: int) -> None:
    """Through the C path and Worker.drain_events: the bytes the control process gets (after the
    marker, so not from port 500, whose IKE has none)."""
    data = ike_message(tail)
    remote = Endpoint(A("2001:db8::7" if v6 else "198.51.100.7"), port)
    local = Endpoint(A("2001:db8:1::1" if v6 else "192.0.2.1"), 4500) if with_local else None
    loop = asyncio.new_event_loop()
    try:
        sent: list[bytes] = []
        dp = Dataplane()
        worker = Worker(dp, sent.append, {}, loop)
        dp.inbound(NON_ESP_MARKER + data, remote, local)
        worker.drain_events()
        assert sent == [pipe.encode(Ike(data=data, remote=remote, local=local))]
    finally:
        loop.close()


def test_our_address_of_the_other_family_is_left_out_not_raised() -> None:
    """No socket of ours reports one; if C ever did, the event callback must not raise (a traceback
    in the log, the rest of the batch lost): the message goes up without our address."""
    ike = ike_message(b"ike")
    fields = (ike, 4, bytes([198, 51, 100, 7]) + bytes(12), 4500, 6, A("2001:db8::1").packed, 4500)
    quick = pipe.encode_ike_event(*fields)
    assert quick is not None and quick == _general(*fields)
    remote, local = Endpoint(A("198.51.100.7"), 4500), Endpoint(A("2001:db8::1"), 4500)
    assert pipe.decode(quick) == Ike(data=ike, remote=remote, local=None)
    dp = Dataplane()                      # and so through the C path
    dp.inbound(NON_ESP_MARKER + ike, remote, local)
    assert list(dp.events_encoding_ike(pipe.encode_ike_event)) == [(quick, False, 0, False)]
