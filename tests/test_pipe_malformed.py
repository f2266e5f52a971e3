"""The pipe codec's strictness: every malformed datagram is refused with its errno, and answered
when it is a request."""

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from pipe_codec_data import (
    HEADER,
    LOCAL4,
    REALISTIC,
    REMOTE4,
    REMOTE4_MOVED,
    REMOTE6,
    SECRET256,
    SEL4,
    decode_error,
    ext,
    in_sa,
    out_sa,
    patch,
    plus,
    put,
    raw,
    rebuild,
    sa_info,
    split,
    without,
)

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    MAX_MESSAGE,
    Action,
    Add,
    Delete,
    Direction,
    Endpoint,
    Errno,
    Expire,
    ExpireReason,
    Ext,
    Flush,
    GetSpi,
    Ike,
    IkeSpiAdd,
    IkeSpiDelete,
    InvalidSpi,
    Lifetime,
    Migrate,
    MsgType,
    PipeError,
    Policy,
    Reply,
    Reserve,
    SaInfo,
    SendIke,
    SpdAdd,
    Update,
    decode,
    encode,
    error_reply,
)

# ------------------------------------------------------------------ malformed


def test_shorter_than_header() -> None:
    for n in range(HEADER_LEN):
        err = decode_error(encode(Flush(9))[:n])
        assert err.errno is Errno.EINVAL
        assert err.req_id is None and err.msg_type is None
        assert error_reply(err) is None


def answered(err: PipeError) -> Reply | None:
    data = error_reply(err)
    return None if data is None else decode(data)  # type: ignore[return-value]


def test_bad_version_is_answered() -> None:
    for version in (0, 2, 255):
        err = decode_error(raw(MsgType.FLUSH, req_id=42, version=version))
        assert err.errno is Errno.EVERSION
        assert answered(err) == Reply(42, MsgType.FLUSH, Errno.EVERSION)


def test_unknown_type_is_answered_with_its_raw_type() -> None:
    for msg_type in (0, 23, 255):   # 15 is IKE_SPI_KEY, 22 ADDR_ADDED
        err = decode_error(raw(msg_type, req_id=43))
        assert err.errno is Errno.ETYPE and err.req_id == 43 and err.msg_type == msg_type
        answer = error_reply(err)
        assert answer is not None
        assert HEADER.unpack(answer) == (1, msg_type, Errno.ETYPE, 43, 1, b"\0\0\0", 16)


A_SA = Add(3, out_sa())
U_SA = Update(2, in_sa())
SPD = SpdAdd(7, Policy(1, 1000, Action.PROTECT, 7, SEL4))
DUMP_OK = REALISTIC[17]
assert isinstance(DUMP_OK, Reply) and DUMP_OK.sas
GETSPI = GetSpi(1, 0x1000, 0x2000)
EXPIRE = Expire(spi=300, direction=Direction.IN, hard=True, reason=ExpireReason.TIME)
EXPIRE_FINAL = Expire(spi=300, direction=Direction.IN, hard=True, reason=ExpireReason.TIME,
                      current=Lifetime(5000, 4, 60))
DELETE_FINAL = Reply(1, MsgType.DELETE, Errno.OK, current=Lifetime(5000, 4, 60))
GAUGE_BODY = split(encode(Reply(1, MsgType.DUMP, Errno.OK, gauges=(("live_sas", 3),))))[0][1]
IKE = Ike(data=b"hello", remote=REMOTE4, local=LOCAL4)
big = b"\0" * (MAX_MESSAGE - HEADER_LEN + 4)
flush = encode(Flush(1))
SPI_300 = ext(Ext.SPI, struct.pack("!I", 300))
DUMP_AB = Reply(1, MsgType.DUMP, Errno.OK, sas=(SaInfo(**(vars(sa_info(1)) | {"counters": {"aa": 1, "ab": 2}})),))
SA_COUNTERS_BODY = next(b for t, b in split(encode(DUMP_OK)) if t == Ext.SA_COUNTERS)
DUMP_EIO = Reply(1, MsgType.DUMP, Errno.EIO)
NO_ESN = Add(1, out_sa(esn=False))
RESERVE = Reserve(1, 300, Direction.IN, 5000, 4000)
LIMITED = Add(1, out_sa(esn=False, seq_start=100, seq_limit=200, seq_notify=150))
SA_ID_300 = ext(Ext.SA_ID, b"\0\0\1\x2c\0\0\0\0")
DATA_65001 = ext(Ext.DATA, struct.pack("!I", 65001) + bytes(65001))
REMOTE4_BODY = split(encode(IKE))[1][1]
REMOTE4_EXT = ext(Ext.ADDR_REMOTE, REMOTE4_BODY)
SEND4 = SendIke(1, b"x", REMOTE4)
MIGRATE_OUT = Migrate(1, 300, Direction.OUT, REMOTE4_MOVED, REMOTE4)
MIGRATE_LOCAL = Migrate(1, 300, Direction.OUT, REMOTE4_MOVED, REMOTE4, LOCAL4)
LOCAL6_BODY = split(encode(Ike(data=b"x", remote=REMOTE6)))[1][1]

