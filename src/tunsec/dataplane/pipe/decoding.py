"""Bytes to messages: decode, which checks everything and raises only PipeError."""

import struct
from collections.abc import Callable
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, NamedTuple

from tunsec.dataplane.pipe.messages import (
    Acquire,
    Add,
    Delete,
    Dump,
    Expire,
    FirstUse,
    Flush,
    GetSpi,
    Ike,
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
    _U32,
    FLAG_MORE,
    FLAG_REPLY,
    HEADER_LEN,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    MAX_SA_COUNTERS,
    MAX_SELECTORS,
    MIN_SPI,
    REPLAY_MAX,
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
from tunsec.dataplane.pipe.values import (
    _DROP_NAME,
    _KEY_LEN,
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
    _fmt,
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
# the members by value: a dict lookup, not an Enum call, for every message and extension
_TYPE_OF: Final = {int(t): t for t in MsgType}
_ERRNO_OF: Final = {int(e): e for e in Errno}
_EXT_OF: Final = {int(e): e for e in Ext}
_DIRECTION_OF: Final = {int(d): d for d in Direction}
_ALG_OF: Final = {int(a): a for a in Alg}
_ACTION_OF: Final = {int(a): a for a in Action}
_ZERO12: Final = bytes(12)
_OWED: Final = frozenset((MsgType.GETSPI, MsgType.DUMP))   # their successful answers carry extensions
_OK: Final = Errno.OK   # read once: enum members are class attribute lookups


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


# The answers of a client's set-up, a bare header or a GETSPI's header and SPI, checked in one
# expression on the raw fields (_quick_reply) and built without checking again: every answer
# _quick_reply turns down goes the general way, which names what is wrong with it.  What it
# admits, the general way decodes to an equal Reply (tests/test_pipe_codec.py compares the two).
_REPLY_OF: Final = {int(t): t for t in MsgType if not t.is_event}   # the types a reply may name
_SPI_REPLY: Final = struct.Struct(_HEADER.format + _EXT_HDR.format[1:] + _U32_BODY.format[1:])
_SPI_EXT_LEN: Final = _EXT_HDR.size + _U32_BODY.size
_ZERO3: Final = bytes(3)
_GETSPI: Final = MsgType.GETSPI
_SPI_EXT: Final = int(Ext.SPI)
_BARE_REPLY: Final = {"spi": None, "more": False, "sas": (), "policies": (), "drops": (), "gauges": ()}


def _quick_reply(data: bytes) -> Reply | None:
    """The answer in data if it is one of those (see above), else None."""
    size = len(data)
    if size == HEADER_LEN:
        version, raw_type, raw_errno, req_id, flags, reserved, length = _HEADER.unpack(data)
        spi = None
    elif size == _SPI_REPLY.size:
        version, raw_type, raw_errno, req_id, flags, reserved, length, ext_len, ext, spi = _SPI_REPLY.unpack(data)
        if raw_type != _GETSPI or raw_errno != 0 or ext_len != _SPI_EXT_LEN or ext != _SPI_EXT \
                or not MIN_SPI <= spi <= _U32:
            return None
    else:
        return None
    # MORE only on a successful DUMP's answers, which carry extensions: never one of these
    if version != VERSION or flags != FLAG_REPLY or reserved != _ZERO3 or length != size or req_id == 0:
        return None
    msg_type, errno = _REPLY_OF.get(raw_type), _ERRNO_OF.get(raw_errno)
    if msg_type is None or errno is None or (spi is None and errno is _OK and msg_type in _OWED):
        return None
    reply: Reply = _new(Reply)
    vars(reply).update(_BARE_REPLY, req_id=req_id, type=msg_type, errno=errno, spi=spi)
    return reply


_new: Final = object.__new__   # an instance without __init__: its fields are set as checked


# The IKE event (every IKE message a client sends to port 4500) as encode lays it out, DATA then
# ADDR_REMOTE then maybe ADDR_LOCAL, is taken the same way (_quick_ike), and so is the SEND_IKE of
# every answer (the same extensions, a request's id); in another order, or with anything amiss, it
# goes the general way.
_IKE_HEAD: Final = struct.Struct(_HEADER.format + _EXT_HDR.format[1:] + _DATA_HDR.format[1:])
_ENDPOINT_EXT: Final = struct.Struct(_EXT_HDR.format + _ENDPOINT.format[1:])
_IKE_EVENT: Final = int(MsgType.IKE)
_SEND_IKE: Final = int(MsgType.SEND_IKE)
_X_DATA, _X_REMOTE, _X_LOCAL = int(Ext.DATA), int(Ext.ADDR_REMOTE), int(Ext.ADDR_LOCAL)
_ENDPOINT_EXT_LEN: Final = _ENDPOINT_EXT.size


def _quick_ike(data: bytes) -> Ike | SendIke | None:
    """The IKE event or SEND_IKE in data if laid out as encode does and valid, else None."""
    size = len(data)
    # bytes only: the message keeps a slice of it (decode copies anything else first)
    if type(data) is not bytes or not _IKE_HEAD.size + _ENDPOINT_EXT_LEN <= size <= MAX_MESSAGE:
        return None
    version, raw_type, raw_errno, req_id, flags, reserved, length, data_ext_len, data_ext, n = \
        _IKE_HEAD.unpack_from(data)
    end = HEADER_LEN + data_ext_len   # the DATA extension's: its header, length, bytes, padding
    # an event has request id 0, a request any other
    if ((not req_id if raw_type == _SEND_IKE else raw_type != _IKE_EVENT or req_id)
            or version != VERSION or raw_errno or flags or reserved != _ZERO3
            or length != size or data_ext != _X_DATA or not 1 <= n <= MAX_IKE_DATA
            or data_ext_len != _IKE_HEAD.size - HEADER_LEN + n + (-n % 4)
            or any(data[_IKE_HEAD.size + n:end])):
        return None
    # the endpoints fill the rest exactly (so unpack_from stays inside data: DATA's length is the sender's)
    with_local = size == end + 2 * _ENDPOINT_EXT_LEN
    if not with_local and size != end + _ENDPOINT_EXT_LEN:
        return None
    remote = _quick_endpoint(data, end, _X_REMOTE)
    if remote is None:
        return None
    local = None
    if with_local:
        local = _quick_endpoint(data, end + _ENDPOINT_EXT_LEN, _X_LOCAL)
        if local is None or local.addr.version != remote.addr.version:
            return None
    msg: Ike | SendIke = _new(SendIke) if req_id else _new(Ike)
    vars(msg).update(req_id=req_id, data=data[_IKE_HEAD.size:_IKE_HEAD.size + n], remote=remote, local=local)
    return msg


def _quick_endpoint(data: bytes, pos: int, ext_type: int) -> Endpoint | None:
    ext_len, ext, family, reserved, port, raw = _ENDPOINT_EXT.unpack_from(data, pos)
    if ext_len != _ENDPOINT_EXT_LEN or ext != ext_type or reserved:
        return None
    addr = _addr_or_none(family, raw)
    return None if addr is None else Endpoint(addr, port)


# The requests of a client's set-up (GETSPI, UPDATE and ADD, SPDADD; SEND_IKE goes with the IKE
# event above), what the worker decodes per client, are taken the same way when laid out as encode
# lays them out: one struct call over the fixed part, the checks on the raw fields in one
# expression each, the values built without checking again (every check their constructors make is
# implied by those).  In another order, with a SEQ_LIMIT, anything amiss: the general way, which
# names what is wrong.  tests/test_pipe_codec.py holds each to the general way (every one-byte
# change, cut and growth of encoded requests, and every datagram of the fuzz tests).
_SELECTOR_EXT: Final = struct.Struct(_fmt(_EXT_HDR, _SELECTOR))
_SELECTOR_EXT_LEN: Final = _SELECTOR_EXT.size
_X_SELECTOR: Final = int(Ext.SELECTOR)


def _quick_selector(data: bytes, pos: int) -> Selector | None:
    """The SELECTOR extension at pos as _unpack_selector and Selector would build it, or None."""
    (ext_len, ext, family, proto, reserved, sport_lo, sport_hi, dport_lo, dport_hi,
     src_lo, src_hi, dst_lo, dst_hi) = _SELECTOR_EXT.unpack_from(data, pos)  # fmt: skip
    # the fields compare as the addresses do: big-endian, an IPv4 one zero-padded after (checked
    # by _addr_or_none), and a selector's four share its one family
    if (ext_len != _SELECTOR_EXT_LEN or ext != _X_SELECTOR or reserved or src_lo > src_hi or dst_lo > dst_hi
            or sport_lo > sport_hi or dport_lo > dport_hi):
        return None
    s_lo, s_hi = _addr_or_none(family, src_lo), _addr_or_none(family, src_hi)
    d_lo, d_hi = _addr_or_none(family, dst_lo), _addr_or_none(family, dst_hi)
    if s_lo is None or s_hi is None or d_lo is None or d_hi is None:
        return None
    sel: Selector = _new(Selector)
    vars(sel).update(src_lo=s_lo, src_hi=s_hi, dst_lo=d_lo, dst_hi=d_hi, proto=proto,
                     sport=(sport_lo, sport_hi), dport=(dport_lo, dport_hi))
    return sel


def _quick_ends(family: int, reserved: int, port: int, raw: bytes, r_family: int, r_reserved: int,
                r_port: int, r_raw: bytes) -> tuple[Endpoint, Endpoint] | None:
    """An SA's local and remote endpoints from their fields, or None (other families, or wrong)."""
    if reserved or r_reserved or family != r_family:
        return None
    local, remote = _addr_or_none(family, raw), _addr_or_none(family, r_raw)
    if local is None or remote is None:
        return None
    ends: tuple[Endpoint, Endpoint] = (_new(Endpoint), _new(Endpoint))
    vars(ends[0]).update(addr=local, port=port)
    vars(ends[1]).update(addr=remote, port=r_port)
    return ends


# UPDATE and ADD: the header, SA, KEY (no padding: both keys are whole words), ADDR_LOCAL,
# ADDR_REMOTE, LIFETIME_SOFT, LIFETIME_HARD, then the SELECTORs, by datagram size (the two key
# lengths differ by 16 bytes, a selector is 80: the size names the key and the selector count)
_KEY_EXT_HDR: Final = struct.Struct(_fmt(_EXT_HDR, _KEY_HDR))
_SA_HEADS: Final = {n: struct.Struct(_fmt(
    _HEADER, _EXT_HDR, _SA, _KEY_EXT_HDR, f"{n}s", _EXT_HDR, _ENDPOINT, _EXT_HDR, _ENDPOINT,
    _EXT_HDR, _LIFETIME, _EXT_HDR, _LIFETIME)) for n in sorted(set(_KEY_LEN.values()))}
_SA_SHAPES: Final = {head.size + k * _SELECTOR_EXT_LEN: (head, key_len)
                     for key_len, head in _SA_HEADS.items() for k in range(MAX_SELECTORS + 1)}
assert len(_SA_SHAPES) == len(_SA_HEADS) * (MAX_SELECTORS + 1) and not any(n % 4 for n in _SA_HEADS)
_SA_TYPES: Final = {int(MsgType.UPDATE): Update, int(MsgType.ADD): Add}
_SA_EXT_LEN: Final = _EXT_HDR.size + _SA.size
_LIFETIME_EXT_LEN: Final = _EXT_HDR.size + _LIFETIME.size
_X_SA, _X_KEY, _X_SOFT, _X_HARD = int(Ext.SA), int(Ext.KEY), int(Ext.LIFETIME_SOFT), int(Ext.LIFETIME_HARD)
_IN: Final = Direction.IN


def _quick_sa(data: bytes) -> Update | Add | None:
    """The UPDATE or ADD in data if laid out as encode does (no SEQ_LIMIT) and valid, else None."""
    shape = _SA_SHAPES.get(len(data))
    if shape is None or type(data) is not bytes:   # bytes only: the key is a slice of it
        return None
    head, key_len = shape
    (version, raw_type, raw_errno, req_id, flags, reserved, length,
     sa_len, sa_ext, spi, raw_dir, raw_alg, sa_flags, sa_reserved, window, reqid, seq_start,
     key_ext_len, key_ext, n, key_reserved, key,
     local_len, local_ext, local_family, local_reserved, local_port, local_raw,
     remote_len, remote_ext, remote_family, remote_reserved, remote_port, remote_raw,
     soft_len, soft_ext, soft_bytes, soft_packets, soft_seconds,
     hard_len, hard_ext, hard_bytes, hard_packets, hard_seconds) = head.unpack_from(data)  # fmt: skip
    msg_class, direction, alg = _SA_TYPES.get(raw_type), _DIRECTION_OF.get(raw_dir), _ALG_OF.get(raw_alg)
    # SaSpec's checks too: the key fits the algorithm, the replay window, a report of first use only
    # inbound, a sequence start within 32 bits without ESN, soft lifetimes not past the hard ones
    if (msg_class is None or version != VERSION or raw_errno or not req_id or flags or reserved != _ZERO3
            or length != len(data) or direction is None or alg is None
            or sa_len != _SA_EXT_LEN or sa_ext != _X_SA or spi < MIN_SPI or sa_flags & ~(_SA_ESN | _SA_FIRST_USE)
            or sa_reserved or not (window == 0 or 32 <= window <= REPLAY_MAX)
            or (sa_flags & _SA_FIRST_USE and direction is not _IN) or (seq_start > _U32 and not sa_flags & _SA_ESN)
            or key_ext_len != _KEY_EXT_HDR.size + key_len or key_ext != _X_KEY or n != key_len
            or key_reserved or _KEY_LEN[alg] != key_len
            or local_len != _ENDPOINT_EXT_LEN or local_ext != _X_LOCAL
            or remote_len != _ENDPOINT_EXT_LEN or remote_ext != _X_REMOTE
            or soft_len != _LIFETIME_EXT_LEN or soft_ext != _X_SOFT or hard_len != _LIFETIME_EXT_LEN
            or hard_ext != _X_HARD or (soft_bytes and hard_bytes and soft_bytes > hard_bytes)
            or (soft_packets and hard_packets and soft_packets > hard_packets)
            or (soft_seconds and hard_seconds and soft_seconds > hard_seconds)):
        return None
    ends = _quick_ends(local_family, local_reserved, local_port, local_raw,
                       remote_family, remote_reserved, remote_port, remote_raw)
    if ends is None:
        return None
    selectors = []
    for pos in range(head.size, len(data), _SELECTOR_EXT_LEN):
        sel = _quick_selector(data, pos)
        if sel is None:
            return None
        selectors.append(sel)
    soft, hard = _new(Lifetime), _new(Lifetime)
    vars(soft).update(bytes=soft_bytes, packets=soft_packets, seconds=soft_seconds)
    vars(hard).update(bytes=hard_bytes, packets=hard_packets, seconds=hard_seconds)
    sa: SaSpec = _new(SaSpec)
    vars(sa).update(spi=spi, direction=direction, alg=alg, key=key, esn=bool(sa_flags & _SA_ESN),
                    replay_window=window, reqid=reqid, local=ends[0], remote=ends[1], soft=soft, hard=hard,
                    selectors=tuple(selectors), seq_start=seq_start, seq_limit=0, seq_notify=0,
                    report_first_use=bool(sa_flags & _SA_FIRST_USE))
    msg: Update | Add = _new(msg_class)  # type: ignore[assignment]
    vars(msg).update(req_id=req_id, sa=sa)
    return msg


# SPDADD: the header, POLICY, one SELECTOR
_SPDADD_HEAD: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, _POLICY))
_SPDADD_SIZE: Final = _SPDADD_HEAD.size + _SELECTOR_EXT_LEN
_POLICY_EXT_LEN: Final = _EXT_HDR.size + _POLICY.size
_SPDADD: Final = int(MsgType.SPDADD)
_X_POLICY: Final = int(Ext.POLICY)
_PROTECT: Final = Action.PROTECT


