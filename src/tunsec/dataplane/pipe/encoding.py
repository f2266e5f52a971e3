"""Messages to bytes: encode, DUMP replies split over several datagrams and joined again,
and the error reply to a request that could not be decoded."""

import struct
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

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
    _check_request_id,
)
from tunsec.dataplane.pipe.protocol import (
    _U32,
    FLAG_MORE,
    FLAG_REPLY,
    HEADER_LEN,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    MIN_SPI,
    VERSION,
    Errno,
    Ext,
    IPAddress,
    MsgType,
    PipeError,
)
from tunsec.dataplane.pipe.values import _STATES, Endpoint, Lifetime, PolicyInfo, SaInfo, SaSpec, Selector, _check_spi
from tunsec.dataplane.pipe.wire import (
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
    _SELECTOR,
    _SEQ_LIMIT,
    _SPI_RANGE,
    _U32_BODY,
    _fmt,
)

# ------------------------------------------------------------------ encoding

_ZERO3: Final = bytes(3)
_ERRNO_OK: Final = Errno.OK


def _ext(ext_type: Ext, body: bytes) -> bytes:
    pad = -len(body) % 4
    return _EXT_HDR.pack(4 + len(body) + pad, ext_type) + body + bytes(pad)


def _header(msg_type: int, errno: int, req_id: int, flags: int, length: int) -> bytes:
    return _HEADER.pack(VERSION, msg_type, errno, req_id, flags, bytes(3), length)


# an address's bytes for its 16-byte field, which struct's "16s" fills: an IPv4 address's 4 padded
# with zeros after.  int.to_bytes of its int, read from its slot: .packed is a property and a helper,
# int() runs __int__, a Python frame each (a client's set-up packs ~17, and the worker again for C);
# the whole-datagram ways below read an address's family as its class attribute _version for the
# same reason (.version is a property)
_ADDR_LEN: Final = {IPv4Address: 4, IPv6Address: 16}


def _pack_addr(addr: IPAddress) -> bytes:
    n = _ADDR_LEN.get(type(addr))
    if n is None:   # a subclass
        return addr.packed
    return addr._ip.to_bytes(n)  # type: ignore[union-attr,no-any-return]


def _pack_endpoint(ep: Endpoint | None) -> bytes:
    if ep is None:
        return bytes(_ENDPOINT.size)
    return _ENDPOINT.pack(ep.family, 0, ep.port, _pack_addr(ep.addr))


def _pack_selector(sel: Selector) -> bytes:
    return _SELECTOR.pack(
        sel.family, sel.proto, 0, *sel.sport, *sel.dport,
        _pack_addr(sel.src_lo), _pack_addr(sel.src_hi),
        _pack_addr(sel.dst_lo), _pack_addr(sel.dst_hi),
    )  # fmt: skip


def _pack_lifetime(lt: Lifetime) -> bytes:
    return _LIFETIME.pack(lt.bytes, lt.packets, lt.seconds)


# The fixed-size extensions of a client's set-up (SA, endpoints, lifetimes, selectors, policy,
# SPI range) packed with their extension header in one struct call: the same bytes as
# _ext(type, body), without packing the body, then the header, then joining them.  Their bodies
# are multiples of 4 bytes, so no padding.
def _with_ext_hdr(body: struct.Struct) -> struct.Struct:
    assert body.size % 4 == 0 and body.format.startswith("!")
    return struct.Struct(_EXT_HDR.format + body.format[1:])


_SA_EXT: Final = _with_ext_hdr(_SA)
_ENDPOINT_EXT: Final = _with_ext_hdr(_ENDPOINT)
_LIFETIME_EXT: Final = _with_ext_hdr(_LIFETIME)
_SELECTOR_EXT: Final = _with_ext_hdr(_SELECTOR)
_POLICY_EXT: Final = _with_ext_hdr(_POLICY)
_SPI_RANGE_EXT: Final = _with_ext_hdr(_SPI_RANGE)
# enum members read once (each is a class attribute lookup)
_X_SA, _X_KEY, _X_SELECTOR, _X_POLICY = Ext.SA, Ext.KEY, Ext.SELECTOR, Ext.POLICY
_X_LOCAL, _X_REMOTE, _X_SOFT, _X_HARD = Ext.ADDR_LOCAL, Ext.ADDR_REMOTE, Ext.LIFETIME_SOFT, Ext.LIFETIME_HARD
_X_DATA, _X_SPI_RANGE = Ext.DATA, Ext.SPI_RANGE


