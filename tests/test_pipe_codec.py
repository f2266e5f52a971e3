"""The control <-> worker pipe codec: round trips, strictness, fuzzing, secrecy."""

import dataclasses
import struct
import traceback
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    MAX_SELECTORS,
    Acquire,
    Action,
    Add,
    Alg,
    Delete,
    Direction,
    Dump,
    Endpoint,
    Errno,
    Expire,
    ExpireReason,
    Ext,
    FirstUse,
    Flush,
    GetSpi,
    Ike,
    InvalidSpi,
    Lifetime,
    Message,
    Migrate,
    MsgType,
    PipeError,
    Policy,
    PolicyInfo,
    Reply,
    Reserve,
    ReserveLow,
    SaInfo,
    SaSpec,
    SaState,
    Selector,
    SendIke,
    SpdAdd,
    SpdDelete,
    SpdFlush,
    Update,
    decode,
    encode,
    encode_dump_replies,
    encode_ok,
    encode_spi,
    error_reply,
    join_dump_replies,
)

U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF
HEADER = struct.Struct("!BBHIB3sI")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies

u16s = st.integers(0, U16)
u32s = st.integers(0, U32)
u64s = st.one_of(st.just(0), st.integers(0, U64))
spis = st.integers(256, U32)
req_ids = st.integers(1, U32)
families = st.sampled_from([4, 6])
ipv4s = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6s = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


def addrs(family: int) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    return ipv4s if family == 4 else ipv6s


def endpoints(family: int | None = None) -> st.SearchStrategy[Endpoint]:
    if family is None:
        return families.flatmap(endpoints)
    return st.builds(Endpoint, addrs(family), u16s)


@st.composite
def endpoint_pairs(draw: st.DrawFn) -> tuple[Endpoint, Endpoint]:
    family = draw(families)
    return draw(endpoints(family)), draw(endpoints(family))


port_ranges = st.tuples(u16s, u16s).map(lambda t: (min(t), max(t)))
full_ports = st.just((0, U16))


@st.composite
def raw_selectors(draw: st.DrawFn) -> Selector:
    family = draw(families)
    src = sorted([draw(addrs(family)), draw(addrs(family))], key=int)
    dst = sorted([draw(addrs(family)), draw(addrs(family))], key=int)
    return Selector(
        src[0],
        src[1],
        dst[0],
        dst[1],
        draw(st.sampled_from([0, 1, 6, 17, 58, 132]) | st.integers(0, 255)),
        draw(full_ports | port_ranges),
        draw(full_ports | port_ranges),
    )


@st.composite
def network_selectors(draw: st.DrawFn) -> Selector:
    family = draw(families)
    bits = 32 if family == 4 else 128

    def net() -> IPv4Network | IPv6Network:
        return ip_network((draw(addrs(family)), draw(st.integers(0, bits))), strict=False)

    return Selector.from_networks(net(), net(), draw(st.sampled_from([0, 6, 17])))


selectors = st.one_of(raw_selectors(), network_selectors())
lifetimes = st.builds(Lifetime, u64s, u64s, u64s)


@st.composite
def lifetime_pairs(draw: st.DrawFn) -> tuple[Lifetime, Lifetime]:
    hard = draw(lifetimes)

    def soft_of(limit: int) -> int:
        return draw(st.just(0) | st.integers(0, limit or U64))

    return Lifetime(soft_of(hard.bytes), soft_of(hard.packets), soft_of(hard.seconds)), hard


replay_windows = st.just(0) | st.integers(32, 65536)


@st.composite
def sa_specs(draw: st.DrawFn) -> SaSpec:
    alg = draw(st.sampled_from(Alg))
    esn = draw(st.booleans())
    local, remote = draw(endpoint_pairs())
    soft, hard = draw(lifetime_pairs())
    direction = draw(st.sampled_from(Direction))
    return SaSpec(
        spi=draw(spis),
        direction=direction,
        alg=alg,
        key=draw(st.binary(min_size=alg.key_len, max_size=alg.key_len)),
        esn=esn,
        replay_window=draw(replay_windows),
        reqid=draw(u32s),
        local=local,
        remote=remote,
        soft=soft,
        hard=hard,
        selectors=tuple(draw(st.lists(selectors, max_size=8))),
        **draw(reservations(esn)),
        report_first_use=direction is Direction.IN and draw(st.booleans()),
    )


@st.composite
def reservations(draw: st.DrawFn, esn: bool) -> dict[str, int]:
    top = U64 if esn else U32
    start = draw(st.integers(0, top))
    limit = draw(st.just(0) | st.integers(start, top))
    return {"seq_start": start, "seq_limit": limit, "seq_notify": draw(u64s)}


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    action = draw(st.sampled_from(Action))
    reqid = draw(st.integers(1, U32) if action is Action.PROTECT else u32s)
    return Policy(draw(u32s), draw(u32s), action, reqid, draw(selectors))


# the names a worker sends today (enum ts_sa_counter); the codec carries any
SA_COUNTER_NAMES = ("packets", "bytes", "replay_drops", "auth_drops", "policy_drops")
SA_COUNTERS_EXT = 4 + 4 + len(",".join(SA_COUNTER_NAMES)) + 2   # names, 2 bytes of padding


@st.composite
def sa_infos(draw: st.DrawFn) -> SaInfo:
    states: tuple[SaState, ...] = ("larval", "mature", "dead")
    state = draw(st.sampled_from(states))
    local, remote = draw(endpoint_pairs())
    optional = state != "mature"
    return SaInfo(
        spi=draw(spis),
        direction=draw(st.sampled_from(Direction)),
        state=state,
        alg=draw(st.none() | st.sampled_from(Alg)) if optional else draw(st.sampled_from(Alg)),
        esn=draw(st.booleans()),
        reqid=draw(u32s),
        replay_window=draw(replay_windows),
        local=draw(st.none() | st.just(local)) if optional else local,
        remote=draw(st.none() | st.just(remote)) if optional else remote,
        seq=draw(u64s),
        soft_fired=draw(st.booleans()),
        hard_fired=draw(st.booleans()),
        age_seconds=draw(u64s),
        counters={name: draw(u64s) for name in SA_COUNTER_NAMES},   # one DUMP's SAs share their names
    )