def _quick_spdadd(data: bytes) -> SpdAdd | None:
    """The SPDADD in data if laid out as encode does and valid, else None."""
    if len(data) != _SPDADD_SIZE:
        return None
    (version, raw_type, raw_errno, req_id, flags, reserved, length,
     policy_len, policy_ext, policy_id, priority, raw_action, policy_reserved, reqid) = \
        _SPDADD_HEAD.unpack_from(data)  # fmt: skip
    action = _ACTION_OF.get(raw_action)
    if (raw_type != _SPDADD or version != VERSION or raw_errno or not req_id or flags or reserved != _ZERO3
            or length != _SPDADD_SIZE or policy_len != _POLICY_EXT_LEN or policy_ext != _X_POLICY
            or action is None or policy_reserved != _ZERO3 or (action is _PROTECT and not reqid)):
        return None
    selector = _quick_selector(data, _SPDADD_HEAD.size)
    if selector is None:
        return None
    policy: Policy = _new(Policy)
    vars(policy).update(id=policy_id, priority=priority, action=action, reqid=reqid, selector=selector)
    msg: SpdAdd = _new(SpdAdd)
    vars(msg).update(req_id=req_id, policy=policy)
    return msg


# GETSPI: the header, SPI_RANGE, maybe LARVAL_LIFETIME
_GETSPI_HEAD: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, _SPI_RANGE))
_GETSPI_LARVAL: Final = struct.Struct(_fmt(_GETSPI_HEAD, _EXT_HDR, _U32_BODY))
_SPI_RANGE_EXT_LEN: Final = _EXT_HDR.size + _SPI_RANGE.size
_U32_EXT_LEN: Final = _EXT_HDR.size + _U32_BODY.size
_X_SPI_RANGE, _X_LARVAL = int(Ext.SPI_RANGE), int(Ext.LARVAL_LIFETIME)


