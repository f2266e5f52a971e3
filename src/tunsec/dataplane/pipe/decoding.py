"""Bytes to messages: decode, which checks everything and raises only PipeError.

decode tries the quick decoder for the datagram's size and type (quick.py), which takes only bytes
laid out exactly as encoding.py lays them out; everything else, and anything a quick decoder turns
down, goes to the one general decoder here (_decode), which names what is wrong."""

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, NamedTuple

from tunsec.dataplane.pipe.fields import (
    _ACTION_OF,
    _ADDR_CACHE,
    _ALG_OF,
    _DIRECTION_OF,
    _ERRNO_OF,
    _EXT_OF,
    _OK,
    _OWED,
    _TYPE_OF,
    _addr_or_none,
)
from tunsec.dataplane.pipe.messages import (
    Acquire,
    Add,
    AddrAdded,
    Delete,
    Dump,
    Expire,
    FirstUse,
    Flush,
    GetSpi,
    Ike,
    IkeSpiAdd,
    IkeSpiDelete,
    IkeSpiKey,
    InvalidSpi,
    Message,
    Migrate,
    Reply,
    Reserve,
    ReserveLow,
    SendIke,
    SpdAdd,
    SpdDelete,
    SpdFlush,
    Update,
)
from tunsec.dataplane.pipe.protocol import (
    _KNOWN_FLAGS,
    FLAG_MORE,
    FLAG_REPLY,
    HEADER_LEN,
    MAX_MESSAGE,
    MAX_SA_COUNTERS,
    VERSION,
    Action,
    Alg,
    Direction,
    Errno,
    ExpireReason,
    Ext,
    IPAddress,
    MsgType,
    PipeError,
)
from tunsec.dataplane.pipe.quick import _QUICK_WAY, _SPI_REPLY, _quick_reply
from tunsec.dataplane.pipe.values import (
    _DROP_NAME,
    _STATES,
    Endpoint,
    Lifetime,
    Policy,
    PolicyInfo,
    SaInfo,
    SaSpec,
    Selector,
)
from tunsec.dataplane.pipe.wire import (
    _BODY_LEN,
    _DATA_HDR,
    _DROP_HDR,
    _ENDPOINT,
    _EXPIRE,
    _EXT_HDR,
    _HEADER,
    _IKE_PEER,
    _KEY_HDR,
    _LIFETIME,
    _POLICY,
    _POLICY_INFO,
    _SA,
    _SA_COUNTERS_HDR,
    _SA_ESN,
    _SA_FIRST_USE,
    _SA_HARD_FIRED,
    _SA_ID,
    _SA_INFO,
    _SA_SOFT_FIRED,
    _SCHEMA,
    _SELECTOR,
    _SEQ_LIMIT,
    _SPI_RANGE,
    _U32_BODY,
    _reply_schema,
    _Schema,
)

# ------------------------------------------------------------------ decoding

# Tuples of a variable length are built as tuple([...]), never tuple(<generator>):
# CPython builds the latter as a 10-tuple resized to fit, and when it dies it
# goes to the free list of its final length (2000 kept per length), which only
# an exact-size tuple takes from again.  A DUMP answer's 19 drop counters did
# that on every `status`: the control process grew by ~0.5 MiB per length
# until the lists were full (docs/benchmarks.md, "Memory under rekeys").


_TYPES: Final = frozenset(int(t) for t in MsgType)
_ERRNOS: Final = frozenset(int(e) for e in Errno)


def _enum(members: dict[int, Any], kind: type[IntEnum], value: int) -> Any:
    """members[value], or the ValueError kind(value) raises for a value it does not know."""
    found = members.get(value)
    return found if found is not None else kind(value)


class _Malformed(Exception):
    def __init__(self, detail: str, errno: Errno = Errno.EINVAL) -> None:
        super().__init__(detail)
        self.errno = errno
        self.detail = detail