policy_infos = st.builds(
    PolicyInfo,
    u32s,
    u32s,
    st.sampled_from(Action),
    u32s,
    st.just(0) | spis,
    u64s,
    selectors,
)
drop_names = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
drop_tables = st.dictionaries(drop_names, u64s, max_size=6).map(lambda d: tuple(d.items()))
request_types = st.sampled_from([t for t in MsgType if not t.is_event])


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    msg_type = draw(request_types)
    errno = draw(st.sampled_from(Errno))
    ok = errno is Errno.OK
    if msg_type is MsgType.GETSPI and ok:
        return Reply(draw(req_ids), msg_type, errno, spi=draw(spis))
    if msg_type is MsgType.DUMP and ok:
        return Reply(
            draw(req_ids),
            msg_type,
            errno,
            more=draw(st.booleans()),
            sas=tuple(draw(st.lists(sa_infos(), max_size=4))),
            policies=tuple(draw(st.lists(policy_infos, max_size=4))),
            drops=draw(drop_tables),
            gauges=draw(drop_tables),
        )
    return Reply(draw(req_ids), msg_type, errno)


@st.composite
def spi_ranges(draw: st.DrawFn) -> GetSpi:
    lo, hi = sorted([draw(spis), draw(spis)])
    return GetSpi(draw(req_ids), lo, hi, draw(st.none() | st.integers(0, U32)))


ike_data = st.binary(min_size=1, max_size=600)


@st.composite
def ike_args(draw: st.DrawFn) -> tuple[bytes, Endpoint, Endpoint | None]:
    remote, local = draw(endpoint_pairs())
    return draw(ike_data), remote, draw(st.none() | st.just(local))


messages: st.SearchStrategy[Message] = st.one_of(
    spi_ranges(),
    st.builds(Update, req_ids, sa_specs()),
    st.builds(Add, req_ids, sa_specs()),
    st.builds(Delete, req_ids, spis, st.just(Direction.IN)),
    st.builds(Delete, req_ids, spis, st.just(Direction.OUT), endpoints()),
    st.builds(Flush, req_ids),
    st.builds(SpdAdd, req_ids, policies()),
    st.builds(SpdDelete, req_ids, u32s),
    st.builds(SpdFlush, req_ids),
    st.builds(Dump, req_ids),
    st.tuples(req_ids, ike_args()).map(lambda t: SendIke(t[0], *t[1])),
    replies(),
    st.builds(Acquire, policy_id=u32s, selector=selectors),
    st.builds(
        Expire,
        spi=spis,
        direction=st.just(Direction.IN),
        hard=st.booleans(),
        reason=st.sampled_from(ExpireReason),
        current=st.none() | lifetimes,
    ),
    st.builds(
        Expire,
        spi=spis,
        direction=st.just(Direction.OUT),
        hard=st.booleans(),
        reason=st.sampled_from(ExpireReason),
        remote=endpoints(),
        current=st.none() | lifetimes,
    ),
    st.builds(InvalidSpi, spi=u32s, remote=endpoints()),
    st.builds(Reserve, req_ids, spis, st.just(Direction.IN), st.integers(1, U64), u64s),
    st.builds(Reserve, req_ids, spis, st.just(Direction.OUT), st.integers(1, U64), u64s, endpoints()),
    st.builds(ReserveLow, spi=spis, direction=st.just(Direction.IN), needed=u64s),
    st.builds(ReserveLow, spi=spis, direction=st.just(Direction.OUT), needed=u64s, remote=endpoints()),
    ike_args().map(lambda a: Ike(data=a[0], remote=a[1], local=a[2])),
    st.builds(FirstUse, spi=spis),
    st.builds(Migrate, req_ids, spis, st.just(Direction.IN), endpoints()),
    endpoints().flatmap(
        lambda e: st.builds(
            Migrate, req_ids, spis, st.just(Direction.OUT), endpoints().filter(lambda n: n.family == e.family),
            st.just(e),
        )
    ),
)

# ------------------------------------------------------------ realistic values

SECRET128 = b"TOPSECRET-KEYMAT-20B"
SECRET256 = b"TOPSECRET-KEYMATERIAL-AES256GCM-SALT"
LOCAL4 = Endpoint(ip_address("192.0.2.10"), 4500)
REMOTE4 = Endpoint(ip_address("198.51.100.20"), 4500)
LOCAL6 = Endpoint(ip_address("2001:db8::10"), 4500)
REMOTE6 = Endpoint(ip_address("2001:db8:ffff::20"), 61234)
REMOTE4_MOVED = Endpoint(ip_address("192.0.2.77"), 40001)
SEL4 = Selector.from_networks(ip_network("10.1.0.0/16"), ip_network("10.2.0.0/24"))
SEL6_TCP = Selector.from_networks(
    ip_network("fd00:1::/64"), ip_network("fd00:2::/64"), proto=6, dport=(443, 443)
)


def out_sa(**changes: object) -> SaSpec:
    values: dict[str, object] = dict(
        spi=0xC1A2B3C4,
        direction=Direction.OUT,
        alg=Alg.AES128GCM16,
        key=SECRET128,
        esn=True,
        replay_window=0,
        reqid=7,
        local=LOCAL4,
        remote=REMOTE4,
        soft=Lifetime(bytes=900_000_000, packets=0, seconds=3240),
        hard=Lifetime(bytes=1_000_000_000, packets=0, seconds=3600),
        selectors=(SEL4, SEL6_TCP),
    )
    values.update(changes)
    return SaSpec(**values)  # type: ignore[arg-type]