def _quick_getspi(data: bytes) -> GetSpi | None:
    """The GETSPI in data if laid out as encode does and valid, else None."""
    size = len(data)
    if size == _GETSPI_LARVAL.size:
        (version, raw_type, raw_errno, req_id, flags, reserved, length, range_len, range_ext, lo, hi,
         larval_len, larval_ext, larval) = _GETSPI_LARVAL.unpack(data)  # fmt: skip
        if larval_len != _U32_EXT_LEN or larval_ext != _X_LARVAL:
            return None
    elif size == _GETSPI_HEAD.size:
        version, raw_type, raw_errno, req_id, flags, reserved, length, range_len, range_ext, lo, hi = \
            _GETSPI_HEAD.unpack(data)
        larval = None
    else:
        return None
    if (raw_type != _GETSPI or version != VERSION or raw_errno or not req_id or flags or reserved != _ZERO3
            or length != size or range_len != _SPI_RANGE_EXT_LEN or range_ext != _X_SPI_RANGE
            or not MIN_SPI <= lo <= hi):
        return None
    msg: GetSpi = _new(GetSpi)
    vars(msg).update(req_id=req_id, lo=lo, hi=hi, larval_seconds=larval)
    return msg


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


# the quick ways of the longer messages, by type byte
_QUICK_WAY: Final[dict[int, Callable[[bytes], Message | None]]] = {
    _IKE_EVENT: _quick_ike, _SEND_IKE: _quick_ike, int(MsgType.GETSPI): _quick_getspi,
    int(MsgType.UPDATE): _quick_sa, int(MsgType.ADD): _quick_sa, _SPDADD: _quick_spdadd,
}


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