class _Header(NamedTuple):
    # a tuple, not a frozen dataclass: every message builds one
    version: int
    type: int
    errno: int
    req_id: int
    flags: int
    reserved: bytes
    length: int

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    @property
    def is_request(self) -> bool:
        # Unknown types count as requests: only events use ids of 0 and
        # every event type is known, so the sender is waiting on this id.
        known_event = self.type in _TYPES and MsgType(self.type).is_event
        return not self.is_reply and self.req_id != 0 and not known_event


def decode(data: bytes) -> Message:
    """Parse one datagram.  Raises PipeError, and nothing else, if malformed."""
    # by size and type byte first: an answer is never longer than a GETSPI's, a request always is
    quick: Message | None = None
    try:
        if len(data) <= _SPI_REPLY.size:
            quick = _quick_reply(data)
        elif (way := _QUICK_WAY.get(data[1])) is not None:
            quick = way(data)
    except (struct.error, ValueError, TypeError):
        # not meant to happen (the tests hold the quick ways to None for what they cannot take), but
        # should one trip on a datagram, the general way says what is wrong with it as a PipeError
        quick = None
    return quick if quick is not None else _decode(data)


def _decode(data: bytes) -> Message:
    """decode without its quick ways (the plain answers, the set-up's requests, the IKE event)."""
    if len(data) < HEADER_LEN:
        raise PipeError(Errno.EINVAL, f"{len(data)} bytes is shorter than the header")
    hdr = _Header._make(_HEADER.unpack_from(data))
    try:
        return _decode_message(hdr, bytes(data))
    except _Malformed as e:
        errno, detail = e.errno, e.detail
    except (ValueError, TypeError, struct.error) as e:
        # Raised by the constructors' validation: the texts are ours and
        # never quote key material.
        errno, detail = Errno.EINVAL, str(e)
    raise PipeError(errno, detail, req_id=hdr.req_id, msg_type=hdr.type, is_request=hdr.is_request)


def _decode_message(hdr: _Header, data: bytes) -> Message:
    msg_type = _check_header(hdr, len(data))
    if hdr.flags & FLAG_REPLY:
        errno = _reply_errno(hdr)
        # a bare answer (what most requests get): nothing to parse, and no extension is owed (the
        # SPI of a successful GETSPI is, as maybe parts of a DUMP's: the general path checks those)
        if len(data) == HEADER_LEN and (errno is not _OK or msg_type not in _OWED):
            return Reply(hdr.req_id, msg_type, errno, more=bool(hdr.flags & FLAG_MORE))
        exts = _parse_extensions(data, _reply_schema(msg_type, errno))
        return _build_reply(hdr, msg_type, errno, exts)
    _check_origin(hdr, msg_type)
    exts = _parse_extensions(data, _SCHEMA[msg_type])
    return _build(msg_type, hdr.req_id, exts)


def _check_header(hdr: _Header, size: int) -> MsgType:
    if hdr.version != VERSION:
        raise _Malformed(f"version {hdr.version}, expected {VERSION}", Errno.EVERSION)
    if hdr.reserved != bytes(3):
        raise _Malformed("reserved header bytes are not zero")
    if hdr.flags & ~_KNOWN_FLAGS:
        raise _Malformed(f"unknown flags {hdr.flags:#04x}")
    if hdr.length != size:
        raise _Malformed(f"header says {hdr.length} bytes, datagram has {size}")
    if size > MAX_MESSAGE:
        raise _Malformed(f"message of {size} bytes exceeds {MAX_MESSAGE}")
    if hdr.type not in _TYPES:
        raise _Malformed(f"unknown message type {hdr.type}", Errno.ETYPE)
    return _TYPE_OF[hdr.type]


def _reply_errno(hdr: _Header) -> Errno:
    if hdr.errno not in _ERRNOS:
        raise _Malformed(f"unknown errno {hdr.errno}")
    return _ERRNO_OF[hdr.errno]


def _check_origin(hdr: _Header, msg_type: MsgType) -> None:
    if hdr.flags & FLAG_MORE:
        raise _Malformed("flag MORE outside a reply")
    if hdr.errno != 0:
        raise _Malformed("errno set outside a reply")
    if msg_type.is_event and hdr.req_id != 0:
        raise _Malformed(f"event {msg_type.name} with request id {hdr.req_id}")
    if not msg_type.is_event and hdr.req_id == 0:
        raise _Malformed(f"request {msg_type.name} with request id 0")


