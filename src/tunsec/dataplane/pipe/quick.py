"""The quick decoders: the answers and requests of a client's set-up and its IKE events, in one go.

The rule: a quick decoder only takes bytes laid out exactly as encoding.py lays them out (its
extensions in encode's order; UPDATE and ADD without a SEQ_LIMIT), checks the raw fields in one
expression and builds the message without checking again.  For anything else it returns None,
and decode (decoding.py) hands the datagram to the one general decoder, which names what is
wrong.  What a quick decoder admits, the general one decodes to an equal message:
tests/test_pipe_quick_decode.py holds each to it (every one-byte change, cut and growth of encoded
messages), and tests/test_pipe_fuzz.py does for every datagram it makes.

sa_fields and spdadd_fields are the checks of the install's quick decoders without the values: the
worker hands their fields to the fast path as they are (Worker.handle_datagram's raw ways)."""

import struct
from collections.abc import Callable
from typing import Final

from tunsec.dataplane.pipe.fields import (
    _ACTION_OF,
    _ALG_OF,
    _DIRECTION_OF,
    _ERRNO_OF,
    _OK,
    _OWED,
    _ZERO12,
    _addr_or_none,
)
from tunsec.dataplane.pipe.messages import (
    Add,
    GetSpi,
    Ike,
    IkeSpiAdd,
    IkeSpiDelete,
    Message,
    Reply,
    SendIke,
    SpdAdd,
    Update,
)
from tunsec.dataplane.pipe.protocol import (
    _U32,
    FLAG_REPLY,
    HEADER_LEN,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    MAX_SELECTORS,
    MIN_SPI,
    REPLAY_MAX,
    VERSION,
    Action,
    Direction,
    Ext,
    MsgType,
)
from tunsec.dataplane.pipe.values import (
    _KEY_LEN,
    Endpoint,
    Lifetime,
    Policy,
    SaSpec,
    Selector,
)
from tunsec.dataplane.pipe.wire import (
    _DATA_HDR,
    _ENDPOINT,
    _EXT_HDR,
    _HEADER,
    _KEY_HDR,
    _LIFETIME,
    _POLICY,
    _SA,
    _SA_ESN,
    _SA_FIRST_USE,
    _SELECTOR,
    _SPI_RANGE,
    _U32_BODY,
    _fmt,
)

# The answers of a client's set-up, a bare header or a GETSPI's header and SPI, checked in one
# expression on the raw fields (_quick_reply) and built without checking again: every answer
# _quick_reply turns down goes the general way, which names what is wrong with it.  What it
# admits, the general way decodes to an equal Reply (tests/test_pipe_quick_decode.py compares the two).
_REPLY_OF: Final = {int(t): t for t in MsgType if not t.is_event}   # the types a reply may name
_SPI_REPLY: Final = struct.Struct(_HEADER.format + _EXT_HDR.format[1:] + _U32_BODY.format[1:])
_SPI_EXT_LEN: Final = _EXT_HDR.size + _U32_BODY.size
_ZERO3: Final = bytes(3)
_GETSPI: Final = MsgType.GETSPI
_SPI_EXT: Final = int(Ext.SPI)
_BARE_REPLY: Final = {"spi": None, "more": False, "sas": (), "policies": (), "drops": (), "gauges": (),
                      "current": None}


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
    # an OIF or UNMARKED extension makes the size another: the general way takes it
    vars(msg).update(req_id=req_id, data=data[_IKE_HEAD.size:_IKE_HEAD.size + n], remote=remote, local=local,
                     unmarked=False)
    if req_id:
        vars(msg)["oif"] = 0
    return msg


def _quick_endpoint(data: bytes, pos: int, ext_type: int) -> Endpoint | None:
    ext_len, ext, family, reserved, port, raw = _ENDPOINT_EXT.unpack_from(data, pos)
    if ext_len != _ENDPOINT_EXT_LEN or ext != ext_type or reserved:
        return None
    addr = _addr_or_none(family, raw)
    if addr is None:
        return None
    # built without its constructor (~4k instructions each, two per IKE event and SEND_IKE): an
    # address of _addr_or_none and a 16-bit port are what its checks admit
    endpoint: Endpoint = _new(Endpoint)
    vars(endpoint).update(addr=addr, port=port)
    return endpoint


