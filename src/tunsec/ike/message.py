"""IKEv2 message codec (RFC 7296 §3): header, every payload, strict bounds.

Decoding raises :class:`DecodeError` (or a subclass) for *anything* malformed and
never another exception type, because every byte comes from the network.
Unknown payloads are skipped unless their critical bit is set, in which case
:class:`UnsupportedCriticalPayload` tells the caller which type to name in the
UNSUPPORTED_CRITICAL_PAYLOAD notify.

The Encrypted payload (SK) is kept opaque here: :class:`SkPayload` holds its
raw body and the type of the first inner payload; ``sk.py`` decrypts it and
:func:`decode_payloads` parses the plaintext. The Encrypted Fragment payload
(SKF, RFC 7383) is the same with a fragment number and total in front:
:class:`SkfPayload`; ``fragments.py`` reassembles the plaintexts.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import ClassVar

from tunsec.immutable import immutable

from .constants import (
    IKE_HEADER_LEN,
    IKE_VERSION,
    AttributeType,
    ExchangeType,
    HeaderFlag,
    PayloadType,
    TsType,
)

MAX_NONCE = 256
MIN_NONCE = 16
# Bounds on what one message may hold, so that parsing costs little whatever an unauthenticated peer
# sends (a 10 KB IKE_SA_INIT of 4-byte payloads would be 2500 of them). strongSwan's message rules
# (message.c) take at most 20 notifies, 20 vendor IDs, 8 certificates, 20 deletes and one of each
# other payload in a message: 57 in IKE_AUTH; in IKE_SA_INIT SA, KE, Nonce, a CERTREQ in the response,
# 20 notifies and 20 vendor IDs: 44. Unknown payloads count too. An SK payload's plaintext is a chain
# of its own, bounded alike.
MAX_PAYLOADS = 64
MAX_INIT_PAYLOADS = 44
# RFC 7296 §3.3 counts proposals (numbered 1, 2, ...) and a proposal's transforms in one byte each, 255
# at most; strongSwan bounds them only by charon.max_packet, which leaves room for 1200 transforms, each
# decoded and compared with ours in the responder's selection. Real peers send a few proposals of up
# to ~30 transforms (strongSwan's default IKE proposals: 2, of 10 and 13; Windows ~8 of 4): an SA
# payload may hold MAX_PROPOSALS proposals and MAX_SA_TRANSFORMS transforms in all.
MAX_PROPOSALS = 32
MAX_SA_TRANSFORMS = 256
# a generic payload header (next payload, flags, length); proposals and transforms start alike
_PAYLOAD_HEADER = struct.Struct("!BBH")
# the IKE header after the two SPIs: next payload, version, exchange, flags, message ID, length
_HEADER_TAIL = struct.Struct("!BBBBII")
# the first four bytes of a Notify payload: protocol, SPI size, type
_NOTIFY_HEAD = struct.Struct("!BBH")
# plain ints: ``int & HeaderFlag.X`` makes a new HeaderFlag (enum machinery) each time
_RESPONSE, _INITIATOR = int(HeaderFlag.RESPONSE), int(HeaderFlag.INITIATOR)
_IKE_SA_INIT = int(ExchangeType.IKE_SA_INIT)


class DecodeError(Exception):
    """The bytes are not a well-formed IKEv2 message or payload."""


class UnsupportedCriticalPayload(DecodeError):
    """A payload we do not know had its critical bit set (RFC 7296 §2.5)."""

    def __init__(self, payload_type: int) -> None:
        super().__init__(f"unsupported critical payload type {payload_type}")
        self.payload_type = payload_type


class InvalidMajorVersion(DecodeError):
    """The header's major version is not 2 (answer INVALID_MAJOR_VERSION)."""


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) < length:
        raise _short(data, length, what)


def _short(data: bytes, length: int, what: str) -> DecodeError:
    """The error for a payload shorter than its fixed part (the hot decoders test the length inline)."""
    return DecodeError(f"{what}: {len(data)} bytes, need at least {length}")


# --------------------------------------------------------------------------
# SA payload substructures
# --------------------------------------------------------------------------


@immutable
class Attribute:
    """A transform attribute; TV format when ``value`` is an int (AF bit set)."""

    type: int
    value: int | bytes

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            return struct.pack("!HH", 0x8000 | self.type, self.value)
        return struct.pack("!HH", self.type, len(self.value)) + self.value


