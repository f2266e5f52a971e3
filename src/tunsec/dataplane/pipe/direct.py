"""A new Child SA's UPDATE, ADD and SPDADDs encoded straight from what the IKE service holds.

Every client of a burst makes one of each (services/ike/installs.py).  Built as values and messages
(the Selectors of its traffic selectors, two Lifetimes, two SaSpecs, a Policy, Update, Add, SpdAdd,
then encode) they cost ~270k instructions per Child SA; written here straight into the datagrams,
a fraction of that.  The bytes are encode()'s of those messages, which tests/test_pipe_direct.py
holds them to.

Each function first checks at once what those values' quick checks (values.py ``_plain``) and
their checks between fields do, and returns None where one would not pass (nothing of the kind
comes from the IKE engine): the caller then builds the values, whose checks raise the error that
names what is wrong.  The request id is the last part (``request``): WorkerClient.request_soon
numbers a request as it sends it."""

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from struct import Struct
from typing import Final, Protocol

from tunsec.dataplane.pipe.encoding import (
    _ENDPOINT_EXT,
    _ERRNO_OK,
    _LIFETIME_EXT,
    _POLICY_EXT,
    _SA_EXT,
    _SELECTOR_EXT,
    _X_HARD,
    _X_KEY,
    _X_LOCAL,
    _X_POLICY,
    _X_REMOTE,
    _X_SA,
    _X_SELECTOR,
    _X_SOFT,
    _ZERO3,
    _pack_addr,
)
from tunsec.dataplane.pipe.protocol import (
    _U8,
    _U16,
    _U32,
    _U64,
    HEADER_LEN,
    MAX_SELECTORS,
    MIN_SPI,
    REPLAY_MAX,
    VERSION,
    Action,
    Alg,
    Direction,
    IPAddress,
    MsgType,
)
from tunsec.dataplane.pipe.values import _KEY_LEN, Endpoint
from tunsec.dataplane.pipe.wire import _EXT_HDR, _HEADER, _KEY_HDR, _SA_ESN, _SA_FIRST_USE, _fmt

Limits = tuple[int, int, int]   # a Lifetime's bytes, packets, seconds


class Side(Protocol):
    """One side of a traffic selector pair (policy.selector.Ts): addresses, protocol, ports."""

    @property
    def start(self) -> IPAddress: ...
    @property
    def end(self) -> IPAddress: ...
    @property
    def protocol(self) -> int: ...
    @property
    def start_port(self) -> int: ...
    @property
    def end_port(self) -> int: ...


_IN: Final = Direction.IN
_PROTECT: Final = Action.PROTECT


def _sa_body(key_len: int) -> tuple[Struct, int]:
    """The SA extension to the hard lifetime for a key of key_len bytes, and the KEY extension's length."""
    pad = -(_KEY_HDR.size + key_len) % 4
    body = Struct(_fmt(_SA_EXT, _EXT_HDR, _KEY_HDR, f"{key_len}s{pad}x", _ENDPOINT_EXT, _ENDPOINT_EXT,
                       _LIFETIME_EXT, _LIFETIME_EXT))
    return body, _EXT_HDR.size + _KEY_HDR.size + key_len + pad


# by the algorithm (its key length): as few as the algorithms
_SA_BODY: Final = {alg: _sa_body(alg.key_len) for alg in Alg}


def _ordered(side: Side, kind: type) -> bool:
    """What Selector's checks demand of one side: its addresses of ``kind`` in order, protocol and ports in range."""
    start, end, proto = side.start, side.end, side.protocol
    return (type(start) is kind and type(end) is kind and start._ip <= end._ip  # type: ignore[union-attr]
            and type(proto) is int and 0 <= proto <= _U8
            and type(side.start_port) is int and type(side.end_port) is int
            and 0 <= side.start_port <= side.end_port <= _U16)


