"""The messages: requests (control -> worker), the reply, and events (worker -> control)."""

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, TypeAlias

from tunsec.dataplane.pipe.protocol import (
    _U32,
    _U64,
    IKE_SPI_KEY_LEN,
    IKE_SPI_LEN,
    MAX_ADDRS_ADDED,
    MAX_IKE_DATA,
    MIN_SPI,
    Direction,
    Errno,
    ExpireReason,
    IPAddress,
    MsgType,
)
from tunsec.dataplane.pipe.values import (
    Endpoint,
    Lifetime,
    Policy,
    PolicyInfo,
    SaInfo,
    SaSpec,
    Selector,
    _check_drops,
    _check_ike_data,
    _check_int,
    _check_sa_peer,
    _check_same_family,
    _check_spi,
    _check_tuple_of,
    _check_type,
    quick_init,
)

# ------------------------------------------------------------------ messages
# The requests and answers of a client's set-up test the common case at once first, as the hot
# value types do (see the top of values).

_REQUEST_TYPES = frozenset(t for t in MsgType if not t.is_event)
_OK, _GETSPI = Errno.OK, MsgType.GETSPI   # read once (enum members are class attribute lookups)


def _check_request_id(req_id: object) -> None:
    # 0 is reserved for events, so a request with it could not be answered.
    _check_int("req_id", req_id, 1, _U32)


def _check_event_id(req_id: object) -> None:
    _check_int("req_id", req_id, 0, 0)


def _plain_request_id(req_id: object) -> bool:
    return type(req_id) is int and 1 <= req_id <= _U32


def _plain_ike(data: object, remote: object, local: object) -> bool:
    """SendIke's and Ike's checks of their fields, at once."""
    return (type(data) is bytes and 1 <= len(data) <= MAX_IKE_DATA and type(remote) is Endpoint
            and (local is None or (type(local) is Endpoint and local.family == remote.family)))


@quick_init
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
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_spi("lo", self.lo)
        _check_spi("hi", self.hi)
        if self.larval_seconds is not None:
            _check_int("larval_seconds", self.larval_seconds, 0, _U32)
        if self.lo > self.hi:
            raise ValueError(f"SPI range {self.lo:#x}..{self.hi:#x} is reversed")

    def _plain(self) -> bool:
        lo, hi, larval = self.lo, self.hi, self.larval_seconds
        return (_plain_request_id(self.req_id) and type(lo) is int and type(hi) is int
                and MIN_SPI <= lo <= hi <= _U32 and (larval is None or (type(larval) is int and 0 <= larval <= _U32)))


@quick_init
@dataclass(frozen=True)
class Update:
    TYPE: ClassVar[MsgType] = MsgType.UPDATE
    req_id: int
    sa: SaSpec

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_type("sa", self.sa, SaSpec)

    def _plain(self) -> bool:
        return _plain_request_id(self.req_id) and type(self.sa) is SaSpec


@quick_init
@dataclass(frozen=True)
class Add:
    TYPE: ClassVar[MsgType] = MsgType.ADD
    req_id: int
    sa: SaSpec

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_type("sa", self.sa, SaSpec)

    def _plain(self) -> bool:
        return _plain_request_id(self.req_id) and type(self.sa) is SaSpec


@quick_init
@dataclass(frozen=True)
class Delete:
    TYPE: ClassVar[MsgType] = MsgType.DELETE
    req_id: int
    spi: int
    direction: Direction
    remote: Endpoint | None = None   # OUT: the peer; peers choose outbound SPIs, so they may collide
    # only if the SA's reqid is this one (else ENOENT): an undo that cannot know whether its ADD went
    # in removes its own SA, never another owner's that holds the SPI (review revlate9 F1)
    reqid: int | None = None

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_sa_peer(self.direction, self.remote)
        if self.reqid is not None:
            _check_int("reqid", self.reqid, 1, _U32)