class _Exts:
    """Extension bodies of one message, by type, in arrival order."""

    __slots__ = ("bodies",)

    def __init__(self, bodies: dict[Ext, list[bytes]]) -> None:
        self.bodies = bodies

    def one(self, ext: Ext) -> bytes:
        return self.bodies[ext][0]

    def opt(self, ext: Ext) -> bytes | None:
        found = self.bodies.get(ext)
        return found[0] if found else None

    def all(self, ext: Ext) -> list[bytes]:
        return self.bodies.get(ext, [])


def _parse_extensions(data: bytes, schema: _Schema) -> _Exts:
    # one loop with the checks inline: it runs for every extension of every message
    bodies: dict[Ext, list[bytes]] = {}
    pos, end, unpack, hdr_size = HEADER_LEN, len(data), _EXT_HDR.unpack_from, _EXT_HDR.size
    while pos < end:
        if end - pos < hdr_size:
            raise _Malformed(f"truncated extension header at offset {pos}")
        length, raw_type = unpack(data, pos)
        if length < hdr_size or length % 4:
            raise _Malformed(f"extension length {length} at offset {pos}")
        if pos + length > end:
            raise _Malformed(f"extension at offset {pos} overruns the message")
        ext = _EXT_OF.get(raw_type)
        if ext is None:
            raise _Malformed(f"unknown extension type {raw_type}")
        if ext not in schema:
            raise _Malformed(f"extension {ext.name} does not belong in this message")
        body = data[pos + hdr_size : pos + length]
        want = _BODY_LEN[ext]
        if want is not None and len(body) != want:
            raise _Malformed(f"extension {ext.name} of {len(body)} bytes, expected {want}")
        if (found := bodies.get(ext)) is None:
            bodies[ext] = [body]
        else:
            found.append(body)
        pos += length
    for ext, (lo, hi) in schema.items():
        n = len(bodies.get(ext, ()))
        if n < lo:
            raise _Malformed(f"missing extension {ext.name}")
        if n > hi:
            raise _Malformed(f"extension {ext.name} appears {n} times, at most {hi}")
    return _Exts(bodies)


def _zero(value: int | bytes, what: str) -> None:
    # Reserved fields must be zero so that a later version can use them.
    if any(value) if isinstance(value, bytes) else value != 0:
        raise _Malformed(f"reserved field in {what} is not zero")


def _flag(value: int, what: str) -> bool:
    if value not in (0, 1):
        raise _Malformed(f"{what}={value}, expected 0 or 1")
    return value == 1


def _variable(body: bytes, head: int, n: int, what: str) -> bytes:
    """The n bytes after a head-byte prefix, checking the zero padding."""
    if len(body) != head + n + (-(head + n) % 4):
        raise _Malformed(f"{what} says {n} bytes but its extension has {len(body) - head}")
    if any(body[head + n :]):
        raise _Malformed(f"padding of {what} is not zero")
    return body[head : head + n]


def _unpack_addr(family: int, raw: bytes) -> IPAddress:
    addr = _addr_or_none(family, raw)
    if addr is not None:
        return addr
    if family not in _ADDR_CACHE:
        raise _Malformed(f"address family {family}")
    raise _Malformed("IPv4 address with non-zero trailing bytes")


def _unpack_endpoint_opt(raw: bytes) -> Endpoint | None:
    family, reserved, port, addr = _ENDPOINT.unpack(raw)
    if reserved:
        _zero(reserved, "address")
    if family == 0:
        if port or any(addr):
            raise _Malformed("unset address with non-zero fields")
        return None
    return Endpoint(_unpack_addr(family, addr), port)


def _unpack_endpoint(raw: bytes) -> Endpoint:
    if raw[0] == 0:
        raise _Malformed("address family 0")
    ep = _unpack_endpoint_opt(raw)
    assert ep is not None
    return ep