def selectors(pairs: Sequence[tuple[Side, Side]]) -> tuple[list[bytes], list[bytes]] | None:
    """The SELECTOR extensions of (local, remote) pairs as policy.selector.fast_selectors makes them:
    outbound (from local to remote) and inbound (from remote to local); None if Selector refuses one."""
    if len(pairs) > MAX_SELECTORS:
        return None
    out: list[bytes] = []
    inb: list[bytes] = []
    pack = _SELECTOR_EXT.pack
    for lo, re_ in pairs:
        kind = type(lo.start)
        if not ((kind is IPv4Address or kind is IPv6Address) and _ordered(lo, kind) and _ordered(re_, kind)):
            return None
        version = 4 if kind is IPv4Address else 6
        proto = lo.protocol or re_.protocol
        l_lo, l_hi, r_lo, r_hi = _pack_addr(lo.start), _pack_addr(lo.end), _pack_addr(re_.start), _pack_addr(re_.end)
        out.append(pack(_SELECTOR_EXT.size, _X_SELECTOR, version, proto, 0, lo.start_port, lo.end_port,
                        re_.start_port, re_.end_port, l_lo, l_hi, r_lo, r_hi))
        inb.append(pack(_SELECTOR_EXT.size, _X_SELECTOR, version, proto, 0, re_.start_port, re_.end_port,
                        lo.start_port, lo.end_port, r_lo, r_hi, l_lo, l_hi))
    return out, inb


def _limits(lt: Limits) -> bool:
    b, p, t = lt
    return type(b) is int and type(p) is int and type(t) is int and 0 <= b <= _U64 and 0 <= p <= _U64 \
        and 0 <= t <= _U64


def sa(spi: int, direction: Direction, alg: Alg, key: bytes, esn: bool, replay_window: int, reqid: int,
       local: Endpoint, remote: Endpoint, soft: Limits, hard: Limits, sels: Sequence[bytes],
       report_first_use: bool = False) -> bytes | None:
    """An UPDATE's or ADD's extensions (as SaSpec with these fields, no sequence numbers, encodes);
    sels: SELECTOR extensions (``selectors``).  None if SaSpec would refuse them."""
    if not (type(spi) is int and MIN_SPI <= spi <= _U32 and type(direction) is Direction and type(alg) is Alg
            and type(key) is bytes and len(key) == _KEY_LEN[alg] and type(esn) is bool
            and type(replay_window) is int and (replay_window == 0 or 32 <= replay_window <= REPLAY_MAX)
            and type(reqid) is int and 0 <= reqid <= _U32
            and type(local) is Endpoint and type(remote) is Endpoint
            and local.addr._version == remote.addr._version  # type: ignore[union-attr]
            and _limits(soft) and _limits(hard) and len(sels) <= MAX_SELECTORS
            and type(report_first_use) is bool and (not report_first_use or direction is _IN)):
        return None
    (sb, sp, ss), (hb, hp, hs) = soft, hard
    if (sb and hb and sb > hb) or (sp and hp and sp > hp) or (ss and hs and ss > hs):
        return None   # a soft limit past the hard one
    body, key_ext_len = _SA_BODY[alg]
    laddr, raddr = local.addr, remote.addr
    flags = (_SA_ESN if esn else 0) | (_SA_FIRST_USE if report_first_use else 0)
    fixed = body.pack(
        _SA_EXT.size, _X_SA, spi, direction, alg, flags, 0, replay_window, reqid, 0,
        key_ext_len, _X_KEY, len(key), 0, key,
        _ENDPOINT_EXT.size, _X_LOCAL, laddr._version, 0, local.port, _pack_addr(laddr),  # type: ignore[union-attr]
        _ENDPOINT_EXT.size, _X_REMOTE, raddr._version, 0, remote.port, _pack_addr(raddr),  # type: ignore[union-attr]
        _LIFETIME_EXT.size, _X_SOFT, sb, sp, ss,
        _LIFETIME_EXT.size, _X_HARD, hb, hp, hs,
    )  # fmt: skip
    return b"".join((fixed, *sels))


def spdadd(policy_id: int, priority: int, action: Action, reqid: int, selector: bytes) -> bytes | None:
    """An SPDADD's extensions (as Policy with these fields encodes); selector: one of ``selectors``'s.
    None if Policy would refuse them."""
    if not (type(policy_id) is int and type(priority) is int and type(reqid) is int
            and 0 <= policy_id <= _U32 and 0 <= priority <= _U32 and 0 <= reqid <= _U32
            and type(action) is Action and (reqid != 0 or action is not _PROTECT)):
        return None
    return _POLICY_EXT.pack(_POLICY_EXT.size, _X_POLICY, policy_id, priority, action, _ZERO3, reqid) + selector


def request(msg_type: MsgType, req_id: int, body: bytes) -> bytes:
    """The datagram of a request with these extensions (``sa``'s, ``spdadd``'s)."""
    return _HEADER.pack(VERSION, msg_type, _ERRNO_OK, req_id, 0, _ZERO3, HEADER_LEN + len(body)) + body