def _endpoint_ext(ext_type: Ext, ep: Endpoint) -> bytes:
    return _ENDPOINT_EXT.pack(_ENDPOINT_EXT.size, ext_type, ep.addr.version, 0, ep.port, _pack_addr(ep.addr))


def _lifetime_ext(ext_type: Ext, lt: Lifetime) -> bytes:
    return _LIFETIME_EXT.pack(_LIFETIME_EXT.size, ext_type, lt.bytes, lt.packets, lt.seconds)


def _selector_ext(sel: Selector) -> bytes:
    (sport_lo, sport_hi), (dport_lo, dport_hi) = sel.sport, sel.dport
    return _SELECTOR_EXT.pack(
        _SELECTOR_EXT.size, _X_SELECTOR, sel.src_lo.version, sel.proto, 0, sport_lo, sport_hi, dport_lo, dport_hi,
        _pack_addr(sel.src_lo), _pack_addr(sel.src_hi),
        _pack_addr(sel.dst_lo), _pack_addr(sel.dst_hi),
    )  # fmt: skip


def _sa_exts(sa: SaSpec) -> list[bytes]:
    flags = (_SA_ESN if sa.esn else 0) | (_SA_FIRST_USE if sa.report_first_use else 0)
    exts = [
        _SA_EXT.pack(_SA_EXT.size, _X_SA, sa.spi, sa.direction, sa.alg, flags, 0, sa.replay_window, sa.reqid,
                     sa.seq_start),
        _ext(_X_KEY, _KEY_HDR.pack(len(sa.key), 0) + sa.key),
        _endpoint_ext(_X_LOCAL, sa.local),
        _endpoint_ext(_X_REMOTE, sa.remote),
        _lifetime_ext(_X_SOFT, sa.soft),
        _lifetime_ext(_X_HARD, sa.hard),
    ]
    exts += [_selector_ext(s) for s in sa.selectors]
    if sa.seq_limit or sa.seq_notify:
        exts.append(_ext(Ext.SEQ_LIMIT, _SEQ_LIMIT.pack(sa.seq_limit, sa.seq_notify)))
    return exts


def _ike_exts(data: bytes, remote: Endpoint, local: Endpoint | None) -> list[bytes]:
    exts = [
        _ext(_X_DATA, _DATA_HDR.pack(len(data)) + data),
        _endpoint_ext(_X_REMOTE, remote),
    ]
    if local is not None:
        exts.append(_endpoint_ext(_X_LOCAL, local))
    return exts


def _sa_counters_ext(names: Sequence[str]) -> bytes:
    raw = ",".join(names).encode("ascii")
    return _ext(Ext.SA_COUNTERS, _SA_COUNTERS_HDR.pack(len(raw), bytes(2)) + raw)


def _sa_info_ext(info: SaInfo, names: Sequence[str]) -> bytes:
    flags = (
        (_SA_ESN if info.esn else 0)
        | (_SA_SOFT_FIRED if info.soft_fired else 0)
        | (_SA_HARD_FIRED if info.hard_fired else 0)
    )
    body = _SA_INFO.pack(
        info.spi, info.direction, _STATES.index(info.state), info.alg or 0, flags,
        info.reqid, info.replay_window,
        _pack_endpoint(info.local), _pack_endpoint(info.remote),
        info.seq, info.age_seconds,
    )  # fmt: skip
    counters = info.counters
    return _ext(Ext.SA_INFO, body + struct.pack(f"!{len(names)}Q", *[counters[n] for n in names]))


def _policy_info_ext(info: PolicyInfo) -> bytes:
    body = _POLICY_INFO.pack(
        info.id, info.priority, info.action, bytes(3), info.reqid, info.out_spi,
        info.packets, _pack_selector(info.selector),
    )  # fmt: skip
    return _ext(Ext.POLICY_INFO, body)


def _drop_ext(name: str, count: int, ext_type: Ext = Ext.DROP) -> bytes:
    """A named u64: a DROP, or (same layout) a GAUGE."""
    raw = name.encode("ascii")
    return _ext(ext_type, _DROP_HDR.pack(len(raw), bytes(3), count) + raw)