def _unpack_address(raw: bytes) -> IPAddress:
    """An endpoint that names an address alone (ADDR_ADDED): port 0."""
    ep = _unpack_endpoint(raw)
    if ep.port:
        raise _Malformed(f"address with port {ep.port}")
    return ep.addr


def _unpack_selector(raw: bytes) -> Selector:
    fam, proto, reserved, sp_lo, sp_hi, dp_lo, dp_hi, s_lo, s_hi, d_lo, d_hi = _SELECTOR.unpack(raw)
    if reserved:
        _zero(reserved, "selector")
    return Selector(
        _unpack_addr(fam, s_lo), _unpack_addr(fam, s_hi),
        _unpack_addr(fam, d_lo), _unpack_addr(fam, d_hi),
        proto, (sp_lo, sp_hi), (dp_lo, dp_hi),
    )  # fmt: skip


def _unpack_lifetime(raw: bytes) -> Lifetime:
    return Lifetime(*_LIFETIME.unpack(raw))


def _unpack_sa(exts: _Exts) -> SaSpec:
    spi, direction, alg, flags, reserved, window, reqid, seq_start = _SA.unpack(exts.one(Ext.SA))
    if reserved:
        _zero(reserved, "SA")
    if flags & ~(_SA_ESN | _SA_FIRST_USE):
        raise _Malformed(f"unknown SA flags {flags:#04x}")
    key_body = exts.one(Ext.KEY)
    if len(key_body) < _KEY_HDR.size:
        raise _Malformed("KEY extension too short")
    key_len, key_reserved = _KEY_HDR.unpack_from(key_body)
    _zero(key_reserved, "KEY")
    limit_body = exts.opt(Ext.SEQ_LIMIT)
    seq_limit, seq_notify = _SEQ_LIMIT.unpack(limit_body) if limit_body is not None else (0, 0)
    return SaSpec(
        spi=spi,
        direction=_enum(_DIRECTION_OF, Direction, direction),
        alg=_enum(_ALG_OF, Alg, alg),
        key=_variable(key_body, _KEY_HDR.size, key_len, "KEY"),
        esn=bool(flags & _SA_ESN),
        replay_window=window,
        reqid=reqid,
        local=_unpack_endpoint(exts.one(Ext.ADDR_LOCAL)),
        remote=_unpack_endpoint(exts.one(Ext.ADDR_REMOTE)),
        soft=_unpack_lifetime(exts.one(Ext.LIFETIME_SOFT)),
        hard=_unpack_lifetime(exts.one(Ext.LIFETIME_HARD)),
        selectors=tuple([_unpack_selector(s) for s in exts.all(Ext.SELECTOR)]),
        seq_start=seq_start,
        seq_limit=seq_limit,
        seq_notify=seq_notify,
        report_first_use=bool(flags & _SA_FIRST_USE),
    )


def _unpack_remote_opt(exts: _Exts) -> Endpoint | None:
    raw = exts.opt(Ext.ADDR_REMOTE)
    return None if raw is None else _unpack_endpoint(raw)


def _unpack_sa_id(exts: _Exts) -> tuple[int, Direction]:
    spi, direction, reserved = _SA_ID.unpack(exts.one(Ext.SA_ID))
    _zero(reserved, "SA_ID")
    return spi, Direction(direction)


def _unpack_reserve(req_id: int, exts: _Exts) -> Reserve:
    spi, direction = _unpack_sa_id(exts)
    limit, notify = _SEQ_LIMIT.unpack(exts.one(Ext.SEQ_LIMIT))
    return Reserve(req_id, spi, direction, limit, notify, _unpack_remote_opt(exts))


def _unpack_migrate(req_id: int, exts: _Exts) -> Migrate:
    spi, direction = _unpack_sa_id(exts)
    new_remote = _unpack_endpoint(exts.one(Ext.ADDR_NEW_REMOTE))
    raw_local = exts.opt(Ext.ADDR_NEW_LOCAL)
    new_local = None if raw_local is None else _unpack_endpoint(raw_local)
    return Migrate(req_id, spi, direction, new_remote, _unpack_remote_opt(exts), new_local)


