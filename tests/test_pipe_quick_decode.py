"""The quick decoders (pipe/quick.py) of a client's set-up's answers, requests and IKE events: what
they take, the general decoder decodes to an equal message; every change of those bytes they take
only if the general decoder does; any other layout they leave to it."""

import dataclasses
import struct
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipe_codec_data import (
    LOCAL4,
    LOCAL6,
    REMOTE4,
    REMOTE6,
    SECRET256,
    SEL4,
    SEL6_TCP,
    SETUP_REQUESTS,
    U16,
    U32,
    field_types,
    ike_args,
    ike_spis,
    in_sa,
    out_sa,
    policies,
    req_ids,
    sa_specs,
    spi_ranges,
)

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    Add,
    Alg,
    Errno,
    Ext,
    Ike,
    IkeSpiAdd,
    IkeSpiDelete,
    Lifetime,
    Message,
    MsgType,
    PipeError,
    Reply,
    SendIke,
    SpdAdd,
    Update,
    decode,
    encode,
)

# ------------------------------------------------- the quick ways of a client's set-up's messages
# decode takes the answers a client's set-up gets (a bare header, a GETSPI's SPI) a quick way, and
# encode packs the fixed-size extensions of its requests with their header in one struct: both
# must give exactly what the general way gives.

_REPLY_TYPES = [t for t in MsgType if not t.is_event]


def _header_bytes(version: int, msg_type: int, errno: int, req_id: int, flags: int, reserved: bytes,
                  extra: bytes, length_delta: int) -> bytes:
    length = HEADER_LEN + len(extra) + length_delta
    return struct.pack("!BBHIB3sI", version, msg_type, errno, req_id, flags, reserved, length) + extra


def _quick_and_general(data: bytes) -> tuple[object, object]:
    from tunsec.dataplane.pipe import decoding
    from tunsec.dataplane.pipe import quick as quick_decoders

    quick = quick_decoders._quick_reply(data)
    try:
        general: object = decoding._decode(data)
    except PipeError as err:
        general = err.errno
    return quick, general


@pytest.mark.parametrize("msg_type", _REPLY_TYPES, ids=lambda t: t.name)
def test_quick_reply_decode_takes_every_plain_answer(msg_type: MsgType) -> None:
    """Every answer that is a bare header (or a GETSPI's SPI) goes the quick way, equal to the general."""
    taken = 0
    for errno in Errno:
        ok_owed = errno is Errno.OK and msg_type in (MsgType.GETSPI, MsgType.DUMP)
        for req_id in (1, 7, U32):
            if msg_type is MsgType.DUMP and ok_owed:
                continue
            reply = Reply(req_id, msg_type, errno, spi=0xC0000001 if ok_owed else None)
            quick, general = _quick_and_general(encode(reply))
            assert quick == general == reply
            assert type(quick) is Reply and hash(quick) == hash(reply)
            taken += 1
    assert taken >= 3 * (len(Errno) - 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.req_id = 2  # type: ignore[misc]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # the valid value of each field more often than not, so that many headers are nearly right
    version=st.sampled_from([1, 1, 1, 0, 2, 255]),
    msg_type=st.one_of(st.sampled_from([int(t) for t in MsgType]), st.integers(0, 255)),
    errno=st.one_of(st.sampled_from([int(e) for e in Errno]), st.integers(0, U16)),
    req_id=st.sampled_from([0, 1, 2, U32]),
    flags=st.sampled_from([0x01, 0x01, 0x01, 0, 0x02, 0x03, 0x04, 0x80, 0xFF]),
    reserved=st.sampled_from([bytes(3), bytes(3), b"\0\0\1", b"\x80\0\0"]),
    ext=st.sampled_from([None, None, (8, int(Ext.SPI)), (8, int(Ext.SPI)), (12, int(Ext.SPI)), (4, int(Ext.SPI)),
                         (8, int(Ext.SPI_RANGE)), (8, 0), (8, 999)]),
    spi=st.sampled_from([0, 1, 255, 256, 0xC0000001, U32]),
    length_delta=st.sampled_from([0, 0, 0, -1, 4, 8]),
)
def test_quick_reply_decode_admits_only_what_the_general_decode_admits(
    version: int, msg_type: int, errno: int, req_id: int, flags: int, reserved: bytes,
    ext: tuple[int, int] | None, spi: int, length_delta: int,
) -> None:
    """Any header (and SPI extension): the quick way answers None or exactly what the general way
    decodes; whatever the general way refuses, the quick way refuses too."""
    extra = b"" if ext is None else struct.pack("!HHI", *ext, spi)
    quick, general = _quick_and_general(
        _header_bytes(version, msg_type, errno, req_id, flags, reserved, extra, length_delta))
    if quick is not None:
        assert isinstance(general, Reply) and quick == general
        assert {k: type(v) for k, v in vars(quick).items()} == {k: type(v) for k, v in vars(general).items()}


