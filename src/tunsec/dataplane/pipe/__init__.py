"""Message codec of the pipe between the control process and the worker.

One datagram on the AF_UNIX SOCK_SEQPACKET pair is one message: a 16-byte
header and typed extensions, in the manner of PF_KEYv2 (RFC 2367); or a batch
of whole messages (batch: the framing, each message as it would be alone).  The
exact wire layout is in docs/pipe.md; keep the two in step.

This module does no I/O.  Every value type validates itself when it is
built, and decode() rebuilds messages through the same constructors, so a
message object is always one that can be encoded and that the worker may
act on.  decode() raises only PipeError, whatever the bytes.

The package's modules, one part each: protocol (numbers, enums, PipeError), values (the
value types and their checks), messages, wire (struct layouts and schemas), encoding,
decoding (decode and the general decoder), quick (the quick decoders, for bytes laid out
exactly as encoding lays them out), fields (the tables both decoders share) and batch (several
messages in one datagram).
"""

from tunsec.dataplane.pipe.decoding import decode
from tunsec.dataplane.pipe.encoding import (
    encode,
    encode_dump_replies,
    encode_ike_event,
    encode_ok,
    encode_spi,
    error_reply,
    ike_event_own_spi,
    ike_event_sender,
    join_dump_replies,
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
from tunsec.dataplane.pipe.messages import Event as Event
from tunsec.dataplane.pipe.messages import Notice as Notice
from tunsec.dataplane.pipe.messages import Request as Request
from tunsec.dataplane.pipe.protocol import FLAG_MORE as FLAG_MORE
from tunsec.dataplane.pipe.protocol import FLAG_REPLY as FLAG_REPLY
from tunsec.dataplane.pipe.protocol import (
    HEADER_LEN,
    MAX_ADDRS_ADDED,
    MAX_IKE_DATA,
    MAX_MESSAGE,
    MAX_SA_COUNTERS,
    MAX_SELECTORS,
    MIN_SPI,
    VERSION,
    Action,
    Alg,
    Direction,
    Errno,
    ExpireReason,
    Ext,
    MsgType,
    PipeError,
    SaState,
)
from tunsec.dataplane.pipe.protocol import REPLAY_MAX as REPLAY_MAX
from tunsec.dataplane.pipe.protocol import SEQ_SOFT_MARGIN as SEQ_SOFT_MARGIN
from tunsec.dataplane.pipe.protocol import IPAddress as IPAddress
from tunsec.dataplane.pipe.protocol import IPNetwork as IPNetwork
from tunsec.dataplane.pipe.values import Endpoint, Lifetime, Policy, PolicyInfo, SaInfo, SaSpec, Selector

__all__ = [
    "HEADER_LEN",
    "MAX_ADDRS_ADDED",
    "MAX_IKE_DATA",
    "MAX_MESSAGE",
    "MAX_SA_COUNTERS",
    "MAX_SELECTORS",
    "MIN_SPI",
    "VERSION",
    "Acquire",
    "Action",
    "Add",
    "AddrAdded",
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
    "IkeSpiAdd",
    "IkeSpiDelete",
    "IkeSpiKey",
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
    "encode_ike_event",
    "encode_ok",
    "encode_spi",
    "error_reply",
    "ike_event_own_spi",
    "ike_event_sender",
    "join_dump_replies",
]
