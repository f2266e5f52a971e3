"""Message codec of the pipe between the control process and the worker.

One datagram on the AF_UNIX SOCK_SEQPACKET pair is one message: a 16-byte
header and typed extensions, in the manner of PF_KEYv2 (RFC 2367).  The
exact wire layout is in docs/pipe.md; keep the two in step.

This module does no I/O.  Every value type validates itself when it is
built, and decode() rebuilds messages through the same constructors, so a
message object is always one that can be encoded and that the worker may
act on.  decode() raises only PipeError, whatever the bytes.
"""

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import ClassVar, Final, Literal, TypeAlias

__all__ = [
    "HEADER_LEN",
    "MAX_IKE_DATA",
    "MAX_MESSAGE",
    "MAX_SA_COUNTERS",
    "MAX_SELECTORS",
    "MIN_SPI",
    "VERSION",
    "Acquire",
    "Action",
    "Add",
    "Alg",
    "Delete",
    "Direction",
    "Dump",
    "Endpoint",
    "Errno",
    "Expire",
    "ExpireReason",
    "Ext",
    "FirstUse",
    "Flush",
    "GetSpi",
    "Ike",
    "InvalidSpi",
    "Lifetime",
    "Message",
    "Migrate",
    "MsgType",
    "PipeError",
    "Policy",
    "PolicyInfo",
    "Reply",
    "Reserve",
    "ReserveLow",
    "SaInfo",
    "SaSpec",
    "SaState",
    "Selector",
    "SendIke",
    "SpdAdd",
    "SpdDelete",
    "SpdFlush",
    "Update",
    "decode",
    "encode",
    "encode_dump_replies",
    "error_reply",
    "join_dump_replies",
]

VERSION: Final = 1
HEADER_LEN: Final = 16
MAX_MESSAGE: Final = 65536
MAX_IKE_DATA: Final = 65000
MAX_SELECTORS: Final = 8
MAX_SA_COUNTERS: Final = 64   # per-SA counters a DUMP may name (enum ts_sa_counter)
REPLAY_MAX: Final = 65536
# RFC 4303 2.1: SPI 0 is for local use and 1..255 are reserved by IANA, so
# no SA on the wire may carry them.
MIN_SPI: Final = 256
FLAG_REPLY: Final = 0x01
FLAG_MORE: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_REPLY | FLAG_MORE
_U8: Final = 0xFF
_U16: Final = 0xFFFF
_U32: Final = 0xFFFF_FFFF
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
SaState: TypeAlias = Literal["larval", "mature", "dead"]


class MsgType(IntEnum):
    GETSPI = 1
    UPDATE = 2
    ADD = 3
    DELETE = 4
    FLUSH = 5
    SPDADD = 6
    SPDDELETE = 7
    SPDFLUSH = 8
    DUMP = 9
    SEND_IKE = 10
    RESERVE = 11
    MIGRATE = 12   # the last request type; events start at 16
    # Events live in their own range so a glance at the type tells the
    # direction and whether an answer is due.
    ACQUIRE = 16
    EXPIRE = 17
    INVALID_SPI = 18
    IKE = 19
    RESERVE_LOW = 20
    FIRST_USE = 21

    @property
    def is_event(self) -> bool:
        return self >= MsgType.ACQUIRE


class Errno(IntEnum):
    OK = 0
    ENOENT = 2
    EIO = 5
    ENOMEM = 12
    EEXIST = 17
    EINVAL = 22
    ENOSPC = 28
    ESTATE = 200
    EVERSION = 201
    ETYPE = 202


class Direction(IntEnum):
    IN = 0
    OUT = 1


class Action(IntEnum):
    DISCARD = 0
    BYPASS = 1
    PROTECT = 2


class Alg(IntEnum):
    AES128GCM16 = 1
    AES256GCM16 = 2

    @property
    def key_len(self) -> int:
        """Key material length: AES key plus the 4-byte salt (RFC 4106)."""
        return 20 if self is Alg.AES128GCM16 else 36


class ExpireReason(IntEnum):
    BYTES = 1
    PACKETS = 2
    TIME = 3
    SEQ_OVERFLOW = 4
    LARVAL_TIMEOUT = 5


class Ext(IntEnum):
    SA = 1
    KEY = 2
    ADDR_LOCAL = 3
    ADDR_REMOTE = 4
    LIFETIME_SOFT = 5
    LIFETIME_HARD = 6
    SELECTOR = 7
    SPI_RANGE = 8
    SPI = 9
    SA_ID = 10
    POLICY = 11
    POLICY_ID = 12
    EXPIRE = 13
    DATA = 14
    SA_INFO = 15
    POLICY_INFO = 16
    DROP = 17
    LARVAL_LIFETIME = 18
    SEQ_LIMIT = 19
    ADDR_NEW_REMOTE = 20
    SA_COUNTERS = 22


class PipeError(Exception):
    """A message that cannot be decoded (or an answer that reports one).

    req_id and msg_type are set whenever the header could be read, so that
    the worker can answer a malformed request with the right id and type
    (see error_reply) and the control side can fail the right pending call.
    msg_type is the raw type byte: a MsgType when the type is known.
    """

    def __init__(
        self,
        errno: Errno,
        detail: str,
        *,
        req_id: int | None = None,
        msg_type: int | None = None,
        is_request: bool = False,
    ) -> None:
        super().__init__(f"{errno.name}: {detail}")
        self.errno = errno
        self.detail = detail
        self.req_id = req_id
        self.msg_type = msg_type
        # True when the header marks a request, i.e. something that is owed
        # an answer; replies and events are never answered.
        self.is_request = is_request


# ---------------------------------------------------------------- validation
# Constructors raise TypeError/ValueError like any Python value; decode()
# turns those into PipeError(EINVAL).  No message may quote key bytes.


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    # bool is an int subclass; a True where a port belongs is a bug.  (type() is int first:
    # the common case in a check that runs dozens of times per message)
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be an int")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is outside {lo}..{hi}")