def _sa_info_exts(sas: Sequence[SaInfo]) -> list[bytes]:
    """SA_INFO extensions, led by the SA_COUNTERS that names their counters (none without SAs)."""
    if not sas:
        return []
    names = list(sas[0].counters)
    return [_sa_counters_ext(names)] + [_sa_info_ext(s, names) for s in sas]


def _reply_exts(msg: Reply) -> list[bytes]:
    exts = [_drop_ext(name, count) for name, count in msg.drops]
    exts += [_drop_ext(name, value, Ext.GAUGE) for name, value in msg.gauges]
    exts += [_policy_info_ext(p) for p in msg.policies]
    exts += _sa_info_exts(msg.sas)
    if msg.spi is not None:
        exts.append(_ext(Ext.SPI, _U32_BODY.pack(msg.spi)))
    if msg.current is not None:
        exts.append(_ext(Ext.LIFETIME_CURRENT, _pack_lifetime(msg.current)))
    return exts


def _getspi_exts(msg: GetSpi) -> list[bytes]:
    exts = [_SPI_RANGE_EXT.pack(_SPI_RANGE_EXT.size, _X_SPI_RANGE, msg.lo, msg.hi)]
    if msg.larval_seconds is not None:
        exts.append(_ext(Ext.LARVAL_LIFETIME, _U32_BODY.pack(msg.larval_seconds)))
    return exts


def _spdadd_exts(msg: SpdAdd) -> list[bytes]:
    p = msg.policy
    return [_POLICY_EXT.pack(_POLICY_EXT.size, _X_POLICY, p.id, p.priority, p.action, _ZERO3, p.reqid),
            _selector_ext(p.selector)]


def _update_exts(msg: Update | Add) -> list[bytes]:
    return _sa_exts(msg.sa)


def _send_ike_exts(msg: SendIke | Ike) -> list[bytes]:
    exts = _ike_exts(msg.data, msg.remote, msg.local)
    if isinstance(msg, SendIke) and msg.oif:
        exts.append(_ext(Ext.OIF, _U32_BODY.pack(msg.oif)))
    if msg.unmarked:
        exts.append(_ext(Ext.UNMARKED, b""))
    return exts


def _extensions(msg: Message) -> list[bytes]:
    match msg:
        case GetSpi():
            return _getspi_exts(msg)
        case Update() | Add():
            return _update_exts(msg)
        case Delete(spi=spi, direction=direction, remote=remote, reqid=reqid):
            exts = [_ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3))), *_opt_remote(remote)]
            return exts if reqid is None else [*exts, _ext(Ext.REQID, _U32_BODY.pack(reqid))]
        case SpdAdd():
            return _spdadd_exts(msg)
        case SpdDelete(id=policy_id):
            return [_ext(Ext.POLICY_ID, _U32_BODY.pack(policy_id))]
        case Acquire(policy_id=policy_id, selector=selector):
            return [
                _ext(Ext.POLICY_ID, _U32_BODY.pack(policy_id)),
                _ext(Ext.SELECTOR, _pack_selector(selector)),
            ]
        case SendIke() | Ike():
            return _send_ike_exts(msg)
        case Expire(spi=spi, direction=direction, hard=hard, reason=reason, remote=remote, current=current):
            exts = [_ext(Ext.EXPIRE, _EXPIRE.pack(spi, direction, int(hard), reason, 0)), *_opt_remote(remote)]
            if current is not None:
                exts.append(_ext(Ext.LIFETIME_CURRENT, _pack_lifetime(current)))
            return exts
        case InvalidSpi(spi=spi, remote=remote):
            return [
                _ext(Ext.SPI, _U32_BODY.pack(spi)),
                _ext(Ext.ADDR_REMOTE, _pack_endpoint(remote)),
            ]
        case Reserve(spi=spi, direction=direction, limit=limit, notify=notify, remote=remote):
            return [
                _ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3))),
                _ext(Ext.SEQ_LIMIT, _SEQ_LIMIT.pack(limit, notify)),
                *_opt_remote(remote),
            ]
        case Migrate(spi=spi, direction=direction, new_remote=new_remote, remote=remote, new_local=new_local):
            return [
                _ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3))),
                _ext(Ext.ADDR_NEW_REMOTE, _pack_endpoint(new_remote)),
                *_opt_remote(remote),
                *([] if new_local is None else [_ext(Ext.ADDR_NEW_LOCAL, _pack_endpoint(new_local))]),
            ]
        case ReserveLow(spi=spi, direction=direction, needed=needed, remote=remote):
            exts = [_ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3)))]
            if needed:
                exts.append(_ext(Ext.SEQ_LIMIT, _SEQ_LIMIT.pack(needed, 0)))
            return [*exts, *_opt_remote(remote)]
        case AddrAdded(addrs=addrs):
            return [_ext(Ext.ADDR_LOCAL, _ENDPOINT.pack(a.version, 0, 0, _pack_addr(a))) for a in addrs]
        case FirstUse(spi=spi):
            return [_ext(Ext.SPI, _U32_BODY.pack(spi))]
        case IkeSpiAdd(spi=spi, peer=peer):
            return [_ext(Ext.IKE_SPI, spi), *([_ext(Ext.IKE_PEER, _IKE_PEER.pack(peer))] if peer else [])]
        case IkeSpiDelete(spi=spi):
            return [_ext(Ext.IKE_SPI, spi)]
        case IkeSpiKey(key=key):
            return [_ext(Ext.IKE_SPI_KEY, key)]
        case Reply():
            return _reply_exts(msg)
        case Flush() | SpdFlush() | Dump():
            return []  # the header says it all
    raise TypeError(f"not a pipe message: {type(msg).__name__}")