def _unpack_reserve_low(exts: _Exts) -> ReserveLow:
    spi, direction = _unpack_sa_id(exts)
    body = exts.opt(Ext.SEQ_LIMIT)
    needed, notify = _SEQ_LIMIT.unpack(body) if body is not None else (0, 0)
    if body is not None and (needed == 0 or notify != 0):
        raise _Malformed("SEQ_LIMIT of RESERVE_LOW: needed must be != 0 and notify 0")
    return ReserveLow(spi=spi, direction=direction, needed=needed, remote=_unpack_remote_opt(exts))


def _unpack_ike_spi(exts: _Exts) -> bytes:
    spi = exts.one(Ext.IKE_SPI)
    if not any(spi):
        raise _Malformed("IKE_SPI is zero (no IKE SA has it)")
    return spi


def _unpack_ike_peer(exts: _Exts) -> int:
    body = exts.opt(Ext.IKE_PEER)
    if body is None:
        return 0
    (peer,) = _IKE_PEER.unpack(body)
    if not peer:
        raise _Malformed("IKE_PEER is zero (leave it out: the SA is a peer of its own)")
    return int(peer)


def _unpack_oif(exts: _Exts) -> int:
    body = exts.opt(Ext.OIF)
    if body is None:
        return 0
    oif = _unpack_u32(body)
    if not oif:
        raise _Malformed("OIF is zero (leave it out: the datagram leaves as routed)")
    return oif


def _unpack_data(body: bytes) -> bytes:
    if len(body) < _DATA_HDR.size:
        raise _Malformed("DATA extension too short")
    (n,) = _DATA_HDR.unpack_from(body)
    return _variable(body, _DATA_HDR.size, n, "DATA")


def _unpack_u32(body: bytes) -> int:
    value: int = _U32_BODY.unpack(body)[0]
    return value


def _unpack_policy(exts: _Exts) -> Policy:
    policy_id, priority, action, reserved, reqid = _POLICY.unpack(exts.one(Ext.POLICY))
    _zero(reserved, "POLICY")
    selector = _unpack_selector(exts.one(Ext.SELECTOR))
    return Policy(policy_id, priority, _enum(_ACTION_OF, Action, action), reqid, selector)


def _unpack_delete(req_id: int, exts: _Exts) -> Delete:
    spi, direction, reserved = _SA_ID.unpack(exts.one(Ext.SA_ID))
    _zero(reserved, "SA_ID")
    body = exts.opt(Ext.REQID)
    reqid = None if body is None else _unpack_u32(body)
    if reqid == 0:
        raise _Malformed("REQID is zero (leave it out: the SA whatever its reqid)")
    return Delete(req_id, spi, Direction(direction), _unpack_remote_opt(exts), reqid)


def _unpack_expire(exts: _Exts) -> Expire:
    spi, direction, hard, reason, reserved = _EXPIRE.unpack(exts.one(Ext.EXPIRE))
    _zero(reserved, "EXPIRE")
    current = exts.opt(Ext.LIFETIME_CURRENT)
    return Expire(
        spi=spi,
        direction=Direction(direction),
        hard=_flag(hard, "EXPIRE hard"),
        reason=ExpireReason(reason),
        remote=_unpack_remote_opt(exts),
        current=None if current is None else _unpack_lifetime(current),
    )


def _build(msg_type: MsgType, req_id: int, exts: _Exts) -> Message:
    # a dict, not a match on MsgType.X value patterns: those look each member up in turn
    return _BUILD[msg_type](req_id, exts)


def _build_getspi(req_id: int, exts: _Exts) -> GetSpi:
    lo, hi = _SPI_RANGE.unpack(exts.one(Ext.SPI_RANGE))
    larval = exts.opt(Ext.LARVAL_LIFETIME)
    return GetSpi(req_id, lo, hi, _U32_BODY.unpack(larval)[0] if larval is not None else None)


def _build_ike(_req_id: int, exts: _Exts) -> Ike:
    data, remote, local = _unpack_ike(exts)
    return Ike(data=data, remote=remote, local=local, unmarked=exts.opt(Ext.UNMARKED) is not None)


