"""EAP-TLS (RFC 5216) on the gateway: the client proves itself with a certificate inside TLS.

The TLS itself is OpenSSL's (pyOpenSSL, a ``Connection`` on memory BIOs); this
module only carries its bytes in EAP-TLS packets and decides afterwards:

- Packets: Code/Id/Length/Type 13, then Flags (L = a 4-byte TLS Message Length
  follows, M = more fragments follow, S = start) and TLS data.  A message longer
  than :data:`FRAGMENT_DATA` goes out in fragments, each acknowledged by the peer
  with an empty EAP-TLS response; a fragmented message of the peer is
  acknowledged with an empty request (§2.1.5).
- Bounds, since the client can lie in any field: a peer message may announce
  and carry at most :data:`MAX_MESSAGE` bytes, each fragment must make progress,
  and a conversation ends after :data:`MAX_REQUESTS` requests.  Everything of one
  conversation is in one :class:`EapTlsAuthenticator`, which lives in its IKE
  SA: a half-open SA that is reaped takes its TLS state with it.
- TLS 1.2 only: strongSwan's libtls negotiates 1.2 unless
  ``charon.tls.version_max`` is raised, and its TLS 1.3 EAP-TLS (5.9.8) predates
  RFC 9190: tried against it, it keys the MSK with the exporter label
  "client EAP encryption" and no context (RFC 9190: "EXPORTER_EAP_TLS_Key_Material",
  context 0x0D) and its charon crashes on RFC 9190's commitment message, so no
  1.3 variant would serve both it and RFC 9190 clients.  No session resumption
  (no cache, no tickets) and no renegotiation: every conversation sees a certificate.
- The client certificate is checked after OpenSSL has verified the handshake
  (the CertificateVerify proves the key) and before our Finished goes out: it
  must chain to the connection's CAs, be valid now, be fit for use like an
  IKE certificate, and certify the EAP identity (the IKE identity, ``eap_id``,
  or the EAP-Identity answer with ``eap_id = %any``), as strongSwan checks it.
- MSK (§2.3): TLS-PRF(master secret, "client EAP encryption",
  client.random || server.random), 64 bytes, which is the TLS 1.2 exporter
  (RFC 5705) with that label and no context.

Reasons for failure are fit for a log line: they name the certificate or the
TLS alert, never key material.
"""
from __future__ import annotations

import enum
import functools
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from OpenSSL import SSL, crypto

from ..auth import AuthError, PrivateKey
from ..certs import MAX_CERTS, UNREADABLE, check_key, check_names, constrained_below, verify_peer
from ..identity import Identity, IdentityError, certified_identity
from ..peer_warnings import peer_input
from . import identity
from .mschapv2 import EapResult
from .packet import EapCode, EapError, EapPacket, EapType

FLAG_L, FLAG_M, FLAG_S = 0x80, 0x40, 0x20
# TLS data per EAP-TLS packet: strongSwan's fragment_size (1024 for the whole EAP
# packet) less the headers; the IKE message around it stays under IKE fragmentation sizes
FRAGMENT_DATA = 1024 - 10
MAX_MESSAGE = 16 * 1024  # a client flight with a chain of several certificates fits; more is an attack
MAX_REQUESTS = 64  # a handshake needs ~10 with fragments (strongSwan: max_message_count = 32 each way)
MSK_LABEL = b"client EAP encryption"
MSK_LEN = 64


@dataclass(frozen=True)
class TlsPacket:
    """The EAP-TLS part of an EAP packet: flags, the L field if present, the TLS data."""

    flags: int
    length: int | None
    data: bytes

    @classmethod
    def parse(cls, pkt: EapPacket) -> TlsPacket:
        if pkt.type != EapType.TLS:
            raise EapError(f"expected an EAP-TLS packet, got EAP type {pkt.type}")
        if not pkt.data:
            raise EapError("EAP-TLS packet without its Flags byte")
        flags = pkt.data[0]  # the reserved bits are ignored on receipt (§3.1)
        if flags & FLAG_L:
            if len(pkt.data) < 5:
                raise EapError("EAP-TLS L flag set but no 4-byte TLS Message Length")
            (length,) = struct.unpack_from("!I", pkt.data, 1)
            return cls(flags, length, pkt.data[5:])
        return cls(flags, None, pkt.data[1:])

    @property
    def is_ack(self) -> bool:
        return not self.data and not self.flags & (FLAG_L | FLAG_M)

    def encode(self, code: EapCode, ident: int) -> bytes:
        head = bytes([self.flags]) + (b"" if self.length is None else struct.pack("!I", self.length))
        return EapPacket(code, ident, EapType.TLS, head + self.data).encode()


ACK = TlsPacket(0, None, b"")