def _opt_remote(remote: Endpoint | None) -> list[bytes]:
    return [] if remote is None else [_ext(Ext.ADDR_REMOTE, _pack_endpoint(remote))]


def _join(msg_type: int, errno: int, req_id: int, flags: int, exts: list[bytes]) -> bytes:
    length = HEADER_LEN + sum(map(len, exts))
    if length > MAX_MESSAGE:
        raise ValueError(
            f"message of {length} bytes exceeds {MAX_MESSAGE} (split DUMP answers with encode_dump_replies)"
        )
    return b"".join([_header(msg_type, errno, req_id, flags, length), *exts])


def encode(msg: Message) -> bytes:
    """The datagram for msg.  ValueError if it would exceed MAX_MESSAGE."""
    whole = _WHOLE.get(type(msg))
    if whole is not None:
        return whole(msg)
    return _encode_general(msg)


def _encode_general(msg: Message) -> bytes:
    """encode's general way: each extension packed, then the header and all joined."""
    if isinstance(msg, Reply):
        flags = FLAG_REPLY | (FLAG_MORE if msg.more else 0)
        return _join(msg.type, msg.errno, msg.req_id, flags, _extensions(msg))
    return _join(msg.TYPE, _ERRNO_OK, msg.req_id, 0, _extensions(msg))


# ---------------------------------------------------- a client's set-up, whole datagrams
# The messages of a client's set-up (GETSPI, UPDATE, ADD, SPDADD, SEND_IKE up; IKE events and
# answers down) packed header and all in one struct call each (an IKE message's data apart): the
# same bytes as _encode_general, which tests hold them to, without a list of extensions, their
# lengths summed and joined.  None of them can exceed MAX_MESSAGE but an IKE message.

_T_GETSPI, _T_DUMP = MsgType.GETSPI, MsgType.DUMP
_X_SPI, _X_LARVAL, _X_SEQ_LIMIT = Ext.SPI, Ext.LARVAL_LIFETIME, Ext.SEQ_LIMIT
_U32_EXT_LEN: Final = _EXT_HDR.size + _U32_BODY.size

_GETSPI_WHOLE: Final = struct.Struct(_fmt(_HEADER, _SPI_RANGE_EXT))
_GETSPI_LARVAL_WHOLE: Final = struct.Struct(_fmt(_GETSPI_WHOLE, _EXT_HDR, _U32_BODY))


