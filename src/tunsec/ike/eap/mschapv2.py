"""EAP-MSCHAPv2: RFC 2759 crypto in draft-kamath-pppext-eap-mschapv2 packets.

The MSK is RFC 3079's MasterReceiveKey | MasterSendKey, both from the
server's point of view on both sides, padded with 32 zero bytes to 64, as
strongSwan's eap-mschapv2 plugin derives it (a mismatch would only show as a
wrong AUTH payload, so it must be exact).

No password, hash or response ever goes into an exception text: callers log
those texts.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from ..identity import Identity
from . import identity
from .md4 import md4
from .packet import EapCode, EapError, EapPacket, EapType

try:  # cryptography >= 43 keeps DES in "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef,unused-ignore]

_MAGIC1 = b"Magic server to client signing constant"
_MAGIC2 = b"Pad to make it do more than one iteration"
_MASTER = b"This is the MPPE Master Key"
_SEND_CLIENT = (b"On the client side, this is the send key; "
                b"on the server side, it is the receive key.")
_RECV_CLIENT = (b"On the client side, this is the receive key; "
                b"on the server side, it is the send key.")
_PAD1 = b"\x00" * 40
_PAD2 = b"\xf2" * 40

MSK_LEN = 64

log = logging.getLogger(__name__)


class OpCode(enum.IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


# --- RFC 2759 §8 --------------------------------------------------------

def nt_password_hash(password: str) -> bytes:
    return md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    return md4(password_hash)


def hashed_name(username: bytes) -> bytes:
    """The part of a user name ChallengeHash takes: RFC 2759 section 8.2 leaves out a prepended
    domain (``CORP\\alice`` -> ``alice``), as Windows and strongSwan's extract_username() do (the
    bytes after the first backslash; none after a trailing one).  Only the hash: the Response's Name
    field, the account lookup and the proven account keep the whole name."""
    _, sep, user = username.partition(b"\\")
    return user if sep else username


def challenge_hash(peer_challenge: bytes, auth_challenge: bytes, username: bytes) -> bytes:
    return hashlib.sha1(peer_challenge + auth_challenge + hashed_name(username)).digest()[:8]


def _des_key(key7: bytes) -> bytes:
    """Spread 56 key bits over 8 bytes (parity bits left 0; DES ignores them)."""
    n = int.from_bytes(key7, "big")
    return bytes(((n >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def _des(key7: bytes, block: bytes) -> bytes:
    k = _des_key(key7)
    # 3DES with K1 = K2 = K3 is single DES; cryptography has no DES of its own.
    enc = Cipher(TripleDES(k * 3), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    z = password_hash.ljust(21, b"\x00")
    return b"".join(_des(z[i:i + 7], challenge) for i in (0, 7, 14))


def generate_nt_response(auth_challenge: bytes, peer_challenge: bytes,
                         username: bytes, password: str) -> bytes:
    ch = challenge_hash(peer_challenge, auth_challenge, username)
    return challenge_response(ch, nt_password_hash(password))


def authenticator_response(password: str, nt_response: bytes, peer_challenge: bytes,
                           auth_challenge: bytes, username: bytes) -> bytes:
    """The ``S=<40 hex>`` string the server proves itself with."""
    hh = hash_nt_password_hash(nt_password_hash(password))
    digest = hashlib.sha1(hh + nt_response + _MAGIC1).digest()
    ch = challenge_hash(peer_challenge, auth_challenge, username)
    digest = hashlib.sha1(digest + ch + _MAGIC2).digest()
    return b"S=" + digest.hex().upper().encode()


# --- RFC 3079 §3.4 ------------------------------------------------------

def _start_key(master: bytes, magic: bytes) -> bytes:
    return hashlib.sha1(master + _PAD1 + magic + _PAD2).digest()[:16]


def msk(password: str, nt_response: bytes) -> bytes:
    hh = hash_nt_password_hash(nt_password_hash(password))
    master = hashlib.sha1(hh + nt_response + _MASTER).digest()[:16]
    recv = _start_key(master, _SEND_CLIENT)  # the server's receive key
    send = _start_key(master, _RECV_CLIENT)  # the server's send key
    return recv + send + b"\x00" * 32


# --- draft-kamath packets ----------------------------------------------

def _ms(op: OpCode, ms_id: int, body: bytes) -> bytes:
    return struct.pack("!BBH", op, ms_id, 4 + len(body)) + body


def _parse_ms(pkt: EapPacket) -> tuple[OpCode, int, bytes]:
    if pkt.type != EapType.MSCHAPV2 or not pkt.data:
        raise EapError("expected an EAP-MSCHAPv2 packet")
    try:
        op = OpCode(pkt.data[0])
    except ValueError:
        raise EapError(f"unknown MSCHAPv2 OpCode {pkt.data[0]}") from None
    if len(pkt.data) == 1:  # a peer's Success/Failure acknowledgement
        return op, pkt.ident, b""
    if len(pkt.data) < 4:
        raise EapError("truncated MSCHAPv2 header")
    _, ms_id, ms_len = struct.unpack_from("!BBH", pkt.data)
    if ms_len != len(pkt.data):
        raise EapError(f"MSCHAPv2 MS-Length {ms_len} but {len(pkt.data)} bytes")
    return op, ms_id, pkt.data[4:]


@dataclass
class EapResult:
    ok: bool
    identity: bytes
    msk: bytes = field(default=b"", repr=False)  # key material: never in a repr (EapPeer's shows its result)
    reason: str = ""  # why it failed, safe to log
    peer: Identity | None = None  # the identity proven, if the method knows it as one (EAP-TLS: certified)
    # the groups the AAA backend says the user is a member of (eap-radius: printable names)
    groups: tuple[str, ...] = ()
    # nothing vouched for ``identity``: eap-radius whose Access-Accept named no user (a tunnelled
    # method's outer identity is the client's word); the IKE SA's identity is then its own alone
    unproven: bool = False
    anchor: bytes | None = None  # EAP-TLS: the CA the client's certificate verified to (certs.ca_fingerprint)


class Account(NamedTuple):
    """A user's account as the gateway's secrets hold it: the password, and the name its entry gives
    the user (which the login proves: "BOB" logging in to the entry of "bob" is bob)."""

    name: bytes
    password: str


# a user's password, or its Account (EapResult.peer is then the account's name as an identity)
PasswordLookup = Callable[[bytes], "str | Account | None"]


@dataclass
class EapAuthenticator:
    """The gateway's side: optional EAP-Identity, then one MSCHAPv2 round.

    ``start()`` gives the first EAP request; each ``process(response)`` gives
    the next packet to send and, once decided, the result (the next packet is
    then EAP-Success or EAP-Failure).
    """

    lookup: PasswordLookup
    peer_identity: bytes | None  # None: ask with EAP-Identity
    rand: Callable[[int], bytes] = os.urandom
    server_name: bytes = b"tunsec"
    _ident: int = 0
    _state: str = "new"
    _challenge: bytes = b""
    _account: bytes | None = None  # the name of the account the password was found in (Account)
    _msk: bytes = field(default=b"", repr=False)  # key material: never in a repr (as EapPeer's)
    _auth_resp: bytes = field(default=b"", repr=False)

    def start(self) -> bytes:
        self._ident = self.rand(1)[0]
        if self.peer_identity is None:
            self._state = "identity"
            return identity.request(self._ident).encode()
        return self._challenge_packet()

    def _challenge_packet(self) -> bytes:
        self._state = "challenge"
        self._ident = (self._ident + 1) & 0xFF
        self._challenge = self.rand(16)
        body = bytes([16]) + self._challenge + self.server_name
        data = _ms(OpCode.CHALLENGE, self._ident, body)
        return EapPacket(EapCode.REQUEST, self._ident, EapType.MSCHAPV2, data).encode()

    def _fail(self, reason: str) -> tuple[bytes, EapResult]:
        self._state = "done"
        out = EapPacket(EapCode.FAILURE, self._ident).encode()
        return out, EapResult(False, self.peer_identity or b"", reason=reason)

    def process(self, raw: bytes) -> tuple[bytes, EapResult | None]:
        try:
            pkt = EapPacket.decode(raw)
            if pkt.code != EapCode.RESPONSE or pkt.ident != self._ident:
                raise EapError("EAP packet is not the response to the last request")
            if pkt.type == EapType.NAK:
                return self._fail("peer refused EAP-MSCHAPv2 (EAP-Nak)")
            if self._state == "identity":
                self.peer_identity = identity.parse_response(pkt)
                return self._challenge_packet(), None
            if self._state == "challenge":
                return self._on_response(pkt)
            if self._state == "success":
                op, _, _ = _parse_ms(pkt)
                if op != OpCode.SUCCESS:
                    return self._fail("peer did not accept the server's MSCHAPv2 proof")
                self._state = "done"
                out = EapPacket(EapCode.SUCCESS, self._ident).encode()
                proven = None if self._account is None else Identity.of_user(self._account)
                return out, EapResult(True, self.peer_identity or b"", self._msk, peer=proven)
        except EapError as e:
            return self._fail(str(e))
        return self._fail(f"EAP response in state {self._state}")

    def _on_response(self, pkt: EapPacket) -> tuple[bytes, EapResult | None]:
        op, ms_id, body = _parse_ms(pkt)
        if op != OpCode.RESPONSE or ms_id != self._ident or len(body) < 50 or body[0] != 49:
            raise EapError("malformed MSCHAPv2 Response")
        peer_challenge, nt_resp, name = body[1:17], body[25:49], body[50:]
        user = self.peer_identity or b""
        _note_reserved(user, body[17:25], body[49])
        password = self.lookup(user)
        if password is None:
            return self._fail("unknown EAP user")
        if isinstance(password, Account):
            self._account, password = password
        expect = generate_nt_response(self._challenge, peer_challenge, name, password)
        if not hmac.compare_digest(expect, nt_resp):
            return self._fail("wrong EAP-MSCHAPv2 password")
        self._msk = msk(password, nt_resp)
        self._auth_resp = authenticator_response(password, nt_resp, peer_challenge,
                                                 self._challenge, name)
        self._state = "success"
        self._ident = (self._ident + 1) & 0xFF
        data = _ms(OpCode.SUCCESS, ms_id, self._auth_resp + b" M=welcome")
        return EapPacket(EapCode.REQUEST, self._ident, EapType.MSCHAPV2, data).encode(), None


def _note_reserved(user: bytes, reserved: bytes, flags: int) -> None:
    """A Response's Reserved and Flags MUST be zero (RFC 2759 §4); strongSwan's server (and hostapd's)
    never looks at them, and neither does the verdict here: the NT-Response alone decides.  A peer
    that sets them is only told of at DEBUG: it may send one per attempt, and INFO lines would
    pass the AUTHENTICATION_FAILED lines' limit."""
    if any(reserved) or flags:
        log.debug("EAP-MSCHAPv2 Response of user %s: Reserved %s, Flags %#04x, not zero (RFC 2759 section 4): "
                  "ignored, as strongSwan does", identity.user_text(user), reserved.hex(), flags)


# RFC 2759 §6: the errors a Failure packet's E= names
_ERRORS = {
    646: "restricted logon hours",
    647: "account disabled",
    648: "password expired: it must be changed at the server before this account can connect",
    649: "no dial-in permission",
    691: "authentication failure: wrong user name or password",
    709: "error changing the password",
}


def _failure_fields(message: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """A Failure packet's "E=eeeeeeeeee R=r C=... V=... M=<text>" (RFC 2759 §6): its fields, and the text."""
    text, _, said = message.partition(b"M=")
    return dict(f.split(b"=", 1) for f in text.split() if b"=" in f), said


def failure_code(message: bytes) -> int | None:
    """A Failure packet's error code (E=), None if it has none that parses."""
    raw_e = _failure_fields(message)[0].get(b"E", b"")
    return int(raw_e) if raw_e.isdigit() and len(raw_e) <= 10 else None


def describe_failure(message: bytes) -> str:
    """A log line's words for a Failure packet's message (_failure_fields); the gateway's free text is
    cut short and shown quoted, control characters escaped."""
    fields, said = _failure_fields(message)
    code = failure_code(message)
    what = "without an error code" if code is None else f"E={code} ({_ERRORS.get(code, 'unknown error')})"
    if fields.get(b"R") == b"1":
        what += ", retry allowed (R=1) but not attempted: the same password would fail again"
    if said.strip():
        what += f"; the gateway says {said.strip()[:80].decode('ascii', 'replace')!r}"
    return what


@dataclass
class EapPeer:
    """The client's side: answers EAP-Identity and one MSCHAPv2 challenge.

    ``process(request)`` returns the response to send, or None once the server
    sent EAP-Success/Failure; then ``result`` says which.

    The order is RFC 2759's (and strongSwan's eap-mschapv2): Challenge, our
    Response, then either a Success request whose "S=" proves the server knows
    the password (we acknowledge it, EAP-Success follows) or a Failure request
    (we acknowledge it, EAP-Failure follows). We answer one Challenge only: a
    gateway that refused us, or asks again, is not answered with the same
    password a second time; EAP-Success is accepted only after a proven Success
    request, and nothing but EAP-Failure after a Failure request.
    """

    identity: bytes
    password: str = field(repr=False)
    rand: Callable[[int], bytes] = os.urandom
    result: EapResult | None = None
    failure: str | None = None  # what the server's MSCHAPv2 Failure request said, once it sent one
    _expect_s: bytes = field(default=b"", repr=False)
    _msk: bytes = field(default=b"", repr=False)
    _verified: bool = False

    def process(self, raw: bytes) -> bytes | None:
        pkt = EapPacket.decode(raw)
        if pkt.code == EapCode.FAILURE:
            self.result = EapResult(False, self.identity, reason=self.failure or "EAP-Failure")
            return None
        if self.failure is not None:
            raise EapError(f"after refusing us ({self.failure}) the gateway did not end with EAP-Failure")
        if pkt.code == EapCode.SUCCESS:
            if not self._verified:
                raise EapError("EAP-Success before the server proved the password")
            self.result = EapResult(True, self.identity, self._msk)
            return None
        if pkt.code != EapCode.REQUEST:
            raise EapError("EAP packet from the server is not a request")
        if pkt.type == EapType.IDENTITY:
            return identity.response(pkt.ident, self.identity).encode()
        if pkt.type != EapType.MSCHAPV2:
            return EapPacket(EapCode.RESPONSE, pkt.ident, EapType.NAK,
                             bytes([EapType.MSCHAPV2])).encode()
        op, ms_id, body = _parse_ms(pkt)
        if op == OpCode.CHALLENGE:
            return self._on_challenge(pkt.ident, ms_id, body)
        if op == OpCode.SUCCESS:
            if self._verified:
                raise EapError("a second MSCHAPv2 Success request")
            if not self._expect_s or not hmac.compare_digest(body[:42], self._expect_s):
                raise EapError("the server's MSCHAPv2 proof is wrong (it does not know the password)")
            self._verified = True
            return EapPacket(EapCode.RESPONSE, pkt.ident, EapType.MSCHAPV2,
                             bytes([OpCode.SUCCESS])).encode()
        if op == OpCode.FAILURE:
            # acknowledge (RFC 2759 §6, draft-kamath §2); the server ends with EAP-Failure
            self.failure = describe_failure(body)
            return EapPacket(EapCode.RESPONSE, pkt.ident, EapType.MSCHAPV2,
                             bytes([OpCode.FAILURE])).encode()
        raise EapError(f"unexpected MSCHAPv2 {op.name} request from the server")

    def _on_challenge(self, ident: int, ms_id: int, body: bytes) -> bytes:
        if self._expect_s:
            raise EapError("a second MSCHAPv2 Challenge: not answered (no second try with the same password)")
        if len(body) < 17 or body[0] != 16:
            raise EapError("malformed MSCHAPv2 Challenge")
        auth_ch, peer_ch = body[1:17], self.rand(16)
        nt = generate_nt_response(auth_ch, peer_ch, self.identity, self.password)
        self._expect_s = authenticator_response(self.password, nt, peer_ch, auth_ch, self.identity)
        self._msk = msk(self.password, nt)
        value = bytes([49]) + peer_ch + b"\x00" * 8 + nt + b"\x00"
        data = _ms(OpCode.RESPONSE, ms_id, value + self.identity)
        return EapPacket(EapCode.RESPONSE, ident, EapType.MSCHAPV2, data).encode()