def _check_type(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {_kind_name(kind)}, not {type(value).__name__}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _check_addr(name: str, value: object) -> None:
    _check_type(name, value, (IPv4Address, IPv6Address))


def _check_port_range(name: str, value: object) -> None:
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(f"{name} must be a (lo, hi) tuple")
    lo, hi = value
    _check_int(f"{name}[0]", lo, 0, _U16)
    _check_int(f"{name}[1]", hi, 0, _U16)
    if lo > hi:
        raise ValueError(f"{name} range {lo}..{hi} is reversed")


def _check_replay_window(value: object) -> None:
    _check_int("replay_window", value, 0, REPLAY_MAX)
    if isinstance(value, int) and 0 < value < 32:
        raise ValueError(f"replay_window={value} must be 0 (off) or 32..{REPLAY_MAX}")


def _check_spi(name: str, value: object) -> None:
    _check_int(name, value, MIN_SPI, _U32)


def _check_tuple_of(name: str, value: object, kind: type, hi: int) -> None:
    if not isinstance(value, tuple):
        raise TypeError(f"{name} must be a tuple")
    if len(value) > hi:
        raise ValueError(f"{name} has {len(value)} entries, at most {hi} allowed")
    for i, item in enumerate(value):
        _check_type(f"{name}[{i}]", item, kind)


def _check_same_family(a: "Endpoint | None", b: "Endpoint | None") -> None:
    # One UDP socket per family carries an SA, so both ends share it.
    if a is not None and b is not None and a.family != b.family:
        raise ValueError("local and remote endpoints are of different address families")


def _check_sa_peer(direction: object, remote: object) -> None:
    # An inbound SA is ours by SPI alone; an outbound one is (SPI, peer).
    if direction is Direction.OUT:
        _check_type("remote", remote, Endpoint)
    elif remote is not None:
        raise ValueError("an inbound SA is named by its SPI alone: remote must be None")


def _check_ike_data(value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"data must be bytes, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_IKE_DATA:
        raise ValueError(f"IKE data of {len(value)} bytes, 1..{MAX_IKE_DATA} allowed")


# a drop or per-SA counter's name (DUMP carries them by name, the C enum member in lower case)
_DROP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _check_drops(value: object) -> None:
    if not isinstance(value, tuple):
        raise TypeError("drops must be a tuple of (name, count) pairs")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError("drops must be a tuple of (name, count) pairs")
        name, count = item
        if not _DROP_NAME.fullmatch(name):
            raise ValueError(f"drop counter name {name!r} is not [a-z][a-z0-9_]{{0,31}}")
        if name in seen:
            raise ValueError(f"drop counter {name!r} appears twice")
        seen.add(name)
        _check_int(f"drops[{name}]", count, 0, _U64)


def _check_counters(value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError("counters must be a mapping of name to count")
    if len(value) > MAX_SA_COUNTERS:
        raise ValueError(f"{len(value)} per-SA counters, at most {MAX_SA_COUNTERS}")
    for name, count in value.items():
        if not isinstance(name, str) or not _DROP_NAME.fullmatch(name):
            raise ValueError(f"per-SA counter name {name!r} is not [a-z][a-z0-9_]{{0,31}}")
        if type(count) is not int or not 0 <= count <= _U64:   # per SA per DUMP: the message only on failure
            _check_int(f"counters[{name}]", count, 0, _U64)


# --------------------------------------------------------------- value types


@dataclass(frozen=True)
class Endpoint:
    """An outer address and UDP port."""

    addr: IPAddress
    port: int

    def __post_init__(self) -> None:
        _check_addr("addr", self.addr)
        _check_int("port", self.port, 0, _U16)

    @property
    def family(self) -> int:
        return self.addr.version


@dataclass(frozen=True)
class Selector:
    """Inclusive address/port ranges and one protocol (0 = any)."""

    src_lo: IPAddress
    src_hi: IPAddress
    dst_lo: IPAddress
    dst_hi: IPAddress
    proto: int = 0
    sport: tuple[int, int] = (0, _U16)
    dport: tuple[int, int] = (0, _U16)

    def __post_init__(self) -> None:
        addrs = (self.src_lo, self.src_hi, self.dst_lo, self.dst_hi)
        for name, addr in zip(("src_lo", "src_hi", "dst_lo", "dst_hi"), addrs, strict=True):
            _check_addr(name, addr)
        if len({a.version for a in addrs}) != 1:
            raise ValueError("selector mixes IPv4 and IPv6 addresses")
        # int() orders addresses of one family as the C side's bytewise compare.
        if int(self.src_lo) > int(self.src_hi):
            raise ValueError(f"source range {self.src_lo}..{self.src_hi} is reversed")
        if int(self.dst_lo) > int(self.dst_hi):
            raise ValueError(f"destination range {self.dst_lo}..{self.dst_hi} is reversed")
        _check_int("proto", self.proto, 0, _U8)
        _check_port_range("sport", self.sport)
        _check_port_range("dport", self.dport)

    @classmethod
    def from_networks(
        cls,
        src: IPNetwork,
        dst: IPNetwork,
        proto: int = 0,
        sport: tuple[int, int] = (0, _U16),
        dport: tuple[int, int] = (0, _U16),
    ) -> "Selector":
        _check_type("src", src, (IPv4Network, IPv6Network))
        _check_type("dst", dst, (IPv4Network, IPv6Network))
        return cls(
            src.network_address,
            src.broadcast_address,
            dst.network_address,
            dst.broadcast_address,
            proto,
            sport,
            dport,
        )

    @property
    def family(self) -> int:
        return self.src_lo.version


@dataclass(frozen=True)
class Lifetime:
    """Limits of an SA; 0 means unlimited."""

    bytes: int = 0
    packets: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        _check_int("bytes", self.bytes, 0, _U64)
        _check_int("packets", self.packets, 0, _U64)
        _check_int("seconds", self.seconds, 0, _U64)


def _check_reservation(limit: object, notify: object, esn: bool) -> None:
    _check_int("seq_limit", limit, 0, _U64 if esn else _U32)
    _check_int("seq_notify", notify, 0, _U64)


def _check_lifetimes(soft: Lifetime, hard: Lifetime) -> None:
    # A soft limit past the hard one could never fire: the SA is gone first.
    for name, s, h in (("bytes", soft.bytes, hard.bytes), ("packets", soft.packets, hard.packets),
                       ("seconds", soft.seconds, hard.seconds)):
        if s and h and s > h:
            raise ValueError(f"soft {name} limit {s} exceeds the hard limit {h}")


@dataclass(frozen=True)
class SaSpec:
    """Everything UPDATE/ADD install.  `key` is key || 4-byte salt."""

    spi: int
    direction: Direction
    alg: Alg
    key: bytes = field(repr=False)
    esn: bool
    replay_window: int
    reqid: int
    local: Endpoint
    remote: Endpoint
    soft: Lifetime
    hard: Lifetime
    selectors: tuple[Selector, ...]
    seq_start: int = 0
    # reservation (manual keys): 0 = none; see Reserve.  With a limit, an IN
    # SA's seq_start is its replay floor: everything <= it counts as seen.
    seq_limit: int = 0
    seq_notify: int = 0
    # IN only: the worker sends one FIRST_USE when the first packet passes ICV
    # verification (proof the peer sends on this SA; see FirstUse)
    report_first_use: bool = False

    def __post_init__(self) -> None:
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_type("alg", self.alg, Alg)
        _check_type("key", self.key, bytes)
        if len(self.key) != self.alg.key_len:
            raise ValueError(f"key is {len(self.key)} bytes, {self.alg.name} needs {self.alg.key_len}")
        _check_type("esn", self.esn, bool)
        _check_replay_window(self.replay_window)
        _check_int("reqid", self.reqid, 0, _U32)
        _check_type("local", self.local, Endpoint)
        _check_type("remote", self.remote, Endpoint)
        _check_same_family(self.local, self.remote)
        _check_type("soft", self.soft, Lifetime)
        _check_type("hard", self.hard, Lifetime)
        _check_lifetimes(self.soft, self.hard)
        _check_tuple_of("selectors", self.selectors, Selector, MAX_SELECTORS)
        # Without ESN sequence numbers are 32 bits wide (RFC 4303 2.2).
        _check_int("seq_start", self.seq_start, 0, _U64 if self.esn else _U32)
        _check_reservation(self.seq_limit, self.seq_notify, self.esn)
        if self.seq_limit and self.seq_limit < self.seq_start:
            raise ValueError(f"seq_limit={self.seq_limit} is below seq_start={self.seq_start}")
        _check_type("report_first_use", self.report_first_use, bool)
        if self.report_first_use and self.direction is not Direction.IN:
            raise ValueError("report_first_use is for inbound SAs: only what arrives proves the peer uses an SA")

    def __repr__(self) -> str:
        # The key must never reach a log, a traceback or a test report.
        parts = [
            f"{f.name}=<{len(self.key)} bytes>" if f.name == "key" else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        ]
        return f"SaSpec({', '.join(parts)})"


@dataclass(frozen=True)
class Policy:
    """An SPD entry.  Lower priority values are matched first."""

    id: int
    priority: int
    action: Action
    reqid: int
    selector: Selector

    def __post_init__(self) -> None:
        _check_int("id", self.id, 0, _U32)
        _check_int("priority", self.priority, 0, _U32)
        _check_type("action", self.action, Action)
        _check_int("reqid", self.reqid, 0, _U32)
        # reqid is what binds a PROTECT policy to its outbound SA; 0 would
        # bind it to nothing, forever.
        if self.action is Action.PROTECT and self.reqid == 0:
            raise ValueError("a PROTECT policy needs a non-zero reqid")
        _check_type("selector", self.selector, Selector)


_STATES: Final[tuple[SaState, ...]] = ("larval", "mature", "dead")


@dataclass(frozen=True)
class SaInfo:
    """One SA in a DUMP.  alg/local/remote are None while an SA is larval.

    counters are the fast path's per-SA counters by name (enum ts_sa_counter
    in csrc/tunsec_dp.h, read by fastpath.SA_COUNTERS; packets, bytes,
    replay_drops, ...): the codec carries whatever names the worker sends, so a
    new counter needs no change here.  The SAs of one DUMP share one set of names.
    """

    spi: int
    direction: Direction
    state: SaState
    alg: Alg | None
    esn: bool
    reqid: int
    replay_window: int
    local: Endpoint | None
    remote: Endpoint | None
    seq: int
    soft_fired: bool
    hard_fired: bool
    age_seconds: int
    counters: Mapping[str, int]

    def __post_init__(self) -> None:
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        if self.state not in _STATES:
            raise ValueError(f"state must be one of {_STATES}")
        if self.alg is not None:
            _check_type("alg", self.alg, Alg)
        for name in ("esn", "soft_fired", "hard_fired"):
            _check_type(name, getattr(self, name), bool)
        _check_int("reqid", self.reqid, 0, _U32)
        _check_replay_window(self.replay_window)
        for name in ("local", "remote"):
            if getattr(self, name) is not None:
                _check_type(name, getattr(self, name), Endpoint)
        _check_same_family(self.local, self.remote)
        if self.state == "mature" and None in (self.alg, self.local, self.remote):
            raise ValueError("a mature SA has an algorithm and both endpoints")
        for name in ("seq", "age_seconds"):
            _check_int(name, getattr(self, name), 0, _U64)
        _check_counters(self.counters)


@dataclass(frozen=True)
class PolicyInfo:
    """One SPD entry in a DUMP.  out_spi 0 = no SA bound."""

    id: int
    priority: int
    action: Action
    reqid: int
    out_spi: int
    packets: int
    selector: Selector

    def __post_init__(self) -> None:
        _check_int("id", self.id, 0, _U32)
        _check_int("priority", self.priority, 0, _U32)
        _check_type("action", self.action, Action)
        _check_int("reqid", self.reqid, 0, _U32)
        if self.out_spi != 0:
            _check_spi("out_spi", self.out_spi)
        _check_int("packets", self.packets, 0, _U64)
        _check_type("selector", self.selector, Selector)


# ------------------------------------------------------------------ messages


def _check_request_id(req_id: object) -> None:
    # 0 is reserved for events, so a request with it could not be answered.
    _check_int("req_id", req_id, 1, _U32)


def _check_event_id(req_id: object) -> None:
    _check_int("req_id", req_id, 0, 0)


@dataclass(frozen=True)
class GetSpi:
    """A larval inbound SA.  larval_seconds: how long it may stay larval before
    the worker removes it (None: the worker's --larval-timeout; 0: never, the
    requester completes or deletes it itself)."""

    TYPE: ClassVar[MsgType] = MsgType.GETSPI
    req_id: int
    lo: int
    hi: int
    larval_seconds: int | None = None

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("lo", self.lo)
        _check_spi("hi", self.hi)
        if self.larval_seconds is not None:
            _check_int("larval_seconds", self.larval_seconds, 0, _U32)
        if self.lo > self.hi:
            raise ValueError(f"SPI range {self.lo:#x}..{self.hi:#x} is reversed")


@dataclass(frozen=True)
class Update:
    TYPE: ClassVar[MsgType] = MsgType.UPDATE
    req_id: int
    sa: SaSpec

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_type("sa", self.sa, SaSpec)


@dataclass(frozen=True)
class Add:
    TYPE: ClassVar[MsgType] = MsgType.ADD
    req_id: int
    sa: SaSpec

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_type("sa", self.sa, SaSpec)


@dataclass(frozen=True)
class Delete:
    TYPE: ClassVar[MsgType] = MsgType.DELETE
    req_id: int
    spi: int
    direction: Direction
    remote: Endpoint | None = None   # OUT: the peer; peers choose outbound SPIs, so they may collide

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_sa_peer(self.direction, self.remote)


@dataclass(frozen=True)
class Flush:
    TYPE: ClassVar[MsgType] = MsgType.FLUSH
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@dataclass(frozen=True)
class SpdAdd:
    TYPE: ClassVar[MsgType] = MsgType.SPDADD
    req_id: int
    policy: Policy

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_type("policy", self.policy, Policy)


@dataclass(frozen=True)
class SpdDelete:
    TYPE: ClassVar[MsgType] = MsgType.SPDDELETE
    req_id: int
    id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_int("id", self.id, 0, _U32)


@dataclass(frozen=True)
class SpdFlush:
    TYPE: ClassVar[MsgType] = MsgType.SPDFLUSH
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@dataclass(frozen=True)
class Dump:
    TYPE: ClassVar[MsgType] = MsgType.DUMP
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@dataclass(frozen=True)
class SendIke:
    """An IKE message to send from port 4500 (the worker adds the marker)."""

    TYPE: ClassVar[MsgType] = MsgType.SEND_IKE
    req_id: int
    data: bytes
    remote: Endpoint
    local: Endpoint | None = None

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_ike_data(self.data)
        _check_type("remote", self.remote, Endpoint)
        if self.local is not None:
            _check_type("local", self.local, Endpoint)
        _check_same_family(self.local, self.remote)


@dataclass(frozen=True)
class Reserve:
    """Raise an SA's reservation: no sequence number above limit is sent (OUT)
    or accepted (IN); RESERVE_LOW comes once the SA reaches notify (0 = never).
    The limit never goes down (EINVAL); send it only once it is persisted."""

    TYPE: ClassVar[MsgType] = MsgType.RESERVE
    req_id: int
    spi: int
    direction: Direction
    limit: int
    notify: int = 0
    remote: Endpoint | None = None   # OUT: the peer, as in Delete

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_int("limit", self.limit, 1, _U64)
        _check_int("notify", self.notify, 0, _U64)
        _check_sa_peer(self.direction, self.remote)


@dataclass(frozen=True)
class Migrate:
    """Move a mature SA to a new peer endpoint without re-keying: the peer's
    address or NAT mapping changed (NAT rebinding, MOBIKE).  The SA is named
    as in Delete (an OUT SA by its old peer); keys, sequence numbers and
    counters stay.  ENOENT: no such SA; ESTATE: larval; EINVAL: another
    address family; EEXIST: an OUT SA with this SPI already goes there."""

    TYPE: ClassVar[MsgType] = MsgType.MIGRATE
    req_id: int
    spi: int
    direction: Direction
    new_remote: Endpoint
    remote: Endpoint | None = None   # OUT: the peer it goes to now

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_type("new_remote", self.new_remote, Endpoint)
        _check_sa_peer(self.direction, self.remote)
        if self.remote is not None and self.remote.family != self.new_remote.family:
            raise ValueError("an SA moves within its address family: remote and new_remote differ")


@dataclass(frozen=True)
class Reply:
    """The answer to any request; `type` names the request it answers.

    spi is set exactly on a successful GETSPI answer; sas/policies/drops only
    on a successful DUMP answer, which may span several messages (more=True
    on all but the last; see encode_dump_replies and join_dump_replies).
    """

    req_id: int
    type: MsgType
    errno: Errno
    spi: int | None = None
    more: bool = False
    sas: tuple[SaInfo, ...] = ()
    policies: tuple[PolicyInfo, ...] = ()
    drops: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_type("type", self.type, MsgType)
        if self.type.is_event:
            raise ValueError(f"{self.type.name} is an event and gets no reply")
        _check_type("errno", self.errno, Errno)
        ok = self.errno is Errno.OK
        self._check_spi(ok)
        self._check_dump(ok)

    def _check_spi(self, ok: bool) -> None:
        if self.type is MsgType.GETSPI and ok:
            _check_spi("spi", self.spi)
        elif self.spi is not None:
            raise ValueError("only a successful GETSPI reply carries an spi")

    def _check_dump(self, ok: bool) -> None:
        _check_type("more", self.more, bool)
        _check_tuple_of("sas", self.sas, SaInfo, _U32)
        _check_tuple_of("policies", self.policies, PolicyInfo, _U32)
        _check_drops(self.drops)
        if self.sas and any(sa.counters.keys() != self.sas[0].counters.keys() for sa in self.sas):
            raise ValueError("the SAs of one DUMP reply must have the same counter names")
        if self.type is MsgType.DUMP and ok:
            return
        if self.more or self.sas or self.policies or self.drops:
            raise ValueError("only a successful DUMP reply carries more/sas/policies/drops")


@dataclass(frozen=True, kw_only=True)
class Acquire:
    """A packet hit a PROTECT policy with no SA; selector is its 5-tuple."""

    TYPE: ClassVar[MsgType] = MsgType.ACQUIRE
    req_id: int = 0
    policy_id: int
    selector: Selector

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_int("policy_id", self.policy_id, 0, _U32)
        _check_type("selector", self.selector, Selector)


@dataclass(frozen=True, kw_only=True)
class Expire:
    TYPE: ClassVar[MsgType] = MsgType.EXPIRE
    req_id: int = 0
    spi: int
    direction: Direction
    hard: bool
    reason: ExpireReason
    remote: Endpoint | None = None   # OUT: the SA's peer (see Delete)

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_sa_peer(self.direction, self.remote)
        _check_type("hard", self.hard, bool)
        _check_type("reason", self.reason, ExpireReason)


@dataclass(frozen=True, kw_only=True)
class InvalidSpi:
    """ESP for an unknown SPI.  Any 32-bit value: it is what arrived."""

    TYPE: ClassVar[MsgType] = MsgType.INVALID_SPI
    req_id: int = 0
    spi: int
    remote: Endpoint

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_int("spi", self.spi, 0, _U32)
        _check_type("remote", self.remote, Endpoint)


@dataclass(frozen=True, kw_only=True)
class Ike:
    """An IKE message that arrived on port 4500, non-ESP marker stripped."""

    TYPE: ClassVar[MsgType] = MsgType.IKE
    req_id: int = 0
    data: bytes
    remote: Endpoint
    local: Endpoint | None = None

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_ike_data(self.data)
        _check_type("remote", self.remote, Endpoint)
        if self.local is not None:
            _check_type("local", self.local, Endpoint)
        _check_same_family(self.local, self.remote)


@dataclass(frozen=True, kw_only=True)
class ReserveLow:
    """An SA reached the notify point of its reservation: reserve more numbers.
    needed (IN) != 0: an authenticated packet carried this number, above the
    limit (a sender that restarted and jumped ahead); reserve past it."""

    TYPE: ClassVar[MsgType] = MsgType.RESERVE_LOW
    req_id: int = 0
    spi: int
    direction: Direction
    needed: int = 0
    remote: Endpoint | None = None   # OUT: the peer, as in Delete

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_int("needed", self.needed, 0, _U64)
        _check_sa_peer(self.direction, self.remote)


@dataclass(frozen=True, kw_only=True)
class FirstUse:
    """The first authenticated packet arrived on an inbound SA that was UPDATEd
    with report_first_use: the peer has installed it and sends on it."""

    TYPE: ClassVar[MsgType] = MsgType.FIRST_USE
    req_id: int = 0
    spi: int

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_spi("spi", self.spi)


Request: TypeAlias = (
    GetSpi | Update | Add | Delete | Flush | SpdAdd | SpdDelete | SpdFlush | Dump | SendIke | Reserve
    | Migrate
)
Event: TypeAlias = Acquire | Expire | InvalidSpi | Ike | ReserveLow | FirstUse
Message: TypeAlias = Request | Reply | Event

# --------------------------------------------------------------- wire structs

_HEADER = struct.Struct("!BBHIB3sI")
_EXT_HDR = struct.Struct("!HH")
_ENDPOINT = struct.Struct("!BBH16s")
_SELECTOR = struct.Struct("!BBHHHHH16s16s16s16s")
_SA = struct.Struct("!IBBBBIIQ")
_KEY_HDR = struct.Struct("!HH")
_LIFETIME = struct.Struct("!QQQ")
_SPI_RANGE = struct.Struct("!II")
_U32_BODY = struct.Struct("!I")
_SA_ID = struct.Struct("!IB3s")
_POLICY = struct.Struct("!IIB3sI")
_EXPIRE = struct.Struct("!IBBBB")
_DATA_HDR = struct.Struct("!I")
_SA_INFO = struct.Struct("!IBBBBII20s20sQQ")   # followed by the counters SA_COUNTERS names
_SA_COUNTERS_HDR = struct.Struct("!H2s")
_POLICY_INFO = struct.Struct("!IIB3sIIQ76s")
_DROP_HDR = struct.Struct("!B3sQ")
_SEQ_LIMIT = struct.Struct("!QQ")

# SA flag bits (SA and SA_INFO extensions)
_SA_ESN: Final = 0x01
_SA_SOFT_FIRED: Final = 0x02
_SA_HARD_FIRED: Final = 0x04
_SA_FIRST_USE: Final = 0x08   # SA only: report_first_use

# Body length of the fixed-size extensions (None = variable, checked by the
# extension's own decoder).
_BODY_LEN: Final[dict[Ext, int | None]] = {
    Ext.SA: _SA.size,
    Ext.KEY: None,
    Ext.ADDR_LOCAL: _ENDPOINT.size,
    Ext.ADDR_REMOTE: _ENDPOINT.size,
    Ext.LIFETIME_SOFT: _LIFETIME.size,
    Ext.LIFETIME_HARD: _LIFETIME.size,
    Ext.SELECTOR: _SELECTOR.size,
    Ext.SPI_RANGE: _SPI_RANGE.size,
    Ext.SPI: _U32_BODY.size,
    Ext.SA_ID: _SA_ID.size,
    Ext.POLICY: _POLICY.size,
    Ext.POLICY_ID: _U32_BODY.size,
    Ext.EXPIRE: _EXPIRE.size,
    Ext.DATA: None,
    Ext.SA_INFO: None,
    Ext.POLICY_INFO: _POLICY_INFO.size,
    Ext.DROP: None,
    Ext.LARVAL_LIFETIME: _U32_BODY.size,
    Ext.SEQ_LIMIT: _SEQ_LIMIT.size,
    Ext.ADDR_NEW_REMOTE: _ENDPOINT.size,
    Ext.SA_COUNTERS: None,
}

_MANY: Final = MAX_MESSAGE  # no count limit beyond the datagram size
_Schema: TypeAlias = dict[Ext, tuple[int, int]]  # ext -> (min, max) count
_SA_SCHEMA: Final[_Schema] = {
    Ext.SA: (1, 1),
    Ext.KEY: (1, 1),
    Ext.ADDR_LOCAL: (1, 1),
    Ext.ADDR_REMOTE: (1, 1),
    Ext.LIFETIME_SOFT: (1, 1),
    Ext.LIFETIME_HARD: (1, 1),
    Ext.SELECTOR: (0, MAX_SELECTORS),
    Ext.SEQ_LIMIT: (0, 1),
}
_IKE_SCHEMA: Final[_Schema] = {Ext.DATA: (1, 1), Ext.ADDR_REMOTE: (1, 1), Ext.ADDR_LOCAL: (0, 1)}
_SCHEMA: Final[dict[MsgType, _Schema]] = {
    MsgType.GETSPI: {Ext.SPI_RANGE: (1, 1), Ext.LARVAL_LIFETIME: (0, 1)},
    MsgType.UPDATE: _SA_SCHEMA,
    MsgType.ADD: _SA_SCHEMA,
    MsgType.DELETE: {Ext.SA_ID: (1, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.FLUSH: {},
    MsgType.SPDADD: {Ext.POLICY: (1, 1), Ext.SELECTOR: (1, 1)},
    MsgType.SPDDELETE: {Ext.POLICY_ID: (1, 1)},
    MsgType.SPDFLUSH: {},
    MsgType.DUMP: {},
    MsgType.SEND_IKE: _IKE_SCHEMA,
    MsgType.ACQUIRE: {Ext.POLICY_ID: (1, 1), Ext.SELECTOR: (1, 1)},
    MsgType.EXPIRE: {Ext.EXPIRE: (1, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.INVALID_SPI: {Ext.SPI: (1, 1), Ext.ADDR_REMOTE: (1, 1)},
    MsgType.IKE: _IKE_SCHEMA,
    MsgType.RESERVE: {Ext.SA_ID: (1, 1), Ext.SEQ_LIMIT: (1, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.RESERVE_LOW: {Ext.SA_ID: (1, 1), Ext.SEQ_LIMIT: (0, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.FIRST_USE: {Ext.SPI: (1, 1)},
    MsgType.MIGRATE: {Ext.SA_ID: (1, 1), Ext.ADDR_NEW_REMOTE: (1, 1), Ext.ADDR_REMOTE: (0, 1)},
}
_DUMP_REPLY_SCHEMA: Final[_Schema] = {
    Ext.SA_COUNTERS: (0, 1),
    Ext.SA_INFO: (0, _MANY),
    Ext.POLICY_INFO: (0, _MANY),
    Ext.DROP: (0, _MANY),
}


def _reply_schema(msg_type: MsgType, errno: Errno) -> _Schema:
    if errno is not Errno.OK:
        return {}
    if msg_type is MsgType.GETSPI:
        return {Ext.SPI: (1, 1)}
    if msg_type is MsgType.DUMP:
        return _DUMP_REPLY_SCHEMA
    return {}


# ------------------------------------------------------------------ encoding


def _ext(ext_type: Ext, body: bytes) -> bytes:
    pad = -len(body) % 4
    return _EXT_HDR.pack(4 + len(body) + pad, ext_type) + body + bytes(pad)


def _header(msg_type: int, errno: int, req_id: int, flags: int, length: int) -> bytes:
    return _HEADER.pack(VERSION, msg_type, errno, req_id, flags, bytes(3), length)


def _pack_addr(addr: IPAddress) -> bytes:
    return addr.packed.ljust(16, b"\0")


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


def _sa_exts(sa: SaSpec) -> list[bytes]:
    flags = (_SA_ESN if sa.esn else 0) | (_SA_FIRST_USE if sa.report_first_use else 0)
    sa_body = _SA.pack(sa.spi, sa.direction, sa.alg, flags, 0, sa.replay_window, sa.reqid, sa.seq_start)
    exts = [
        _ext(Ext.SA, sa_body),
        _ext(Ext.KEY, _KEY_HDR.pack(len(sa.key), 0) + sa.key),
        _ext(Ext.ADDR_LOCAL, _pack_endpoint(sa.local)),
        _ext(Ext.ADDR_REMOTE, _pack_endpoint(sa.remote)),
        _ext(Ext.LIFETIME_SOFT, _pack_lifetime(sa.soft)),
        _ext(Ext.LIFETIME_HARD, _pack_lifetime(sa.hard)),
    ]
    exts += [_ext(Ext.SELECTOR, _pack_selector(s)) for s in sa.selectors]
    if sa.seq_limit or sa.seq_notify:
        exts.append(_ext(Ext.SEQ_LIMIT, _SEQ_LIMIT.pack(sa.seq_limit, sa.seq_notify)))
    return exts


def _ike_exts(data: bytes, remote: Endpoint, local: Endpoint | None) -> list[bytes]:
    exts = [
        _ext(Ext.DATA, _DATA_HDR.pack(len(data)) + data),
        _ext(Ext.ADDR_REMOTE, _pack_endpoint(remote)),
    ]
    if local is not None:
        exts.append(_ext(Ext.ADDR_LOCAL, _pack_endpoint(local)))
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


def _drop_ext(name: str, count: int) -> bytes:
    raw = name.encode("ascii")
    return _ext(Ext.DROP, _DROP_HDR.pack(len(raw), bytes(3), count) + raw)


def _sa_info_exts(sas: Sequence[SaInfo]) -> list[bytes]:
    """SA_INFO extensions, led by the SA_COUNTERS that names their counters (none without SAs)."""
    if not sas:
        return []
    names = list(sas[0].counters)
    return [_sa_counters_ext(names)] + [_sa_info_ext(s, names) for s in sas]


def _reply_exts(msg: Reply) -> list[bytes]:
    exts = [_drop_ext(name, count) for name, count in msg.drops]
    exts += [_policy_info_ext(p) for p in msg.policies]
    exts += _sa_info_exts(msg.sas)
    if msg.spi is not None:
        exts.append(_ext(Ext.SPI, _U32_BODY.pack(msg.spi)))
    return exts


def _extensions(msg: Message) -> list[bytes]:
    match msg:
        case GetSpi(lo=lo, hi=hi, larval_seconds=larval):
            exts = [_ext(Ext.SPI_RANGE, _SPI_RANGE.pack(lo, hi))]
            if larval is not None:
                exts.append(_ext(Ext.LARVAL_LIFETIME, _U32_BODY.pack(larval)))
            return exts
        case Update(sa=sa) | Add(sa=sa):
            return _sa_exts(sa)
        case Delete(spi=spi, direction=direction, remote=remote):
            return [_ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3))), *_opt_remote(remote)]
        case SpdAdd(policy=p):
            body = _POLICY.pack(p.id, p.priority, p.action, bytes(3), p.reqid)
            return [_ext(Ext.POLICY, body), _ext(Ext.SELECTOR, _pack_selector(p.selector))]
        case SpdDelete(id=policy_id):
            return [_ext(Ext.POLICY_ID, _U32_BODY.pack(policy_id))]
        case Acquire(policy_id=policy_id, selector=selector):
            return [
                _ext(Ext.POLICY_ID, _U32_BODY.pack(policy_id)),
                _ext(Ext.SELECTOR, _pack_selector(selector)),
            ]
        case SendIke(data=data, remote=remote, local=local) | Ike(data=data, remote=remote, local=local):
            return _ike_exts(data, remote, local)
        case Expire(spi=spi, direction=direction, hard=hard, reason=reason, remote=remote):
            return [_ext(Ext.EXPIRE, _EXPIRE.pack(spi, direction, int(hard), reason, 0)), *_opt_remote(remote)]
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
        case Migrate(spi=spi, direction=direction, new_remote=new_remote, remote=remote):
            return [
                _ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3))),
                _ext(Ext.ADDR_NEW_REMOTE, _pack_endpoint(new_remote)),
                *_opt_remote(remote),
            ]
        case ReserveLow(spi=spi, direction=direction, needed=needed, remote=remote):
            exts = [_ext(Ext.SA_ID, _SA_ID.pack(spi, direction, bytes(3)))]
            if needed:
                exts.append(_ext(Ext.SEQ_LIMIT, _SEQ_LIMIT.pack(needed, 0)))
            return [*exts, *_opt_remote(remote)]
        case FirstUse(spi=spi):
            return [_ext(Ext.SPI, _U32_BODY.pack(spi))]
        case Reply():
            return _reply_exts(msg)
        case Flush() | SpdFlush() | Dump():
            return []  # the header says it all
    raise TypeError(f"not a pipe message: {type(msg).__name__}")


def _opt_remote(remote: Endpoint | None) -> list[bytes]:
    return [] if remote is None else [_ext(Ext.ADDR_REMOTE, _pack_endpoint(remote))]


def _join(msg_type: int, errno: int, req_id: int, flags: int, exts: list[bytes]) -> bytes:
    length = HEADER_LEN + sum(len(e) for e in exts)
    if length > MAX_MESSAGE:
        raise ValueError(
            f"message of {length} bytes exceeds {MAX_MESSAGE} (split DUMP answers with encode_dump_replies)"
        )
    return b"".join([_header(msg_type, errno, req_id, flags, length), *exts])


def encode(msg: Message) -> bytes:
    """The datagram for msg.  ValueError if it would exceed MAX_MESSAGE."""
    if isinstance(msg, Reply):
        flags = FLAG_REPLY | (FLAG_MORE if msg.more else 0)
        return _join(msg.type, msg.errno, msg.req_id, flags, _extensions(msg))
    return _join(msg.TYPE, Errno.OK, msg.req_id, 0, _extensions(msg))


def encode_dump_replies(
    req_id: int,
    sas: Iterable[SaInfo],
    policies: Iterable[PolicyInfo],
    drops: Iterable[tuple[str, int]],
) -> list[bytes]:
    """The successful answer to DUMP req_id, split into datagrams that fit.

    Every datagram but the last has flag MORE.  Drop counters come first,
    then policies, then SAs, each in the order given; every datagram with SAs
    starts their part with the SA_COUNTERS that names their counters.
    """
    whole = Reply(
        req_id, MsgType.DUMP, Errno.OK,
        sas=tuple(sas), policies=tuple(policies), drops=tuple(drops),
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
    )  # fmt: skip


def encode_ok(req_id: int, msg_type: MsgType) -> bytes:
    """encode(Reply(req_id, msg_type, Errno.OK)) for a request whose success carries nothing
    (all but GETSPI and DUMP): the header alone, without building and checking a Reply (the
    worker answers several requests per client set-up so)."""
    if msg_type in (MsgType.GETSPI, MsgType.DUMP) or msg_type.is_event:
        raise ValueError(f"a successful {msg_type.name} answer is not a bare header")
    _check_request_id(req_id)
    return _header(msg_type, Errno.OK, req_id, FLAG_REPLY, HEADER_LEN)


def error_reply(err: PipeError) -> bytes | None:
    """The answer to a malformed request, or None if none is owed.

    None when the header was unreadable or did not mark a request (replies
    and events are never answered).  The reply echoes the raw type byte even
    when it is unknown, so a newer peer can match it to its pending request.
    """
    if not err.is_request or err.req_id is None or err.msg_type is None:
        return None
    return _header(err.msg_type, err.errno, err.req_id, FLAG_REPLY, HEADER_LEN)


# ------------------------------------------------------------------ decoding

# Tuples of a variable length are built as tuple([...]), never tuple(<generator>):
# CPython builds the latter as a 10-tuple resized to fit, and when it dies it
# goes to the free list of its final length (2000 kept per length), which only
# an exact-size tuple takes from again.  A DUMP answer's 19 drop counters did
# that on every `status`: the control process grew by ~0.5 MiB per length
# until the lists were full (docs/benchmarks.md, "Memory under rekeys").


_TYPES: Final = frozenset(int(t) for t in MsgType)
_ERRNOS: Final = frozenset(int(e) for e in Errno)
_EXTS: Final = frozenset(int(e) for e in Ext)
# the members by value: a dict lookup, not an Enum call, for every message and extension
_TYPE_OF: Final = {int(t): t for t in MsgType}
_ERRNO_OF: Final = {int(e): e for e in Errno}
_EXT_OF: Final = {int(e): e for e in Ext}


class _Malformed(Exception):
    def __init__(self, detail: str, errno: Errno = Errno.EINVAL) -> None:
        super().__init__(detail)
        self.errno = errno
        self.detail = detail


@dataclass(frozen=True)
class _Header:
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
    if len(data) < HEADER_LEN:
        raise PipeError(Errno.EINVAL, f"{len(data)} bytes is shorter than the header")
    hdr = _Header(*_HEADER.unpack_from(data))
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
    if hdr.is_reply:
        errno = _reply_errno(hdr)
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

    def __init__(self) -> None:
        self.bodies: dict[Ext, list[bytes]] = {}

    def one(self, ext: Ext) -> bytes:
        return self.bodies[ext][0]

    def opt(self, ext: Ext) -> bytes | None:
        found = self.bodies.get(ext)
        return found[0] if found else None

    def all(self, ext: Ext) -> list[bytes]:
        return self.bodies.get(ext, [])


def _parse_extensions(data: bytes, schema: _Schema) -> _Exts:
    exts = _Exts()
    pos = HEADER_LEN
    while pos < len(data):
        if len(data) - pos < _EXT_HDR.size:
            raise _Malformed(f"truncated extension header at offset {pos}")
        length, raw_type = _EXT_HDR.unpack_from(data, pos)
        if length < _EXT_HDR.size or length % 4:
            raise _Malformed(f"extension length {length} at offset {pos}")
        if pos + length > len(data):
            raise _Malformed(f"extension at offset {pos} overruns the message")
        ext = _known_ext(raw_type, schema)
        body = data[pos + _EXT_HDR.size : pos + length]
        _check_body_len(ext, body)
        exts.bodies.setdefault(ext, []).append(body)
        pos += length
    _check_counts(exts, schema)
    return exts


def _known_ext(raw_type: int, schema: _Schema) -> Ext:
    if raw_type not in _EXTS:
        raise _Malformed(f"unknown extension type {raw_type}")
    ext = _EXT_OF[raw_type]
    if ext not in schema:
        raise _Malformed(f"extension {ext.name} does not belong in this message")
    return ext


def _check_body_len(ext: Ext, body: bytes) -> None:
    want = _BODY_LEN[ext]
    if want is not None and len(body) != want:
        raise _Malformed(f"extension {ext.name} of {len(body)} bytes, expected {want}")


def _check_counts(exts: _Exts, schema: _Schema) -> None:
    for ext, (lo, hi) in schema.items():
        n = len(exts.all(ext))
        if n < lo:
            raise _Malformed(f"missing extension {ext.name}")
        if n > hi:
            raise _Malformed(f"extension {ext.name} appears {n} times, at most {hi}")


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
    if family == 4:
        if any(raw[4:]):
            raise _Malformed("IPv4 address with non-zero trailing bytes")
        return IPv4Address(raw[:4])
    if family == 6:
        return IPv6Address(raw)
    raise _Malformed(f"address family {family}")


def _unpack_endpoint_opt(raw: bytes) -> Endpoint | None:
    family, reserved, port, addr = _ENDPOINT.unpack(raw)
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
        direction=Direction(direction),
        alg=Alg(alg),
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
    return Migrate(req_id, spi, direction, new_remote, _unpack_remote_opt(exts))


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
    return Policy(policy_id, priority, Action(action), reqid, selector)


def _unpack_delete(req_id: int, exts: _Exts) -> Delete:
    spi, direction, reserved = _SA_ID.unpack(exts.one(Ext.SA_ID))
    _zero(reserved, "SA_ID")
    return Delete(req_id, spi, Direction(direction), _unpack_remote_opt(exts))


def _unpack_expire(exts: _Exts) -> Expire:
    spi, direction, hard, reason, reserved = _EXPIRE.unpack(exts.one(Ext.EXPIRE))
    _zero(reserved, "EXPIRE")
    return Expire(
        spi=spi,
        direction=Direction(direction),
        hard=_flag(hard, "EXPIRE hard"),
        reason=ExpireReason(reason),
        remote=_unpack_remote_opt(exts),
    )


def _build(msg_type: MsgType, req_id: int, exts: _Exts) -> Message:
    match msg_type:
        case MsgType.GETSPI:
            lo, hi = _SPI_RANGE.unpack(exts.one(Ext.SPI_RANGE))
            larval = exts.opt(Ext.LARVAL_LIFETIME)
            return GetSpi(req_id, lo, hi, _U32_BODY.unpack(larval)[0] if larval is not None else None)
        case MsgType.UPDATE:
            return Update(req_id, _unpack_sa(exts))
        case MsgType.ADD:
            return Add(req_id, _unpack_sa(exts))
        case MsgType.DELETE:
            return _unpack_delete(req_id, exts)
        case MsgType.FLUSH:
            return Flush(req_id)
        case MsgType.SPDADD:
            return SpdAdd(req_id, _unpack_policy(exts))
        case MsgType.SPDDELETE:
            return SpdDelete(req_id, _unpack_u32(exts.one(Ext.POLICY_ID)))
        case MsgType.SPDFLUSH:
            return SpdFlush(req_id)
        case MsgType.DUMP:
            return Dump(req_id)
        case MsgType.SEND_IKE:
            return SendIke(req_id, *_unpack_ike(exts))
        case MsgType.ACQUIRE:
            return Acquire(
                policy_id=_unpack_u32(exts.one(Ext.POLICY_ID)),
                selector=_unpack_selector(exts.one(Ext.SELECTOR)),
            )
        case MsgType.EXPIRE:
            return _unpack_expire(exts)
        case MsgType.INVALID_SPI:
            return InvalidSpi(
                spi=_unpack_u32(exts.one(Ext.SPI)),
                remote=_unpack_endpoint(exts.one(Ext.ADDR_REMOTE)),
            )
        case MsgType.IKE:
            data, remote, local = _unpack_ike(exts)
            return Ike(data=data, remote=remote, local=local)
        case MsgType.MIGRATE:
            return _unpack_migrate(req_id, exts)
        case MsgType.RESERVE:
            return _unpack_reserve(req_id, exts)
        case MsgType.RESERVE_LOW:
            return _unpack_reserve_low(exts)
        case MsgType.FIRST_USE:
            return FirstUse(spi=_unpack_u32(exts.one(Ext.SPI)))
    raise AssertionError(msg_type)  # pragma: no cover - the match is exhaustive


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


def _unpack_drop(body: bytes) -> tuple[str, int]:
    if len(body) < _DROP_HDR.size:
        raise _Malformed("DROP extension too short")
    name_len, reserved, count = _DROP_HDR.unpack_from(body)
    _zero(reserved, "DROP")
    raw = _variable(body, _DROP_HDR.size, name_len, "DROP")
    if not raw.isascii():
        raise _Malformed("drop counter name is not ASCII")
    return raw.decode("ascii"), count