def in_sa(**changes: object) -> SaSpec:
    base: dict[str, object] = dict(
        spi=0xCAFE0001, direction=Direction.IN, alg=Alg.AES256GCM16, key=SECRET256, replay_window=1024
    )
    base.update(changes)
    return out_sa(**base)


def sa_info(i: int) -> SaInfo:
    return SaInfo(
        spi=0x1000_0000 + i,
        direction=Direction(i % 2),
        state="mature",
        alg=Alg.AES256GCM16,
        esn=True,
        reqid=i // 2 + 1,
        replay_window=4096,
        local=LOCAL6,
        remote=REMOTE6,
        seq=i * 1000,
        soft_fired=i % 11 == 0,
        hard_fired=False,
        age_seconds=i,
        counters={"packets": i * 1000, "bytes": i * 1_400_000, "replay_drops": i % 3, "auth_drops": i % 5,
                  "policy_drops": i % 7},
    )


def policy_info(i: int) -> PolicyInfo:
    return PolicyInfo(i, 100 + i, Action.PROTECT, i + 1, 0x2000_0000 + i, i * 10, SEL4)


DROP_NAMES = ["no_sa", "replay", "auth", "policy", "malformed", "too_big", "no_policy", "discard"]
DROP_NAMES += ["bypass", "seq_overflow", "lifetime", "keepalive", "dummy", "io", "queue_full"]
DROP_NAMES += ["hold_full", "hold_timeout"]
DROP_NAMES += ["icmp_suppressed"]
DROP_NAMES += ["unreserved"]
DROPS = tuple((name, n) for n, name in enumerate(DROP_NAMES))

REALISTIC: list[Message] = [
    GetSpi(1, 0xC0000000, 0xCFFFFFFF),
    Update(2, in_sa()),
    Add(3, out_sa()),
    Add(4, out_sa(local=LOCAL6, remote=REMOTE6, esn=False, seq_start=U32, selectors=())),
    Delete(5, 0xCAFE0001, Direction.IN),
    Flush(6),
    SpdAdd(7, Policy(1, 1000, Action.PROTECT, 7, SEL4)),
    SpdAdd(8, Policy(2, 10, Action.BYPASS, 0, SEL6_TCP)),
    SpdDelete(9, 1),
    SpdFlush(10),
    Dump(11),
    SendIke(12, b"\x00" * 28 + b"ike", REMOTE4, LOCAL4),
    SendIke(13, bytes(range(256)) * 253 + b"\x01" * 232, REMOTE6),
    Reply(1, MsgType.GETSPI, Errno.OK, spi=0xC0000123),
    Reply(1, MsgType.GETSPI, Errno.ENOSPC),
    Reply(2, MsgType.UPDATE, Errno.ESTATE),
    Reply(3, MsgType.ADD, Errno.OK),
    Reply(11, MsgType.DUMP, Errno.OK, sas=(sa_info(1), sa_info(2)), policies=(policy_info(1),), drops=DROPS),
    Acquire(
        policy_id=1, selector=Selector.from_networks(ip_network("10.1.0.5/32"), ip_network("10.2.0.9/32"))
    ),
    Expire(spi=0xC1A2B3C4, direction=Direction.OUT, hard=False, reason=ExpireReason.BYTES, remote=REMOTE6),
    Expire(spi=0xC0000123, direction=Direction.IN, hard=True, reason=ExpireReason.LARVAL_TIMEOUT),
    InvalidSpi(spi=0xDEADBEEF, remote=REMOTE4),
    Ike(data=b"\x11" * 300, remote=REMOTE6, local=LOCAL6),
    # an outbound SA is named by (SPI, peer): peers choose those SPIs and two may choose the same
    Delete(14, 0xCAFE0002, Direction.OUT, REMOTE4),
    Delete(15, 0xCAFE0002, Direction.OUT, REMOTE6),
    GetSpi(1, 0xC0000000, 0xCFFFFFFF, larval_seconds=0),
    # manual keys: reservations that survive restarts
    Add(14, out_sa(esn=False, seq_start=1 << 20, seq_limit=(1 << 20) + 4096, seq_notify=(1 << 20) + 2048)),
    Update(15, in_sa(seq_start=70000, seq_limit=74096, seq_notify=72048)),
    Reserve(16, 0xC1A2B3C4, Direction.OUT, 1 << 21, (1 << 21) - 2048, REMOTE4),
    Reserve(17, 0xC0000123, Direction.IN, U64, 0),
    ReserveLow(spi=0xC1A2B3C4, direction=Direction.OUT, remote=REMOTE6),
    ReserveLow(spi=0xC0000123, direction=Direction.IN, needed=(1 << 20) + 7),
    # a rekey responder's new inbound SA: the worker reports its first authenticated packet
    Update(18, in_sa(report_first_use=True)),
    FirstUse(spi=0xC0000123),
    # NAT rebinding / MOBIKE: a mature SA follows its peer to a new address and port
    Migrate(19, 0xCAFE0002, Direction.OUT, REMOTE4_MOVED, REMOTE4),
    Migrate(20, 0xC0000123, Direction.IN, REMOTE6),
    # MOBIKE to another of our addresses: our end moves too (ADDR_NEW_LOCAL); a wildcard hands it to the route
    Migrate(21, 0xCAFE0002, Direction.OUT, REMOTE4_MOVED, REMOTE4, LOCAL4),
    Migrate(22, 0xC0000123, Direction.IN, REMOTE6, new_local=LOCAL6),
    Migrate(23, 0xC0000123, Direction.IN, REMOTE4, new_local=Endpoint(ip_address("0.0.0.0"), 4500)),
    # a hard EXPIRE carries the SA's final counters (PF_KEY's current lifetime); DUMP the worker's gauges
    Expire(spi=0xC0000123, direction=Direction.IN, hard=True, reason=ExpireReason.TIME,
           current=Lifetime(bytes=1 << 40, packets=12345, seconds=3600)),
    Expire(spi=0xC1A2B3C4, direction=Direction.OUT, hard=True, reason=ExpireReason.BYTES, remote=REMOTE4,
           current=Lifetime(bytes=999_999, packets=1000)),
    Reply(21, MsgType.DUMP, Errno.OK, drops=DROPS,
          gauges=(("live_sas", 2), ("live_cipher_ctxs", 2), ("policies", 1))),
]

