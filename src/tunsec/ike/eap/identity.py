"""EAP-Identity (RFC 3748 §5.1): the server asks, the peer names itself."""
from __future__ import annotations

from .packet import EapCode, EapError, EapPacket, EapType

MAX_IDENTITY = 253  # a NAI (RFC 7542 §2.2) fits; longer is an attack, not a user


def request(ident: int) -> EapPacket:
    return EapPacket(EapCode.REQUEST, ident, EapType.IDENTITY)


def response(ident: int, identity: bytes) -> EapPacket:
    return EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, identity)


def parse_response(pkt: EapPacket) -> bytes:
    """The identity a peer gave; EapError if ``pkt`` is not a sane one."""
    if pkt.code != EapCode.RESPONSE or pkt.type != EapType.IDENTITY:
        raise EapError("expected an EAP-Identity response")
    if not pkt.data or len(pkt.data) > MAX_IDENTITY or b"\x00" in pkt.data:
        raise EapError(f"EAP identity of {len(pkt.data)} bytes refused")
    return pkt.data


def user_text(name: bytes) -> str:
    """A peer-chosen user name, fit for a log line (quoted, control characters escaped)."""
    return repr(name[:64].decode("utf-8", "replace"))