@dataclass
class Reassembly:
    """One TLS message of the peer, from its fragments; bounded by ``limit``."""

    limit: int = MAX_MESSAGE
    expected: int | None = None
    buf: bytearray = field(default_factory=bytearray)
    started: bool = False

    def add(self, frag: TlsPacket) -> bytes | None:
        """The whole message once its last fragment is in, else None (acknowledge and wait).
        EapError for lengths that lie or fragments that make no progress."""
        if frag.length is not None:
            if self.started and frag.length != self.expected:
                raise EapError(f"EAP-TLS Message Length changed from {self.expected} to {frag.length}")
            if not 0 < frag.length <= self.limit:
                raise EapError(f"EAP-TLS Message Length {frag.length} refused (limit {self.limit})")
            self.expected = frag.length
        elif frag.flags & FLAG_M and not self.started:
            raise EapError("first EAP-TLS fragment without the L flag and TLS Message Length")
        if frag.flags & FLAG_M and not frag.data:
            raise EapError("empty EAP-TLS fragment with the M flag")
        self.started = True
        self.buf += frag.data
        if len(self.buf) > (self.expected if self.expected is not None else self.limit):
            raise EapError(f"EAP-TLS fragments carry more than the {self.expected or self.limit} bytes announced")
        if frag.flags & FLAG_M:
            return None
        if self.expected is not None and len(self.buf) != self.expected:
            raise EapError(f"EAP-TLS message of {len(self.buf)} bytes, announced {self.expected}")
        msg = bytes(self.buf)
        self.buf.clear()
        self.expected, self.started = None, False
        return msg


@dataclass
class Fragments:
    """Our TLS message cut into EAP-TLS packets; the first says the whole length (L)."""

    data: bytes
    size: int = FRAGMENT_DATA
    offset: int = 0

    @property
    def pending(self) -> bool:
        return self.offset < len(self.data)

    def next(self) -> TlsPacket:
        chunk = self.data[self.offset:self.offset + self.size]
        first = self.offset == 0
        self.offset += len(chunk)
        flags = (FLAG_L if first else 0) | (FLAG_M if self.pending else 0)
        return TlsPacket(flags, len(self.data) if first else None, chunk)


@dataclass(frozen=True)
class TlsServerCredentials:
    """What the gateway's TLS server needs: its certificate and key, and the CAs of clients."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    intermediates: tuple[x509.Certificate, ...] = ()
    cas: tuple[x509.Certificate, ...] = ()


def _accept_for_now(conn: SSL.Connection, cert: crypto.X509, err: int, depth: int, ok: int) -> bool:
    """OpenSSL's verdict is replaced by verify_peer after the handshake (same checks as IKE's). But
    OpenSSL checks the signatures of the chain the client sent before that, each with the key of
    the certificate above it (it is called for each, top first, before its key is used): it goes
    on only as deep as verify_peer looks and with keys verify_peer takes (review revfrag F1), and then
    compares the names of the chain with its name constraints: only with as many of them as
    verify_peer takes (review revcertfix F3). So a client's 16 KiB of certificates cost no more
    than its IKE CERT payloads would. The client's own certificate (depth 0, called last, after
    every certificate above it) is held to certs.MAX_NAMES only below a name constraint, as
    verify_peer holds it (review revcert3 F2): the authenticator notes one as it passes."""
    owner = conn.get_app_data()
    mine = owner if isinstance(owner, EapTlsAuthenticator) else None
    if depth >= MAX_CERTS:
        why: str | None = f"client sent a chain of more than {MAX_CERTS} certificates"
    else:
        # without the authenticator (none set) the cap stays on every certificate
        why = _cert_refused(cert, depth > 0 or mine is None or mine._constrained)
        if why is None and depth > 0 and mine is not None and _constrains(cert):
            mine._constrained = True
    if why is None:
        return True
    if mine is not None:   # the handshake fails: this is why
        mine._refused = f"client certificate refused: {why}"
    return False


@peer_input("an EAP-TLS client's certificate")   # (as cryptography objects: see peer_warnings)
def _cert_refused(cert: crypto.X509, capped: bool = False) -> str | None:
    """Why certs.check_key refuses the key of a certificate in the client's chain, or certs.check_names
    its names (``capped``: an intermediate's, or the client's own below a name constraint), or None."""
    try:
        mine = cert.to_cryptography()
        check_key(mine)
        check_names(mine, capped)
    except AuthError as exc:
        return str(exc)
    except (*UNREADABLE, x509.InvalidVersion):
        pass   # _check_client says why, after the handshake
    return None


@peer_input("an EAP-TLS client's certificate")
def _constrains(cert: crypto.X509) -> bool:
    """Whether a certificate above the client's has name constraints (one OpenSSL cannot read: as if)."""
    try:
        return constrained_below([cert.to_cryptography()])
    except (*UNREADABLE, x509.InvalidVersion):
        return True


