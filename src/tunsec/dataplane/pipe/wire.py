"""The wire layout: the header and extension structs, SA flag bits, and which extensions each
message type carries (the schemas decode checks against).  docs/pipe.md describes it."""

import struct
from typing import Final, TypeAlias

from tunsec.dataplane.pipe.protocol import MAX_ADDRS_ADDED, MAX_MESSAGE, MAX_SELECTORS, Errno, Ext, MsgType

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
_IKE_SPI = struct.Struct("!8s")
_IKE_PEER = struct.Struct("!Q")
_IKE_SPI_KEY = struct.Struct("!16s")


def _fmt(*parts: struct.Struct | str) -> str:
    """One big-endian struct format of the parts in turn."""
    return "!" + "".join(p if isinstance(p, str) else p.format[1:] for p in parts)

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
    Ext.LIFETIME_CURRENT: _LIFETIME.size,
    Ext.GAUGE: None,
    Ext.ADDR_NEW_LOCAL: _ENDPOINT.size,
    Ext.IKE_SPI: _IKE_SPI.size,
    Ext.IKE_PEER: _IKE_PEER.size,
    Ext.OIF: _U32_BODY.size,
    Ext.REQID: _U32_BODY.size,
    Ext.UNMARKED: 0,
    Ext.IKE_SPI_KEY: _IKE_SPI_KEY.size,
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
_IKE_SCHEMA: Final[_Schema] = {Ext.DATA: (1, 1), Ext.ADDR_REMOTE: (1, 1), Ext.ADDR_LOCAL: (0, 1), Ext.UNMARKED: (0, 1)}
_SCHEMA: Final[dict[MsgType, _Schema]] = {
    MsgType.GETSPI: {Ext.SPI_RANGE: (1, 1), Ext.LARVAL_LIFETIME: (0, 1)},
    MsgType.UPDATE: _SA_SCHEMA,
    MsgType.ADD: _SA_SCHEMA,
    MsgType.DELETE: {Ext.SA_ID: (1, 1), Ext.ADDR_REMOTE: (0, 1), Ext.REQID: (0, 1)},
    MsgType.FLUSH: {},
    MsgType.SPDADD: {Ext.POLICY: (1, 1), Ext.SELECTOR: (1, 1)},
    MsgType.SPDDELETE: {Ext.POLICY_ID: (1, 1)},
    MsgType.SPDFLUSH: {},
    MsgType.DUMP: {},
    MsgType.SEND_IKE: {**_IKE_SCHEMA, Ext.OIF: (0, 1)},
    MsgType.ACQUIRE: {Ext.POLICY_ID: (1, 1), Ext.SELECTOR: (1, 1)},
    MsgType.EXPIRE: {Ext.EXPIRE: (1, 1), Ext.ADDR_REMOTE: (0, 1), Ext.LIFETIME_CURRENT: (0, 1)},
    MsgType.INVALID_SPI: {Ext.SPI: (1, 1), Ext.ADDR_REMOTE: (1, 1)},
    MsgType.IKE: _IKE_SCHEMA,
    MsgType.RESERVE: {Ext.SA_ID: (1, 1), Ext.SEQ_LIMIT: (1, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.RESERVE_LOW: {Ext.SA_ID: (1, 1), Ext.SEQ_LIMIT: (0, 1), Ext.ADDR_REMOTE: (0, 1)},
    MsgType.FIRST_USE: {Ext.SPI: (1, 1)},
    MsgType.MIGRATE: {Ext.SA_ID: (1, 1), Ext.ADDR_NEW_REMOTE: (1, 1), Ext.ADDR_REMOTE: (0, 1),
                      Ext.ADDR_NEW_LOCAL: (0, 1)},
    MsgType.IKE_SPI_ADD: {Ext.IKE_SPI: (1, 1), Ext.IKE_PEER: (0, 1)},
    MsgType.IKE_SPI_DELETE: {Ext.IKE_SPI: (1, 1)},
    MsgType.IKE_SPI_KEY: {Ext.IKE_SPI_KEY: (1, 1)},
    MsgType.ADDR_ADDED: {Ext.ADDR_LOCAL: (0, MAX_ADDRS_ADDED)},
}
_DUMP_REPLY_SCHEMA: Final[_Schema] = {
    Ext.SA_COUNTERS: (0, 1),
    Ext.SA_INFO: (0, _MANY),
    Ext.POLICY_INFO: (0, _MANY),
    Ext.DROP: (0, _MANY),
    Ext.GAUGE: (0, _MANY),
}

# the deleted SA's final counters (optional: absent, the answer means what it meant before)
_DELETE_REPLY_SCHEMA: Final[_Schema] = {Ext.LIFETIME_CURRENT: (0, 1)}


def _reply_schema(msg_type: MsgType, errno: Errno) -> _Schema:
    if errno is not Errno.OK:
        return {}
    if msg_type is MsgType.GETSPI:
        return {Ext.SPI: (1, 1)}
    if msg_type is MsgType.DUMP:
        return _DUMP_REPLY_SCHEMA
    if msg_type is MsgType.DELETE:
        return _DELETE_REPLY_SCHEMA
    return {}
