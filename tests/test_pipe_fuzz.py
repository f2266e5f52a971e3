"""Fuzzing the pipe decoder: random bytes, framed extensions, mutations and truncations of encoded
messages decode to a message that round-trips, or raise PipeError (and the quick decoders agree
with the general one)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipe_codec_data import (
    EXT_LENGTHS,
    FUZZ,
    U16,
    ext,
    field_types,
    messages,
    raw,
    rebuild,
    split,
)

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    Errno,
    Ext,
    Message,
    MsgType,
    PipeError,
    decode,
    encode,
    error_reply,
)

# ------------------------------------------------------------------------ fuzz


def check_decode(data: bytes) -> None:
    """decode returns a message that survives a round trip, or raises PipeError."""
    try:
        msg = decode(data)
    except PipeError as err:
        assert isinstance(err.errno, Errno)
        assert err.errno is not Errno.OK
        answer = error_reply(err)
        if answer is not None:
            assert err.req_id and err.msg_type is not None
            assert len(answer) == HEADER_LEN
        return
    assert decode(encode(msg)) == msg
    assert_general_decodes(data, msg)


def assert_general_decodes(data: bytes, msg: Message) -> None:
    """decode's quick ways give what its general way gives, to the types of the values."""
    from tunsec.dataplane.pipe import decoding

    general = decoding._decode(data)
    assert general == msg and type(general) is type(msg)
    assert field_types(general) == field_types(msg)


@given(st.binary(max_size=400))
@FUZZ
def test_fuzz_random_bytes(data: bytes) -> None:
    check_decode(data)


FIXED_BODY = {int(t): n - 4 for t, n in EXT_LENGTHS.items() if t not in (Ext.KEY, Ext.DATA, Ext.DROP, Ext.GAUGE)}


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """A plausible header over random, mostly well-sized extensions."""
    exts = []
    for _ in range(draw(st.integers(0, 10))):
        ext_type = draw(st.sampled_from(Ext) | st.integers(0, 20))
        size = FIXED_BODY.get(ext_type)
        if size is None or draw(st.integers(0, 9)) == 0:
            size = draw(st.integers(0, 48))
        body = draw(st.binary(min_size=size, max_size=size) | st.just(bytes(size)))
        exts.append(ext(ext_type, body))
    msg_type = draw(st.sampled_from(MsgType) | st.integers(0, 20))
    is_event = msg_type >= 16
    return raw(
        msg_type,
        b"".join(exts),
        req_id=draw(st.just(0) if is_event else st.integers(0, 3)),
        flags=draw(st.sampled_from([0, 0, 1, 3, 4])),
        errno=draw(st.sampled_from([0, 0, 22, 99])),
    )


@given(framed())
@FUZZ
def test_fuzz_framed_extensions(data: bytes) -> None:
    check_decode(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(messages)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "extend", "ext_len"]))
        if kind == "flip" and data:
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif kind == "ext_len" and len(data) > HEADER_LEN + 4:
            pos = draw(st.integers(HEADER_LEN, len(data) - 2))
            data[pos : pos + 2] = draw(st.integers(0, U16)).to_bytes(2, "big")
    # Keep the header's length honest most of the time, or every mutation
    # would stop at the length check.
    if len(data) >= HEADER_LEN and draw(st.integers(0, 3)):
        data[12:16] = len(data).to_bytes(4, "big")
    return bytes(data)


@given(mutated())
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutations(data: bytes) -> None:
    check_decode(data)


@given(messages, st.data())
@FUZZ
def test_fuzz_every_truncation_point_of_an_extension(msg: Message, data: st.DataObject) -> None:
    encoded = encode(msg)
    exts = split(encoded)
    if not exts:
        return
    i = data.draw(st.integers(0, len(exts) - 1))
    t, body = exts[i]
    cut = data.draw(st.integers(0, len(body)))
    exts[i] = (t, body[:cut])
    check_decode(rebuild(encoded, exts))