# Decoded addresses by their 16-byte field, one table per family: a Child SA install carries ~18
# (selector bounds, endpoints), mostly the same few (0.0.0.0, 255.255.255.255, the gateway's own), and
# building an address object costs more than the rest of its field.  Only fields that passed the
# checks below are stored, so a hit needs none; bounded, as the fields come from the other process.
_ADDR_CACHE: Final[dict[int, dict[bytes, IPAddress]]] = {4: {}, 6: {}}
_ADDR_CACHE_MAX: Final = 4096


def _unpack_addr(family: int, raw: bytes) -> IPAddress:
    addr = _addr_or_none(family, raw)
    if addr is not None:
        return addr
    if family not in _ADDR_CACHE:
        raise _Malformed(f"address family {family}")
    raise _Malformed("IPv4 address with non-zero trailing bytes")


def _addr_or_none(family: int, raw: bytes) -> IPAddress | None:
    """_unpack_addr's address, or None where it raises."""
    cache = _ADDR_CACHE.get(family)
    if cache is None:
        return None
    addr = cache.get(raw)
    if addr is not None:
        return addr
    if family == 4:
        if raw[4:] != _ZERO12:
            return None
        addr = IPv4Address(int.from_bytes(raw[:4]))
    else:
        addr = IPv6Address(int.from_bytes(raw))
    if len(cache) >= _ADDR_CACHE_MAX:
        cache.clear()
    cache[raw] = addr
    return addr


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
    return Delete(req_id, spi, Direction(direction), _unpack_remote_opt(exts))


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
    return Ike(data=data, remote=remote, local=local)


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
    MsgType.SEND_IKE: lambda req_id, exts: SendIke(req_id, *_unpack_ike(exts)),
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
    spi_body = exts.opt(Ext.SPI)
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