@quick_init
@dataclass(frozen=True)
class Flush:
    TYPE: ClassVar[MsgType] = MsgType.FLUSH
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@quick_init
@dataclass(frozen=True)
class SpdAdd:
    TYPE: ClassVar[MsgType] = MsgType.SPDADD
    req_id: int
    policy: Policy

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_type("policy", self.policy, Policy)

    def _plain(self) -> bool:
        return _plain_request_id(self.req_id) and type(self.policy) is Policy


@quick_init
@dataclass(frozen=True)
class SpdDelete:
    TYPE: ClassVar[MsgType] = MsgType.SPDDELETE
    req_id: int
    id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_int("id", self.id, 0, _U32)


@quick_init
@dataclass(frozen=True)
class SpdFlush:
    TYPE: ClassVar[MsgType] = MsgType.SPDFLUSH
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@quick_init
@dataclass(frozen=True)
class Dump:
    TYPE: ClassVar[MsgType] = MsgType.DUMP
    req_id: int

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)


@quick_init
@dataclass(frozen=True)
class SendIke:
    """An IKE message to send from port 4500.  unmarked: without the non-ESP marker the worker puts
    in front otherwise (an IKE_SA_INIT response to a request that came unmarked: the control
    process decides, services/ike/unmarked.py).  oif: the interface it leaves by (0: as routed), for
    IKE to an unauthenticated address a full tunnel's TUN routes capture (services/ike/exclude_gate.py)."""

    TYPE: ClassVar[MsgType] = MsgType.SEND_IKE
    req_id: int
    data: bytes
    remote: Endpoint
    local: Endpoint | None = None
    oif: int = 0
    unmarked: bool = False

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_ike_data(self.data)
        _check_type("remote", self.remote, Endpoint)
        if self.local is not None:
            _check_type("local", self.local, Endpoint)
        _check_same_family(self.local, self.remote)
        _check_int("oif", self.oif, 0, _U32)
        _check_type("unmarked", self.unmarked, bool)

    def _plain(self) -> bool:
        return (_plain_request_id(self.req_id) and _plain_ike(self.data, self.remote, self.local)
                and type(self.oif) is int and self.oif == 0 and self.unmarked is False)


@quick_init
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


@quick_init
@dataclass(frozen=True)
class Migrate:
    """Move a mature SA to a new peer endpoint without re-keying: the peer's
    address or NAT mapping changed (NAT rebinding, MOBIKE).  The SA is named
    as in Delete (an OUT SA by its old peer); keys, sequence numbers and
    counters stay.  new_local (None: ours stays) moves our end too (MOBIKE:
    the peer now reaches us at another of our addresses, or we moved).
    ENOENT: no such SA; ESTATE: larval; EINVAL: another address family;
    EEXIST: an OUT SA with this SPI already goes there."""

    TYPE: ClassVar[MsgType] = MsgType.MIGRATE
    req_id: int
    spi: int
    direction: Direction
    new_remote: Endpoint
    remote: Endpoint | None = None   # OUT: the peer it goes to now
    new_local: Endpoint | None = None   # our end's new address and port (None: it stays)

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_type("new_remote", self.new_remote, Endpoint)
        _check_sa_peer(self.direction, self.remote)
        if self.remote is not None and self.remote.family != self.new_remote.family:
            raise ValueError("an SA moves within its address family: remote and new_remote differ")
        if self.new_local is not None:
            _check_type("new_local", self.new_local, Endpoint)
            if self.new_local.family != self.new_remote.family:
                raise ValueError("an SA moves within its address family: new_local and new_remote differ")


def _check_ike_spi(spi: object) -> None:
    _check_type("spi", spi, bytes)
    assert isinstance(spi, bytes)
    if len(spi) != IKE_SPI_LEN or not any(spi):
        raise ValueError(f"spi: an IKE SPI is {IKE_SPI_LEN} bytes, not all zero")


