"""The few DER pieces the engine reads itself: Names, SPKIs, AlgorithmIdentifiers.

``cryptography`` has no public parser for a bare Name or an RFC 7427
AlgorithmIdentifier, so this tiny reader does it. Everything it reads comes
from the network, so every failure is a :class:`DerError`.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQUENCE = 0x30
SET = 0x31
OID = 0x06
NULL = 0x05
INTEGER = 0x02
BIT_STRING = 0x03


class DerError(ValueError):
    """Malformed DER."""


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, position after) of the element at ``pos``; definite lengths only."""
    if pos + 2 > len(data):
        raise DerError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise DerError("DER element overruns its container")
    return tag, data[pos : pos + length], pos + length


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    """All (tag, value) elements that fill ``data`` exactly."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, value, pos = read_tlv(data, pos)
        items.append((tag, value))
    return items


def encode_tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + value


def encode_oid(dotted: str) -> bytes:
    """The DER value (without tag and length) of an object identifier."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:   # the first two arcs share one subidentifier
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


# An OID this long is no attribute or algorithm we know (the longest we name take 10 bytes); and
# the arcs are built byte by byte, so each bound keeps a hostile OID's cost linear and small.
MAX_OID_BYTES = 64
MAX_ARC_BYTES = 9   # 63 bits


def decode_oid(value: bytes) -> str:
    """The dotted form of a DER OID value; DerError if it is empty, too long or not minimal."""
    if not value:
        raise DerError("empty OID")
    if len(value) > MAX_OID_BYTES:
        raise DerError(f"OID of {len(value)} bytes (at most {MAX_OID_BYTES})")
    if value[-1] & 0x80:
        raise DerError("truncated OID")
    subids: list[int] = []
    acc, length = 0, 0
    for byte in value:
        if length == 0 and byte == 0x80:
            # DER: no leading zero groups, so each OID has one encoding (names compare by its bytes)
            raise DerError("OID arc not minimally encoded")
        length += 1
        if length > MAX_ARC_BYTES:
            raise DerError(f"OID arc longer than {MAX_ARC_BYTES} bytes")
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            subids.append(acc)
            acc, length = 0, 0
    first = subids[0]   # the first two arcs share one subidentifier (X.690 §8.19.4)
    arcs = [first // 40, first % 40] if first < 80 else [2, first - 80]
    arcs += subids[1:]
    return ".".join(str(a) for a in arcs)


# The string types of a DirectoryString (and IA5String, of emailAddress and domainComponent),
# each with the one codec that reads it.  TeletexString has no codec of its own: strongSwan (and
# most CAs that use it) take it as Latin-1.
UTF8_STRING, PRINTABLE_STRING, TELETEX_STRING, IA5_STRING = 0x0C, 0x13, 0x14, 0x16
UNIVERSAL_STRING, BMP_STRING = 0x1C, 0x1E
_STRING_CODECS = {
    UTF8_STRING: "utf-8",
    0x12: "ascii",   # NumericString
    PRINTABLE_STRING: "ascii",
    TELETEX_STRING: "latin-1",
    IA5_STRING: "ascii",
    0x1A: "ascii",   # VisibleString
    UNIVERSAL_STRING: "utf-32-be",
    BMP_STRING: "utf-16-be",
}


def decode_string(tag: int, value: bytes) -> str | None:
    """The text of an ASN.1 string by its tag, decoded strictly; None if the tag is no string type
    we read or the bytes are not valid for it (never a replacement character: two different names
    must never read as the same text)."""
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        return None
    try:
        return value.decode(codec)
    except UnicodeDecodeError:   # (utf-32/utf-16 of a wrong length, a lone surrogate, a non-ASCII byte)
        return None


@dataclass(frozen=True, slots=True)
class DnAttribute:
    """One AttributeTypeAndValue of a Name, as received: the OID's DER value, the value's tag and bytes."""

    oid: bytes
    tag: int
    value: bytes

    @property
    def dotted(self) -> str:
        return decode_oid(self.oid)

    @property
    def text(self) -> str | None:
        return decode_string(self.tag, self.value)


Rdn = tuple[DnAttribute, ...]


def parse_name(der: bytes) -> tuple[Rdn, ...]:
    """The RDNs of a Name (SEQUENCE OF SET OF AttributeTypeAndValue) from DER; every OID checked."""
    tag, body, end = read_tlv(der)
    if tag != SEQUENCE or end != len(der):
        raise DerError("a Name is a SEQUENCE")
    rdns: list[Rdn] = []
    for set_tag, set_body in read_all(body):
        if set_tag != SET:
            raise DerError("an RDN is a SET")
        attrs: list[DnAttribute] = []
        for seq_tag, seq_body in read_all(set_body):
            items = read_all(seq_body)
            if seq_tag != SEQUENCE or len(items) != 2 or items[0][0] != OID:
                raise DerError("bad AttributeTypeAndValue")
            decode_oid(items[0][1])   # (raises for a malformed one)
            attrs.append(DnAttribute(items[0][1], items[1][0], items[1][1]))
        if not attrs:
            raise DerError("empty RDN")
        rdns.append(tuple(attrs))
    return tuple(rdns)


def spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a SubjectPublicKeyInfo (without the unused-bits byte)."""
    tag, body, _ = read_tlv(spki)
    items = read_all(body) if tag == SEQUENCE else []
    if len(items) != 2 or items[1][0] != BIT_STRING or not items[1][1]:
        raise DerError("bad SubjectPublicKeyInfo")
    return items[1][1][1:]