# ----------------------------------------------------------------- raw helpers


def split(data: bytes) -> list[tuple[int, bytes]]:
    """A valid encoding's extensions as (type, body) pairs."""
    out, pos = [], HEADER_LEN
    while pos < len(data):
        length, ext_type = struct.unpack_from("!HH", data, pos)
        out.append((ext_type, data[pos + 4 : pos + length]))
        pos += length
    return out


def ext(ext_type: int, body: bytes) -> bytes:
    pad = -len(body) % 4
    return struct.pack("!HH", 4 + len(body) + pad, ext_type) + body + bytes(pad)


def raw(
    msg_type: int,
    exts: bytes = b"",
    *,
    req_id: int = 1,
    flags: int = 0,
    errno: int = 0,
    version: int = 1,
    reserved: bytes = b"\0\0\0",
    length: int | None = None,
) -> bytes:
    total = HEADER_LEN + len(exts) if length is None else length
    return HEADER.pack(version, msg_type, errno, req_id, flags, reserved, total) + exts


def rebuild(data: bytes, exts: list[tuple[int, bytes]], **header: int) -> bytes:
    version, msg_type, errno, req_id, flags, _, _ = HEADER.unpack_from(data)
    fields = dict(version=version, errno=errno, req_id=req_id, flags=flags) | header
    return raw(msg_type, b"".join(ext(t, b) for t, b in exts), **fields)


def patch(msg: Message, ext_type: Ext, fn: Callable[[bytes], bytes], index: int = 0) -> bytes:
    """msg encoded, with the index-th ext_type body replaced by fn(body)."""
    data = encode(msg)
    exts, seen = [], 0
    for t, body in split(data):
        if t == ext_type:
            if seen == index:
                body = fn(body)
            seen += 1
        exts.append((t, body))
    assert seen > index, f"{ext_type.name} not in message"
    return rebuild(data, exts)


def put(offset: int, value: bytes) -> Callable[[bytes], bytes]:
    return lambda body: body[:offset] + value + body[offset + len(value) :]


def without(msg: Message, ext_type: Ext) -> bytes:
    data = encode(msg)
    return rebuild(data, [(t, b) for t, b in split(data) if t != ext_type])


def plus(msg: Message, *more: tuple[int, bytes]) -> bytes:
    data = encode(msg)
    return rebuild(data, [*split(data), *more])


def decode_error(data: bytes) -> PipeError:
    with pytest.raises(PipeError) as info:
        decode(data)
    return info.value


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


EXT_LENGTHS = {
    Ext.SA: 28,
    Ext.KEY: 28,
    Ext.ADDR_LOCAL: 24,
    Ext.ADDR_REMOTE: 24,
    Ext.LIFETIME_SOFT: 28,
    Ext.LIFETIME_HARD: 28,
    Ext.SELECTOR: 80,
    Ext.SPI_RANGE: 12,
    Ext.SPI: 8,
    Ext.SA_ID: 12,
    Ext.POLICY: 20,
    Ext.POLICY_ID: 8,
    Ext.EXPIRE: 12,
    Ext.DATA: 8 + 304,
    Ext.SA_INFO: 76 + 8 * len(SA_COUNTER_NAMES),
    Ext.SA_COUNTERS: SA_COUNTERS_EXT,
    Ext.POLICY_INFO: 108,
    Ext.DROP: 16 + 4,  # the name "auth" needs no padding
    Ext.SEQ_LIMIT: 20,
    Ext.ADDR_NEW_REMOTE: 24,
    Ext.LIFETIME_CURRENT: 28,
    Ext.GAUGE: 16 + 8,  # "live_sas"
}


def test_extension_lengths() -> None:
    samples: list[Message] = [
        Add(1, out_sa()),
        Delete(1, 300, Direction.IN),
        SpdAdd(1, Policy(1, 1, Action.DISCARD, 0, SEL4)),
        GetSpi(1, 256, 300),
        SpdDelete(1, 5),
        Expire(spi=300, direction=Direction.IN, hard=True, reason=ExpireReason.TIME, current=Lifetime(1, 2, 3)),
        InvalidSpi(spi=1, remote=REMOTE4),
        Ike(data=b"x" * 301, remote=REMOTE4),
        Reserve(1, 300, Direction.OUT, 5000, 4000, REMOTE4),
        Migrate(1, 300, Direction.IN, REMOTE4),
        Reply(1, MsgType.DUMP, Errno.OK, sas=(sa_info(1),), policies=(policy_info(1),), drops=(("auth", 1),),
              gauges=(("live_sas", 1),)),
    ]
    seen: dict[int, int] = {}
    for msg in samples:
        for t, body in split(encode(msg)):
            seen[t] = 4 + len(body)
    assert seen == {int(k): v for k, v in EXT_LENGTHS.items()}
    assert 4 + len(split(encode(Add(1, in_sa())))[1][1]) == 44  # 256-bit KEY


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
    for msg_type in (0, 13, 15, 22, 255):
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
    assert _field_types(general) == _field_types(msg)