@quick_init
@dataclass(frozen=True)
class IkeSpiAdd:
    """Our SPI of an established IKE SA (the 8 bytes as in the IKE header): the worker gives the IKE
    datagrams that name it as ours a reserve in its queues that others cannot take.  EEXIST: added
    already; ENOSPC: the worker holds as many as it may (that SA goes without a reserve).  peer: who
    authenticated it (the control process's id of the identity, 64 bits): all the IKE SAs of one
    peer share one share of the reserve; 0: the SA is a peer of its own."""

    TYPE: ClassVar[MsgType] = MsgType.IKE_SPI_ADD
    req_id: int
    spi: bytes
    peer: int = 0

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_ike_spi(self.spi)
        _check_type("peer", self.peer, int)
        if not 0 <= self.peer < 1 << 64:
            raise ValueError("peer: 0 to 2**64 - 1")


@quick_init
@dataclass(frozen=True)
class IkeSpiDelete:
    """The IKE SA went (deleted, expired, rekeyed into another): its SPI loses the reserve.
    ENOENT: not there (never added, or the set was full)."""

    TYPE: ClassVar[MsgType] = MsgType.IKE_SPI_DELETE
    req_id: int
    spi: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_ike_spi(self.spi)


@quick_init
@dataclass(frozen=True)
class IkeSpiKey:
    """The key of the tags in the IKE SPIs the control process makes (tunsec/ike/spi_tag.py): an IKE
    datagram of no established IKE SA whose SPI of ours carries the tag for its sender's address came
    from where our IKE_SA_INIT answer went, and gets shares of the worker's queues of its own.  Sent
    to every new worker before anything else; a later one replaces it.  Always OK."""

    TYPE: ClassVar[MsgType] = MsgType.IKE_SPI_KEY
    req_id: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_request_id(self.req_id)
        _check_type("key", self.key, bytes)
        if len(self.key) != IKE_SPI_KEY_LEN:
            raise ValueError(f"key: {IKE_SPI_KEY_LEN} bytes")


@quick_init
@dataclass(frozen=True)
class Reply:
    """The answer to any request; `type` names the request it answers.

    spi is set exactly on a successful GETSPI answer; sas/policies/drops/gauges
    only on a successful DUMP answer, which may span several messages (more=True
    on all but the last; see encode_dump_replies and join_dump_replies).
    gauges: the worker's named values of now (live C allocations, policies).
    current: only on a successful DELETE answer (LIFETIME_CURRENT, optional): the
    deleted SA's final counters, read as the worker removed it (as Expire's current).
    """

    req_id: int
    type: MsgType
    errno: Errno
    spi: int | None = None
    more: bool = False
    sas: tuple[SaInfo, ...] = ()
    policies: tuple[PolicyInfo, ...] = ()
    drops: tuple[tuple[str, int], ...] = ()
    gauges: tuple[tuple[str, int], ...] = ()
    current: Lifetime | None = None

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_request_id(self.req_id)
        _check_type("type", self.type, MsgType)
        if self.type.is_event:
            raise ValueError(f"{self.type.name} is an event and gets no reply")
        _check_type("errno", self.errno, Errno)
        ok = self.errno is Errno.OK
        self._check_spi(ok)
        self._check_dump(ok)
        self._check_current(ok)

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
        _check_drops(self.gauges, "gauges")
        if self.sas and any(sa.counters.keys() != self.sas[0].counters.keys() for sa in self.sas):
            raise ValueError("the SAs of one DUMP reply must have the same counter names")
        if self.type is MsgType.DUMP and ok:
            return
        if self.more or self.sas or self.policies or self.drops or self.gauges:
            raise ValueError("only a successful DUMP reply carries more/sas/policies/drops/gauges")

    def _check_current(self, ok: bool) -> None:
        if self.current is None:
            return
        if self.type is not MsgType.DELETE or not ok:
            raise ValueError("only a successful DELETE reply carries current")
        _check_type("current", self.current, Lifetime)

    def _plain(self) -> bool:
        """The answer to anything but DUMP (no more/sas/policies/drops/current), all checks at once."""
        spi, ok = self.spi, self.errno is _OK
        return (_plain_request_id(self.req_id) and self.type in _REQUEST_TYPES
                and type(self.type) is MsgType and type(self.errno) is Errno
                and (type(spi) is int and MIN_SPI <= spi <= _U32 if self.type is _GETSPI and ok
                     else spi is None)
                and self.more is False and type(self.sas) is tuple and not self.sas
                and type(self.policies) is tuple and not self.policies
                and type(self.drops) is tuple and not self.drops
                and type(self.gauges) is tuple and not self.gauges and self.current is None)


