"""EAP packets (RFC 3748 §4): Code, Identifier, Length, then Type and data."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


class EapCode(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(enum.IntEnum):
    IDENTITY = 1
    NAK = 3
    TLS = 13
    MSCHAPV2 = 26


class EapError(ValueError):
    """A malformed or unexpected EAP packet (the text is safe to log)."""


@dataclass(frozen=True)
class EapPacket:
    code: EapCode
    ident: int
    type: int | None = None  # None for Success/Failure
    data: bytes = b""

    def encode(self) -> bytes:
        if self.type is None:
            return struct.pack("!BBH", self.code, self.ident, 4)
        return struct.pack("!BBHB", self.code, self.ident, 5 + len(self.data), self.type) + self.data

    @classmethod
    def decode(cls, raw: bytes) -> EapPacket:
        if len(raw) < 4:
            raise EapError(f"EAP packet of {len(raw)} bytes, shorter than its 4-byte header")
        code, ident, length = struct.unpack_from("!BBH", raw)
        if length < 4 or length > len(raw):
            raise EapError(f"EAP length {length} does not fit the {len(raw)} bytes received")
        try:
            ecode = EapCode(code)
        except ValueError:
            raise EapError(f"unknown EAP code {code}") from None
        if ecode in (EapCode.SUCCESS, EapCode.FAILURE):
            return cls(ecode, ident)
        if length < 5:
            raise EapError(f"EAP {ecode.name} without a Type")
        return cls(ecode, ident, raw[4], bytes(raw[5:length]))