_BUILD: Final[dict[MsgType, Callable[[int, "_Exts"], Message]]] = {
    MsgType.GETSPI: _build_getspi,
    MsgType.UPDATE: lambda req_id, exts: Update(req_id, _unpack_sa(exts)),
    MsgType.ADD: lambda req_id, exts: Add(req_id, _unpack_sa(exts)),
    MsgType.DELETE: lambda req_id, exts: _unpack_delete(req_id, exts),
    MsgType.FLUSH: lambda req_id, _exts: Flush(req_id),
    MsgType.SPDADD: lambda req_id, exts: SpdAdd(req_id, _unpack_policy(exts)),
    MsgType.SPDDELETE: lambda req_id, exts: SpdDelete(req_id, _unpack_u32(exts.one(Ext.POLICY_ID))),
    MsgType.SPDFLUSH: lambda req_id, _exts: SpdFlush(req_id),
    MsgType.DUMP: lambda req_id, _exts: Dump(req_id),
    MsgType.SEND_IKE: lambda req_id, exts: SendIke(req_id, *_unpack_ike(exts), _unpack_oif(exts),
                                                   exts.opt(Ext.UNMARKED) is not None),
    MsgType.ACQUIRE: lambda _req_id, exts: Acquire(
        policy_id=_unpack_u32(exts.one(Ext.POLICY_ID)), selector=_unpack_selector(exts.one(Ext.SELECTOR))),
    MsgType.EXPIRE: lambda _req_id, exts: _unpack_expire(exts),
    MsgType.INVALID_SPI: lambda _req_id, exts: InvalidSpi(
        spi=_unpack_u32(exts.one(Ext.SPI)), remote=_unpack_endpoint(exts.one(Ext.ADDR_REMOTE))),
    MsgType.IKE: _build_ike,
    MsgType.MIGRATE: _unpack_migrate,
    MsgType.RESERVE: _unpack_reserve,
    MsgType.RESERVE_LOW: lambda _req_id, exts: _unpack_reserve_low(exts),
    MsgType.FIRST_USE: lambda _req_id, exts: FirstUse(spi=_unpack_u32(exts.one(Ext.SPI))),
    MsgType.IKE_SPI_ADD: lambda req_id, exts: IkeSpiAdd(req_id, _unpack_ike_spi(exts), _unpack_ike_peer(exts)),
    MsgType.IKE_SPI_DELETE: lambda req_id, exts: IkeSpiDelete(req_id, _unpack_ike_spi(exts)),
    MsgType.IKE_SPI_KEY: lambda req_id, exts: IkeSpiKey(req_id, exts.one(Ext.IKE_SPI_KEY)),
    MsgType.ADDR_ADDED: lambda _req_id, exts: AddrAdded(addrs=tuple(map(_unpack_address, exts.all(Ext.ADDR_LOCAL)))),
}
assert set(_BUILD) == set(MsgType)


def _unpack_ike(exts: _Exts) -> tuple[bytes, Endpoint, Endpoint | None]:
    local = exts.opt(Ext.ADDR_LOCAL)
    return (
        _unpack_data(exts.one(Ext.DATA)),
        _unpack_endpoint(exts.one(Ext.ADDR_REMOTE)),
        None if local is None else _unpack_endpoint(local),
    )


def _build_reply(hdr: _Header, msg_type: MsgType, errno: Errno, exts: _Exts) -> Reply:
    spi_body, current = exts.opt(Ext.SPI), exts.opt(Ext.LIFETIME_CURRENT)
    return Reply(
        hdr.req_id,
        msg_type,
        errno,
        spi=None if spi_body is None else _unpack_u32(spi_body),
        more=bool(hdr.flags & FLAG_MORE),
        sas=_unpack_sa_infos(exts),
        policies=tuple([_unpack_policy_info(b) for b in exts.all(Ext.POLICY_INFO)]),
        drops=tuple([_unpack_drop(b) for b in exts.all(Ext.DROP)]),
        gauges=tuple([_unpack_drop(b, "GAUGE") for b in exts.all(Ext.GAUGE)]),
        current=None if current is None else _unpack_lifetime(current),
    )