@pytest.mark.parametrize("reply", [Reply(3, MsgType.UPDATE, Errno.OK), Reply(U32, MsgType.GETSPI, Errno.EEXIST),
                                   Reply(1, MsgType.GETSPI, Errno.OK, spi=0xC0000001)],
                         ids=lambda r: f"{r.type.name}-{r.errno.name}")
def test_quick_reply_decode_admits_no_single_byte_change_the_general_refuses(reply: Reply) -> None:
    """Every byte of a plain answer set to every value: the quick way gives None or the general way's Reply."""
    data, taken = encode(reply), 0
    for pos in range(len(data)):
        for value in range(256):
            quick, general = _quick_and_general(data[:pos] + bytes([value]) + data[pos + 1:])
            if quick is not None:
                assert isinstance(general, Reply) and quick == general
                taken += 1
    assert taken > 256 * 2   # the request id's and the SPI's bytes may be anything (but 0)


_IKE_EVENTS = [Ike(data=b"z", remote=REMOTE4), Ike(data=b"abcd", remote=REMOTE4, local=LOCAL4),
               Ike(data=b"y" * 7, remote=REMOTE6, local=LOCAL6), Ike(data=b"q" * 6, remote=REMOTE6)]


def _quick_ike_and_general(data: bytes) -> tuple[object, object]:
    from tunsec.dataplane.pipe import decoding
    from tunsec.dataplane.pipe import quick as quick_decoders

    quick = quick_decoders._quick_ike(data)
    try:
        general: object = decoding._decode(data)
    except PipeError as err:
        general = err.errno
    return quick, general


@pytest.mark.parametrize("event", _IKE_EVENTS, ids=lambda e: f"{len(e.data)}-{e.remote.family}-{e.local is not None}")
def test_quick_ike_decode_admits_no_change_the_general_refuses(event: Ike) -> None:
    """An IKE event as encode lays it out goes the quick way, equal to the general; every byte of it
    set to every value, and it cut short or grown: the quick way gives None or the general way's Ike."""
    data = encode(event)
    quick, general = _quick_ike_and_general(data)
    assert quick == general == event and type(quick.data) is bytes   # type: ignore[union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.data = b"x"  # type: ignore[union-attr]
    changed = [data[:pos] + bytes([value]) + data[pos + 1:] for pos in range(len(data)) for value in range(256)]
    grown = [data + bytes(4), data + data[-24:], data + data[-48:]]
    cut_or_grown = [data[:cut] for cut in range(len(data))] + grown
    changed += cut_or_grown
    # and each with its header's length made to fit, the DATA's length field left to lie
    changed += [d[:12] + len(d).to_bytes(4, "big") + d[16:] for d in cut_or_grown if len(d) >= HEADER_LEN]
    taken = 0
    for variant in changed:
        quick, general = _quick_ike_and_general(variant)
        if quick is not None:
            assert isinstance(general, Ike) and quick == general
            taken += 1
    assert taken > 256 * 3   # the data's and the ports' bytes may be anything
    assert _quick_ike_and_general(bytearray(data))[0] is None   # a slice of it would not be bytes


def test_quick_ike_decode_leaves_other_layouts_to_the_general_way() -> None:
    """ADDR_REMOTE before DATA is valid but not encode's layout: the general way decodes it."""
    from tunsec.dataplane.pipe import encoding as enc
    from tunsec.dataplane.pipe import quick as quick_decoders

    exts = enc._ike_exts(b"abc", REMOTE4, None)[::-1]
    data = enc._join(MsgType.IKE, Errno.OK, 0, 0, exts)
    assert quick_decoders._quick_ike(data) is None
    assert decode(data) == Ike(data=b"abc", remote=REMOTE4)


_SA_VARIANTS = [
    Update(4, in_sa(selectors=(), esn=False, report_first_use=True)),
    Add(U32, out_sa(alg=Alg.AES256GCM16, key=SECRET256, local=LOCAL6, remote=REMOTE6, selectors=(SEL6_TCP,),
                    esn=False, seq_start=U32, replay_window=32, soft=Lifetime(), hard=Lifetime(1, 2, 3))),
    Update(2, in_sa()), Add(3, out_sa(selectors=(SEL6_TCP, SEL4) * 4)),
]


def _quick_way_and_general(data: bytes) -> tuple[object, object]:
    """What the quick way for data's type byte gives, and then (only if it took data: what it
    refuses goes the general way anyway) what the general way gives."""
    from tunsec.dataplane.pipe import decoding
    from tunsec.dataplane.pipe import quick as quick_decoders

    way = quick_decoders._QUICK_WAY.get(data[1]) if len(data) > quick_decoders._SPI_REPLY.size else None
    quick = None if way is None else way(data)
    if quick is None:
        return None, None
    try:
        general: object = decoding._decode(data)
    except PipeError as err:
        general = err.errno
    return quick, general


def _changed(data: bytes, values: Callable[[int], Iterable[int]]) -> list[bytes]:
    """data with each byte set to each of values(its value), cut short anywhere, grown; and each of
    those cut or grown with its header's length made to fit."""
    changed = [data[:pos] + bytes([v]) + data[pos + 1:] for pos in range(len(data)) for v in values(data[pos])]
    cut_or_grown = [data[:cut] for cut in range(len(data))] + [data + bytes(4), data + data[-80:], data + data[-4:]]
    return changed + cut_or_grown + [d[:12] + len(d).to_bytes(4, "big") + d[16:] for d in cut_or_grown
                                     if len(d) >= HEADER_LEN]