# The requests of a client's set-up (GETSPI, UPDATE and ADD, SPDADD; SEND_IKE goes with the IKE
# event above), what the worker decodes per client, are taken the same way when laid out as encode
# lays them out: one struct call over the fixed part, the checks on the raw fields in one
# expression each, the values built without checking again (every check their constructors make is
# implied by those).  In another order, with a SEQ_LIMIT, anything amiss: the general way, which
# names what is wrong.  tests/test_pipe_quick_decode.py holds each to the general way (every one-byte
# change, cut and growth of encoded requests), and so does tests/test_pipe_fuzz.py (every datagram).
_SELECTOR_EXT: Final = struct.Struct(_fmt(_EXT_HDR, _SELECTOR))
_SELECTOR_EXT_LEN: Final = _SELECTOR_EXT.size
_X_SELECTOR: Final = int(Ext.SELECTOR)


# a selector's fields as the raw ways hand them on (the fast path's ts_selector order): family, proto,
# src_lo, src_hi, dst_lo, dst_hi (16-byte fields, an IPv4 address zero-padded after), sport_lo,
# sport_hi, dport_lo, dport_hi
SelectorFields = tuple[int, int, bytes, bytes, bytes, bytes, int, int, int, int]


def selector_fields(data: bytes, pos: int) -> SelectorFields | None:
    """The SELECTOR extension at pos if _quick_selector would take it (Selector's checks), else None."""
    (ext_len, ext, family, proto, reserved, sport_lo, sport_hi, dport_lo, dport_hi,
     src_lo, src_hi, dst_lo, dst_hi) = _SELECTOR_EXT.unpack_from(data, pos)  # fmt: skip
    # the fields compare as the addresses do: big-endian, an IPv4 one zero-padded after, and a
    # selector's four share its one family; _addr_or_none's checks, without building the addresses
    if (ext_len != _SELECTOR_EXT_LEN or ext != _X_SELECTOR or reserved or src_lo > src_hi or dst_lo > dst_hi
            or sport_lo > sport_hi or dport_lo > dport_hi
            or (family != 6 and (family != 4 or src_lo[4:] != _ZERO12 or src_hi[4:] != _ZERO12
                                 or dst_lo[4:] != _ZERO12 or dst_hi[4:] != _ZERO12))):
        return None
    return family, proto, src_lo, src_hi, dst_lo, dst_hi, sport_lo, sport_hi, dport_lo, dport_hi


def _selector_of(fields: SelectorFields) -> Selector:
    """The Selector of checked fields (selector_fields), built without checking again."""
    family, proto, src_lo, src_hi, dst_lo, dst_hi, sport_lo, sport_hi, dport_lo, dport_hi = fields
    sel: Selector = _new(Selector)
    vars(sel).update(src_lo=_addr_or_none(family, src_lo), src_hi=_addr_or_none(family, src_hi),
                     dst_lo=_addr_or_none(family, dst_lo), dst_hi=_addr_or_none(family, dst_hi), proto=proto,
                     sport=(sport_lo, sport_hi), dport=(dport_lo, dport_hi))
    return sel


def _quick_selector(data: bytes, pos: int) -> Selector | None:
    """The SELECTOR extension at pos as _unpack_selector and Selector would build it, or None."""
    fields = selector_fields(data, pos)
    return None if fields is None else _selector_of(fields)


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


# An UPDATE's or ADD's fields as the raw way hands them on (sa_fields): the type byte, request id,
# SPI, direction byte, algorithm byte, key, SA flags, replay window, reqid, sequence start, each endpoint's family,
# 16-byte address field and port, the soft and the hard lifetime's bytes, packets and seconds, and the
# selectors' fields (selector_fields), one after the other
SaFields = tuple[int, int, int, int, int, bytes, int, int, int, int, int, bytes, int, int, bytes, int,
                 int, int, int, int, int, int, list[int | bytes]]