def _decode_attributes(data: bytes) -> tuple[Attribute, ...]:
    attrs: list[Attribute] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise DecodeError(f"transform attribute: {len(data) - pos} bytes, need at least 4")
        af_type, length_or_value = struct.unpack_from("!HH", data, pos)
        pos += 4
        if af_type & 0x8000:
            attrs.append(Attribute(af_type & 0x7FFF, length_or_value))
            continue
        if pos + length_or_value > len(data):
            raise DecodeError("transform attribute overruns its transform")
        attrs.append(Attribute(af_type, data[pos : pos + length_or_value]))
        pos += length_or_value
    return tuple(attrs)


@immutable
class Transform:
    type: int
    id: int
    attributes: tuple[Attribute, ...] = ()

    @classmethod
    def make(cls, type_: int, id_: int, key_length: int | None = None) -> Transform:
        attrs = () if key_length is None else (Attribute(AttributeType.KEY_LENGTH, key_length),)
        return cls(type_, id_, attrs)

    @property
    def key_length(self) -> int | None:
        for attr in self.attributes:
            if attr.type == AttributeType.KEY_LENGTH and isinstance(attr.value, int):
                return attr.value
        return None

    def encode(self, last: bool) -> bytes:
        # (list comprehensions, not generators, in what a set-up encodes: a generator is made, then
        # resumed per item, ~1k instructions more for a few items)
        attrs = b"".join([a.encode() for a in self.attributes]) if self.attributes else b""
        return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), self.type, 0, self.id) + attrs


@immutable
class Proposal:
    num: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        final = len(self.transforms) - 1
        body = b"".join([t.encode(i == final) for i, t in enumerate(self.transforms)])
        head = struct.pack(
            "!BBHBBBB",
            0 if last else 2,
            0,
            8 + len(self.spi) + len(body),
            self.num,
            self.protocol,
            len(self.spi),
            len(self.transforms),
        )
        return head + self.spi + body


def _split_substructures(data: bytes, more_marker: int, what: str, limit: int) -> list[bytes]:
    """Split proposals/transforms by their own length fields and last-substruc flags (at most ``limit``)."""
    items: list[bytes] = []
    pos = 0
    while True:
        if len(items) == limit:
            raise DecodeError(f"more than {limit} {what}s")
        if len(data) - pos < 8:
            raise DecodeError(f"{what}: {len(data) - pos} bytes, need at least 8")
        last_flag, _, length = _PAYLOAD_HEADER.unpack_from(data, pos)
        if last_flag not in (0, more_marker):
            raise DecodeError(f"{what}: bad last-substructure value {last_flag}")
        if length < 8 or pos + length > len(data):
            raise DecodeError(f"{what}: length {length} out of bounds")
        items.append(data[pos : pos + length])
        pos += length
        if last_flag == 0:
            break
    if pos != len(data):
        raise DecodeError(f"{what}: {len(data) - pos} trailing bytes")
    return items


def _decode_transform(data: bytes) -> Transform:
    _, _, _, ttype, _, tid = struct.unpack_from("!BBHBBH", data, 0)
    return Transform(ttype, tid, _decode_attributes(data[8:]))


def _decode_proposal(data: bytes) -> Proposal:
    _, _, _, num, proto, spi_size, n_transforms = struct.unpack_from("!BBHBBBB", data, 0)
    if 8 + spi_size > len(data):
        raise DecodeError("proposal SPI overruns the proposal")
    spi = data[8 : 8 + spi_size]
    rest = data[8 + spi_size :]
    chunks = _split_substructures(rest, 3, "transform", n_transforms) if n_transforms else []
    if len(chunks) != n_transforms or (not n_transforms and rest):
        raise DecodeError(f"proposal says {n_transforms} transforms, found {len(chunks)}")
    return Proposal(num, proto, spi, tuple([_decode_transform(c) for c in chunks]))


# --------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------