@quick_init
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


@quick_init
@dataclass(frozen=True, kw_only=True)
class Expire:
    """A lifetime of an SA was reached.  current: the SA's counters then (bytes and packets as its
    counters, seconds its age; PF_KEY's current lifetime), None when the worker could not read them
    (an SA deleted meanwhile, an older worker); a hard EXPIRE's are its final ones."""

    TYPE: ClassVar[MsgType] = MsgType.EXPIRE
    req_id: int = 0
    spi: int
    direction: Direction
    hard: bool
    reason: ExpireReason
    remote: Endpoint | None = None   # OUT: the SA's peer (see Delete)
    current: Lifetime | None = None

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_spi("spi", self.spi)
        _check_type("direction", self.direction, Direction)
        _check_sa_peer(self.direction, self.remote)
        _check_type("hard", self.hard, bool)
        _check_type("reason", self.reason, ExpireReason)
        if self.current is not None:
            _check_type("current", self.current, Lifetime)


@quick_init
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


@quick_init
@dataclass(frozen=True, kw_only=True)
class Ike:
    """An IKE message that arrived on port 4500, non-ESP marker stripped.  unmarked: it came without
    one (a whole IKE_SA_INIT request, the fast path's only unmarked IKE: its answer goes back so)."""

    TYPE: ClassVar[MsgType] = MsgType.IKE
    req_id: int = 0
    data: bytes
    remote: Endpoint
    local: Endpoint | None = None
    unmarked: bool = False

    def __post_init__(self) -> None:
        if self._plain():
            return
        _check_event_id(self.req_id)
        _check_ike_data(self.data)
        _check_type("remote", self.remote, Endpoint)
        if self.local is not None:
            _check_type("local", self.local, Endpoint)
        _check_same_family(self.local, self.remote)
        _check_type("unmarked", self.unmarked, bool)

    def _plain(self) -> bool:
        return (type(self.req_id) is int and self.req_id == 0 and _plain_ike(self.data, self.remote, self.local)
                and self.unmarked is False)


@quick_init
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


@quick_init
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


@quick_init
@dataclass(frozen=True, kw_only=True)
class AddrAdded:
    """The control process's notice (no answer): the host added these addresses, none of them
    tentative (services/addr_feed.py, from its watch of the host's addresses: the worker holds no
    netlink socket).  None: maybe any, notices were lost or did not parse.  An SA whose source the
    kernel refused tries it again with its next message if it is among them (csrc/addrwatch.c)."""

    TYPE: ClassVar[MsgType] = MsgType.ADDR_ADDED
    req_id: int = 0
    addrs: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        _check_event_id(self.req_id)
        _check_tuple_of("addrs", self.addrs, (IPv4Address, IPv6Address), MAX_ADDRS_ADDED)


Request: TypeAlias = (
    GetSpi | Update | Add | Delete | Flush | SpdAdd | SpdDelete | SpdFlush | Dump | SendIke | Reserve
    | Migrate | IkeSpiAdd | IkeSpiDelete | IkeSpiKey
)
Event: TypeAlias = Acquire | Expire | InvalidSpi | Ike | ReserveLow | FirstUse
Notice: TypeAlias = AddrAdded   # control -> worker, no answer
Message: TypeAlias = Request | Reply | Event | Notice
