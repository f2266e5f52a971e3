"""Wire fields to values, for both decoders: the general one (decoding.py) and the quick ones (quick.py).

The enum members by their wire value, the addresses by their 16-byte field (cached), and which
answers carry extensions: one table each, which the two decoders share."""

from ipaddress import IPv4Address, IPv6Address
from typing import Final

from tunsec.dataplane.pipe.protocol import (
    Action,
    Alg,
    Direction,
    Errno,
    Ext,
    IPAddress,
    MsgType,
)

# the members by value: a dict lookup, not an Enum call, for every message and extension
_TYPE_OF: Final = {int(t): t for t in MsgType}
_ERRNO_OF: Final = {int(e): e for e in Errno}
_EXT_OF: Final = {int(e): e for e in Ext}
_DIRECTION_OF: Final = {int(d): d for d in Direction}
_ALG_OF: Final = {int(a): a for a in Alg}
_ACTION_OF: Final = {int(a): a for a in Action}
_OWED: Final = frozenset((MsgType.GETSPI, MsgType.DUMP))   # their successful answers carry extensions
_OK: Final = Errno.OK   # read once: enum members are class attribute lookups


# Decoded addresses by their 16-byte field, one table per family: a Child SA install carries ~18
# (selector bounds, endpoints), mostly the same few (0.0.0.0, 255.255.255.255, the gateway's own), and
# building an address object costs more than the rest of its field.  Only fields that passed the
# checks below are stored, so a hit needs none; bounded, as the fields come from the other process.
_ADDR_CACHE: Final[dict[int, dict[bytes, IPAddress]]] = {4: {}, 6: {}}
_ADDR_CACHE_MAX: Final = 4096
_ZERO12: Final = bytes(12)


def _addr_or_none(family: int, raw: bytes) -> IPAddress | None:
    """decoding._unpack_addr's address, or None where it raises."""
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