def _whole_getspi(msg: GetSpi) -> bytes:
    if msg.larval_seconds is None:
        return _GETSPI_WHOLE.pack(VERSION, msg.TYPE, _ERRNO_OK, msg.req_id, 0, _ZERO3, _GETSPI_WHOLE.size,
                                  _SPI_RANGE_EXT.size, _X_SPI_RANGE, msg.lo, msg.hi)
    return _GETSPI_LARVAL_WHOLE.pack(VERSION, msg.TYPE, _ERRNO_OK, msg.req_id, 0, _ZERO3, _GETSPI_LARVAL_WHOLE.size,
                                     _SPI_RANGE_EXT.size, _X_SPI_RANGE, msg.lo, msg.hi,
                                     _U32_EXT_LEN, _X_LARVAL, msg.larval_seconds)


_SPI_REPLY_WHOLE: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, _U32_BODY))


def _whole_reply(msg: Reply) -> bytes:
    # a Reply carries an spi only as a successful GETSPI's answer, more/sas/policies/drops/gauges
    # only as a successful DUMP's, and current only as a successful DELETE's (its checks): anything
    # else is the header alone
    if msg.spi is not None:
        return _SPI_REPLY_WHOLE.pack(VERSION, msg.type, msg.errno, msg.req_id, FLAG_REPLY, _ZERO3,
                                     _SPI_REPLY_WHOLE.size, _U32_EXT_LEN, _X_SPI, msg.spi)
    if msg.type is not _T_DUMP and msg.current is None:
        return _HEADER.pack(VERSION, msg.type, msg.errno, msg.req_id, FLAG_REPLY, _ZERO3, HEADER_LEN)
    return _encode_general(msg)


_SPDADD_WHOLE: Final = struct.Struct(_fmt(_HEADER, _POLICY_EXT, _SELECTOR_EXT))


def _whole_spdadd(msg: SpdAdd) -> bytes:
    p = msg.policy
    sel = p.selector
    (sport_lo, sport_hi), (dport_lo, dport_hi) = sel.sport, sel.dport
    return _SPDADD_WHOLE.pack(
        VERSION, msg.TYPE, _ERRNO_OK, msg.req_id, 0, _ZERO3, _SPDADD_WHOLE.size,
        _POLICY_EXT.size, _X_POLICY, p.id, p.priority, p.action, _ZERO3, p.reqid,
        _SELECTOR_EXT.size, _X_SELECTOR, sel.src_lo._version, sel.proto, 0, sport_lo, sport_hi, dport_lo, dport_hi,  # type: ignore[union-attr]
        _pack_addr(sel.src_lo), _pack_addr(sel.src_hi),
        _pack_addr(sel.dst_lo), _pack_addr(sel.dst_hi),
    )  # fmt: skip


# UPDATE/ADD by (key length, selector count, with SEQ_LIMIT): the struct of the whole datagram and
# the KEY extension's length.  Few: the key length is the algorithm's, at most MAX_SELECTORS selectors.
_SA_WHOLE: Final[dict[tuple[int, int, bool], tuple[struct.Struct, int]]] = {}


def _sa_whole(key_len: int, selectors: int, seq_limit: bool) -> tuple[struct.Struct, int]:
    pad = -(_KEY_HDR.size + key_len) % 4
    fmt = _fmt(
        _HEADER, _SA_EXT, _EXT_HDR, _KEY_HDR, f"{key_len}s{pad}x", _ENDPOINT_EXT, _ENDPOINT_EXT, _LIFETIME_EXT,
        _LIFETIME_EXT, *[_SELECTOR_EXT] * selectors, *([_EXT_HDR, _SEQ_LIMIT] if seq_limit else []),
    )  # fmt: skip
    whole = _SA_WHOLE[key_len, selectors, seq_limit] = (
        struct.Struct(fmt), _EXT_HDR.size + _KEY_HDR.size + key_len + pad,
    )  # fmt: skip
    return whole