def _assert_quick_admits_only_the_general(msg: Message, values: Callable[[int], Iterable[int]]) -> int:
    data = encode(msg)
    quick, general = _quick_way_and_general(data)
    assert quick == general == msg and field_types(quick) == field_types(msg)
    assert hash(quick) == hash(msg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.req_id = 2  # type: ignore[union-attr]
    taken = 0
    for variant in _changed(data, values):
        quick, general = _quick_way_and_general(variant)
        if quick is not None:
            assert quick == general and field_types(quick) == field_types(general)
            taken += 1
    quick, general = _quick_way_and_general(bytearray(data))   # a slice of it would not be bytes
    assert quick is None or (quick == general and field_types(quick) == field_types(msg))
    return taken


@pytest.mark.slow    # every byte to every value: its UPDATE case alone is 17-46 s
@pytest.mark.parametrize("msg", SETUP_REQUESTS, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_quick_request_decode_admits_no_change_the_general_refuses(msg: Message) -> None:
    """A set-up request as encode lays it out goes its quick way, equal to the general; every byte
    of it set to every value, cut short anywhere or grown: the quick way gives None or the general
    way's message, to the types of its values."""
    taken = _assert_quick_admits_only_the_general(msg, lambda _: range(256))
    assert taken > 256 * 3   # the request id's bytes may be anything but 0 (and more, by message)


_IKE_SPI_REQUESTS = [IkeSpiAdd(1, bytes.fromhex("8a3f01c27d5e9b10"), 0x1D5E_7A11_CE00_0001),
                     IkeSpiAdd(U32, b"\x00" * 7 + b"\x01"), IkeSpiDelete(7, b"\x80" + b"\x00" * 7)]


@pytest.mark.parametrize("msg", _IKE_SPI_REQUESTS, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_quick_ike_spi_decode_admits_no_change_the_general_refuses(msg: Message) -> None:
    """IKE_SPI_ADD (with and without its peer) and IKE_SPI_DELETE as encode lays them out go their
    quick way, equal to the general; every byte set to every value, cut short or grown: the quick
    way gives None or the general way's message (an SPI or peer of zero, the type byte turned into
    the other one's: the general way's answer, or refused by both)."""
    taken = _assert_quick_admits_only_the_general(msg, lambda _: range(256))
    assert taken > 256 * 3   # the request id's and the SPI's bytes may be anything (but all 0)


@pytest.mark.parametrize("msg", _SA_VARIANTS, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_quick_request_decode_of_other_sas(msg: Message) -> None:
    """The same with no selector, two, eight, IPv6 ends, the other key (each byte set to a few
    values, to keep the test short: the layout is the one above)."""
    taken = _assert_quick_admits_only_the_general(msg, lambda v: {0, 1, 4, 0x80, 0xFF, v ^ 1, v ^ 0x10})
    assert taken > 100


_SETUP_STRATEGIES = st.one_of(
    spi_ranges(),
    st.builds(Update, req_ids, sa_specs().map(lambda sa: dataclasses.replace(sa, seq_limit=0, seq_notify=0))),
    st.builds(Add, req_ids, sa_specs().map(lambda sa: dataclasses.replace(sa, seq_limit=0, seq_notify=0))),
    st.builds(SpdAdd, req_ids, policies()),
    st.tuples(req_ids, ike_args()).map(lambda t: SendIke(t[0], *t[1])),
    st.builds(IkeSpiAdd, req_ids, ike_spis, st.integers(0, (1 << 64) - 1)),
    st.builds(IkeSpiDelete, req_ids, ike_spis),
)


@given(_SETUP_STRATEGIES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quick_request_decode_takes_every_set_up_request(msg: Message) -> None:
    """Any GETSPI, UPDATE or ADD without a reservation, SPDADD, SEND_IKE, IKE_SPI_ADD, IKE_SPI_DELETE:
    encoded, it goes its quick way, to what the general way decodes."""
    quick, general = _quick_way_and_general(encode(msg))
    assert quick == general == msg and field_types(quick) == field_types(msg)


def test_quick_request_decode_leaves_other_layouts_to_the_general_way() -> None:
    """A reservation (SEQ_LIMIT), or the extensions in another order: valid, but the general way's."""
    from tunsec.dataplane.pipe import encoding as enc
    from tunsec.dataplane.pipe import quick as quick_decoders

    reserved = Update(2, in_sa(seq_limit=1000, seq_notify=900))
    exts = enc._sa_exts(in_sa())
    reordered = enc._join(MsgType.UPDATE, Errno.OK, 2, 0, [exts[1], exts[0], *exts[2:]])
    for data, msg in ((encode(reserved), reserved), (reordered, Update(2, in_sa()))):
        assert quick_decoders._quick_sa(data) is None
        assert decode(data) == msg
