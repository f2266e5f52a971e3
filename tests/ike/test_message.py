"""Codec tests: round trips, strict bounds, and only DecodeError on bad input."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunsec.ike.constants import ExchangeType, HeaderFlag, PayloadType
from tunsec.ike.message import (
    Attribute,
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DecodeError,
    DeletePayload,
    EapPayload,
    IdPayload,
    InvalidMajorVersion,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnsupportedCriticalPayload,
    VendorIdPayload,
    decode_message,
    decode_payloads,
    encode_payloads,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
small = st.binary(max_size=40)

attributes = st.one_of(
    st.builds(Attribute, st.integers(0, 0x7FFF), u16),
    st.builds(Attribute, st.integers(0, 0x7FFF), small),
)
transforms = st.builds(Transform, u8, u16, st.lists(attributes, max_size=3).map(tuple))
proposals = st.builds(Proposal, u8, u8, st.binary(max_size=8), st.lists(transforms, max_size=5).map(tuple))


def _selector(v6: bool) -> st.SearchStrategy[TrafficSelector]:
    n = 16 if v6 else 4
    return st.builds(
        TrafficSelector,
        st.just(8 if v6 else 7),
        u8,
        u16,
        u16,
        st.binary(min_size=n, max_size=n),
        st.binary(min_size=n, max_size=n),
    )


selectors = st.one_of(_selector(False), _selector(True))

payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SaPayload, st.lists(proposals, min_size=1, max_size=3).map(tuple)),
    st.builds(KePayload, u16, small),
    st.builds(IdPayload, st.booleans(), u8, small),
    st.builds(CertPayload, u8, small),
    st.builds(CertReqPayload, u8, small),
    st.builds(AuthPayload, u8, small),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=64)),
    st.builds(NotifyPayload, u16, small, u8, st.binary(max_size=8)),
    st.integers(0, 8).flatmap(
        lambda size: st.builds(
            DeletePayload,
            u8,
            st.just(size),
            # SPIs of no bytes are no SPIs (an IKE SA's DELETE): none are listed (review revfrag F1)
            st.lists(st.binary(min_size=size, max_size=size), max_size=4 if size else 0).map(tuple),
        )
    ),
    st.builds(VendorIdPayload, small),
    st.builds(TsPayload, st.booleans(), st.lists(selectors, max_size=4).map(tuple)),
    st.builds(CpPayload, u8, small),
    st.builds(EapPayload, st.binary(min_size=4, max_size=40)),
)

messages = st.builds(
    Message,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    st.sampled_from(list(ExchangeType)),
    st.sampled_from([0, 0x08, 0x20, 0x28]),
    st.integers(0, 2**32 - 1),
    st.lists(payloads, max_size=6).map(tuple),
)


@settings(deadline=None)
@given(messages)
def test_message_round_trip(msg: Message) -> None:
    assert decode_message(msg.encode()) == msg


# IKE_SA_INIT is never encrypted: its SK or SKF is refused (test_ike_sa_init_with_a_sealed_payload_is_refused)
sealable = messages.filter(lambda m: m.exchange != ExchangeType.IKE_SA_INIT)


@settings(deadline=None)
@given(sealable, st.binary(min_size=1, max_size=64), u8)
def test_message_with_sk_round_trip(msg: Message, body: bytes, first: int) -> None:
    sealed = Message(
        msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id, (*msg.payloads, SkPayload(first, body))
    )
    assert decode_message(sealed.encode()) == sealed


@settings(deadline=None)
@given(messages, st.data())
def test_truncated_message_is_refused(msg: Message, data: st.DataObject) -> None:
    raw = msg.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        decode_message(raw[:cut])


@settings(deadline=None)
@given(messages, st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_refused(msg: Message, extra: bytes) -> None:
    raw = msg.encode() + extra
    with pytest.raises(DecodeError):
        decode_message(raw)
    # even when the header length is adjusted to cover them
    fixed = raw[:24] + struct.pack("!I", len(raw)) + raw[28:]
    with pytest.raises(DecodeError):
        decode_message(fixed)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(raw)


@settings(max_examples=500, deadline=None)
@given(messages, st.data())
def test_mutated_messages_only_raise_decode_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(u8)
    with contextlib.suppress(DecodeError):
        decode_message(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(u8, st.binary(max_size=200))
def test_random_payload_chains_only_raise_decode_error(first: int, raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_payloads(first, raw)


@settings(deadline=None)
@given(messages, st.data())
def test_oversized_payload_length_is_refused(msg: Message, data: st.DataObject) -> None:
    if not msg.payloads:
        return
    raw = bytearray(msg.encode())
    # the first payload header sits right after the IKE header
    (length,) = struct.unpack_from("!H", raw, 30)
    bigger = data.draw(st.integers(len(raw) - 28 + 1, 0xFFFF))
    struct.pack_into("!H", raw, 30, max(bigger, length + 1))
    with pytest.raises(DecodeError):
        decode_message(bytes(raw))


def _header(next_payload: int, body_len: int, version: int = 0x20) -> bytes:
    return (
        b"\x01" * 8
        + b"\x00" * 8
        + struct.pack(
            "!BBBBII", next_payload, version, ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0, 28 + body_len
        )
    )


def test_unknown_noncritical_payload_is_skipped() -> None:
    vid = encode_payloads([VendorIdPayload(b"abc")])
    unknown = struct.pack("!BBH", PayloadType.VENDOR_ID, 0x00, 8) + b"zzzz"
    msg = decode_message(_header(200, len(unknown) + len(vid)) + unknown + vid)
    assert msg.payloads == (VendorIdPayload(b"abc"),)


def test_unknown_critical_payload_is_refused() -> None:
    unknown = struct.pack("!BBH", 0, 0x80, 8) + b"zzzz"
    with pytest.raises(UnsupportedCriticalPayload) as info:
        decode_message(_header(201, len(unknown)) + unknown)
    assert info.value.payload_type == 201


def test_known_payload_ignores_critical_bit() -> None:
    body = encode_payloads([VendorIdPayload(b"abc")])
    body = body[:1] + b"\x80" + body[2:]
    assert decode_message(_header(PayloadType.VENDOR_ID, len(body)) + body).payloads == (VendorIdPayload(b"abc"),)


def test_wrong_major_version() -> None:
    with pytest.raises(InvalidMajorVersion):
        decode_message(_header(0, 0, version=0x30))


def test_nonce_bounds() -> None:
    for size in (15, 257):
        body = struct.pack("!BBH", 0, 0, 4 + size) + b"n" * size
        with pytest.raises(DecodeError):
            decode_message(_header(PayloadType.NONCE, len(body)) + body)


def test_sk_must_be_last() -> None:
    sk = struct.pack("!BBH", PayloadType.VENDOR_ID, 0, 8) + b"abcd"
    vid = encode_payloads([VendorIdPayload(b"x")])
    # an SK payload whose own length ends before the message does
    with pytest.raises(DecodeError):
        decode_message(_header(PayloadType.SK, len(sk) + len(vid)) + sk + vid)


@settings(deadline=None)
@given(messages, st.sampled_from([SkPayload(1, b"sealed"), SkfPayload(0, 2, 3, b"sealed")]), st.data())
def test_encoder_refuses_a_sealed_payload_before_the_last(msg: Message, sealed: Payload, data: st.DataObject) -> None:
    """The encoder's own check (it writes what it is given): SK or SKF anywhere but last is a bug."""
    payloads = [*msg.payloads, VendorIdPayload(b"after")]
    payloads.insert(data.draw(st.integers(0, len(payloads) - 1)), sealed)
    with pytest.raises(ValueError, match="must be the last payload"):
        encode_payloads(payloads)