# TLS 1.2 suites the server accepts: forward-secret (ephemeral ECDH) key exchange with AEAD only,
# as RFC 9325 §4.2 recommends. OpenSSL's default list also has the static-RSA key exchange suites
# (AES128-GCM-SHA256...): a recorded EAP-TLS session, and so its MSK and the IKE SA keyed with it,
# would fall with the gateway's RSA key. DHE is left out: it needs DH parameters that OpenSSL
# only uses once loaded (pyOpenSSL offers no automatic ones), and every EAP-TLS client offers ECDHE.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"


def server_context(creds: TlsServerCredentials) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(TLS12_CIPHERS.encode())
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate(creds.cert)
    ctx.use_privatekey(creds.key)
    ctx.check_privatekey()
    for cert in creds.intermediates:
        ctx.add_extra_chain_cert(cert)
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_for_now)
    # the CertificateRequest names our CAs, so a client with several certificates picks the right one
    ctx.set_client_ca_list([crypto.X509.from_cryptography(ca).get_subject() for ca in creds.cas])
    return ctx


# One SSL_CTX per credential set, shared by the conversations that use it: one made per conversation
# cost ~0.9 ms of CPU and its memory for as long as a half-open SA holds the conversation. OpenSSL
# copies a context's settings into each Connection made from it, and a server Connection leaves no
# state behind in it here (no session cache, no tickets). MODE_RELEASE_BUFFERS: a conversation
# waiting for the client (most of its life) holds no read/write buffers. A reload that changes the
# certificate or CAs makes new credentials, hence a new context; old ones leave as new ones come.
@functools.lru_cache(maxsize=8)
def shared_context(creds: TlsServerCredentials) -> SSL.Context:
    ctx = server_context(creds)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return ctx


