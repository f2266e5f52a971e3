"""The control <-> worker pipe codec: round trips, the wire layout, secrecy, DUMP answers."""

import traceback

import pytest
from hypothesis import given, settings
from pipe_codec_data import (
    DROPS,
    EXT_LENGTHS,
    LOCAL6,
    REALISTIC,
    REMOTE4,
    REMOTE6,
    SA_COUNTERS_EXT,
    SECRET128,
    SECRET256,
    SEL4,
    U32,
    decode_error,
    in_sa,
    messages,
    out_sa,
    patch,
    policy_info,
    put,
    rebuild,
    sa_info,
    sa_specs,
    split,
)

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    Action,
    Add,
    Alg,
    Delete,
    Direction,
    Errno,
    Expire,
    ExpireReason,
    Ext,
    FirstUse,
    GetSpi,
    Ike,
    IkeSpiAdd,
    InvalidSpi,
    Lifetime,
    Message,
    Migrate,
    MsgType,
    Policy,
    Reply,
    Reserve,
    SaSpec,
    SendIke,
    SpdAdd,
    SpdDelete,
    Update,
    decode,
    encode,
    encode_dump_replies,
    encode_ok,
    join_dump_replies,
)

# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("msg", REALISTIC, ids=lambda m: type(m).__name__)
def test_realistic_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert len(data) <= MAX_MESSAGE
    assert len(data) % 4 == 0
    assert decode(data) == msg
    assert encode(decode(data)) == data


@given(messages)
@settings(max_examples=600, deadline=None)
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert encode(decode(data)) == data


@pytest.mark.parametrize("msg_type", [t for t in MsgType if not t.is_event])
def test_encode_ok_is_the_ok_reply(msg_type: MsgType) -> None:
    """The worker's shortcut for a bare successful answer encodes what Reply would, and refuses
    the answers that are more than a header (GETSPI's SPI, DUMP's contents) and bad ids."""
    if msg_type in (MsgType.GETSPI, MsgType.DUMP):
        with pytest.raises(ValueError):
            encode_ok(7, msg_type)
        return
    for req_id in (1, 7, U32):
        assert encode_ok(req_id, msg_type) == encode(Reply(req_id, msg_type, Errno.OK))
        assert decode(encode_ok(req_id, msg_type)) == Reply(req_id, msg_type, Errno.OK)
    for bad in (0, U32 + 1):
        with pytest.raises(ValueError):
            encode_ok(bad, msg_type)


def test_every_message_type_is_covered() -> None:
    assert {m.TYPE for m in REALISTIC if not isinstance(m, Reply)} == set(MsgType)


def test_extensions_may_come_in_any_order() -> None:
    msg = Update(2, in_sa())
    data = encode(msg)
    assert decode(rebuild(data, split(data)[::-1])) == Update(2, in_sa(selectors=in_sa().selectors[::-1]))


def test_report_first_use_is_bit3_of_the_sa_flags() -> None:
    for esn, flags in ((True, 0x09), (False, 0x08)):
        data = encode(Update(1, in_sa(esn=esn, report_first_use=True)))
        assert split(data)[0][1][6] == flags
        assert split(encode(Update(1, in_sa(esn=esn))))[0][1][6] == flags & 1
    assert split(encode(FirstUse(spi=0xC0000123))) == [(Ext.SPI, b"\xc0\x00\x01\x23")]


def test_largest_ike_message() -> None:
    msg = SendIke(1, b"\xab" * MAX_IKE_DATA, REMOTE6, LOCAL6)
    assert decode(encode(msg)) == msg
    with pytest.raises(ValueError):
        SendIke(1, b"\xab" * (MAX_IKE_DATA + 1), REMOTE6)


# ---------------------------------------------------------------- wire layout
# Pins the tables in docs/pipe.md.


def test_header_layout() -> None:
    data = encode(GetSpi(0x01020304, 0x100, 0x1FF))
    assert data.hex() == (
        "01" "01" "0000" "01020304" "00" "000000" "0000001c"  # header
        "000c" "0008" "00000100" "000001ff"  # SPI_RANGE
    )  # fmt: skip
    reply = encode(Reply(0x01020304, MsgType.DUMP, Errno.ENOENT))
    assert reply.hex() == "01" "09" "0002" "01020304" "01" "000000" "00000010"  # fmt: skip
    more = encode_dump_replies(5, [sa_info(i) for i in range(600)], [], [])[0]
    assert more[8] == 0x03  # REPLY | MORE


def test_extension_lengths() -> None:
    samples: list[Message] = [
        Add(1, out_sa()),
        Delete(1, 300, Direction.IN, reqid=7),
        SpdAdd(1, Policy(1, 1, Action.DISCARD, 0, SEL4)),
        GetSpi(1, 256, 300),
        SpdDelete(1, 5),
        Expire(spi=300, direction=Direction.IN, hard=True, reason=ExpireReason.TIME, current=Lifetime(1, 2, 3)),
        InvalidSpi(spi=1, remote=REMOTE4),
        Ike(data=b"x" * 301, remote=REMOTE4, unmarked=True),
        Reserve(1, 300, Direction.OUT, 5000, 4000, REMOTE4),
        Migrate(1, 300, Direction.IN, REMOTE4),
        IkeSpiAdd(1, b"\x01" * 8, 7),
        Reply(1, MsgType.DUMP, Errno.OK, sas=(sa_info(1),), policies=(policy_info(1),), drops=(("auth", 1),),
              gauges=(("live_sas", 1),)),
    ]
    seen: dict[int, int] = {}
    for msg in samples:
        for t, body in split(encode(msg)):
            seen[t] = 4 + len(body)
    assert seen == {int(k): v for k, v in EXT_LENGTHS.items()}
    assert 4 + len(split(encode(Add(1, in_sa())))[1][1]) == 44  # 256-bit KEY