# (name, datagram, errno); every one has a readable header.
MALFORMED: list[tuple[str, bytes, Errno]] = [
    # header
    ("length field too large", raw(MsgType.FLUSH, length=20), Errno.EINVAL),
    ("length field too small", raw(MsgType.GETSPI, ext(Ext.SPI_RANGE, bytes(8)), length=16), Errno.EINVAL),
    ("trailing bytes", flush + b"\0\0\0\0", Errno.EINVAL),
    ("over 64 KiB", raw(MsgType.SEND_IKE, big), Errno.EINVAL),
    ("reserved header bytes", raw(MsgType.FLUSH, reserved=b"\0\1\0"), Errno.EINVAL),
    ("unknown flag", raw(MsgType.FLUSH, flags=0x04), Errno.EINVAL),
    ("unknown high flag", raw(MsgType.FLUSH, flags=0x80), Errno.EINVAL),
    ("request with errno", raw(MsgType.FLUSH, errno=22), Errno.EINVAL),
    ("request with MORE", raw(MsgType.DUMP, flags=0x02), Errno.EINVAL),
    ("request with id 0", raw(MsgType.FLUSH, req_id=0), Errno.EINVAL),
    ("event with an id", encode(EXPIRE)[:4] + b"\0\0\0\7" + encode(EXPIRE)[8:], Errno.EINVAL),
    ("reply to an event", raw(MsgType.EXPIRE, flags=0x01), Errno.EINVAL),
    ("reply with id 0", raw(MsgType.FLUSH, flags=0x01, req_id=0), Errno.EINVAL),
    ("reply with unknown errno", raw(MsgType.FLUSH, flags=0x01, errno=99), Errno.EINVAL),
    ("MORE on a FLUSH reply", raw(MsgType.FLUSH, flags=0x03), Errno.EINVAL),
    ("MORE on a failed DUMP reply", raw(MsgType.DUMP, flags=0x03, errno=12), Errno.EINVAL),
    ("GETSPI reply without SPI", raw(MsgType.GETSPI, flags=0x01), Errno.EINVAL),
    ("failed GETSPI reply with SPI", raw(MsgType.GETSPI, SPI_300, flags=1, errno=28), Errno.EINVAL),
    ("ADD reply with SPI", raw(MsgType.ADD, SPI_300, flags=0x01), Errno.EINVAL),
    ("GETSPI reply with SPI 255", raw(MsgType.GETSPI, ext(Ext.SPI, b"\0\0\0\xff"), flags=1), Errno.EINVAL),
    ("failed DUMP reply with SAs", plus(DUMP_EIO, (Ext.SA_INFO, bytes(112))), Errno.EINVAL),
    # extension framing
    ("truncated extension header", raw(MsgType.FLUSH, b"\0\4"), Errno.EINVAL),
    ("extension length 0", raw(MsgType.FLUSH, b"\0\0\0\1"), Errno.EINVAL),
    ("extension length 2", raw(MsgType.FLUSH, b"\0\2\0\1"), Errno.EINVAL),
    ("extension length not a multiple of 4", raw(MsgType.GETSPI, b"\0\x0a\0\x08" + bytes(8)), Errno.EINVAL),
    ("extension overruns", raw(MsgType.GETSPI, b"\0\x10\0\x08" + bytes(8)), Errno.EINVAL),
    ("unknown extension type 0", plus(GETSPI, (0, b"")), Errno.EINVAL),
    ("unknown extension type 99", plus(GETSPI, (99, bytes(8))), Errno.EINVAL),
    ("extension foreign to the message", plus(GETSPI, (Ext.DATA, b"\0\0\0\1x")), Errno.EINVAL),
    ("extension on FLUSH", plus(Flush(1), (Ext.SPI, bytes(4))), Errno.EINVAL),
    ("duplicate SA", plus(A_SA, (Ext.SA, split(encode(A_SA))[0][1])), Errno.EINVAL),
    ("duplicate SPI_RANGE", plus(GETSPI, (Ext.SPI_RANGE, split(encode(GETSPI))[0][1])), Errno.EINVAL),
    ("missing KEY", without(A_SA, Ext.KEY), Errno.EINVAL),
    ("missing LIFETIME_HARD", without(U_SA, Ext.LIFETIME_HARD), Errno.EINVAL),
    ("missing SPI_RANGE", without(GETSPI, Ext.SPI_RANGE), Errno.EINVAL),
    ("duplicate LARVAL_LIFETIME", plus(GETSPI, (Ext.LARVAL_LIFETIME, bytes(4)), (Ext.LARVAL_LIFETIME, bytes(4))),
     Errno.EINVAL),
    ("LARVAL_LIFETIME too long", plus(GETSPI, (Ext.LARVAL_LIFETIME, bytes(8))), Errno.EINVAL),
    ("LARVAL_LIFETIME in an UPDATE", plus(Update(1, in_sa()), (Ext.LARVAL_LIFETIME, bytes(4))), Errno.EINVAL),
    ("missing DATA", without(IKE, Ext.DATA), Errno.EINVAL),
    ("missing SELECTOR in SPDADD", without(SPD, Ext.SELECTOR), Errno.EINVAL),
    ("two SELECTORs in SPDADD", plus(SPD, (Ext.SELECTOR, split(encode(SPD))[1][1])), Errno.EINVAL),
    (
        "nine selectors",
        plus(Add(1, out_sa(selectors=(SEL4,) * 8)), (Ext.SELECTOR, split(encode(SPD))[1][1])),
        Errno.EINVAL,
    ),
    ("SPI_RANGE too long", patch(GETSPI, Ext.SPI_RANGE, lambda b: b + bytes(4)), Errno.EINVAL),
    ("SA too short", patch(A_SA, Ext.SA, lambda b: b[:20]), Errno.EINVAL),
    ("ADDR too long", patch(A_SA, Ext.ADDR_LOCAL, lambda b: b + bytes(4)), Errno.EINVAL),
    # values
    ("SPI range reversed", patch(GETSPI, Ext.SPI_RANGE, lambda b: b[4:] + b[:4]), Errno.EINVAL),
    ("SPI range below 256", patch(GETSPI, Ext.SPI_RANGE, put(0, b"\0\0\0\1")), Errno.EINVAL),
    ("SA spi 0", patch(A_SA, Ext.SA, put(0, bytes(4))), Errno.EINVAL),
    ("SA direction 2", patch(A_SA, Ext.SA, put(4, b"\2")), Errno.EINVAL),
    ("SA alg 0", patch(A_SA, Ext.SA, put(5, b"\0")), Errno.EINVAL),
    ("SA alg 3", patch(A_SA, Ext.SA, put(5, b"\3")), Errno.EINVAL),
    ("SA alg does not fit the key", patch(A_SA, Ext.SA, put(5, b"\2")), Errno.EINVAL),
    ("SA unknown flag", patch(A_SA, Ext.SA, put(6, b"\3")), Errno.EINVAL),
    ("SA reserved", patch(A_SA, Ext.SA, put(7, b"\1")), Errno.EINVAL),
    ("replay window 5", patch(A_SA, Ext.SA, put(8, b"\0\0\0\5")), Errno.EINVAL),
    ("replay window 65537", patch(A_SA, Ext.SA, put(8, b"\0\1\0\1")), Errno.EINVAL),
    ("seq_start past 32 bits without ESN", patch(NO_ESN, Ext.SA, put(16, b"\0\0\0\1")), Errno.EINVAL),
    ("KEY length disagrees", patch(A_SA, Ext.KEY, put(0, b"\0\x18")), Errno.EINVAL),
    ("KEY padding not zero", patch(A_SA, Ext.KEY, put(0, b"\0\x13")), Errno.EINVAL),
    ("KEY too short for its length", patch(A_SA, Ext.KEY, lambda b: b[:12]), Errno.EINVAL),
    ("KEY of 36 bytes for AES-128", patch(A_SA, Ext.KEY, lambda b: b"\0\x24\0\0" + SECRET256), Errno.EINVAL),
    ("KEY reserved", patch(A_SA, Ext.KEY, put(2, b"\0\1")), Errno.EINVAL),
    ("KEY header only", patch(A_SA, Ext.KEY, lambda b: b""), Errno.EINVAL),
    ("address family 0", patch(A_SA, Ext.ADDR_REMOTE, put(0, b"\0")), Errno.EINVAL),
    ("address all zero", patch(A_SA, Ext.ADDR_REMOTE, lambda b: bytes(20)), Errno.EINVAL),
    ("address family 5", patch(A_SA, Ext.ADDR_REMOTE, put(0, b"\5")), Errno.EINVAL),
    ("IPv4 with trailing bytes", patch(A_SA, Ext.ADDR_LOCAL, put(19, b"\1")), Errno.EINVAL),
    ("address reserved", patch(A_SA, Ext.ADDR_LOCAL, put(1, b"\1")), Errno.EINVAL),
    ("local IPv6, remote IPv4", patch(A_SA, Ext.ADDR_LOCAL, put(0, b"\6")), Errno.EINVAL),
    ("soft bytes above hard", patch(A_SA, Ext.LIFETIME_SOFT, put(0, b"\xff" * 8)), Errno.EINVAL),
    ("selector family 5", patch(A_SA, Ext.SELECTOR, put(0, b"\5")), Errno.EINVAL),
    ("selector reserved", patch(A_SA, Ext.SELECTOR, put(2, b"\0\1")), Errno.EINVAL),
    ("selector sport reversed", patch(A_SA, Ext.SELECTOR, put(4, b"\0\2\0\1")), Errno.EINVAL),
    ("selector dport reversed", patch(A_SA, Ext.SELECTOR, put(8, b"\0\2\0\1")), Errno.EINVAL),
    ("selector source reversed", patch(A_SA, Ext.SELECTOR, put(12, b"\xff")), Errno.EINVAL),
    ("selector IPv4 tail", patch(A_SA, Ext.SELECTOR, put(75, b"\1")), Errno.EINVAL),
    ("DELETE direction 7", patch(Delete(1, 300, Direction.IN), Ext.SA_ID, put(4, b"\7")), Errno.EINVAL),
    ("DELETE reserved", patch(Delete(1, 300, Direction.IN), Ext.SA_ID, put(5, b"\1")), Errno.EINVAL),
    ("MIGRATE OUT without its old peer", without(MIGRATE_OUT, Ext.ADDR_REMOTE), Errno.EINVAL),
    ("MIGRATE without a new peer", without(MIGRATE_OUT, Ext.ADDR_NEW_REMOTE), Errno.EINVAL),
    ("MIGRATE IN with a peer", plus(Migrate(1, 300, Direction.IN, REMOTE4), (Ext.ADDR_REMOTE, REMOTE4_BODY)),
     Errno.EINVAL),
    ("MIGRATE across families", patch(MIGRATE_OUT, Ext.ADDR_NEW_REMOTE, put(0, b"\6")), Errno.EINVAL),
    ("MIGRATE new peer family 0", patch(MIGRATE_OUT, Ext.ADDR_NEW_REMOTE, put(0, b"\0")), Errno.EINVAL),
    ("MIGRATE new local across families", patch(MIGRATE_LOCAL, Ext.ADDR_NEW_LOCAL, put(0, b"\6")), Errno.EINVAL),
    ("MIGRATE new local family 0", patch(MIGRATE_LOCAL, Ext.ADDR_NEW_LOCAL, put(0, b"\0")), Errno.EINVAL),
    ("MIGRATE new local reserved", patch(MIGRATE_LOCAL, Ext.ADDR_NEW_LOCAL, put(1, b"\1")), Errno.EINVAL),
    ("MIGRATE two new locals", plus(MIGRATE_LOCAL, (Ext.ADDR_NEW_LOCAL, REMOTE4_BODY)), Errno.EINVAL),
    ("MIGRATE new local short", plus(MIGRATE_OUT, (Ext.ADDR_NEW_LOCAL, REMOTE4_BODY[:16])), Errno.EINVAL),
    ("IKE_SPI_ADD without its SPI", without(IkeSpiAdd(1, b"\1" * 8), Ext.IKE_SPI), Errno.EINVAL),
    ("IKE_SPI_DELETE SPI zero", patch(IkeSpiDelete(1, b"\1" * 8), Ext.IKE_SPI, put(0, bytes(8))), Errno.EINVAL),
    ("IKE_SPI_ADD two SPIs", plus(IkeSpiAdd(1, b"\1" * 8), (Ext.IKE_SPI, b"\2" * 8)), Errno.EINVAL),
    ("IKE_SPI_ADD SPI short", rebuild(encode(IkeSpiAdd(1, b"\1" * 8)), [(Ext.IKE_SPI, b"\2" * 4)]),
     Errno.EINVAL),
    ("IKE_SPI_ADD with a peer", plus(IkeSpiAdd(1, b"\1" * 8), (Ext.ADDR_REMOTE, REMOTE4_BODY)), Errno.EINVAL),
    ("IKE_SPI_ADD peer zero", plus(IkeSpiAdd(1, b"\1" * 8), (Ext.IKE_PEER, bytes(8))), Errno.EINVAL),
    ("IKE_SPI_ADD two peers", plus(IkeSpiAdd(1, b"\1" * 8, 5), (Ext.IKE_PEER, bytes(7) + b"\1")), Errno.EINVAL),
    ("IKE_SPI_DELETE with a peer", plus(IkeSpiDelete(1, b"\1" * 8), (Ext.IKE_PEER, bytes(7) + b"\1")), Errno.EINVAL),
    ("DELETE with a new local", plus(Delete(1, 300, Direction.IN), (Ext.ADDR_NEW_LOCAL, REMOTE4_BODY)),
     Errno.EINVAL),
    ("DELETE OUT without its peer", without(Delete(1, 300, Direction.OUT, REMOTE4), Ext.ADDR_REMOTE), Errno.EINVAL),
    ("DELETE IN with a peer", plus(Delete(1, 300, Direction.IN), (Ext.ADDR_REMOTE, REMOTE4_BODY)), Errno.EINVAL),
    ("DELETE two peers", plus(Delete(1, 300, Direction.OUT, REMOTE4), (Ext.ADDR_REMOTE, REMOTE4_BODY)), Errno.EINVAL),
    ("DELETE peer family 0", patch(Delete(1, 300, Direction.OUT, REMOTE4), Ext.ADDR_REMOTE, put(0, b"\0")),
     Errno.EINVAL),
    ("EXPIRE OUT without its peer", without(Expire(spi=300, direction=Direction.OUT, hard=True,
                                                   reason=ExpireReason.TIME, remote=REMOTE4), Ext.ADDR_REMOTE),
     Errno.EINVAL),
    ("EXPIRE IN with a peer", plus(EXPIRE, (Ext.ADDR_REMOTE, REMOTE4_BODY)), Errno.EINVAL),
    ("POLICY action 3", patch(SPD, Ext.POLICY, put(8, b"\3")), Errno.EINVAL),
    ("POLICY reserved", patch(SPD, Ext.POLICY, put(9, b"\1")), Errno.EINVAL),
    ("PROTECT without reqid", patch(SPD, Ext.POLICY, put(12, bytes(4))), Errno.EINVAL),
    ("EXPIRE hard 2", patch(EXPIRE, Ext.EXPIRE, put(5, b"\2")), Errno.EINVAL),
    ("EXPIRE reason 0", patch(EXPIRE, Ext.EXPIRE, put(6, b"\0")), Errno.EINVAL),
    ("EXPIRE reason 6", patch(EXPIRE, Ext.EXPIRE, put(6, b"\6")), Errno.EINVAL),
    ("EXPIRE reserved", patch(EXPIRE, Ext.EXPIRE, put(7, b"\1")), Errno.EINVAL),
    ("EXPIRE spi 0", patch(EXPIRE, Ext.EXPIRE, put(0, bytes(4))), Errno.EINVAL),
    ("EXPIRE LIFETIME_CURRENT truncated", patch(EXPIRE_FINAL, Ext.LIFETIME_CURRENT, lambda b: b[:16]), Errno.EINVAL),
    ("EXPIRE LIFETIME_CURRENT too long", patch(EXPIRE_FINAL, Ext.LIFETIME_CURRENT, lambda b: b + bytes(4)),
     Errno.EINVAL),
    ("EXPIRE LIFETIME_CURRENT twice", plus(EXPIRE_FINAL, (Ext.LIFETIME_CURRENT, bytes(24))), Errno.EINVAL),
    ("LIFETIME_CURRENT in an UPDATE", plus(U_SA, (Ext.LIFETIME_CURRENT, bytes(24))), Errno.EINVAL),
    ("DELETE reply LIFETIME_CURRENT truncated", patch(DELETE_FINAL, Ext.LIFETIME_CURRENT, lambda b: b[:16]),
     Errno.EINVAL),
    ("DELETE reply LIFETIME_CURRENT twice", plus(DELETE_FINAL, (Ext.LIFETIME_CURRENT, bytes(24))), Errno.EINVAL),
    ("LIFETIME_CURRENT in a failed DELETE reply",
     plus(Reply(1, MsgType.DELETE, Errno.ENOENT), (Ext.LIFETIME_CURRENT, bytes(24))), Errno.EINVAL),
    ("LIFETIME_CURRENT in an ADD reply", plus(Reply(1, MsgType.ADD, Errno.OK), (Ext.LIFETIME_CURRENT, bytes(24))),
     Errno.EINVAL),
    ("LIFETIME_CURRENT in a DELETE request", plus(Delete(1, 300, Direction.IN), (Ext.LIFETIME_CURRENT, bytes(24))),
     Errno.EINVAL),
    ("SPI in a DELETE reply", plus(DELETE_FINAL, (Ext.SPI, struct.pack("!I", 300))), Errno.EINVAL),
    ("GAUGE in an EXPIRE", plus(EXPIRE, (Ext.GAUGE, GAUGE_BODY)), Errno.EINVAL),
    ("GAUGE in a failed DUMP reply", plus(DUMP_EIO, (Ext.GAUGE, GAUGE_BODY)), Errno.EINVAL),
    ("GAUGE twice", plus(DUMP_OK, (Ext.GAUGE, GAUGE_BODY), (Ext.GAUGE, GAUGE_BODY)), Errno.EINVAL),
    ("GAUGE too short", plus(DUMP_OK, (Ext.GAUGE, bytes(8))), Errno.EINVAL),
    ("GAUGE name uppercase", plus(DUMP_OK, (Ext.GAUGE, GAUGE_BODY[:12] + b"N" + GAUGE_BODY[13:])), Errno.EINVAL),
    ("GAUGE length disagrees", plus(DUMP_OK, (Ext.GAUGE, b"\3" + GAUGE_BODY[1:])), Errno.EINVAL),
    ("DATA empty", patch(IKE, Ext.DATA, lambda b: bytes(4)), Errno.EINVAL),
    ("DATA length disagrees", patch(IKE, Ext.DATA, put(0, b"\0\0\0\x09")), Errno.EINVAL),
    ("DATA length huge", patch(IKE, Ext.DATA, put(0, b"\xff\xff\xff\xff")), Errno.EINVAL),
    ("DATA padding", patch(IKE, Ext.DATA, lambda b: b[:-1] + b"\1"), Errno.EINVAL),
    ("DATA too short", patch(IKE, Ext.DATA, lambda b: b""), Errno.EINVAL),
    ("DATA over 65000", raw(MsgType.IKE, DATA_65001 + REMOTE4_EXT, req_id=0), Errno.EINVAL),
    ("SA_INFO state 3", patch(DUMP_OK, Ext.SA_INFO, put(5, b"\3")), Errno.EINVAL),
    ("SA_INFO unknown flag", patch(DUMP_OK, Ext.SA_INFO, put(7, b"\x08")), Errno.EINVAL),
    ("mature SA_INFO without alg", patch(DUMP_OK, Ext.SA_INFO, put(6, b"\0")), Errno.EINVAL),
    ("mature SA_INFO without local", patch(DUMP_OK, Ext.SA_INFO, put(16, bytes(20))), Errno.EINVAL),
    ("SA_INFO unset addr, port", patch(DUMP_OK, Ext.SA_INFO, put(16, b"\0\0\0\1")), Errno.EINVAL),
    ("SA_INFO without SA_COUNTERS", without(DUMP_OK, Ext.SA_COUNTERS), Errno.EINVAL),
    ("SA_COUNTERS without SA_INFO", without(DUMP_OK, Ext.SA_INFO), Errno.EINVAL),
    ("SA_COUNTERS twice", plus(DUMP_OK, (Ext.SA_COUNTERS, SA_COUNTERS_BODY)), Errno.EINVAL),
    ("SA_INFO one counter short", patch(DUMP_OK, Ext.SA_INFO, lambda b: b[:-8]), Errno.EINVAL),
    ("SA_INFO one counter more", patch(DUMP_OK, Ext.SA_INFO, lambda b: b + bytes(8)), Errno.EINVAL),
    ("SA_COUNTERS name uppercase", patch(DUMP_OK, Ext.SA_COUNTERS, put(4, b"P")), Errno.EINVAL),
    ("SA_COUNTERS name twice", patch(DUMP_AB, Ext.SA_COUNTERS, put(8, b"a")), Errno.EINVAL),
    ("SA_COUNTERS empty name", patch(DUMP_OK, Ext.SA_COUNTERS, put(11, b",,")), Errno.EINVAL),
    ("SA_COUNTERS not ASCII", patch(DUMP_OK, Ext.SA_COUNTERS, put(4, b"\xc3")), Errno.EINVAL),
    ("SA_COUNTERS length disagrees", patch(DUMP_OK, Ext.SA_COUNTERS, put(0, b"\0\3")), Errno.EINVAL),
    ("SA_COUNTERS reserved", patch(DUMP_OK, Ext.SA_COUNTERS, put(2, b"\1")), Errno.EINVAL),
    ("SA_COUNTERS padding", patch(DUMP_OK, Ext.SA_COUNTERS, lambda b: b[:-1] + b"\1"), Errno.EINVAL),
    ("SA_COUNTERS too short", patch(DUMP_OK, Ext.SA_COUNTERS, lambda b: b"\0"), Errno.EINVAL),
    ("POLICY_INFO out_spi 5", patch(DUMP_OK, Ext.POLICY_INFO, put(16, b"\0\0\0\5")), Errno.EINVAL),
    ("POLICY_INFO reserved", patch(DUMP_OK, Ext.POLICY_INFO, put(9, b"\1")), Errno.EINVAL),
    ("DROP name uppercase", patch(DUMP_OK, Ext.DROP, put(12, b"N")), Errno.EINVAL),
    ("DROP name not ASCII", patch(DUMP_OK, Ext.DROP, put(12, b"\xc3")), Errno.EINVAL),
    ("DROP name empty", patch(DUMP_OK, Ext.DROP, lambda b: bytes(12)), Errno.EINVAL),
    ("DROP length disagrees", patch(DUMP_OK, Ext.DROP, put(0, b"\3")), Errno.EINVAL),
    ("DROP reserved", patch(DUMP_OK, Ext.DROP, put(1, b"\1")), Errno.EINVAL),
    ("DROP too short", patch(DUMP_OK, Ext.DROP, lambda b: bytes(8)), Errno.EINVAL),
    ("DROP twice", plus(DUMP_OK, (Ext.DROP, split(encode(DUMP_OK))[0][1])), Errno.EINVAL),
    ("INVALID_SPI without remote", without(InvalidSpi(spi=9, remote=REMOTE4), Ext.ADDR_REMOTE), Errno.EINVAL),
    ("SEND_IKE families differ", plus(SEND4, (Ext.ADDR_LOCAL, LOCAL6_BODY)), Errno.EINVAL),
    ("SEND_IKE OIF zero", plus(SEND4, (Ext.OIF, bytes(4))), Errno.EINVAL),
    ("SEND_IKE two OIFs", plus(SendIke(1, b"x", REMOTE4, oif=3), (Ext.OIF, b"\0\0\0\4")), Errno.EINVAL),
    ("IKE event with an OIF", plus(IKE, (Ext.OIF, b"\0\0\0\3")), Errno.EINVAL),
    ("SEND_IKE UNMARKED with a body", plus(SEND4, (Ext.UNMARKED, b"\0\0\0\1")), Errno.EINVAL),
    ("IKE event with two UNMARKED", plus(IKE, (Ext.UNMARKED, b""), (Ext.UNMARKED, b"")), Errno.EINVAL),
    ("RESERVE limit 0", patch(RESERVE, Ext.SEQ_LIMIT, put(0, bytes(8))), Errno.EINVAL),
    ("RESERVE without SEQ_LIMIT", without(RESERVE, Ext.SEQ_LIMIT), Errno.EINVAL),
    ("RESERVE without SA_ID", without(RESERVE, Ext.SA_ID), Errno.EINVAL),
    ("RESERVE direction 2", patch(RESERVE, Ext.SA_ID, put(4, b"\2")), Errno.EINVAL),
    ("RESERVE spi 255", patch(RESERVE, Ext.SA_ID, put(0, b"\0\0\0\xff")), Errno.EINVAL),
    ("SEQ_LIMIT too short", patch(RESERVE, Ext.SEQ_LIMIT, lambda b: b[:8]), Errno.EINVAL),
    ("SEQ_LIMIT twice in ADD", plus(LIMITED, (Ext.SEQ_LIMIT, split(encode(LIMITED))[-1][1])), Errno.EINVAL),
    ("seq_limit below seq_start", patch(LIMITED, Ext.SEQ_LIMIT, put(0, bytes(7) + b"\1")), Errno.EINVAL),
    ("seq_limit past 32 bits without ESN", patch(LIMITED, Ext.SEQ_LIMIT, put(0, b"\0\0\0\1")), Errno.EINVAL),
    ("RESERVE_LOW with a request id", raw(MsgType.RESERVE_LOW, SA_ID_300, req_id=3), Errno.EINVAL),
    ("RESERVE_LOW without SA_ID", raw(MsgType.RESERVE_LOW, req_id=0), Errno.EINVAL),
    ("RESERVE_LOW needed 0", raw(MsgType.RESERVE_LOW, SA_ID_300 + ext(Ext.SEQ_LIMIT, bytes(16)), req_id=0),
     Errno.EINVAL),
    ("RESERVE_LOW with notify",
     raw(MsgType.RESERVE_LOW, SA_ID_300 + ext(Ext.SEQ_LIMIT, bytes(7) + b"\1" + bytes(7) + b"\1"), req_id=0),
     Errno.EINVAL),
    ("SA first-use flag on an ADD", patch(A_SA, Ext.SA, put(6, b"\x09")), Errno.EINVAL),
    ("SA unknown flag 0x10", patch(U_SA, Ext.SA, put(6, b"\x10")), Errno.EINVAL),
    ("FIRST_USE with a request id", raw(MsgType.FIRST_USE, SPI_300, req_id=3), Errno.EINVAL),
    ("FIRST_USE without SPI", raw(MsgType.FIRST_USE, req_id=0), Errno.EINVAL),
    ("FIRST_USE two SPIs", raw(MsgType.FIRST_USE, SPI_300 + SPI_300, req_id=0), Errno.EINVAL),
    ("FIRST_USE spi 255", raw(MsgType.FIRST_USE, ext(Ext.SPI, b"\0\0\0\xff"), req_id=0), Errno.EINVAL),
    ("FIRST_USE with a peer", raw(MsgType.FIRST_USE, SPI_300 + REMOTE4_EXT, req_id=0), Errno.EINVAL),
    ("reply to FIRST_USE", raw(MsgType.FIRST_USE, flags=0x01), Errno.EINVAL),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "errno"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(name: str, data: bytes, errno: Errno) -> None:
    err = decode_error(data)
    assert err.errno is errno, err
    _, msg_type, _, req_id, flags, _, _ = HEADER.unpack_from(data)
    assert err.req_id == req_id and err.msg_type == msg_type
    reply = answered(err)
    is_request = not flags & 1 and req_id != 0 and msg_type < 16
    if is_request:
        assert reply == Reply(req_id, MsgType(msg_type), errno)
    else:
        assert reply is None


def test_decoded_addresses_are_checked_every_time_and_their_table_stays_bounded() -> None:
    """The decoder keeps the addresses it built (pipe.fields._ADDR_CACHE): a field it has seen
    decodes to the same value, and one differing only in the padding is refused after it too."""
    from tunsec.dataplane.pipe import fields

    good = encode(A_SA)
    assert decode(good) == A_SA and decode(good) == A_SA
    padded = patch(A_SA, Ext.ADDR_LOCAL, put(19, b"\1"))
    assert decode_error(padded).errno is Errno.EINVAL
    assert decode(good) == A_SA
    for i in range(fields._ADDR_CACHE_MAX + 10):
        v4, v6 = IPv4Address(0x0A000000 + i), IPv6Address((0xFD << 120) + i)
        for addr in (v4, v6):
            ike = Ike(data=b"x", remote=Endpoint(addr, 500), local=Endpoint(addr, 4500))
            assert decode(encode(ike)) == ike
    assert all(len(t) <= fields._ADDR_CACHE_MAX for t in fields._ADDR_CACHE.values())


def test_malformed_cases_are_distinct() -> None:
    datagrams = [m[1] for m in MALFORMED]
    assert len(set(datagrams)) == len(datagrams)


def test_error_reply_never_answers_replies_or_events() -> None:
    assert error_reply(decode_error(raw(MsgType.FLUSH, flags=1, errno=99))) is None
    assert error_reply(decode_error(raw(MsgType.ACQUIRE, req_id=0))) is None  # missing extensions
    assert error_reply(decode_error(raw(MsgType.ACQUIRE, req_id=5))) is None
    assert error_reply(decode_error(raw(MsgType.FLUSH, req_id=0))) is None


def test_pipe_error_fields() -> None:
    err = decode_error(raw(MsgType.GETSPI, req_id=77))
    assert isinstance(err, Exception)
    assert err.errno is Errno.EINVAL and err.req_id == 77 and err.msg_type == MsgType.GETSPI
    assert err.is_request
    assert "SPI_RANGE" in str(err) and str(err).startswith("EINVAL")