def _tls_reason(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one short line: the reasons only (no data is in them)."""
    queue = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(e[2]) for e in queue if isinstance(e, tuple) and len(e) == 3]
    return "; ".join(reasons) or type(exc).__name__


class _State(enum.Enum):
    IDENTITY = "identity"  # asked EAP-Identity
    TLS = "tls"  # in the handshake
    FINISHED = "finished"  # sent our last flight, waiting for its acknowledgement
    DONE = "done"


@dataclass
class EapTlsAuthenticator:
    """The gateway's side: optional EAP-Identity, EAP-TLS Start, the handshake, the verdict.

    ``start()`` gives the first EAP request; each ``process(response)`` gives the
    next packet to send and, once decided, the result (the packet is then
    EAP-Success or EAP-Failure). Same interface as :class:`mschapv2.EapAuthenticator`.
    """

    creds: TlsServerCredentials
    peer_identity: Identity | None  # the identity the certificate must certify; None: ask (EAP-Identity)
    now: Callable[[], datetime]
    rand: Callable[[int], bytes] = os.urandom
    fragment: int = FRAGMENT_DATA  # TLS bytes per request
    _ident: int = 0
    _requests: int = 0
    _state: _State = _State.IDENTITY
    _name: bytes = b""  # the peer's identity as text, for the result
    _tls: SSL.Connection | None = field(default=None, repr=False)
    _in: Reassembly = field(default_factory=Reassembly)
    _out: Fragments | None = None
    _msk: bytes = field(default=b"", repr=False)
    # the peer as its verified certificate names it (identity.certified_identity), whichever of its
    # identities it gave: one certificate is one peer for max_ike_sas, unique and leases
    _proven: Identity | None = None
    _anchor: bytes | None = None   # the CA its certificate verified to (certs.ca_fingerprint)
    _refused: str | None = None   # why _accept_for_now stopped OpenSSL's check of the client's chain
    _constrained: bool = False   # a certificate above the client's has name constraints (_accept_for_now)

    def start(self) -> bytes:
        self._ident = self.rand(1)[0]
        if self.peer_identity is None:
            self._state = _State.IDENTITY
            return identity.request(self._ident).encode()
        self._name = str(self.peer_identity).encode()
        return self._tls_start()

    def _request(self, pkt: TlsPacket) -> bytes:
        self._requests += 1
        if self._requests > MAX_REQUESTS:
            raise EapError(f"EAP-TLS conversation longer than {MAX_REQUESTS} requests")
        self._ident = (self._ident + 1) & 0xFF
        return pkt.encode(EapCode.REQUEST, self._ident)

    def _tls_start(self) -> bytes:
        self._state = _State.TLS
        tls = SSL.Connection(shared_context(self.creds), None)
        tls.set_accept_state()
        tls.set_app_data(self)   # for _accept_for_now's reason
        self._tls = tls
        return self._request(TlsPacket(FLAG_S, None, b""))

    def _fail(self, reason: str) -> tuple[bytes, EapResult]:
        self._state = _State.DONE
        self._tls = None  # drop OpenSSL's state now, not with the SA
        self._out, self._in = None, Reassembly()
        return EapPacket(EapCode.FAILURE, self._ident).encode(), EapResult(False, self._name, reason=reason)

    def process(self, raw: bytes) -> tuple[bytes, EapResult | None]:
        try:
            pkt = EapPacket.decode(raw)
            if pkt.code != EapCode.RESPONSE or pkt.ident != self._ident:
                raise EapError("EAP packet is not the response to the last request")
            if pkt.type == EapType.NAK:
                return self._fail("peer refused EAP-TLS (EAP-Nak)")
            if self._state == _State.IDENTITY:
                return self._on_identity(pkt), None
            if self._state in (_State.TLS, _State.FINISHED):
                return self._on_tls(TlsPacket.parse(pkt))
        except EapError as exc:
            return self._fail(str(exc))
        return self._fail(f"EAP response in state {self._state.value}")

    def _on_identity(self, pkt: EapPacket) -> bytes:
        name = identity.parse_response(pkt)
        try:
            self.peer_identity = Identity.parse(name.decode("utf-8"))
        except (UnicodeDecodeError, IdentityError):
            raise EapError("EAP identity is not an identity a certificate can certify") from None
        self._name = name
        return self._tls_start()

    def _on_tls(self, frag: TlsPacket) -> tuple[bytes, EapResult | None]:
        if self._out is not None and self._out.pending:
            if not frag.is_ack:  # the peer must take all of our message before it says anything
                raise EapError("expected an empty EAP-TLS response acknowledging our fragment")
            return self._request(self._out.next()), None
        if self._state == _State.FINISHED:
            if not frag.is_ack:
                raise EapError("client answered our TLS Finished with TLS data (an alert?), not an acknowledgement")
            return self._succeed()
        if frag.is_ack and not self._in.started:
            raise EapError("empty EAP-TLS response where a TLS message was due")
        msg = self._in.add(frag)
        if msg is None:
            return self._request(ACK), None
        return self._feed(msg)

    def _feed(self, msg: bytes) -> tuple[bytes, EapResult | None]:
        tls = self._tls
        assert tls is not None
        tls.bio_write(msg)
        done = False
        try:
            tls.do_handshake()
            done = True
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            return self._fail(self._refused or f"TLS handshake failed: {_tls_reason(exc)}")
        if done:
            reason = self._check_client()
            if reason is not None:
                return self._fail(reason)
            self._msk = tls.export_keying_material(MSK_LABEL, MSK_LEN)
            self._state = _State.FINISHED
        out = _drain(tls)
        if not out:
            raise EapError("the client's TLS message leaves nothing to answer")
        self._out = Fragments(out, self.fragment)
        return self._request(self._out.next()), None

    @peer_input("an EAP-TLS client's certificate")   # (as cryptography objects: see peer_warnings)
    def _check_client(self) -> str | None:
        """Why the client's certificate does not authenticate the EAP identity, or None."""
        tls = self._tls
        assert tls is not None and self.peer_identity is not None
        try:  # OpenSSL takes certificates cryptography refuses (e.g. version 4): InvalidVersion, ValueError
            leaf = tls.get_peer_certificate(as_cryptography=True)
            # a server's peer chain leaves the client's own certificate out (OpenSSL)
            chain: Sequence[x509.Certificate] = tls.get_peer_cert_chain(as_cryptography=True) or []
        except (ValueError, x509.InvalidVersion) as exc:
            return f"client certificate unusable: {exc}"
        if leaf is None:
            return "client sent no certificate"
        rest = [c for c in chain if c != leaf]
        try:
            self._anchor = verify_peer([leaf, *rest], self.creds.cas, self.now(), self.peer_identity).anchor
        except AuthError as exc:
            return f"client certificate refused: {exc}"
        try:
            self._proven = certified_identity(leaf)
        except IdentityError as exc:
            return f"client certificate refused: {exc}"
        return None

    def _succeed(self) -> tuple[bytes, EapResult]:
        self._state = _State.DONE
        self._tls, self._out = None, None
        out = EapPacket(EapCode.SUCCESS, self._ident).encode()
        return out, EapResult(True, self._name, self._msk, peer=self._proven or self.peer_identity,
                              anchor=self._anchor)


def _drain(tls: SSL.Connection) -> bytes:
    """Everything OpenSSL has to send."""
    out = bytearray()
    while True:
        try:
            chunk = tls.bio_read(16384)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)
