"""RADIUS messages of the EAP relay (RFC 2865, RFC 3579), encoded and checked with pyrad.

:func:`access_request` builds an Access-Request that carries one EAP packet: the
Message-Authenticator first (RFC 3579 §3.2 requires it with EAP-Message; it also is the
BlastRADIUS countermeasure), User-Name, the NAS and station attributes strongSwan's
eap-radius plugin sends, the EAP packet split into EAP-Message attributes of at most
253 bytes, and the State of the server's last Access-Challenge, echoed.

:func:`read_reply` accepts an answer only once it is authenticated: the Response
Authenticator and the Message-Authenticator (required) must verify with the shared
secret and the request's authenticator; only then are EAP-Message, State, the MPPE
keys (RFC 2548 §2.4.2/§2.4.3, salt-encrypted) and an Access-Accept's group memberships
(printable Class names, the Filter-Id of an ESP Tunnel-Type: :meth:`Answer.groups`) read. The MSK is MS-MPPE-Recv-Key ||
MS-MPPE-Send-Key, as strongSwan's eap-radius takes it.

:func:`accounting_request` builds an Accounting-Request (RFC 2866) with the attributes
strongSwan's eap-radius accounting sends, :func:`accounting_onoff` an Accounting-On/-Off;
:func:`read_acct_reply` accepts an Accounting-Response only once its Response Authenticator
verifies.

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

from tunsec.ike.eap.identity import fault
from tunsec.ike.secret import Secret
from tunsec.printable import replaced

from .limits import ATTR_HEADER, MAX_ATTR, MAX_PACKET, largest_eap

EAP_MESSAGE, STATE, MESSAGE_AUTHENTICATOR, REPLY_MESSAGE, CLASS = 79, 24, 80, 18, 25
USER_NAME = 1
ACCT_INTERIM_INTERVAL = 85  # RFC 2869 §5.16: seconds between Interim-Updates the server asks for
SESSION_TIMEOUT = 27  # RFC 2865 §5.27: the most seconds the session may last
MAX_CLASSES = 8  # Class attributes of an Access-Accept kept for accounting (more are dropped)
FILTER_ID, TUNNEL_TYPE = 11, 64
TUNNEL_TYPE_ESP = 9  # RFC 2868 §3.1
# a Class attribute of 44 bytes or more is no group (strongSwan's class_group: NPS puts other data there)
MAX_GROUP_CLASS = 43
MAX_GROUPS = 32  # group names an Access-Accept gives (more are dropped)
MS_MPPE_SEND_KEY, MS_MPPE_RECV_KEY = (311, 16), (311, 17)
MIN_KEY = 16  # an MPPE key of MSCHAPv2; EAP-TLS's are 32 bytes

ACCESS_REQUEST = rp.AccessRequest
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = rp.AccountingRequest, rp.AccountingResponse
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
    nas_port_id: str = ""  # the connection's name (accounting, as strongSwan)


@dataclass(frozen=True)
class Answer:
    """An authenticated Access-Accept, -Reject or -Challenge."""

    code: int
    eap: bytes = field(repr=False)
    state: bytes | None = field(repr=False)
    msk: Secret | None
    message: str  # Reply-Message, printable and short, for the log
    # an Access-Accept's Class attributes, sent back unmodified in accounting (RFC 2865 §5.25)
    classes: tuple[bytes, ...] = field(default=(), repr=False)
    # an Access-Accept's Acct-Interim-Interval as the server sent it (accounting bounds it)
    interim_interval: int | None = None
    # an Access-Accept's group memberships (remote.groups), printable names only: its Class
    # attributes that are one (class_group), its Filter-Id if its Tunnel-Type is ESP (filter_id)
    class_groups: tuple[str, ...] = ()
    filter_group: str | None = None
    # an Access-Accept's User-Name: the user the server authenticated (RFC 2865 §5.1), which with
    # a tunnelled method (PEAP, TTLS) need not be the EAP identity the client gave outside
    user_name: bytes | None = None
    user_name_error: str = ""   # why its User-Name cannot be one (the Accept is then refused)
    # an Access-Accept's Session-Timeout as the server sent it, None for none or 0 (the edge bounds it)
    session_timeout: int | None = None

    @property
    def name(self) -> str:
        return CODE_NAMES[self.code]

    def groups(self, class_group: bool, filter_id: bool) -> tuple[str, ...]:
        """The groups the settings take from this answer (strongSwan's eap-radius ``class_group``
        and ``filter_id``), each once, in the order the server sent them."""
        found = list(self.class_groups) if class_group else []
        if filter_id and self.filter_group is not None:
            found.append(self.filter_group)
        return tuple(dict.fromkeys(found))


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


def eap_room(user: bytes, state: bytes | None, station: Station) -> int:
    """The longest EAP packet this conversation's next Access-Request carries: the request measured with
    its User-Name, State and station as they are, an empty EAP-Message (one attribute's header) in it
    (review revlate8 F3).  The relay refuses a longer response as the client's failure."""
    bare = access_request(Secret(b"room"), 0, user, b"", state, station)   # the secret changes no size
    return largest_eap(MAX_PACKET - len(bare.RequestPacket()) + ATTR_HEADER)


def _raw(reply: Any, key: int | tuple[int, int]) -> list[bytes]:
    values: list[bytes] = OrderedDict.get(reply, key, [])
    return values


def _printable(raw: bytes) -> str:
    return replaced(raw.decode("utf-8", "replace"))[:80]


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
    user_name, user_name_error = _user_name(reply) if reply.code == ACCESS_ACCEPT else (None, "")
    return Answer(
        reply.code,
        b"".join(_raw(reply, EAP_MESSAGE)),
        states[0] if states else None,
        _msk(reply) if reply.code == ACCESS_ACCEPT else None,
        _printable(b" ".join(messages)) if messages else "",
        tuple(_raw(reply, CLASS)[:MAX_CLASSES]) if reply.code == ACCESS_ACCEPT else (),
        _interim_interval(reply) if reply.code == ACCESS_ACCEPT else None,
        _class_groups(reply) if reply.code == ACCESS_ACCEPT else (),
        _filter_group(reply) if reply.code == ACCESS_ACCEPT else None,
        user_name,
        user_name_error,
        _first_u32(reply, SESSION_TIMEOUT) or None if reply.code == ACCESS_ACCEPT else None,
    )


def _user_name(reply: Any) -> tuple[bytes | None, str]:
    """The Accept's User-Name (at most one, RFC 2865 §5.44), held to the rule of an EAP identity
    (eap.identity.fault: not empty, no NUL), or why it is none."""
    names = _raw(reply, USER_NAME)
    if not names:
        return None, ""
    if len(names) > 1:
        return None, f"{len(names)} User-Name attributes"
    if why := fault(names[0]):
        return None, f"a User-Name that {why}"
    return bytes(names[0]), ""


def _group_name(raw: bytes) -> str | None:
    """A group name: printable UTF-8 text. Anything else is an opaque value (a server's session
    cookie in Class, RFC 2865 §5.25) that no configured group can name and no log line shows."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.strip() and text.isprintable() else None


def _class_groups(reply: Any) -> tuple[str, ...]:
    names = (_group_name(raw) for raw in _raw(reply, CLASS) if len(raw) <= MAX_GROUP_CLASS)
    return tuple(n for n in names if n is not None)[:MAX_GROUPS]


def _filter_group(reply: Any) -> str | None:
    """The last Filter-Id, if the last well-formed Tunnel-Type (its tag octet aside, RFC 2868
    §3.1) says ESP: as strongSwan's ``filter_id`` reads them."""
    types = [int.from_bytes(raw[1:], "big") for raw in _raw(reply, TUNNEL_TYPE) if len(raw) == 4]
    filters = _raw(reply, FILTER_ID)
    if not types or types[-1] != TUNNEL_TYPE_ESP or not filters:
        return None
    return _group_name(filters[-1])


def _interim_interval(reply: Any) -> int | None:
    """The first Acct-Interim-Interval that is a 4-byte integer (as strongSwan reads it), else None."""
    return _first_u32(reply, ACCT_INTERIM_INTERVAL)


def _first_u32(reply: Any, code: int) -> int | None:
    """The first value of attribute ``code`` that is a 4-byte integer, else None."""
    for raw in _raw(reply, code):
        if len(raw) == 4:
            return int.from_bytes(raw, "big")
    return None


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


@dataclass(frozen=True)
class AcctRecord:
    """What one Accounting-Request reports (RFC 2866 §5): the status (1 Start, 2 Stop,
    3 Interim-Update), the session, and from Interim-Update on its usage so far."""

    status: int
    session_id: str
    user: str
    station: Station
    vips: tuple[str, ...] = ()  # the client's virtual IPs (Framed-IP-Address, Framed-IPv6-Address)
    octets_in: int = 0  # from the client (our inbound SAs), as strongSwan's Acct-Input-*
    octets_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    session_time: int | None = None  # seconds; Interim-Update and Stop
    terminate_cause: int | None = None  # Stop
    classes: tuple[bytes, ...] = field(default=(), repr=False)  # the Access-Accept's Class attributes


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def accounting_request(secret: Secret, ident: int, record: AcctRecord) -> Any:
    """The Accounting-Request (a pyrad ``AcctPacket``; ``RequestPacket()`` encodes it and sets
    its Request Authenticator)."""
    st = record.station
    pkt = rp.AcctPacket(code=ACCOUNTING_REQUEST, id=ident, secret=secret.reveal(), dict=DICTIONARY)
    pkt.AddAttribute("Acct-Status-Type", record.status)
    pkt.AddAttribute("Acct-Session-Id", record.session_id)
    for cls in record.classes:
        pkt.AddAttribute("Class", cls[:MAX_ATTR])
    pkt.AddAttribute("NAS-Port-Type", "Virtual")
    pkt.AddAttribute("Service-Type", "Framed-User")
    pkt.AddAttribute("NAS-Port", _u32(st.nas_port))
    if st.nas_port_id:
        pkt.AddAttribute("NAS-Port-Id", st.nas_port_id[:MAX_ATTR])
    pkt.AddAttribute("NAS-Identifier", st.nas_identifier)
    if st.nas_address is not None:
        addr = ipaddress.ip_address(st.nas_address)
        pkt.AddAttribute("NAS-IP-Address" if addr.version == 4 else "NAS-IPv6-Address", str(addr))
    pkt.AddAttribute("Called-Station-Id", st.called)
    pkt.AddAttribute("Calling-Station-Id", st.calling)
    pkt.AddAttribute("User-Name", record.user.encode("utf-8", "surrogateescape")[:MAX_ATTR])
    for vip in record.vips:
        addr = ipaddress.ip_address(vip)
        pkt.AddAttribute("Framed-IP-Address" if addr.version == 4 else "Framed-IPv6-Address", str(addr))
    if record.status != ACCT_START:
        # 32-bit counters, the high bits in the Gigawords (RFC 2869 §5.1), only when set (as strongSwan)
        for name, value in (("Output", record.octets_out), ("Input", record.octets_in)):
            pkt.AddAttribute(f"Acct-{name}-Octets", _u32(value))
            if value >> 32:
                pkt.AddAttribute(f"Acct-{name}-Gigawords", _u32(value >> 32))
        pkt.AddAttribute("Acct-Output-Packets", _u32(record.packets_out))
        pkt.AddAttribute("Acct-Input-Packets", _u32(record.packets_in))
    if record.session_time is not None:
        pkt.AddAttribute("Acct-Session-Time", _u32(record.session_time))
    if record.terminate_cause is not None:
        pkt.AddAttribute("Acct-Terminate-Cause", record.terminate_cause)
    return pkt


ACCT_START, ACCT_STOP, ACCT_INTERIM = 1, 2, 3
ACCT_ON, ACCT_OFF = 7, 8  # RFC 2866 §5.1: accounting of this NAS begins, ends


@dataclass(frozen=True)
class NasRecord:
    """An Accounting-On or -Off (RFC 2866 §5.1): about the NAS, not a session. It names the NAS
    as the session records do (NAS-Identifier, and the IKE addresses as NAS-IP-Address /
    NAS-IPv6-Address), so a server can close the sessions of this NAS a crash left open."""

    status: int
    session_id: str  # Acct-Session-Id is required in every Accounting-Request (RFC 2866 §5.13)
    nas_identifier: str
    nas_addresses: tuple[str, ...] = ()


def accounting_onoff(secret: Secret, ident: int, record: NasRecord) -> Any:
    """The Accounting-Request of an Accounting-On or -Off (a pyrad ``AcctPacket``)."""
    pkt = rp.AcctPacket(code=ACCOUNTING_REQUEST, id=ident, secret=secret.reveal(), dict=DICTIONARY)
    pkt.AddAttribute("Acct-Status-Type", record.status)
    pkt.AddAttribute("Acct-Session-Id", record.session_id)
    pkt.AddAttribute("NAS-Identifier", record.nas_identifier)
    for text in record.nas_addresses:
        addr = ipaddress.ip_address(text)
        pkt.AddAttribute("NAS-IP-Address" if addr.version == 4 else "NAS-IPv6-Address", str(addr))
    return pkt


def read_acct_reply(request: Any, raw: bytes) -> int:
    """The code of the authentic Accounting-Response in ``raw`` to ``request``; raises BadReply."""
    try:
        reply = rp.Packet(packet=raw, dict=DICTIONARY)
    except (rp.PacketError, ValueError, KeyError) as exc:
        raise BadReply(f"undecodable RADIUS packet ({exc})") from None
    if reply.code != ACCOUNTING_RESPONSE:
        raise BadReply(f"RADIUS code {reply.code} is not an answer to an Accounting-Request")
    # the Response Authenticator, and a Message-Authenticator if there is one
    if not request.VerifyReply(reply, raw):
        raise BadReply("Accounting-Response does not verify (wrong shared secret, or forged)")
    return int(reply.code)


def verifies_acct(request: Any, raw: bytes) -> bool:
    """Whether ``raw`` is an authentic Accounting-Response to ``request``."""
    try:
        read_acct_reply(request, raw)
    except BadReply:
        return False
    return True