@settings(deadline=None)
@given(sealable, st.binary(max_size=64), u8, st.integers(1, 0xFFFF), st.data())
def test_message_with_skf_round_trip(msg: Message, body: bytes, first: int, total: int, data: st.DataObject) -> None:
    number = data.draw(st.integers(1, total))
    frag = SkfPayload(first, number, total, body)
    sealed = Message(msg.spi_i, msg.spi_r, msg.exchange, msg.flags, msg.message_id, (*msg.payloads, frag))
    assert decode_message(sealed.encode()) == sealed


@pytest.mark.parametrize("sealed", [SkPayload(1, b"sealed"), SkfPayload(0, 1, 2, b"sealed")], ids=["SK", "SKF"])
@pytest.mark.parametrize("flags", [HeaderFlag.INITIATOR, HeaderFlag.RESPONSE], ids=["request", "response"])
def test_ike_sa_init_with_a_sealed_payload_is_refused(sealed: Payload, flags: int) -> None:
    """There are no keys in IKE_SA_INIT (RFC 7296 §1.2; RFC 7383 §2.5 fragments only SK): a request
    or response that ends in SK or SKF is malformed, refused before an IKE SA is made for it."""
    msg = Message(b"\x01" * 8, bytes(8), ExchangeType.IKE_SA_INIT, flags, 0, (VendorIdPayload(b"v"), sealed))
    with pytest.raises(DecodeError, match="IKE_SA_INIT"):
        decode_message(msg.encode())


@pytest.mark.parametrize(("number", "total"), [(0, 3), (4, 3), (1, 0), (0, 0)])
def test_skf_fragment_number_out_of_range(number: int, total: int) -> None:
    skf = struct.pack("!BBHHH", 0, 0, 8 + 20, number, total) + b"e" * 20
    with pytest.raises(DecodeError, match="fragment"):
        decode_message(_header(PayloadType.SKF, len(skf)) + skf)


def test_skf_needs_number_and_total_and_must_be_last() -> None:
    short = struct.pack("!BBH", 0, 0, 6) + b"\x00\x01"
    with pytest.raises(DecodeError):
        decode_message(_header(PayloadType.SKF, len(short)) + short)
    skf = struct.pack("!BBHHH", PayloadType.VENDOR_ID, 0, 12, 1, 1) + b"abcd"
    vid = encode_payloads([VendorIdPayload(b"x")])
    with pytest.raises(DecodeError):
        decode_message(_header(PayloadType.SKF, len(skf) + len(vid)) + skf + vid)


def test_proposal_transform_count_mismatch() -> None:
    prop = Proposal(1, 1, b"", (Transform.make(1, 20, 128),)).encode(True)
    bad = prop[:7] + b"\x02" + prop[8:]  # claims two transforms
    body = struct.pack("!BBH", 0, 0, 4 + len(bad)) + bad
    with pytest.raises(DecodeError):
        decode_message(_header(PayloadType.SA, len(body)) + body)


def test_key_length_attribute() -> None:
    t = Transform.make(1, 20, 256)
    assert t.key_length == 256
    assert Transform.make(2, 5).key_length is None
    assert t.encode(True) == bytes.fromhex("0000000c01000014800e0100")
