"""The few DER pieces the engine reads itself: Names, SPKIs, AlgorithmIdentifiers.

``cryptography`` has no public parser for a bare Name or an RFC 7427
AlgorithmIdentifier, so this tiny reader does it. Everything it reads comes
from the network, so every failure is a :class:`DerError`.
"""

from __future__ import annotations

from cryptography import x509

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
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(value: bytes) -> str:
    if not value:
        raise DerError("empty OID")
    arcs = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    if value[-1] & 0x80:
        raise DerError("truncated OID")
    return ".".join(str(a) for a in arcs)


def parse_name(der: bytes) -> x509.Name:
    """A Name (SEQUENCE OF SET OF AttributeTypeAndValue) from DER."""
    tag, body, end = read_tlv(der)
    if tag != SEQUENCE or end != len(der):
        raise DerError("a Name is a SEQUENCE")
    rdns: list[x509.RelativeDistinguishedName] = []
    for set_tag, set_body in read_all(body):
        if set_tag != SET:
            raise DerError("an RDN is a SET")
        attrs: list[x509.NameAttribute[str]] = []
        for seq_tag, seq_body in read_all(set_body):
            items = read_all(seq_body)
            if seq_tag != SEQUENCE or len(items) != 2 or items[0][0] != OID:
                raise DerError("bad AttributeTypeAndValue")
            oid = x509.ObjectIdentifier(decode_oid(items[0][1]))
            attrs.append(x509.NameAttribute(oid, items[1][1].decode("utf-8", "replace")))
        if not attrs:
            raise DerError("empty RDN")
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a SubjectPublicKeyInfo (without the unused-bits byte)."""
    tag, body, _ = read_tlv(spki)
    items = read_all(body) if tag == SEQUENCE else []
    if len(items) != 2 or items[1][0] != BIT_STRING or not items[1][1]:
        raise DerError("bad SubjectPublicKeyInfo")
    return items[1][1][1:]
