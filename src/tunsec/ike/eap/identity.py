"""EAP-Identity (RFC 3748 §5.1): the server asks, the peer names itself."""
from __future__ import annotations

from .packet import EapCode, EapError, EapPacket, EapType

MAX_IDENTITY = 253  # a NAI (RFC 7542 §2.2) fits; longer is an attack, not a user


def request(ident: int) -> EapPacket:
    return EapPacket(EapCode.REQUEST, ident, EapType.IDENTITY)


def response(ident: int, identity: bytes) -> EapPacket:
    return EapPacket(EapCode.RESPONSE, ident, EapType.IDENTITY, identity)


def fault(name: bytes) -> str:
    """Why ``name`` cannot be an EAP identity, "" if it can: the one rule for an EAP-Identity answer,
    an IDi eap-radius relays as the EAP identity (no ``eap_id``) and an Access-Accept's User-Name.
    Not empty; at most MAX_IDENTITY bytes, all a RADIUS User-Name holds (a server would check only
    what is there); no NUL byte, as servers read a User-Name as a C string in places: FreeRADIUS takes
    ``alice\\0x`` with alice's password for alice, which must not make another user here (review reveap F2)."""
    if not name:
        return "is empty"
    if len(name) > MAX_IDENTITY:
        return f"is {len(name)} bytes, and a RADIUS User-Name holds at most {MAX_IDENTITY}"
    if b"\x00" in name:
        return "holds a NUL byte"
    return ""


def parse_response(pkt: EapPacket) -> bytes:
    """The identity a peer gave; EapError if ``pkt`` is not a sane one."""
    if pkt.code != EapCode.RESPONSE or pkt.type != EapType.IDENTITY:
        raise EapError("expected an EAP-Identity response")
    if why := fault(pkt.data):
        raise EapError(f"EAP identity {user_text(pkt.data)} {why}: refused")
    return pkt.data


def user_text(name: bytes) -> str:
    """A peer-chosen user name, fit for a log line (quoted, control characters escaped)."""
    return repr(name[:64].decode("utf-8", "replace"))