def _unpack_sa_infos(exts: _Exts) -> tuple[SaInfo, ...]:
    names_body, bodies = exts.opt(Ext.SA_COUNTERS), exts.all(Ext.SA_INFO)
    if names_body is None:
        if bodies:
            raise _Malformed("SA_INFO without the SA_COUNTERS that names its counters")
        return ()
    if not bodies:
        raise _Malformed("SA_COUNTERS without SA_INFO")
    names = _unpack_sa_counters(names_body)
    counters = struct.Struct(f"!{len(names)}Q")
    size = _SA_INFO.size + counters.size
    want = size + -size % 4
    infos = []
    for body in bodies:
        if len(body) != want:
            raise _Malformed(f"SA_INFO of {len(body)} bytes, expected {want} for {len(names)} counters")
        _zero(body[size:], "SA_INFO padding")
        infos.append(_unpack_sa_info(body, dict(zip(names, counters.unpack_from(body, _SA_INFO.size), strict=True))))
    return tuple(infos)


def _unpack_sa_counters(body: bytes) -> list[str]:
    if len(body) < _SA_COUNTERS_HDR.size:
        raise _Malformed("SA_COUNTERS extension too short")
    n, reserved = _SA_COUNTERS_HDR.unpack_from(body)
    _zero(reserved, "SA_COUNTERS")
    raw = _variable(body, _SA_COUNTERS_HDR.size, n, "SA_COUNTERS")
    if not raw.isascii():
        raise _Malformed("SA_COUNTERS names are not ASCII")
    names = raw.decode("ascii").split(",") if raw else []
    if len(names) > MAX_SA_COUNTERS or len(set(names)) != len(names):
        raise _Malformed(f"SA_COUNTERS names {len(names)} counters, some twice or more than {MAX_SA_COUNTERS}")
    for name in names:
        if not _DROP_NAME.fullmatch(name):
            raise _Malformed(f"per-SA counter name {name!r}")
    return names


def _unpack_sa_info(body: bytes, counters: dict[str, int]) -> SaInfo:
    (spi, direction, state, alg, flags, reqid, window, local, remote,
     seq, age) = _SA_INFO.unpack_from(body)  # fmt: skip
    if flags & ~(_SA_ESN | _SA_SOFT_FIRED | _SA_HARD_FIRED):
        raise _Malformed(f"unknown SA_INFO flags {flags:#04x}")
    if state >= len(_STATES):
        raise _Malformed(f"SA state {state}")
    return SaInfo(
        spi=spi,
        direction=Direction(direction),
        state=_STATES[state],
        alg=None if alg == 0 else Alg(alg),
        esn=bool(flags & _SA_ESN),
        reqid=reqid,
        replay_window=window,
        local=_unpack_endpoint_opt(local),
        remote=_unpack_endpoint_opt(remote),
        seq=seq,
        soft_fired=bool(flags & _SA_SOFT_FIRED),
        hard_fired=bool(flags & _SA_HARD_FIRED),
        age_seconds=age,
        counters=counters,
    )


def _unpack_policy_info(body: bytes) -> PolicyInfo:
    policy_id, priority, action, reserved, reqid, out_spi, packets, sel = _POLICY_INFO.unpack(body)
    _zero(reserved, "POLICY_INFO")
    return PolicyInfo(policy_id, priority, Action(action), reqid, out_spi, packets, _unpack_selector(sel))


def _unpack_drop(body: bytes, what: str = "DROP") -> tuple[str, int]:
    """A DROP's (name, count), or a GAUGE's (same layout)."""
    if len(body) < _DROP_HDR.size:
        raise _Malformed(f"{what} extension too short")
    name_len, reserved, count = _DROP_HDR.unpack_from(body)
    _zero(reserved, what)
    raw = _variable(body, _DROP_HDR.size, name_len, what)
    if not raw.isascii():
        raise _Malformed(f"{what} name is not ASCII")
    return raw.decode("ascii"), count