def _whole_sa(msg: Update | Add) -> bytes:
    sa = msg.sa
    key, selectors, local, remote, soft, hard = sa.key, sa.selectors, sa.local, sa.remote, sa.soft, sa.hard
    seq_limit = bool(sa.seq_limit or sa.seq_notify)
    shape = len(key), len(selectors), seq_limit
    st, key_ext_len = _SA_WHOLE.get(shape) or _sa_whole(*shape)
    flags = (_SA_ESN if sa.esn else 0) | (_SA_FIRST_USE if sa.report_first_use else 0)
    args = [
        VERSION, msg.TYPE, _ERRNO_OK, msg.req_id, 0, _ZERO3, st.size,
        _SA_EXT.size, _X_SA, sa.spi, sa.direction, sa.alg, flags, 0, sa.replay_window, sa.reqid, sa.seq_start,
        key_ext_len, _X_KEY, len(key), 0, key,
        _ENDPOINT_EXT.size, _X_LOCAL, local.addr._version, 0, local.port, _pack_addr(local.addr),  # type: ignore[union-attr]
        _ENDPOINT_EXT.size, _X_REMOTE, remote.addr._version, 0, remote.port, _pack_addr(remote.addr),  # type: ignore[union-attr]
        _LIFETIME_EXT.size, _X_SOFT, soft.bytes, soft.packets, soft.seconds,
        _LIFETIME_EXT.size, _X_HARD, hard.bytes, hard.packets, hard.seconds,
    ]  # fmt: skip
    for sel in selectors:
        (sport_lo, sport_hi), (dport_lo, dport_hi) = sel.sport, sel.dport
        args += (
            _SELECTOR_EXT.size, _X_SELECTOR, sel.src_lo._version, sel.proto, 0, sport_lo, sport_hi, dport_lo, dport_hi,  # type: ignore[union-attr]
            _pack_addr(sel.src_lo), _pack_addr(sel.src_hi), _pack_addr(sel.dst_lo), _pack_addr(sel.dst_hi),
        )  # fmt: skip
    if seq_limit:
        args += (_EXT_HDR.size + _SEQ_LIMIT.size, _X_SEQ_LIMIT, sa.seq_limit, sa.seq_notify)
    return st.pack(*args)


# SEND_IKE/IKE: the header and DATA's headers, the data, then its padding and the endpoint(s);
# the tail's struct by (padding, with a local endpoint)
_IKE_HEAD: Final = struct.Struct(_fmt(_HEADER, _EXT_HDR, _DATA_HDR))
_IKE_TAIL: Final = {
    (pad, local): struct.Struct(_fmt(f"{pad}x", *[_ENDPOINT_EXT] * (1 + local)))
    for pad in range(4) for local in (False, True)
}


def _whole_ike(msg: SendIke | Ike) -> bytes:
    if getattr(msg, "oif", 0) or msg.unmarked:
        return _encode_general(msg)   # rare (IKE past a full tunnel's TUN, an unmarked IKE_SA_INIT): the general way
    data, remote, local = msg.data, msg.remote, msg.local
    size = len(data)
    pad = -size % 4
    tail = _IKE_TAIL[pad, local is not None]
    length = _IKE_HEAD.size + size + tail.size
    if length > MAX_MESSAGE:
        return _encode_general(msg)   # its error
    head = _IKE_HEAD.pack(VERSION, msg.TYPE, _ERRNO_OK, msg.req_id, 0, _ZERO3, length,
                          _EXT_HDR.size + _DATA_HDR.size + size + pad, _X_DATA, size)
    addr = remote.addr
    if local is None:
        return b"".join((head, data, tail.pack(_ENDPOINT_EXT.size, _X_REMOTE, addr._version, 0, remote.port,  # type: ignore[union-attr]
                                               _pack_addr(addr))))
    laddr = local.addr
    return b"".join((head, data, tail.pack(
        _ENDPOINT_EXT.size, _X_REMOTE, addr._version, 0, remote.port, _pack_addr(addr),  # type: ignore[union-attr]
        _ENDPOINT_EXT.size, _X_LOCAL, laddr._version, 0, local.port, _pack_addr(laddr),  # type: ignore[union-attr]
    )))  # fmt: skip


_T_IKE: Final = MsgType.IKE
_ZERO12: Final = bytes(12)


