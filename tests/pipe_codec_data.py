"""What the pipe codec tests share: hypothesis strategies for every value and message, realistic
values, the extension lengths docs/pipe.md gives, and helpers to take datagrams apart and patch them."""

import dataclasses
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tunsec.dataplane.pipe import (
    HEADER_LEN,
    Acquire,
    Action,
    Add,
    AddrAdded,
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
    IkeSpiAdd,
    IkeSpiDelete,
    IkeSpiKey,
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
ike_spis = st.binary(min_size=8, max_size=8).filter(any)
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
    if msg_type is MsgType.DELETE and ok:
        return Reply(draw(req_ids), msg_type, errno, current=draw(st.none() | lifetimes))
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
    st.tuples(req_ids, ike_args(), st.just(0) | u32s, st.booleans()).map(lambda t: SendIke(t[0], *t[1], t[2], t[3])),
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
    st.tuples(ike_args(), st.booleans()).map(lambda t: Ike(data=t[0][0], remote=t[0][1], local=t[0][2],
                                                           unmarked=t[1])),
    st.builds(FirstUse, spi=spis),
    st.builds(Migrate, req_ids, spis, st.just(Direction.IN), endpoints()),
    endpoints().flatmap(
        lambda e: st.builds(
            Migrate, req_ids, spis, st.just(Direction.OUT), endpoints().filter(lambda n: n.family == e.family),
            st.just(e),
        )
    ),
    st.builds(IkeSpiAdd, req_ids, ike_spis, st.integers(0, (1 << 64) - 1)),
    st.builds(IkeSpiDelete, req_ids, ike_spis),
    st.builds(IkeSpiKey, req_ids, st.binary(min_size=16, max_size=16)),
    st.builds(AddrAdded, addrs=st.lists(st.sampled_from([4, 6]).flatmap(addrs), max_size=16).map(tuple)),
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
DROP_NAMES += ["invalid_spi_source_limit", "invalid_spi_rate_limit"]
DROP_NAMES += ["ike_too_big", "icmp_quote", "ike_source_limit", "ike_known_share", "ike_known_full"]
DROP_NAMES += ["ike_known_source"]
DROP_NAMES += ["ike_proven_source", "ike_proven_full"]

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
    Delete(16, 0xCAFE0002, Direction.OUT, REMOTE4, reqid=0x7777),   # only the SA of that reqid
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
    # an IKE SA established, then rekeyed away: its IKE has a reserve in the worker meanwhile
    IkeSpiAdd(24, bytes.fromhex("8a3f01c27d5e9b10"), 0x1D5E_7A11_CE00_0001),   # all its peer's SAs: one share
    IkeSpiDelete(25, bytes.fromhex("8a3f01c27d5e9b10")),
    IkeSpiKey(26, bytes.fromhex("000102030405060708090a0b0c0d0e0f")),   # a new worker's first request
    # a hard EXPIRE carries the SA's final counters (PF_KEY's current lifetime); DUMP the worker's gauges
    Expire(spi=0xC0000123, direction=Direction.IN, hard=True, reason=ExpireReason.TIME,
           current=Lifetime(bytes=1 << 40, packets=12345, seconds=3600)),
    Expire(spi=0xC1A2B3C4, direction=Direction.OUT, hard=True, reason=ExpireReason.BYTES, remote=REMOTE4,
           current=Lifetime(bytes=999_999, packets=1000)),
    Reply(21, MsgType.DUMP, Errno.OK, drops=DROPS,
          gauges=(("live_sas", 2), ("live_cipher_ctxs", 2), ("policies", 1))),
    # a DELETE's answer carries the SA's final counters, read as the worker removed it
    Reply(14, MsgType.DELETE, Errno.OK, current=Lifetime(bytes=1 << 40, packets=12345, seconds=3600)),
    Reply(15, MsgType.DELETE, Errno.OK),
    Reply(16, MsgType.DELETE, Errno.ENOENT),
    # IKE to an unauthenticated address a full tunnel's TUN routes capture: by the uplink's interface (OIF)
    SendIke(14, b"ike", REMOTE4, LOCAL4, oif=7),   # by the uplink's interface (OIF)
    SendIke(15, b"ike", REMOTE6, None, oif=0xFFFFFFFF),
    # an IKE_SA_INIT request that came without the non-ESP marker, and its answer that leaves so
    Ike(data=b"\x22" * 40, remote=REMOTE4, local=LOCAL4, unmarked=True),
    SendIke(16, b"\x23" * 40, REMOTE4, LOCAL4, unmarked=True),
    SendIke(17, b"\x23" * 40, REMOTE6, None, oif=9, unmarked=True),
    # the host added addresses (the control process's watch: the worker holds no netlink socket); none: any
    AddrAdded(addrs=(ip_address("192.0.2.10"), ip_address("2001:db8::10"))),
    AddrAdded(),
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


# every extension's length in docs/pipe.md's tables (test_pipe_codec.py pins them)
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
    Ext.IKE_SPI: 12,
    Ext.IKE_PEER: 12,
    Ext.UNMARKED: 4,
    Ext.REQID: 8,
}


def field_types(value: object) -> object:
    """The types of a value's fields, and of theirs, all the way down."""
    if isinstance(value, tuple):
        return tuple([field_types(v) for v in value])
    if dataclasses.is_dataclass(value):
        return (type(value), {k: field_types(v) for k, v in vars(value).items()})
    return type(value)


# two addresses for values built by hand
A1, A2 = ip_address("10.0.0.1"), ip_address("10.0.0.2")


# the requests of a client's set-up: GETSPI, UPDATE and ADD, SPDADD, SEND_IKE; an SA with
# one selector here (test_pipe_quick_decode.py has the same layout in other variants)
SETUP_REQUESTS = [
    GetSpi(1, 0xC0000000, 0xCFFFFFFF, 0), GetSpi(U32, 256, 256), GetSpi(9, 0xC0000000, 0xC0000000, U32),
    Update(2, in_sa(selectors=(SEL4,))),
    SpdAdd(5, Policy(1, 100, Action.PROTECT, 1, SEL4)), SpdAdd(6, Policy(U32, 0, Action.BYPASS, 0, SEL6_TCP)),
    SendIke(7, b"x" * 5, REMOTE4, LOCAL4), SendIke(8, b"abcd", REMOTE6),
]