def sa_fields(data: bytes) -> SaFields | None:
    """The UPDATE or ADD in data if laid out as encode does (no SEQ_LIMIT) and valid, as its fields
    (without building its values: the worker hands them to the fast path as they are), else None."""
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
    direction, alg = _DIRECTION_OF.get(raw_dir), _ALG_OF.get(raw_alg)
    # SaSpec's checks too: the key fits the algorithm, the replay window, a report of first use only
    # inbound, a sequence start within 32 bits without ESN, soft lifetimes not past the hard ones;
    # Endpoint's: the two ends in one family, addresses as _addr_or_none takes them
    if (raw_type not in _SA_TYPES or version != VERSION or raw_errno or not req_id or flags or reserved != _ZERO3
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
            or (soft_seconds and hard_seconds and soft_seconds > hard_seconds)
            or local_reserved or remote_reserved or local_family != remote_family
            or (local_family != 6 and (local_family != 4 or local_raw[4:] != _ZERO12
                                       or remote_raw[4:] != _ZERO12))):
        return None
    selectors: list[int | bytes] = []
    for pos in range(head.size, len(data), _SELECTOR_EXT_LEN):
        sel = selector_fields(data, pos)
        if sel is None:
            return None
        selectors += sel
    return (raw_type, req_id, spi, raw_dir, raw_alg, key, sa_flags, window, reqid, seq_start,
            local_family, local_raw, local_port, remote_family, remote_raw, remote_port,
            soft_bytes, soft_packets, soft_seconds, hard_bytes, hard_packets, hard_seconds, selectors)


def endpoint_of(family: int, raw: bytes, port: int) -> Endpoint:
    """The Endpoint of an endpoint's checked fields (sa_fields'), built without checking again."""
    endpoint: Endpoint = _new(Endpoint)
    vars(endpoint).update(addr=_addr_or_none(family, raw), port=port)
    return endpoint


_SEL_WIDTH: Final = len(SelectorFields.__args__)   # type: ignore[attr-defined]


def _quick_sa(data: bytes) -> Update | Add | None:
    """The UPDATE or ADD in data if laid out as encode does (no SEQ_LIMIT) and valid, else None."""
    fields = sa_fields(data)
    if fields is None:
        return None
    (raw_type, req_id, spi, raw_dir, raw_alg, key, sa_flags, window, reqid, seq_start,
     local_family, local_raw, local_port, remote_family, remote_raw, remote_port,
     soft_bytes, soft_packets, soft_seconds, hard_bytes, hard_packets, hard_seconds, sels) = fields  # fmt: skip
    selectors = tuple(_selector_of(sels[i:i + _SEL_WIDTH])  # type: ignore[arg-type]
                      for i in range(0, len(sels), _SEL_WIDTH))
    soft, hard = _new(Lifetime), _new(Lifetime)
    vars(soft).update(bytes=soft_bytes, packets=soft_packets, seconds=soft_seconds)
    vars(hard).update(bytes=hard_bytes, packets=hard_packets, seconds=hard_seconds)
    sa: SaSpec = _new(SaSpec)
    vars(sa).update(spi=spi, direction=_DIRECTION_OF[raw_dir], alg=_ALG_OF[raw_alg], key=key,
                    esn=bool(sa_flags & _SA_ESN), replay_window=window, reqid=reqid,
                    local=endpoint_of(local_family, local_raw, local_port),
                    remote=endpoint_of(remote_family, remote_raw, remote_port), soft=soft, hard=hard,
                    selectors=selectors, seq_start=seq_start, seq_limit=0, seq_notify=0,
                    report_first_use=bool(sa_flags & _SA_FIRST_USE))
    msg: Update | Add = _new(_SA_TYPES[raw_type])  # type: ignore[assignment]
    vars(msg).update(req_id=req_id, sa=sa)
    return msg


# SPDADD: the header, POLICY, one SELECTOR
_SPDADD_HEAD: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, _POLICY))
_SPDADD_SIZE: Final = _SPDADD_HEAD.size + _SELECTOR_EXT_LEN
_POLICY_EXT_LEN: Final = _EXT_HDR.size + _POLICY.size
_SPDADD: Final = int(MsgType.SPDADD)
_X_POLICY: Final = int(Ext.POLICY)
_PROTECT: Final = Action.PROTECT