# --------------------------------------------------------------------- secrets


def assert_no_secret(text: str, key: bytes) -> None:
    for form in (repr(key), str(key), key.hex(), key.decode("latin-1"), "TOPSECRET"):
        assert form not in text


@pytest.mark.parametrize("key", [SECRET128, SECRET256])
def test_key_not_in_repr_or_str(key: bytes) -> None:
    sa = in_sa() if len(key) == 36 else out_sa()
    assert sa.key == key
    for text in (repr(sa), str(sa), f"{sa}", repr([sa]), repr(Update(1, sa)), str(Add(2, sa))):
        assert_no_secret(text, key)
        assert f"key=<{len(key)} bytes>" in text
    assert repr(sa).startswith("SaSpec(spi=")


@given(sa_specs())
def test_key_never_in_repr_for_any_sa(sa: SaSpec) -> None:
    text = repr(Update(1, sa))
    assert repr(sa.key) not in text and sa.key.hex() not in text


def test_key_not_in_constructor_errors() -> None:
    cases: list[dict[str, object]] = [
        dict(alg=Alg.AES256GCM16),  # key of the wrong length
        dict(key=SECRET128[:-1]),
        dict(spi=0),
        dict(replay_window=7),
        dict(selectors=[SEL4]),
        dict(esn=1),
        dict(key=bytearray(SECRET128)),
    ]
    for change in cases:
        with pytest.raises((ValueError, TypeError)) as info:
            out_sa(**change)
        assert_no_secret("".join(traceback.format_exception(info.value)), SECRET128)


def test_key_not_in_decode_errors() -> None:
    bad = [
        patch(Add(1, out_sa()), Ext.SA, put(5, b"\2")),  # alg disagrees with the key
        patch(Add(1, out_sa()), Ext.KEY, lambda b: b"\0\x24\0\0" + SECRET256),
        patch(Add(1, out_sa()), Ext.KEY, put(0, b"\0\x13")),  # last key byte read as padding
        patch(Add(1, out_sa()), Ext.SA, put(0, bytes(4))),
        patch(Update(1, in_sa()), Ext.LIFETIME_SOFT, put(0, b"\xff" * 8)),
    ]
    for data in bad:
        err = decode_error(data)
        text = "".join(traceback.format_exception(err)) + repr(err) + repr(err.args)
        assert_no_secret(text, SECRET128)
        assert_no_secret(text, SECRET256)


# ------------------------------------------------------------------------ DUMP


def test_dump_of_5000_sas_splits_and_reassembles() -> None:
    sas = [sa_info(i) for i in range(5000)]
    pols = [policy_info(i) for i in range(300)]
    datagrams = encode_dump_replies(99, sas, pols, DROPS)
    assert len(datagrams) > 1
    assert all(len(d) <= MAX_MESSAGE for d in datagrams)
    replies = [decode(d) for d in datagrams]
    assert all(isinstance(r, Reply) for r in replies)
    parts = [r for r in replies if isinstance(r, Reply)]
    assert [r.more for r in parts] == [True] * (len(parts) - 1) + [False]
    assert all(r.req_id == 99 and r.type is MsgType.DUMP and r.errno is Errno.OK for r in parts)
    whole = join_dump_replies(parts)
    assert whole == Reply(99, MsgType.DUMP, Errno.OK, sas=tuple(sas), policies=tuple(pols), drops=DROPS)
    # Packed, not one SA per message: the extensions fill each datagram.
    # Each datagram with SAs leads them with the SA_COUNTERS that names their counters.
    payload = sum(len(d) - HEADER_LEN for d in datagrams)
    with_sas = sum(1 for r in parts if r.sas)
    assert payload == 5000 * 116 + 300 * 108 + sum(16 + -(-len(n) // 4) * 4 for n, _ in DROPS) \
        + with_sas * SA_COUNTERS_EXT
    assert len(datagrams) == -(-payload // (MAX_MESSAGE - HEADER_LEN))


@pytest.mark.parametrize(("count", "messages_"), [(0, 1), (1, 1), (564, 1), (565, 2), (1128, 2), (1129, 3)])
def test_dump_split_boundaries(count: int, messages_: int) -> None:
    datagrams = encode_dump_replies(1, (sa_info(i) for i in range(count)), [], {}.items())
    assert len(datagrams) == messages_
    replies = [decode(d) for d in datagrams]
    joined = join_dump_replies(replies)  # type: ignore[arg-type]
    assert joined.sas == tuple(sa_info(i) for i in range(count))


def test_dump_reply_too_big_for_one_message() -> None:
    with pytest.raises(ValueError, match="encode_dump_replies"):
        encode(Reply(1, MsgType.DUMP, Errno.OK, sas=tuple(sa_info(i) for i in range(565))))


def test_join_dump_replies_checks_the_run() -> None:
    a = Reply(1, MsgType.DUMP, Errno.OK, more=True, sas=(sa_info(1),))
    b = Reply(1, MsgType.DUMP, Errno.OK, sas=(sa_info(2),))
    assert join_dump_replies([a, b]).sas == (sa_info(1), sa_info(2))
    failed = Reply(1, MsgType.DUMP, Errno.ENOMEM)
    assert join_dump_replies([failed]) is failed
    for run in (
        [],
        [a],
        [b, b],
        [a, Reply(2, MsgType.DUMP, Errno.OK)],
        [a, Reply(1, MsgType.FLUSH, Errno.OK)],
    ):
        with pytest.raises(ValueError):
            join_dump_replies(run)


def test_dump_rejects_duplicate_drop_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode_dump_replies(1, [], [], [("auth", 1), ("auth", 2)])
