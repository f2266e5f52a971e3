"""The pipe's numbers: version, limits, message/extension/errno/algorithm enums, and PipeError."""

from enum import IntEnum, unique
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, Literal, TypeAlias

VERSION: Final = 1
HEADER_LEN: Final = 16
MAX_MESSAGE: Final = 65536
MAX_IKE_DATA: Final = 65000
MAX_SELECTORS: Final = 8
MAX_SA_COUNTERS: Final = 64   # per-SA counters a DUMP may name (enum ts_sa_counter)
REPLAY_MAX: Final = 65536
# An outbound SA without ESN raises a soft SEQ_OVERFLOW EXPIRE this many sequence numbers before its
# last (2^32 - 1): time for a rekey before the hard stop (csrc/tunsec_dp.h TS_SEQ_SOFT_MARGIN).
SEQ_SOFT_MARGIN: Final = 2**26
# RFC 4303 2.1: SPI 0 is for local use and 1..255 are reserved by IANA, so
# no SA on the wire may carry them.
MIN_SPI: Final = 256
IKE_SPI_LEN: Final = 8   # an IKE SA's SPI (RFC 7296 §3.1), never all zero
IKE_SPI_KEY_LEN: Final = 16   # IKE_SPI_KEY: the SipHash key of our IKE SPIs' tags
MAX_ADDRS_ADDED: Final = 16   # ADDR_ADDED: addresses one notice names (more: it names none, any)
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


@unique
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
    MIGRATE = 12
    IKE_SPI_ADD = 13      # our SPI of an established IKE SA: its IKE has a reserve in the worker
    IKE_SPI_DELETE = 14
    IKE_SPI_KEY = 15      # the key of the tags in our IKE SPIs; the last request type, events start at 16
    # Events live in their own range so a glance at the type tells the
    # direction and whether an answer is due.
    ACQUIRE = 16
    EXPIRE = 17
    INVALID_SPI = 18
    IKE = 19
    RESERVE_LOW = 20
    FIRST_USE = 21
    # the control process's notices: no answer either (request id 0)
    ADDR_ADDED = 22       # the host added these addresses: an SA whose source was refused tries it again
    # 23 is a batch's (pipe/batch.py): several messages in one datagram, framing and not a message of its own

    @property
    def is_event(self) -> bool:
        """No answer is owed (request id 0): the worker's events, and the control process's notices."""
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


@unique   # two names for one number (two branches adding a type each) fail at import, not on the wire
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
    LIFETIME_CURRENT = 24   # EXPIRE: the SA's counters as it expired (PF_KEY's current lifetime)
    GAUGE = 25              # DUMP answer: a named value of the worker's now (live allocations, policies)
    ADDR_NEW_LOCAL = 26     # MIGRATE: our end's new address (MOBIKE: the peer reaches us at another one)
    IKE_SPI = 27            # IKE_SPI_ADD/DELETE: our 8-byte SPI of an established IKE SA
    IKE_PEER = 28           # IKE_SPI_ADD: who authenticated it (8 bytes, != 0): all its IKE SAs share one share
    IKE_SPI_KEY = 29        # IKE_SPI_KEY: the 16-byte key of the tags in our IKE SPIs (tunsec/ike/spi_tag.py)
    OIF = 30                # SEND_IKE: the interface it leaves by (ifindex, != 0): past a full tunnel's TUN routes
    UNMARKED = 31           # IKE: it came without the non-ESP marker; SEND_IKE: it leaves without (empty body)
    REQID = 32              # DELETE: only the SA of this reqid (not another owner's that holds its SPI)


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