def _field_types(value: object) -> object:
    """The types of a value's fields, and of theirs, all the way down."""
    if isinstance(value, tuple):
        return tuple([_field_types(v) for v in value])
    if dataclasses.is_dataclass(value):
        return (type(value), {k: _field_types(v) for k, v in vars(value).items()})
    return type(value)


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


# ----------------------------------------------------------------- constructors

A1, A2 = ip_address("10.0.0.1"), ip_address("10.0.0.2")
NET8, ANY4 = ip_network("10.0.0.0/8"), ip_network("0.0.0.0/0")
TIME = ExpireReason.TIME

INVALID: list[tuple[str, Callable[[], object]]] = [
    ("port 65536", lambda: Endpoint(ip_address("10.0.0.1"), 65536)),
    ("port bool", lambda: Endpoint(ip_address("10.0.0.1"), True)),
    ("addr str", lambda: Endpoint("10.0.0.1", 500)),  # type: ignore[arg-type]
    ("selector families", lambda: Selector(A1, A2, ip_address("::1"), ip_address("::2"))),
    ("selector reversed", lambda: Selector(A2, A1, A1, A2)),
    ("networks of two families", lambda: Selector.from_networks(NET8, ip_network("::/0"))),
    ("selector proto", lambda: Selector.from_networks(NET8, ANY4, 256)),
    ("sport reversed", lambda: Selector.from_networks(NET8, ANY4, 6, (2, 1))),
    ("dport list", lambda: Selector.from_networks(NET8, ANY4, 6, dport=[1, 2])),  # type: ignore[arg-type]
    ("dport triple", lambda: Selector(A1, A2, A1, A2, 6, dport=(1, 2, 3))),  # type: ignore[arg-type]
    ("lifetime negative", lambda: Lifetime(bytes=-1)),
    ("lifetime 2**64", lambda: Lifetime(seconds=2**64)),
    ("soft above hard", lambda: out_sa(soft=Lifetime(packets=11), hard=Lifetime(packets=10))),
    ("spi 255", lambda: out_sa(spi=255)),
    ("spi 2**32", lambda: out_sa(spi=2**32)),
    ("direction int", lambda: out_sa(direction=1)),
    ("nine selectors", lambda: out_sa(selectors=(SEL4,) * 9)),
    ("endpoint families", lambda: out_sa(remote=REMOTE6)),
    ("reqid", lambda: out_sa(reqid=-1)),
    ("policy protect reqid 0", lambda: Policy(1, 1, Action.PROTECT, 0, SEL4)),
    ("policy action int", lambda: Policy(1, 1, 2, 1, SEL4)),  # type: ignore[arg-type]
    ("request id 0", lambda: Flush(0)),
    ("request id 2**32", lambda: Dump(2**32)),
    ("getspi reversed", lambda: GetSpi(1, 0x2000, 0x1000)),
    ("getspi low", lambda: GetSpi(1, 0, 0x1000)),
    ("event id", lambda: Expire(req_id=1, spi=300, direction=Direction.IN, hard=True, reason=TIME)),
    ("expire hard int", lambda: Expire(spi=300, direction=Direction.IN, hard=1, reason=TIME)),  # type: ignore[arg-type]
    ("expire out without peer", lambda: Expire(spi=300, direction=Direction.OUT, hard=True, reason=TIME)),
    ("expire in with peer", lambda: Expire(spi=300, direction=Direction.IN, hard=True, reason=TIME, remote=REMOTE4)),
    ("delete out without peer", lambda: Delete(1, 300, Direction.OUT)),
    ("migrate out without old peer", lambda: Migrate(1, 300, Direction.OUT, REMOTE4)),
    ("migrate in with peer", lambda: Migrate(1, 300, Direction.IN, REMOTE4, REMOTE4)),
    ("migrate across families", lambda: Migrate(1, 300, Direction.OUT, REMOTE6, REMOTE4)),
    ("migrate new_remote str", lambda: Migrate(1, 300, Direction.IN, "192.0.2.9")),  # type: ignore[arg-type]
    ("migrate new_local across families", lambda: Migrate(1, 300, Direction.IN, REMOTE4, new_local=LOCAL6)),
    ("migrate new_local str", lambda: Migrate(1, 300, Direction.IN, REMOTE4, new_local="192.0.2.9")),  # type: ignore[arg-type]
    ("delete in with peer", lambda: Delete(1, 300, Direction.IN, REMOTE4)),
    ("ike empty", lambda: Ike(data=b"", remote=REMOTE4)),
    ("ike families", lambda: Ike(data=b"x", remote=REMOTE4, local=LOCAL6)),
    ("send_ike bytearray", lambda: SendIke(1, bytearray(b"x"), REMOTE4)),  # type: ignore[arg-type]
    ("reply to event", lambda: Reply(1, MsgType.ACQUIRE, Errno.OK)),
    ("getspi reply without spi", lambda: Reply(1, MsgType.GETSPI, Errno.OK)),
    ("add reply with spi", lambda: Reply(1, MsgType.ADD, Errno.OK, spi=300)),
    ("more on flush", lambda: Reply(1, MsgType.FLUSH, Errno.OK, more=True)),
    ("sas on failed dump", lambda: Reply(1, MsgType.DUMP, Errno.EIO, sas=(sa_info(1),))),
    ("drop name", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=(("Auth", 1),))),
    ("drop count", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=(("auth", -1),))),
    ("drops list", lambda: Reply(1, MsgType.DUMP, Errno.OK, drops=[("auth", 1)])),  # type: ignore[arg-type]
    ("errno int", lambda: Reply(1, MsgType.FLUSH, 0)),  # type: ignore[arg-type]
    ("sa_info state", lambda: SaInfo(**(vars(sa_info(1)) | {"state": "alive"}))),
    ("mature without alg", lambda: SaInfo(**(vars(sa_info(1)) | {"alg": None}))),
    ("sa_info window", lambda: SaInfo(**(vars(sa_info(1)) | {"replay_window": 31}))),
    ("sa_info counter name", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"Packets": 1}}))),
    ("sa_info counter name with a comma", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"a,b": 1}}))),
    ("sa_info counter negative", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {"packets": -1}}))),
    ("sa_info counters list", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": [("packets", 1)]}))),
    ("sa_info 65 counters", lambda: SaInfo(**(vars(sa_info(1)) | {"counters": {f"c{i}": 0 for i in range(65)}}))),
    ("dump sas with other counters", lambda: Reply(1, MsgType.DUMP, Errno.OK, sas=(
        sa_info(1), SaInfo(**(vars(sa_info(2)) | {"counters": {"packets": 1}}))))),
    ("policy_info out_spi", lambda: PolicyInfo(1, 1, Action.PROTECT, 1, 255, 0, SEL4)),
    ("first use on an outbound SA", lambda: out_sa(report_first_use=True)),
    ("first use int", lambda: in_sa(report_first_use=1)),
    ("first_use spi 255", lambda: FirstUse(spi=255)),
    ("first_use with an id", lambda: FirstUse(req_id=1, spi=300)),
]


