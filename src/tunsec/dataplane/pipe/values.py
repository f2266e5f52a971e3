"""The value types messages carry (endpoints, selectors, lifetimes, SAs, policies, DUMP entries)
and the checks every constructor runs on them."""

import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final, TypeVar

from tunsec.dataplane.pipe.protocol import (
    _U8,
    _U16,
    _U32,
    _U64,
    MAX_IKE_DATA,
    MAX_SA_COUNTERS,
    MAX_SELECTORS,
    MIN_SPI,
    REPLAY_MAX,
    Action,
    Alg,
    Direction,
    IPAddress,
    IPNetwork,
    SaState,
)

# ---------------------------------------------------------------- validation
# Constructors raise TypeError/ValueError like any Python value; decode()
# turns those into PipeError(EINVAL).  No message may quote key bytes.
#
# The hot constructors (what a client's set-up builds and decodes: Endpoint, Selector, Lifetime,
# SaSpec, Policy and their messages) first test the common case in one expression of exact types
# and ranges (``_plain``); only when that fails do they run the checks one by one, which raise the
# error that names what is wrong.  The quick test implies every one of those checks (exact types
# where they accept subclasses too), so it admits nothing they would refuse: the same checks, fewer
# calls (tests/test_pipe_values.py compares the two on valid and broken values).

_ADDR_TYPES: Final = frozenset((IPv4Address, IPv6Address))
_T = TypeVar("_T")


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen dataclass an __init__ that stores its fields straight into the instance's
    __dict__, then calls __post_init__ as the generated one does.  The generated one assigns each
    field through object.__setattr__ (frozen forbids plain assignment), which made building a
    message five times slower than its checks: the pipe's values are built by the thousand per
    burst on both sides of the pipe.  Same parameters, defaults and keyword-only fields; still
    frozen afterwards."""
    ns: dict[str, Any] = {}
    params: list[str] = []
    kw_params: list[str] = []
    lines: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        assert f.init and f.default_factory is MISSING, f"{cls.__name__}.{f.name}: not a plain field"
        param = f.name
        if f.default is not MISSING:
            ns[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        (kw_params if f.kw_only else params).append(param)
        lines.append(f"    d[{f.name!r}] = {f.name}\n")
    signature = ", ".join(["self", *params, *(["*", *kw_params] if kw_params else [])])
    exec(f"def __init__({signature}):\n    d = self.__dict__\n{''.join(lines)}    self.__post_init__()\n", ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
_KEY_LEN: Final = {alg: alg.key_len for alg in Alg}
# members read once: Direction.IN and the like are attribute lookups on the enum class each time
_IN: Final = Direction.IN
_PROTECT: Final = Action.PROTECT


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


def _check_tuple_of(name: str, value: object, kind: type | tuple[type, ...], hi: int) -> None:
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


def _check_drops(value: object, what: str = "drops") -> None:
    """Named counters (DUMP's drops and gauges): unique names, each a u64."""
    if not isinstance(value, tuple):
        raise TypeError(f"{what} must be a tuple of (name, count) pairs")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError(f"{what} must be a tuple of (name, count) pairs")
        name, count = item
        if not _DROP_NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r} is not [a-z][a-z0-9_]{{0,31}}")
        if name in seen:
            raise ValueError(f"{what} name {name!r} appears twice")
        seen.add(name)
        _check_int(f"{what}[{name}]", count, 0, _U64)


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


@quick_init
@dataclass(frozen=True)
class Endpoint:
    """An outer address and UDP port."""

    addr: IPAddress
    port: int

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_addr("addr", self.addr)
        _check_int("port", self.port, 0, _U16)

    def _plain(self) -> bool:
        return type(self.addr) in _ADDR_TYPES and type(self.port) is int and 0 <= self.port <= _U16

    @property
    def family(self) -> int:
        return self.addr.version


@quick_init
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
        if self._plain():
            return
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

    def _plain(self) -> bool:
        """The common case, all of __post_init__'s checks at once (see the top of this module)."""
        kind, sport, dport = type(self.src_lo), self.sport, self.dport
        # of those exact types an address's int is its _ip slot (int() runs __int__, a Python method)
        return (kind in _ADDR_TYPES and type(self.src_hi) is kind and type(self.dst_lo) is kind
                and type(self.dst_hi) is kind
                and self.src_lo._ip <= self.src_hi._ip and self.dst_lo._ip <= self.dst_hi._ip  # type: ignore[union-attr]
                and type(self.proto) is int and 0 <= self.proto <= _U8
                and type(sport) is tuple and len(sport) == 2 and type(sport[0]) is int and type(sport[1]) is int
                and 0 <= sport[0] <= sport[1] <= _U16
                and type(dport) is tuple and len(dport) == 2 and type(dport[0]) is int and type(dport[1]) is int
                and 0 <= dport[0] <= dport[1] <= _U16)

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