@immutable
class SaPayload:
    proposals: tuple[Proposal, ...]
    ptype: ClassVar[int] = PayloadType.SA

    def encode_body(self) -> bytes:
        proposals = self.proposals
        for p in proposals:
            if p.spi:   # a Child SA's (or an IKE rekey's): its SPI is unique, keeping it would only evict
                return _encode_sa.__wrapped__(proposals)
        return _encode_sa(proposals)

    @classmethod
    def decode_body(cls, data: bytes) -> SaPayload:
        # kept: SPI-less proposals (IKE_SA_INIT's; the first proposal's SPI size is its 7th byte);
        # a Child SA's carry a unique SPI, and a peer's outsized payloads are not kept either
        if type(data) is bytes and len(data) <= _SA_CACHE_MAX_BODY and len(data) > 6 and not data[6]:
            return _decode_sa(data)
        return _decode_sa.__wrapped__(data)


# A gateway answers every client with the same chosen IKE proposal: its encoding is kept too
# (SPI-less proposals only: those of IKE_SA_INIT).
@functools.lru_cache(maxsize=32)
def _encode_sa(proposals: tuple[Proposal, ...]) -> bytes:
    n = len(proposals)
    return b"".join([p.encode(i == n - 1) for i, p in enumerate(proposals)])


_SA_CACHE_MAX_BODY = 2048   # strongSwan's default IKE proposals take a few hundred bytes


# Every client of a gateway sends the same IKE_SA_INIT proposals, byte for byte: the parsed
# payload (immutable) is kept for the bodies seen last (a Child SA's, with a unique SPI, are not:
# they would evict them).  Errors are not cached (raised again).
@functools.lru_cache(maxsize=32)
def _decode_sa(data: bytes) -> SaPayload:
    chunks = _split_substructures(data, 2, "proposal", MAX_PROPOSALS)
    # what each proposal says it holds (its 8th byte; _decode_proposal checks it), before decoding any
    if sum([c[7] for c in chunks]) > MAX_SA_TRANSFORMS:
        raise DecodeError(f"SA payload of more than {MAX_SA_TRANSFORMS} transforms")
    return SaPayload(tuple([_decode_proposal(c) for c in chunks]))


@immutable
class KePayload:
    group: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.KE

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.group, 0) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> KePayload:
        _need(data, 4, "KE payload")
        (group,) = struct.unpack_from("!H", data, 0)
        return cls(group, data[4:])


@immutable
class IdPayload:
    """IDi or IDr; ``initiator`` selects which of the two payload types it is."""

    initiator: bool
    id_type: int
    data: bytes

    @property
    def ptype(self) -> int:
        return PayloadType.IDI if self.initiator else PayloadType.IDR

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data

    @classmethod
    def decode(cls, initiator: bool, data: bytes) -> IdPayload:
        if len(data) < 4:
            raise _short(data, 4, "ID payload")
        return cls(initiator, data[0], data[4:])


@immutable
class CertPayload:
    encoding: int
    data: bytes
    ptype: ClassVar[int] = PayloadType.CERT

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> CertPayload:
        _need(data, 1, "CERT payload")
        return cls(data[0], data[1:])


@immutable
class CertReqPayload:
    encoding: int
    data: bytes  # concatenated SHA-1 hashes of trusted CAs' SubjectPublicKeyInfo
    ptype: ClassVar[int] = PayloadType.CERTREQ

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> CertReqPayload:
        _need(data, 1, "CERTREQ payload")
        return cls(data[0], data[1:])


@immutable
class AuthPayload:
    method: int
    data: bytes = field(repr=False)  # a PSK MIC is secret-derived; keep it out of logs
    ptype: ClassVar[int] = PayloadType.AUTH

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.method) + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> AuthPayload:
        if len(data) < 4:
            raise _short(data, 4, "AUTH payload")
        return cls(data[0], data[4:])


@immutable
class NoncePayload:
    data: bytes
    ptype: ClassVar[int] = PayloadType.NONCE

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> NoncePayload:
        if not MIN_NONCE <= len(data) <= MAX_NONCE:
            raise DecodeError(f"nonce of {len(data)} bytes (RFC 7296: 16..256)")
        return cls(data)


