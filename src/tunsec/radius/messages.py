"""RADIUS messages of the EAP relay (RFC 2865, RFC 3579), encoded and checked with pyrad.

:func:`access_request` builds an Access-Request that carries one EAP packet: the
Message-Authenticator first (RFC 3579 §3.2 requires it with EAP-Message; it also is the
BlastRADIUS countermeasure), User-Name, the NAS and station attributes strongSwan's
eap-radius plugin sends, the EAP packet split into EAP-Message attributes of at most
253 bytes, and the State of the server's last Access-Challenge, echoed.

:func:`read_reply` accepts an answer only once it is authenticated: the Response
Authenticator and the Message-Authenticator (required) must verify with the shared
secret and the request's authenticator; only then are EAP-Message, State and the MPPE
keys (RFC 2548 §2.4.2/§2.4.3, salt-encrypted) read. The MSK is MS-MPPE-Recv-Key ||
MS-MPPE-Send-Key, as strongSwan's eap-radius takes it.

No secret, key or raw packet ever goes into an exception text or a log line.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

from tunsec.ike.secret import Secret

MAX_ATTR = 253  # a RADIUS attribute's value (RFC 2865 §5)
MAX_PACKET = 4096  # RFC 2865 §3
EAP_MESSAGE, STATE, MESSAGE_AUTHENTICATOR, REPLY_MESSAGE = 79, 24, 80, 18
MS_MPPE_SEND_KEY, MS_MPPE_RECV_KEY = (311, 16), (311, 17)
MIN_KEY = 16  # an MPPE key of MSCHAPv2; EAP-TLS's are 32 bytes

ACCESS_REQUEST = rp.AccessRequest
ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE = rp.AccessAccept, rp.AccessReject, rp.AccessChallenge
CODE_NAMES = {ACCESS_ACCEPT: "Access-Accept", ACCESS_REJECT: "Access-Reject", ACCESS_CHALLENGE: "Access-Challenge"}


def _dictionary() -> Dictionary:
    with resources.files("tunsec.radius").joinpath("dictionary").open("r", encoding="ascii") as f:
        return Dictionary(f)


DICTIONARY = _dictionary()


class BadReply(Exception):
    """A datagram that is not a usable answer to our request (the text is safe to log)."""


class TooLarge(Exception):
    """The EAP packet does not fit into one RADIUS packet."""


@dataclass(frozen=True)
class Station:
    """Who asks, for whom: the NAS and station attributes of every Access-Request."""

    nas_identifier: str
    nas_address: str | None  # our IKE address (NAS-IP-Address / NAS-IPv6-Address)
    called: str  # Called-Station-Id: our IKE endpoint, "addr[port]" as strongSwan writes it
    calling: str  # Calling-Station-Id: the client's
    nas_port: int  # strongSwan sends the IKE SA's unique id


@dataclass(frozen=True)
class Answer:
    """An authenticated Access-Accept, -Reject or -Challenge."""

    code: int
    eap: bytes = field(repr=False)
    state: bytes | None = field(repr=False)
    msk: Secret | None
    message: str  # Reply-Message, printable and short, for the log

    @property
    def name(self) -> str:
        return CODE_NAMES[self.code]


def split_eap(eap: bytes) -> list[bytes]:
    """EAP-Message attribute values: consecutive pieces of at most 253 bytes (RFC 3579 §3.1)."""
    return [eap[i:i + MAX_ATTR] for i in range(0, len(eap), MAX_ATTR)] or [b""]


def access_request(secret: Secret, ident: int, user: bytes, eap: bytes, state: bytes | None,
                   station: Station) -> Any:
    """The Access-Request (a pyrad ``AuthPacket``; ``RequestPacket()`` encodes it). Raises TooLarge."""
    pkt = rp.AuthPacket(code=ACCESS_REQUEST, id=ident, secret=secret.reveal(), dict=DICTIONARY)
    pkt.add_message_authenticator()
    pkt.AddAttribute("User-Name", user[:MAX_ATTR])
    pkt.AddAttribute("Service-Type", "Framed-User")
    pkt.AddAttribute("NAS-Port-Type", "Virtual")
    pkt.AddAttribute("NAS-Port", station.nas_port & 0xFFFFFFFF)
    pkt.AddAttribute("NAS-Identifier", station.nas_identifier)
    if station.nas_address is not None:
        addr = ipaddress.ip_address(station.nas_address)
        pkt.AddAttribute("NAS-IP-Address" if addr.version == 4 else "NAS-IPv6-Address", str(addr))
    pkt.AddAttribute("Called-Station-Id", station.called)
    pkt.AddAttribute("Calling-Station-Id", station.calling)
    pkt.AddAttribute("EAP-Message", split_eap(eap))
    if state is not None:
        pkt.AddAttribute("State", state)
    size = len(pkt.RequestPacket())  # also computes the Message-Authenticator
    if size > MAX_PACKET:
        raise TooLarge(f"an EAP packet of {len(eap)} bytes makes a RADIUS packet of {size} bytes "
                       f"(at most {MAX_PACKET})")
    return pkt


def _raw(reply: Any, key: int | tuple[int, int]) -> list[bytes]:
    values: list[bytes] = OrderedDict.get(reply, key, [])
    return values


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:80]


def verifies(request: Any, raw: bytes) -> bool:
    """Whether ``raw`` is an authentic answer to ``request`` (Response Authenticator and
    Message-Authenticator, which must be present)."""
    try:
        reply = rp.Packet(packet=raw, dict=DICTIONARY)
    except (rp.PacketError, ValueError, KeyError):
        return False
    return bool(request.VerifyReply(reply, raw, enforce_ma=True))


def read_reply(request: Any, raw: bytes) -> Answer:
    """The authenticated answer in ``raw`` to ``request``; raises BadReply."""
    try:
        reply = rp.Packet(packet=raw, dict=DICTIONARY)
    except (rp.PacketError, ValueError, KeyError) as exc:
        raise BadReply(f"undecodable RADIUS packet ({exc})") from None
    if reply.code not in CODE_NAMES:
        raise BadReply(f"RADIUS code {reply.code} is not an answer to an Access-Request")
    if len(_raw(reply, MESSAGE_AUTHENTICATOR)) != 1 or len(_raw(reply, MESSAGE_AUTHENTICATOR)[0]) != 16:
        raise BadReply(f"{CODE_NAMES[reply.code]} without a Message-Authenticator")
    if not request.VerifyReply(reply, raw, enforce_ma=True):
        raise BadReply(f"{CODE_NAMES[reply.code]} does not verify (wrong shared secret, or forged)")
    reply.secret = request.secret
    reply.request_authenticator = request.authenticator  # the salt of the MPPE keys
    states = _raw(reply, STATE)
    messages = _raw(reply, REPLY_MESSAGE)
    return Answer(
        reply.code,
        b"".join(_raw(reply, EAP_MESSAGE)),
        states[0] if states else None,
        _msk(reply) if reply.code == ACCESS_ACCEPT else None,
        _printable(b" ".join(messages)) if messages else "",
    )


def _msk(reply: Any) -> Secret | None:
    """MS-MPPE-Recv-Key || MS-MPPE-Send-Key (decrypted), or None if either is missing or bad."""
    try:
        recv, send = reply.get("MS-MPPE-Recv-Key"), reply.get("MS-MPPE-Send-Key")
    except (rp.PacketError, ValueError):
        raise BadReply("Access-Accept with malformed MPPE keys") from None
    if not recv or not send:
        return None
    if len(recv[0]) < MIN_KEY or len(send[0]) < MIN_KEY:
        raise BadReply("Access-Accept with MPPE keys shorter than 16 bytes")
    return Secret(bytes(recv[0]) + bytes(send[0]))