@quick_init
@dataclass(frozen=True)
class Lifetime:
    """Limits of an SA; 0 means unlimited."""

    bytes: int = 0
    packets: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_int("bytes", self.bytes, 0, _U64)
        _check_int("packets", self.packets, 0, _U64)
        _check_int("seconds", self.seconds, 0, _U64)

    def _plain(self) -> bool:
        b, p, t = self.bytes, self.packets, self.seconds
        return type(b) is int and type(p) is int and type(t) is int and 0 <= b <= _U64 and 0 <= p <= _U64 \
            and 0 <= t <= _U64


def _check_reservation(limit: object, notify: object, esn: bool) -> None:
    _check_int("seq_limit", limit, 0, _U64 if esn else _U32)
    _check_int("seq_notify", notify, 0, _U64)


def _check_lifetimes(soft: Lifetime, hard: Lifetime) -> None:
    # A soft limit past the hard one could never fire: the SA is gone first.
    sb, sp, ss, hb, hp, hs = soft.bytes, soft.packets, soft.seconds, hard.bytes, hard.packets, hard.seconds
    if not ((sb and hb and sb > hb) or (sp and hp and sp > hp) or (ss and hs and ss > hs)):
        return   # the common case without a loop over three tuples (each SaSpec checks): the loop names the limit
    for name, s, h in (("bytes", soft.bytes, hard.bytes), ("packets", soft.packets, hard.packets),
                       ("seconds", soft.seconds, hard.seconds)):
        if s and h and s > h:
            raise ValueError(f"soft {name} limit {s} exceeds the hard limit {h}")


@quick_init
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
        if self._plain():
            _check_lifetimes(self.soft, self.hard)
            if self.seq_limit and self.seq_limit < self.seq_start:
                raise ValueError(f"seq_limit={self.seq_limit} is below seq_start={self.seq_start}")
            if self.report_first_use and self.direction is not _IN:
                raise ValueError("report_first_use is for inbound SAs: only what arrives proves the peer uses an SA")
            return
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

    def _plain(self) -> bool:
        """The types and ranges __post_init__ checks one by one, at once (see the top of this module);
        the checks between fields it makes either way."""
        window, seq_max = self.replay_window, _U64 if self.esn is True else _U32
        local, remote, selectors = self.local, self.remote, self.selectors
        return (type(self.spi) is int and MIN_SPI <= self.spi <= _U32
                and type(self.direction) is Direction and type(self.alg) is Alg
                and type(self.key) is bytes and len(self.key) == _KEY_LEN[self.alg] and type(self.esn) is bool
                and type(window) is int and (window == 0 or 32 <= window <= REPLAY_MAX)
                and type(self.reqid) is int and 0 <= self.reqid <= _U32
                and type(local) is Endpoint and type(remote) is Endpoint
                # .family through two properties, a Python call each: the class attribute they read
                and local.addr._version == remote.addr._version  # type: ignore[union-attr]
                and type(self.soft) is Lifetime and type(self.hard) is Lifetime
                and type(selectors) is tuple and len(selectors) <= MAX_SELECTORS
                and all(type(sel) is Selector for sel in selectors)
                and type(self.seq_start) is int and 0 <= self.seq_start <= seq_max
                and type(self.seq_limit) is int and 0 <= self.seq_limit <= seq_max
                and type(self.seq_notify) is int and 0 <= self.seq_notify <= _U64
                and type(self.report_first_use) is bool)

    def __repr__(self) -> str:
        # The key must never reach a log, a traceback or a test report.
        parts = [
            f"{f.name}=<{len(self.key)} bytes>" if f.name == "key" else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        ]
        return f"SaSpec({', '.join(parts)})"


@quick_init
@dataclass(frozen=True)
class Policy:
    """An SPD entry.  Lower priority values are matched first."""

    id: int
    priority: int
    action: Action
    reqid: int
    selector: Selector

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_int("id", self.id, 0, _U32)
        _check_int("priority", self.priority, 0, _U32)
        _check_type("action", self.action, Action)
        _check_int("reqid", self.reqid, 0, _U32)
        # reqid is what binds a PROTECT policy to its outbound SA; 0 would
        # bind it to nothing, forever.
        if self.action is Action.PROTECT and self.reqid == 0:
            raise ValueError("a PROTECT policy needs a non-zero reqid")
        _check_type("selector", self.selector, Selector)

    def _plain(self) -> bool:
        return (type(self.id) is int and type(self.priority) is int and type(self.reqid) is int
                and 0 <= self.id <= _U32 and 0 <= self.priority <= _U32 and 0 <= self.reqid <= _U32
                and type(self.action) is Action and (self.reqid != 0 or self.action is not _PROTECT)
                and type(self.selector) is Selector)


_STATES: Final[tuple[SaState, ...]] = ("larval", "mature", "dead")


@quick_init
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


@quick_init
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