@immutable
class NotifyPayload:
    type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""
    ptype: ClassVar[int] = PayloadType.NOTIFY

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, len(self.spi), self.type) + self.spi + self.data

    @classmethod
    def decode_body(cls, data: bytes) -> NotifyPayload:
        if len(data) < 4:
            raise _short(data, 4, "Notify payload")
        proto, spi_size, ntype = _NOTIFY_HEAD.unpack_from(data)
        if not spi_size:   # most notifies (the IKE SA's own)
            return cls(ntype, data[4:], proto, b"")
        if 4 + spi_size > len(data):
            raise DecodeError("Notify SPI overruns the payload")
        return cls(ntype, data[4 + spi_size :], proto, data[4 : 4 + spi_size])


@immutable
class DeletePayload:
    protocol: int
    spi_size: int
    spis: tuple[bytes, ...] = ()
    ptype: ClassVar[int] = PayloadType.DELETE

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol, self.spi_size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode_body(cls, data: bytes) -> DeletePayload:
        _need(data, 4, "Delete payload")
        proto, spi_size, count = struct.unpack_from("!BBH", data, 0)
        if len(data) - 4 != spi_size * count:
            raise DecodeError(f"Delete payload: {count} SPIs of {spi_size} bytes do not fill {len(data) - 4}")
        if not spi_size:   # (an IKE SA's DELETE): a count of SPIs of no bytes names nothing; listed, 4 bytes
            return cls(proto, 0)   # would make 65,535 of them (review revfrag F1; strongSwan lists none either)
        spis = tuple([data[4 + i * spi_size : 4 + (i + 1) * spi_size] for i in range(count)])
        return cls(proto, spi_size, spis)


@immutable
class VendorIdPayload:
    data: bytes
    ptype: ClassVar[int] = PayloadType.VENDOR_ID

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> VendorIdPayload:
        return cls(data)


_TS_ADDR_LEN: dict[int, int] = {TsType.IPV4_ADDR_RANGE: 4, TsType.IPV6_ADDR_RANGE: 16}


@immutable
class TrafficSelector:
    """One wire traffic selector; ``ts.py`` has the semantic type used for narrowing."""

    ts_type: int
    ip_protocol: int
    start_port: int
    end_port: int
    start_addr: bytes
    end_addr: bytes

    def encode(self) -> bytes:
        length = 8 + len(self.start_addr) + len(self.end_addr)
        head = struct.pack("!BBHHH", self.ts_type, self.ip_protocol, length, self.start_port, self.end_port)
        return head + self.start_addr + self.end_addr


def _decode_selector(data: bytes, pos: int) -> tuple[TrafficSelector, int]:
    if len(data) - pos < 8:
        raise DecodeError(f"traffic selector: {len(data) - pos} bytes, need at least 8")
    ts_type, proto, length, sport, eport = _TS_HEAD.unpack_from(data, pos)
    addr_len = _TS_ADDR_LEN.get(ts_type)
    if addr_len is None:
        raise DecodeError(f"unsupported traffic selector type {ts_type}")
    stop = pos + length
    if length != 8 + 2 * addr_len or stop > len(data):
        raise DecodeError(f"traffic selector length {length} invalid")
    mid = stop - addr_len   # (length is 8 + 2 * addr_len: the start address ends where the end begins)
    return TrafficSelector(ts_type, proto, sport, eport, data[pos + 8 : mid], data[mid:stop]), stop


_TS_HEAD = struct.Struct("!BBHHH")   # a traffic selector's type, protocol, length, start and end port


@immutable
class TsPayload:
    """TSi or TSr; ``initiator`` selects which of the two payload types it is."""

    initiator: bool
    selectors: tuple[TrafficSelector, ...]

    @property
    def ptype(self) -> int:
        return PayloadType.TSI if self.initiator else PayloadType.TSR

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", len(self.selectors)) + b"".join([s.encode() for s in self.selectors])

    @classmethod
    def decode(cls, initiator: bool, data: bytes) -> TsPayload:
        if len(data) < 4:
            raise _short(data, 4, "TS payload")
        count = data[0]
        selectors: list[TrafficSelector] = []
        pos = 4
        for _ in range(count):
            sel, pos = _decode_selector(data, pos)
            selectors.append(sel)
        if pos != len(data):
            raise DecodeError("TS payload: trailing bytes after the selectors")
        return cls(initiator, tuple(selectors))


@immutable
class SkPayload:
    """The Encrypted payload, still sealed: ``body`` is IV || ciphertext || ICV."""

    first_payload: int
    body: bytes
    ptype: ClassVar[int] = PayloadType.SK

    def encode_body(self) -> bytes:
        return self.body