# An SPDADD's fields as the raw way hands them on (spdadd_fields): request id, policy id, priority,
# action byte, reqid, its selector's fields (selector_fields)
SpdAddFields = tuple[int, int, int, int, int, SelectorFields]


def spdadd_fields(data: bytes) -> SpdAddFields | None:
    """The SPDADD in data if laid out as encode does and valid, as its fields, else None."""
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
    selector = selector_fields(data, _SPDADD_HEAD.size)
    if selector is None:
        return None
    return req_id, policy_id, priority, raw_action, reqid, selector


def _quick_spdadd(data: bytes) -> SpdAdd | None:
    """The SPDADD in data if laid out as encode does and valid, else None."""
    fields = spdadd_fields(data)
    if fields is None:
        return None
    req_id, policy_id, priority, raw_action, reqid, selector = fields
    policy: Policy = _new(Policy)
    vars(policy).update(id=policy_id, priority=priority, action=_ACTION_OF[raw_action], reqid=reqid,
                        selector=_selector_of(selector))
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


# IKE_SPI_ADD (every client's IKE SA, once up) and IKE_SPI_DELETE: the header, IKE_SPI, for an ADD
# maybe IKE_PEER; the general way cost four times the quick one (its extension table and checks)
_IKE_SPI_HEAD: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, "8s"))
_IKE_SPI_PEER: Final = struct.Struct(_fmt(_IKE_SPI_HEAD, _EXT_HDR, "Q"))
_IKE_SPI_EXT_LEN: Final = _EXT_HDR.size + 8
_IKE_SPI_ADD, _IKE_SPI_DELETE = int(MsgType.IKE_SPI_ADD), int(MsgType.IKE_SPI_DELETE)
_X_IKE_SPI, _X_IKE_PEER = int(Ext.IKE_SPI), int(Ext.IKE_PEER)
_ZERO8: Final = bytes(8)


def _quick_ike_spi(data: bytes) -> IkeSpiAdd | IkeSpiDelete | None:
    """The IKE_SPI_ADD or IKE_SPI_DELETE in data if laid out as encode does and valid, else None."""
    size = len(data)
    if size == _IKE_SPI_PEER.size:
        (version, raw_type, raw_errno, req_id, flags, reserved, length, spi_len, spi_ext, spi,
         peer_len, peer_ext, peer) = _IKE_SPI_PEER.unpack(data)  # fmt: skip
        # a peer of 0 is sent as no IKE_PEER at all; only an ADD names one
        if peer_len != _IKE_SPI_EXT_LEN or peer_ext != _X_IKE_PEER or not peer or raw_type != _IKE_SPI_ADD:
            return None
    elif size == _IKE_SPI_HEAD.size:
        version, raw_type, raw_errno, req_id, flags, reserved, length, spi_len, spi_ext, spi = \
            _IKE_SPI_HEAD.unpack(data)
        peer = 0
    else:
        return None
    if (version != VERSION or raw_errno or not req_id or flags or reserved != _ZERO3 or length != size
            or spi_len != _IKE_SPI_EXT_LEN or spi_ext != _X_IKE_SPI or spi == _ZERO8):
        return None
    msg: IkeSpiAdd | IkeSpiDelete
    if raw_type == _IKE_SPI_ADD:
        msg = _new(IkeSpiAdd)
        vars(msg).update(req_id=req_id, spi=spi, peer=peer)
    elif raw_type == _IKE_SPI_DELETE:
        msg = _new(IkeSpiDelete)
        vars(msg).update(req_id=req_id, spi=spi)
    else:
        return None
    return msg


# the quick ways of the longer messages, by type byte
_QUICK_WAY: Final[dict[int, Callable[[bytes], Message | None]]] = {
    _IKE_EVENT: _quick_ike, _SEND_IKE: _quick_ike, int(MsgType.GETSPI): _quick_getspi,
    int(MsgType.UPDATE): _quick_sa, int(MsgType.ADD): _quick_sa, _SPDADD: _quick_spdadd,
    _IKE_SPI_ADD: _quick_ike_spi, _IKE_SPI_DELETE: _quick_ike_spi,
}