def encode_ike_event(data: bytes, family: int, raw: bytes, port: int,
                     local_family: int, local_raw: bytes, local_port: int) -> bytes | None:
    """What encode(Ike(data, remote, local)) makes of an IKE message the fast path reports, from the
    C event's own fields (family 4 or 6, else none; a 16-byte address, an IPv4 one in its first 4;
    the port) without the Endpoint and address objects: every client's IKE_AUTH comes up so.  None
    where no Ike carries it (no peer, no data or too much): the worker takes the general way then,
    and judges it there as always.  Our address of the other family is left out, as the general way
    leaves it out.  Tests hold the two equal."""
    size = len(data)
    if (family != 4 and family != 6) or not 1 <= size <= MAX_IKE_DATA:
        return None
    with_local = local_family == family
    pad = -size % 4
    tail = _IKE_TAIL[pad, with_local]
    length = _IKE_HEAD.size + size + tail.size
    if length > MAX_MESSAGE:
        return None
    head = _IKE_HEAD.pack(VERSION, _T_IKE, _ERRNO_OK, 0, 0, _ZERO3, length,
                          _EXT_HDR.size + _DATA_HDR.size + size + pad, _X_DATA, size)
    if family == 4:   # _pack_addr's layout: the IPv4 address, then zeros (whatever C left there)
        raw = raw[:4] + _ZERO12
    if not with_local:
        return b"".join((head, data, tail.pack(_ENDPOINT_EXT.size, _X_REMOTE, family, 0, port, raw)))
    if family == 4:
        local_raw = local_raw[:4] + _ZERO12
    return b"".join((head, data, tail.pack(_ENDPOINT_EXT.size, _X_REMOTE, family, 0, port, raw,
                                           _ENDPOINT_EXT.size, _X_LOCAL, family, 0, local_port, local_raw)))


def ike_event_sender(msg: bytes) -> bytes | None:
    """The sender of an IKE event laid out as above (encode_ike_event, or encode of an Ike): its
    peer's family and 16-byte address, without the port (a NAT gives one host many, and so does a
    flooder), 17 bytes; None if msg is not so laid out.  The worker's pipe writer keeps each
    sender's waiting events to a share with it: read from bytes the worker made itself, so not
    a claim, and only when events wait (one struct call each way, no decode)."""
    try:
        data_len, data_type = _EXT_HDR.unpack_from(msg, HEADER_LEN)
        at = HEADER_LEN + data_len
        length, ext_type, family, _, _, raw = _ENDPOINT_EXT.unpack_from(msg, at)
    except struct.error:
        return None
    if data_type != _X_DATA or ext_type != _X_REMOTE or length != _ENDPOINT_EXT.size:
        return None
    sender: bytes = bytes((family,)) + raw
    return sender


_IKE_AT: Final = HEADER_LEN + _EXT_HDR.size + _DATA_HDR.size   # the IKE header in an IKE event laid out so
_IKE_FLAG_INITIATOR: Final = 0x08
_DATA_HEAD: Final = struct.Struct(_EXT_HDR.format + _DATA_HDR.format[1:])


def ike_event_own_spi(msg: bytes) -> bytes | None:
    """Our SPI in the IKE header of an IKE event laid out as above: SPIr when the original initiator
    sent it (the I flag), else SPIi; None if msg is not so laid out.  The pipe writer's share of
    each established IKE SA's events is keyed by it (the worker's own bytes, and the fast path
    found the SPI among ours)."""
    try:
        _, data_type, size = _DATA_HEAD.unpack_from(msg, HEADER_LEN)
    except struct.error:
        return None
    if data_type != _X_DATA or size < 28 or len(msg) < _IKE_AT + size:
        return None
    at = _IKE_AT + 8 if msg[_IKE_AT + 19] & _IKE_FLAG_INITIATOR else _IKE_AT
    return msg[at : at + 8]


_WHOLE: Final[dict[type, Callable[[Any], bytes]]] = {
    GetSpi: _whole_getspi, Update: _whole_sa, Add: _whole_sa, SpdAdd: _whole_spdadd, SendIke: _whole_ike,
    Ike: _whole_ike, Reply: _whole_reply,
}


def encode_dump_replies(
    req_id: int,
    sas: Iterable[SaInfo],
    policies: Iterable[PolicyInfo],
    drops: Iterable[tuple[str, int]],
    gauges: Iterable[tuple[str, int]] = (),
) -> list[bytes]:
    """The successful answer to DUMP req_id, split into datagrams that fit.

    Every datagram but the last has flag MORE.  Drop counters come first,
    then gauges, then policies, then SAs, each in the order given; every datagram with SAs
    starts their part with the SA_COUNTERS that names their counters.
    """
    whole = Reply(
        req_id, MsgType.DUMP, Errno.OK,
        sas=tuple(sas), policies=tuple(policies), drops=tuple(drops), gauges=tuple(gauges),
    )  # fmt: skip
    chunks = _chunk(_reply_exts(whole), MAX_MESSAGE - HEADER_LEN)
    out = []
    for i, chunk in enumerate(chunks):
        flags = FLAG_REPLY | (FLAG_MORE if i < len(chunks) - 1 else 0)
        out.append(_join(MsgType.DUMP, Errno.OK, req_id, flags, chunk))
    return out