@immutable
class SkfPayload:
    """One Encrypted Fragment payload (RFC 7383 §2.5), still sealed.

    ``first_payload`` is the type of the first inner payload in fragment 1 and 0 in the
    others; ``body`` is IV || ciphertext || ICV of this fragment's share of the plaintext.
    """

    first_payload: int
    number: int
    total: int
    body: bytes
    ptype: ClassVar[int] = PayloadType.SKF

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.number, self.total) + self.body

    @classmethod
    def decode(cls, first_payload: int, data: bytes) -> SkfPayload:
        _need(data, 4, "Encrypted Fragment payload")
        number, total = struct.unpack_from("!HH", data, 0)
        if not 1 <= number <= total:
            raise DecodeError(f"Encrypted Fragment payload: fragment {number} of {total}")
        return cls(first_payload, number, total, data[4:])


Sealed = SkPayload | SkfPayload


@immutable
class CpPayload:
    cfg_type: int
    attributes: bytes  # kept opaque: tunsec does not assign virtual IPs
    ptype: ClassVar[int] = PayloadType.CP

    def encode_body(self) -> bytes:
        return struct.pack("!B3x", self.cfg_type) + self.attributes

    @classmethod
    def decode_body(cls, data: bytes) -> CpPayload:
        if len(data) < 4:
            raise _short(data, 4, "CP payload")
        return cls(data[0], data[4:])


@immutable
class EapPayload:
    data: bytes  # an EAP packet: tunsec.ike.eap parses it
    ptype: ClassVar[int] = PayloadType.EAP

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, data: bytes) -> EapPayload:
        _need(data, 4, "EAP payload")
        return cls(data)


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsPayload
    | SkPayload
    | SkfPayload
    | CpPayload
    | EapPayload
)


_DECODERS: dict[int, Callable[[bytes], Payload]] = {
    PayloadType.SA: SaPayload.decode_body,
    PayloadType.KE: KePayload.decode_body,
    PayloadType.CERT: CertPayload.decode_body,
    PayloadType.CERTREQ: CertReqPayload.decode_body,
    PayloadType.AUTH: AuthPayload.decode_body,
    PayloadType.NONCE: NoncePayload.decode_body,
    PayloadType.NOTIFY: NotifyPayload.decode_body,
    PayloadType.DELETE: DeletePayload.decode_body,
    PayloadType.VENDOR_ID: VendorIdPayload.decode_body,
    PayloadType.CP: CpPayload.decode_body,
    PayloadType.EAP: EapPayload.decode_body,
    PayloadType.IDI: functools.partial(IdPayload.decode, True),
    PayloadType.IDR: functools.partial(IdPayload.decode, False),
    PayloadType.TSI: functools.partial(TsPayload.decode, True),
    PayloadType.TSR: functools.partial(TsPayload.decode, False),
}
_NONE, _SK, _SKF = int(PayloadType.NONE), int(PayloadType.SK), int(PayloadType.SKF)


def encode_payloads(payloads: Sequence[Payload]) -> bytes:
    """Encode a payload chain; an SK or SKF payload must be last and is left as given."""
    out = []
    last = len(payloads) - 1
    pack = _PAYLOAD_HEADER.pack
    for i, payload in enumerate(payloads):
        if isinstance(payload, (SkPayload, SkfPayload)):
            nxt = payload.first_payload
            if i != last:
                raise ValueError("the SK or SKF payload must be the last payload")
        else:
            nxt = payloads[i + 1].ptype if i < last else _NONE
        body = payload.encode_body()
        out.append(pack(nxt, 0, 4 + len(body)))
        out.append(body)
    return b"".join(out)