@pytest.mark.parametrize(("name", "build"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_values_cannot_be_built(name: str, build: Callable[[], object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        build()


def test_value_helpers() -> None:
    assert SEL4.family == 4 and SEL6_TCP.family == 6
    assert (SEL4.src_lo, SEL4.src_hi) == (ip_address("10.1.0.0"), ip_address("10.1.255.255"))
    assert SEL6_TCP.dport == (443, 443) and SEL6_TCP.sport == (0, 65535)
    assert LOCAL6.family == 6
    assert Alg.AES128GCM16.key_len == 20 and Alg.AES256GCM16.key_len == 36
    larval = SaInfo(**(vars(sa_info(1)) | {"state": "larval", "alg": None, "local": None, "remote": None}))
    # the codec carries whichever counters the worker names, none included
    for counters in ({"fragments": 3, "packets": 1}, {}):
        sa = SaInfo(**(vars(sa_info(1)) | {"counters": counters}))
        reply = Reply(1, MsgType.DUMP, Errno.OK, sas=(sa,))
        assert decode(encode(reply)) == reply
    assert decode(encode(Reply(1, MsgType.DUMP, Errno.OK, sas=(larval,)))) == Reply(
        1, MsgType.DUMP, Errno.OK, sas=(larval,)
    )


# ------------------------------------------------------ the quick test of the hot constructors
# Endpoint, Selector, Lifetime, SaSpec, Policy and the messages of a client's set-up accept the
# common case with one expression (_plain) before their one-by-one checks.  It must admit nothing
# those checks refuse: every field of every base value below, set to every odd value below in
# turn, builds (or fails with the same exception) with the quick test as with the checks alone.


class _Port(int):
    """An int subclass: what an exact type test and isinstance tell apart."""


ODD_VALUES: list[object] = [
    -1, 0, 1, 2, 20, 31, 32, 36, 255, 256, 257, U16, U16 + 1, 65536, 65537, U32 - 1, U32, U32 + 1, U64, U64 + 1,
    -(2**70), True, False, None, "10.0.0.1", "", b"", b"x", SECRET128, SECRET256, bytearray(SECRET128),
    _Port(500), 1.0, (), (0, U16), (1, 0), (0, U16 + 1), (-1, 5), (True, 5), (5, 5), (0, 1, 2), [0, U16],
    ip_address("10.0.0.3"), ip_address("10.0.0.0"), ip_address("255.255.255.255"), ip_address("2001:db8::1"),
    ip_address("::"), LOCAL4, REMOTE4, LOCAL6, REMOTE6, Lifetime(), Lifetime(bytes=5), Lifetime(packets=1, seconds=9),
    SEL4, SEL6_TCP, (SEL4,), (SEL4, SEL6_TCP), (SEL4,) * 8, (SEL4,) * 9, (SEL4, "x"), [SEL4],
    Direction.IN, Direction.OUT, Alg.AES128GCM16, Alg.AES256GCM16, Action.PROTECT, Action.BYPASS, Action.DISCARD,
    MsgType.GETSPI, MsgType.DUMP, MsgType.UPDATE, MsgType.ACQUIRE, Errno.OK, Errno.ENOENT,
    (("auth", 1),), out_sa(), Policy(1, 1, Action.PROTECT, 1, SEL4),
]
BASE_VALUES: list[object] = [
    LOCAL4, REMOTE6, SEL4, SEL6_TCP, Selector(A1, A2, A1, A1, 17, (53, 53), (0, U16)), Lifetime(),
    Lifetime(5, 6, 7), out_sa(), in_sa(esn=False), in_sa(esn=True, seq_start=U32 + 5, report_first_use=True),
    out_sa(esn=False, seq_limit=900, seq_notify=800, seq_start=10, soft=Lifetime(seconds=5), hard=Lifetime(seconds=9)),
    out_sa(local=LOCAL6, remote=REMOTE6, selectors=(SEL6_TCP, SEL6_TCP)), Policy(3, 9, Action.PROTECT, 4, SEL4),
    Policy(3, 9, Action.BYPASS, 0, SEL6_TCP), GetSpi(1, 256, U32), GetSpi(9, 0x1000, 0x2000, 30),
    Update(2, in_sa()), Add(3, out_sa()), SpdAdd(4, Policy(3, 9, Action.PROTECT, 4, SEL4)), SendIke(5, b"x", REMOTE4),
    SendIke(6, b"y" * 50, REMOTE6, LOCAL6), Ike(data=b"z", remote=REMOTE4),
    Ike(data=b"z", remote=REMOTE4, local=LOCAL4), Reply(1, MsgType.GETSPI, Errno.OK, spi=300),
    Reply(2, MsgType.GETSPI, Errno.ENOENT), Reply(3, MsgType.UPDATE, Errno.OK),
    Reply(4, MsgType.SEND_IKE, Errno.EIO), Reply(5, MsgType.DUMP, Errno.OK, more=True, drops=(("auth", 1),)),
]


def _outcome(build: Callable[[], object]) -> str:
    try:
        build()
    except (TypeError, ValueError) as exc:
        return type(exc).__name__
    return "ok"


def _both_ways(cls: type, fields: dict[str, object]) -> tuple[str, str]:
    quick = _outcome(lambda: cls(**fields))
    plain = vars(cls)["_plain"]
    cls._plain = lambda self: False  # type: ignore[attr-defined]
    try:
        return quick, _outcome(lambda: cls(**fields))
    finally:
        cls._plain = plain  # type: ignore[attr-defined]


@pytest.mark.parametrize("base", BASE_VALUES, ids=lambda v: type(v).__name__)
def test_the_quick_test_admits_only_what_the_checks_admit(base: object) -> None:
    cls = type(base)
    assert "_plain" in vars(cls)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    assert _both_ways(cls, fields) == ("ok", "ok")
    differ, refused = [], 0
    for name in fields:
        for odd in ODD_VALUES:
            quick, checked = _both_ways(cls, fields | {name: odd})
            refused += checked != "ok"
            if quick != checked:
                differ.append((name, odd, quick, checked))
    assert differ == []
    assert refused > len(fields) * len(ODD_VALUES) // 2   # the odd values do break things


def test_quick_init_keeps_the_dataclass_contract() -> None:
    """quick_init's __init__ takes what the generated one took and the values stay frozen."""
    assert Reply(3, MsgType.UPDATE, Errno.OK) == Reply(req_id=3, type=MsgType.UPDATE, errno=Errno.OK, spi=None)
    assert hash(LOCAL4) == hash(Endpoint(ip_address("192.0.2.10"), 4500))
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOCAL4.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Ike(b"x", REMOTE4)  # type: ignore[misc]   # events stay keyword-only
    with pytest.raises(TypeError):
        Flush()  # type: ignore[call-arg]
    assert dataclasses.replace(out_sa(), spi=300).spi == 300
    with pytest.raises(ValueError):
        dataclasses.replace(out_sa(), spi=255)   # replace builds through the checks too


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


# the requests of a client's set-up: GETSPI, UPDATE and ADD, SPDADD, SEND_IKE (above); an SA with
# one selector here, the same layout in other variants below
_SETUP_REQUESTS = [
    GetSpi(1, 0xC0000000, 0xCFFFFFFF, 0), GetSpi(U32, 256, 256), GetSpi(9, 0xC0000000, 0xC0000000, U32),
    Update(2, in_sa(selectors=(SEL4,))),
    SpdAdd(5, Policy(1, 100, Action.PROTECT, 1, SEL4)), SpdAdd(6, Policy(U32, 0, Action.BYPASS, 0, SEL6_TCP)),
    SendIke(7, b"x" * 5, REMOTE4, LOCAL4), SendIke(8, b"abcd", REMOTE6),
]
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
    assert quick == general == msg and _field_types(quick) == _field_types(msg)
    assert hash(quick) == hash(msg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.req_id = 2  # type: ignore[union-attr]
    taken = 0
    for variant in _changed(data, values):
        quick, general = _quick_way_and_general(variant)
        if quick is not None:
            assert quick == general and _field_types(quick) == _field_types(general)
            taken += 1
    quick, general = _quick_way_and_general(bytearray(data))   # a slice of it would not be bytes
    assert quick is None or (quick == general and _field_types(quick) == _field_types(msg))
    return taken


@pytest.mark.parametrize("msg", _SETUP_REQUESTS, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_quick_request_decode_admits_no_change_the_general_refuses(msg: Message) -> None:
    """A set-up request as encode lays it out goes its quick way, equal to the general; every byte
    of it set to every value, cut short anywhere or grown: the quick way gives None or the general
    way's message, to the types of its values."""
    taken = _assert_quick_admits_only_the_general(msg, lambda _: range(256))
    assert taken > 256 * 3   # the request id's bytes may be anything but 0 (and more, by message)


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
)


@given(_SETUP_STRATEGIES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quick_request_decode_takes_every_set_up_request(msg: Message) -> None:
    """Any GETSPI, UPDATE or ADD without a reservation, SPDADD, SEND_IKE: encoded, it goes its
    quick way, to what the general way decodes."""
    quick, general = _quick_way_and_general(encode(msg))
    assert quick == general == msg and _field_types(quick) == _field_types(msg)


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


def test_folded_extension_structs_pack_what_ext_of_the_body_packs() -> None:
    """The request encoders' one-struct extensions are byte for byte _ext(type, body)."""
    from tunsec.dataplane.pipe import encoding as enc

    class _V4(IPv4Address):
        pass

    class _V6(IPv6Address):
        pass

    for addr in (A1, ip_address("255.255.255.255"), ip_address("::"), ip_address("ffff::1"), _V4(7), _V6(2**127 + 5)):
        assert enc._pack_addr(addr) == addr.packed.ljust(16, b"\0")
    for ep in (LOCAL4, REMOTE6):
        assert enc._endpoint_ext(Ext.ADDR_LOCAL, ep) == enc._ext(Ext.ADDR_LOCAL, enc._pack_endpoint(ep))
    for sel in (SEL4, SEL6_TCP, Selector(A1, A2, A1, A1, 17, (53, 53), (0, U16))):
        assert enc._selector_ext(sel) == enc._ext(Ext.SELECTOR, enc._pack_selector(sel))
    for lt in (Lifetime(), Lifetime(U64, 6, 7)):
        assert enc._lifetime_ext(Ext.LIFETIME_HARD, lt) == enc._ext(Ext.LIFETIME_HARD, enc._pack_lifetime(lt))
    sa = out_sa(seq_start=5, replay_window=64, esn=True)
    body = struct.pack("!IBBBBIIQ", sa.spi, sa.direction, sa.alg, 1, 0, 64, sa.reqid, 5)
    assert enc._sa_exts(sa)[0] == enc._ext(Ext.SA, body)


# encode packs the messages of a client's set-up (and the worker's IKE events and answers) header
# and all in one struct each: exactly the general way's bytes, or its error.
_WHOLE_STRATEGIES = st.one_of(
    spi_ranges(),
    st.builds(Update, req_ids, sa_specs()),
    st.builds(Add, req_ids, sa_specs()),
    st.builds(SpdAdd, req_ids, policies()),
    st.tuples(req_ids, ike_args()).map(lambda t: SendIke(t[0], *t[1])),
    ike_args().map(lambda a: Ike(data=a[0], remote=a[1], local=a[2])),
    replies(),
)


def _encoded_both_ways(msg: Message) -> tuple[object, object]:
    from tunsec.dataplane.pipe import encoding as enc

    def outcome(fn: Callable[[Message], bytes]) -> object:
        try:
            return fn(msg)
        except ValueError as err:
            return repr(err)

    assert type(msg) in enc._WHOLE
    return outcome(enc.encode), outcome(enc._encode_general)


@given(_WHOLE_STRATEGIES)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_whole_datagram_encode_is_the_general_encode(msg: Message) -> None:
    whole, general = _encoded_both_ways(msg)
    assert whole == general


class _SubV4(IPv4Address):
    pass


class _SubV6(IPv6Address):
    pass


_SUB_SEL = Selector(_SubV4("10.0.0.1"), _SubV4("10.0.0.2"), _SubV4("10.0.0.1"), _SubV4("10.0.0.9"))
_WHOLE_EXAMPLES = [
    # addresses of subclasses (packed through int(), not their slot)
    Ike(data=b"abc", remote=Endpoint(_SubV6("2001:db8::1"), 500), local=Endpoint(_SubV6("2001:db8::2"), 4500)),
    Update(2, out_sa(local=Endpoint(_SubV4("192.0.2.1"), 500), remote=Endpoint(_SubV4("192.0.2.2"), 4500),
                     selectors=(_SUB_SEL,))),
    SpdAdd(3, Policy(1, 100, Action.PROTECT, 1, _SUB_SEL)),
    *[m for m in REALISTIC if isinstance(m, (GetSpi, Update, Add, SpdAdd, SendIke, Ike, Reply))],
    *_SETUP_REQUESTS,
    *[Ike(data=b"\x01" * n, remote=REMOTE4) for n in range(1, 9)],
    SendIke(1, b"\xab" * MAX_IKE_DATA, REMOTE6, LOCAL6),   # the largest
    Update(3, in_sa(seq_limit=1000, seq_notify=900)), Add(4, out_sa(selectors=())),
    Reply(5, MsgType.DUMP, Errno.OK), Reply(5, MsgType.DUMP, Errno.ENOENT), Reply(6, MsgType.UPDATE, Errno.EEXIST),
]


@pytest.mark.parametrize("msg", _WHOLE_EXAMPLES, ids=lambda m: f"{type(m).__name__}-{len(encode(m))}")
def test_whole_datagram_encode_of_examples(msg: Message) -> None:
    whole, general = _encoded_both_ways(msg)
    assert whole == general and decode(whole) == msg   # type: ignore[arg-type]


def test_whole_datagram_sa_structs_are_few() -> None:
    """One struct per (key length, selector count, reservation or not): bounded by the algorithms."""
    from tunsec.dataplane.pipe import encoding as enc

    for alg in Alg:
        for n in range(MAX_SELECTORS + 1):
            for limit in (0, 1000):
                sa = out_sa(alg=alg, key=bytes(alg.key_len), selectors=(SEL4,) * n, seq_limit=limit)
                assert encode(Update(1, sa)) == enc._encode_general(Update(1, sa))
    assert len(enc._SA_WHOLE) <= len({alg.key_len for alg in Alg}) * (MAX_SELECTORS + 1) * 2


def _outcome_of(build: Callable[[], object]) -> object:
    try:
        return build()
    except (TypeError, ValueError) as err:
        return type(err), str(err)


def test_encode_spi_is_the_getspi_answer() -> None:
    """The worker's shortcut for a GETSPI's success encodes what Reply would, and refuses what
    Reply refuses (with the same error)."""
    for req_id in (1, 7, U32):
        for spi in (256, 0xC0000001, U32):
            reply = Reply(req_id, MsgType.GETSPI, Errno.OK, spi=spi)
            assert encode_spi(req_id, spi) == encode(reply) and decode(encode_spi(req_id, spi)) == reply
    for req_id, spi in ((0, 256), (U32 + 1, 256), (True, 256), (1.0, 256), (1, 255), (1, U32 + 1), (1, True),
                        (1, None), (1, 256.0)):
        shortcut = _outcome_of(lambda: encode_spi(req_id, spi))   # type: ignore[arg-type]  # noqa: B023
        checked = _outcome_of(lambda: Reply(req_id, MsgType.GETSPI, Errno.OK, spi=spi))  # type: ignore[arg-type]  # noqa: B023
        assert isinstance(shortcut, tuple) and shortcut == checked
    for req_id in (True, 1.0, "1"):
        shortcut = _outcome_of(lambda: encode_ok(req_id, MsgType.UPDATE))   # type: ignore[arg-type]  # noqa: B023
        checked = _outcome_of(lambda: Reply(req_id, MsgType.UPDATE, Errno.OK))   # type: ignore[arg-type]  # noqa: B023
        assert isinstance(shortcut, tuple) and shortcut == checked