def _chunk(exts: list[bytes], budget: int) -> list[list[bytes]]:
    chunks: list[list[bytes]] = [[]]
    used = 0
    names: bytes | None = None   # the SA_COUNTERS ext: SA_INFOs follow it, and it leads each datagram of them
    for ext in exts:
        if used + len(ext) > budget:
            chunks.append([] if names is None else [names])
            used = 0 if names is None else len(names)
        if names is None and _EXT_HDR.unpack_from(ext)[1] == Ext.SA_COUNTERS:
            names = ext
        chunks[-1].append(ext)
        used += len(ext)
    return chunks


def join_dump_replies(replies: Sequence[Reply]) -> Reply:
    """Merge the replies to one DUMP (in arrival order) into one Reply.

    An error answer is returned as it is.  ValueError if the sequence is not
    one complete answer: mixed ids, a MORE on the last or missing before it.
    """
    if not replies:
        raise ValueError("no replies to join")
    first, last = replies[0], replies[-1]
    for i, r in enumerate(replies):
        if r.type is not MsgType.DUMP or r.req_id != first.req_id:
            raise ValueError(f"reply {i} does not answer DUMP {first.req_id}")
        if r.more != (i < len(replies) - 1):
            raise ValueError(f"reply {i} has more={r.more} in a run of {len(replies)}")
    if last.errno is not Errno.OK:
        return last
    # tuple([...]), not tuple(<generator>): see the note at the top of decoding
    return Reply(
        first.req_id, MsgType.DUMP, Errno.OK,
        sas=tuple([s for r in replies for s in r.sas]),
        policies=tuple([p for r in replies for p in r.policies]),
        drops=tuple([d for r in replies for d in r.drops]),
        gauges=tuple([g for r in replies for g in r.gauges]),
    )  # fmt: skip


def encode_ok(req_id: int, msg_type: MsgType) -> bytes:
    """encode(Reply(req_id, msg_type, Errno.OK)) for a request whose success carries nothing
    (all but GETSPI and DUMP): the header alone, without building and checking a Reply (the
    worker answers several requests per client set-up so)."""
    if msg_type not in _BARE_OK:
        raise ValueError(f"a successful {msg_type.name} answer is not a bare header")
    if type(req_id) is not int or not 0 < req_id <= _U32:
        _check_request_id(req_id)
    return _HEADER.pack(VERSION, msg_type, _ERRNO_OK, req_id, FLAG_REPLY, _ZERO3, HEADER_LEN)


def encode_spi(req_id: int, spi: int) -> bytes:
    """encode(Reply(req_id, MsgType.GETSPI, Errno.OK, spi=spi)), a GETSPI's success, without building
    and checking a Reply (the worker answers one per client set-up)."""
    if type(req_id) is not int or not 0 < req_id <= _U32:
        _check_request_id(req_id)
    if type(spi) is not int or not MIN_SPI <= spi <= _U32:
        _check_spi("spi", spi)
    return _SPI_REPLY_WHOLE.pack(VERSION, _T_GETSPI, _ERRNO_OK, req_id, FLAG_REPLY, _ZERO3,
                                 _SPI_REPLY_WHOLE.size, _U32_EXT_LEN, _X_SPI, spi)


# the requests whose success carries nothing (a set: one hash lookup, not tests in turn)
_BARE_OK: Final = frozenset(t for t in MsgType if not t.is_event and t not in (MsgType.GETSPI, MsgType.DUMP))


def error_reply(err: PipeError) -> bytes | None:
    """The answer to a malformed request, or None if none is owed.

    None when the header was unreadable or did not mark a request (replies
    and events are never answered).  The reply echoes the raw type byte even
    when it is unknown, so a newer peer can match it to its pending request.
    """
    if not err.is_request or err.req_id is None or err.msg_type is None:
        return None
    return _header(err.msg_type, err.errno, err.req_id, FLAG_REPLY, HEADER_LEN)