def decode_payloads(first_type: int, data: bytes, limit: int = MAX_PAYLOADS) -> tuple[Payload, ...]:
    """Decode a payload chain that starts with ``first_type`` and fills ``data`` exactly: at most
    ``limit`` payloads, unknown ones included (DecodeError beyond, before decoding the rest)."""
    payloads: list[Payload] = []
    append = payloads.append
    decoder_of = _DECODERS.get
    ptype = first_type
    pos = 0
    end = len(data)
    unpack = _PAYLOAD_HEADER.unpack_from
    seen = 0
    # (the loop runs for every payload a gateway receives: each test and slice is done once)
    while ptype:   # PayloadType.NONE is 0
        seen += 1
        if seen > limit:
            raise DecodeError(f"more than {limit} payloads")
        if end - pos < 4:
            raise DecodeError(f"payload header: {end - pos} bytes, need at least 4")
        nxt, flags, length = unpack(data, pos)
        stop = pos + length
        if length < 4 or stop > end:
            raise DecodeError(f"payload {ptype}: length {length} out of bounds")
        decoder = decoder_of(ptype)
        if decoder is not None:   # SK and SKF have none: they end the chain, below
            append(decoder(data[pos + 4 : stop]))
        elif ptype in (_SK, _SKF):
            if stop != end:
                raise DecodeError(f"the {PayloadType(ptype).name} payload is not the last payload")
            body = data[pos + 4 : stop]
            append(SkPayload(nxt, body) if ptype == _SK else SkfPayload.decode(nxt, body))
            return tuple(payloads)
        elif flags & 0x80:
            raise UnsupportedCriticalPayload(ptype)
        pos = stop
        ptype = nxt
    if pos != end:
        raise DecodeError(f"{end - pos} bytes after the last payload")
    return tuple(payloads)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


@immutable
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & _INITIATOR)

    def encode(self) -> bytes:
        return encode_header(self.spi_i, self.spi_r, self.next_payload, self.exchange, self.flags,
                             self.message_id, self.length)


def encode_header(spi_i: bytes, spi_r: bytes, next_payload: int, exchange: int, flags: int, message_id: int,
                  length: int) -> bytes:
    """The 28-byte IKE header (``Header.encode`` without making a Header)."""
    return spi_i + spi_r + _HEADER_TAIL.pack(next_payload, IKE_VERSION, exchange, flags, message_id, length)


def decode_header(data: bytes) -> Header:
    nxt, exchange, flags, msg_id = header_fields(data)
    return Header(data[0:8], data[8:16], nxt, exchange, flags, msg_id, len(data))


def header_fields(data: bytes) -> tuple[int, int, int, int]:
    """(next payload, exchange, flags, message ID) of a header that checks out (the SPIs are
    ``data[0:8]`` and ``data[8:16]``): what ``decode_header`` puts in a Header, without making one."""
    _need(data, IKE_HEADER_LEN, "IKE header")
    nxt, version, exchange, flags, msg_id, length = _HEADER_TAIL.unpack_from(data, 16)
    if version >> 4 != 2:
        raise InvalidMajorVersion(f"IKE major version {version >> 4}")
    if length != len(data):
        raise DecodeError(f"IKE header length {length} but datagram has {len(data)} bytes")
    return nxt, exchange, flags, msg_id


@immutable
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: tuple[Payload, ...]

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & _INITIATOR)

    def header(self, body_len: int) -> Header:
        first = self.payloads[0].ptype if self.payloads else PayloadType.NONE
        return Header(
            self.spi_i,
            self.spi_r,
            first,
            self.exchange,
            self.flags,
            self.message_id,
            IKE_HEADER_LEN + body_len,
        )

    def encode(self) -> bytes:
        body = encode_payloads(self.payloads)
        first = self.payloads[0].ptype if self.payloads else PayloadType.NONE
        return encode_header(self.spi_i, self.spi_r, first, self.exchange, self.flags, self.message_id,
                             IKE_HEADER_LEN + len(body)) + body


def decode_message(data: bytes) -> Message:
    """Decode a whole datagram (without the non-ESP marker)."""
    nxt, exchange, flags, msg_id = header_fields(data)   # (no Header object: the Message has it all)
    limit = MAX_INIT_PAYLOADS if exchange == _IKE_SA_INIT else MAX_PAYLOADS
    payloads = decode_payloads(nxt, data[IKE_HEADER_LEN:], limit)
    if exchange == _IKE_SA_INIT and payloads and isinstance(payloads[-1], (SkPayload, SkfPayload)):
        # there are no keys yet (RFC 7296 §1.2; RFC 7383 §2.5): refused here, before an SA is made for it
        raise DecodeError(f"an IKE_SA_INIT message with an {PayloadType(payloads[-1].ptype).name} payload")
    return Message(data[0:8], data[8:16], exchange, flags, msg_id, payloads)
