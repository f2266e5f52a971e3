"""EAP-TLS (RFC 5216) on the gateway: the authenticator against an in-memory OpenSSL client.

The client here is a small EAP-TLS peer on pyOpenSSL (memory BIOs) written from the RFC, so
both directions of fragmentation, the MSK and every refusal are exercised without a network;
tests/interop/test_strongswan_eap_tls.py runs strongSwan's client against the whole gateway.
"""
from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL, crypto

from tunsec.ike.certs import ca_fingerprint
from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.eap import tls
from tunsec.ike.eap.mschapv2 import EapResult
from tunsec.ike.eap.packet import EapCode, EapPacket, EapType
from tunsec.ike.eap.tls import (
    FLAG_L,
    FLAG_M,
    FLAG_S,
    EapTlsAuthenticator,
    Fragments,
    Reassembly,
    TlsPacket,
    TlsServerCredentials,
)
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Issued, Network, Sent, make_ca, make_cert

CA = make_ca("tunsec EAP-TLS test CA")
OTHER_CA = make_ca("someone else's CA")
GW = make_cert(CA, "gw", san=["gw.example"])
ALICE = make_cert(CA, "alice", san=["alice@example.org"])
NOW = EPOCH + datetime.timedelta(days=30)


def _accept(conn: SSL.Connection, cert: crypto.X509, err: int, depth: int, ok: int) -> bool:
    return True  # the test checks the server's certificate itself (no dependence on today's date)


@dataclass
class Peer:
    """An EAP-TLS client: answers EAP-Identity and runs TLS 1.2 through EAP-TLS packets."""

    issued: Issued
    identity: bytes
    fragment: int = tls.FRAGMENT_DATA
    ciphers: str = ""       # the TLS 1.2 suites offered (OpenSSL syntax); "": OpenSSL's default
    result: EapCode | None = None
    msk: bytes = b""
    tls: SSL.Connection = field(init=False)
    inbound: Reassembly = field(default_factory=Reassembly)
    out: Fragments | None = None
    acks_sent: int = 0
    acks_received: int = 0

    def __post_init__(self) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        if self.ciphers:
            ctx.set_cipher_list(self.ciphers.encode())
        ctx.use_certificate(self.issued.cert)
        ctx.use_privatekey(self.issued.key)
        ctx.set_verify(SSL.VERIFY_PEER, _accept)
        self.tls = SSL.Connection(ctx, None)
        self.tls.set_connect_state()

    def _send(self, ident: int, pkt: TlsPacket) -> bytes:
        return pkt.encode(EapCode.RESPONSE, ident)

    def _handshake(self, ident: int) -> bytes:
        try:
            self.tls.do_handshake()
            self.msk = self.tls.export_keying_material(tls.MSK_LABEL, tls.MSK_LEN)
        except SSL.WantReadError:
            pass
        data = tls._drain(self.tls)
        if not data:
            return self._send(ident, tls.ACK)
        self.out = Fragments(data, self.fragment)
        return self._send(ident, self.out.next())

    def process(self, raw: bytes) -> bytes | None:
        pkt = EapPacket.decode(raw)
        if pkt.code in (EapCode.SUCCESS, EapCode.FAILURE):
            self.result = pkt.code
            return None
        if pkt.type == EapType.IDENTITY:
            return EapPacket(EapCode.RESPONSE, pkt.ident, EapType.IDENTITY, self.identity).encode()
        frag = TlsPacket.parse(pkt)
        if frag.flags & FLAG_S:
            return self._handshake(pkt.ident)
        if self.out is not None and self.out.pending:
            assert frag.is_ack
            self.acks_received += 1
            return self._send(pkt.ident, self.out.next())
        msg = self.inbound.add(frag)
        if msg is None:
            self.acks_sent += 1
            return self._send(pkt.ident, tls.ACK)
        self.tls.bio_write(msg)
        return self._handshake(pkt.ident)


def server(peer_identity: Identity | None = None, cas: tuple[x509.Certificate, ...] = (CA.cert,),
           now: Callable[[], datetime.datetime] = lambda: NOW,
           fragment: int = tls.FRAGMENT_DATA) -> EapTlsAuthenticator:
    return EapTlsAuthenticator(TlsServerCredentials(GW.cert, GW.key, cas=cas), peer_identity, now,
                               fragment=fragment)


def converse(srv: EapTlsAuthenticator, peer: Peer, max_rounds: int = 100) -> EapResult:
    """Run the conversation to its result; every packet in between goes through both ends."""
    out = srv.start()
    for _ in range(max_rounds):
        answer = peer.process(out)
        if answer is None:
            raise AssertionError("the peer ended without the server deciding")
        out, result = srv.process(answer)
        if result is not None:
            assert peer.process(out) is None
            return result
    raise AssertionError("conversation did not end")


def test_handshake_with_eap_identity_gives_the_same_msk_on_both_sides() -> None:
    peer = Peer(ALICE, b"alice@example.org")
    result = converse(server(None), peer)
    assert result.ok, result.reason
    assert result.identity == b"alice@example.org"
    # what the gateway then knows the client as: its certificate's subject, not the SAN it gave
    assert result.peer == Identity.parse("C=CH, O=tunsec test, CN=alice")
    assert peer.result == EapCode.SUCCESS
    assert len(result.msk) == 64 and result.msk == peer.msk
    assert result.msk.hex() not in repr(result) and repr(result.msk)[2:-1] not in repr(result)
    assert peer.tls.get_peer_certificate(as_cryptography=True) == GW.cert


def test_the_result_names_the_ca_the_clients_certificate_verified_to() -> None:
    """What the IKE SA keeps (IkeSaUp.peer_anchor): a reload that takes the CA away logs it out."""
    other = make_ca("another CA")
    result = converse(server(cas=(other.cert, CA.cert)), Peer(ALICE, b"alice@example.org"))
    assert result.ok and result.anchor == ca_fingerprint(CA.cert) != ca_fingerprint(other.cert)


def test_conversations_with_the_same_credentials_share_one_context() -> None:
    """One SSL_CTX per credential set (tls.shared_context), with OpenSSL's buffers released while a
    conversation waits, and the settings of a context made apart (server_context): options, verify
    mode, the CAs named to the client. Both conversations then succeed on it, each with its own MSK."""
    peers = [Peer(ALICE, b"alice@example.org") for _ in range(2)]
    servers = [server(Identity.parse("alice@example.org")) for _ in peers]
    firsts = [srv.start() for srv in servers]
    conns = [srv._tls for srv in servers]
    assert conns[0] is not None and conns[1] is not None and conns[0] is not conns[1]
    ctx = conns[0].get_context()
    assert conns[1].get_context() is ctx
    with pytest.raises(ValueError, match="cannot be mutated"):   # pyOpenSSL: no conversation changes it
        ctx.set_options(SSL.OP_NO_TICKET)
    # (a used context takes no set_mode/set_options, which return its flags: read them from unused ones)
    apart, fresh = tls.server_context(servers[0].creds), tls.shared_context.__wrapped__(servers[0].creds)
    assert fresh.set_mode(0) & SSL.MODE_RELEASE_BUFFERS and not apart.set_mode(0) & SSL.MODE_RELEASE_BUFFERS
    assert fresh.set_options(0) == apart.set_options(0)
    assert ctx.get_verify_mode() == apart.get_verify_mode() == SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    names = [c.get_client_ca_list() for c in (conns[0], SSL.Connection(apart, None))]
    assert [n.der() for n in names[0]] == [n.der() for n in names[1]] == [crypto.X509.from_cryptography(
        CA.cert).get_subject().der()]
    msks = []
    for srv, peer, out in zip(servers, peers, firsts, strict=True):
        for _ in range(100):
            out, result = srv.process(peer.process(out) or b"")
            if result is not None:
                break
        assert result is not None and result.ok, result
        msks.append(result.msk)
    assert msks[0] != msks[1]
    other = server(Identity.parse("alice@example.org"), cas=(OTHER_CA.cert,))
    other.start()
    assert other._tls is not None and other._tls.get_context() is not ctx


def test_server_flight_in_small_fragments_is_acknowledged_and_reassembled() -> None:
    peer = Peer(ALICE, b"alice@example.org")
    result = converse(server(None, fragment=100), peer)
    assert result.ok, result.reason
    assert peer.acks_sent >= 5  # the ServerHello..ServerHelloDone flight is several hundred bytes
    assert result.msk == peer.msk


def test_client_flight_in_small_fragments_is_reassembled() -> None:
    peer = Peer(ALICE, b"alice@example.org", fragment=100)
    result = converse(server(Identity.parse("alice@example.org")), peer)
    assert result.ok, result.reason
    assert peer.acks_received >= 3  # the server acknowledged each of the client's fragments
    assert result.msk == peer.msk


RSA_GW = make_cert(CA, "gw", san=["gw.example"], kind="rsa")   # a certificate static RSA key exchange could use


def rsa_server() -> EapTlsAuthenticator:
    return EapTlsAuthenticator(TlsServerCredentials(RSA_GW.cert, RSA_GW.key, cas=(CA.cert,)), None, lambda: NOW)


def test_a_client_offering_only_rsa_key_exchange_is_refused() -> None:
    """RFC 9325: no suite without forward secrecy, even with a gateway certificate that could do it."""
    peer = Peer(ALICE, b"alice@example.org", ciphers="AES128-GCM-SHA256")
    result = converse(rsa_server(), peer)
    assert not result.ok and "TLS handshake failed" in result.reason and "no shared cipher" in result.reason
    assert peer.result == EapCode.FAILURE and result.msk == b""


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                   "ECDHE-RSA-CHACHA20-POLY1305"])
def test_forward_secret_aead_suites_are_accepted(suite: str) -> None:
    peer = Peer(ALICE, b"alice@example.org", ciphers=suite)
    result = converse(rsa_server(), peer)
    assert result.ok, result.reason
    assert peer.tls.get_cipher_name() == suite and result.msk == peer.msk


def test_certificate_of_another_ca_is_refused() -> None:
    peer = Peer(make_cert(OTHER_CA, "mallory", san=["alice@example.org"]), b"alice@example.org")
    result = converse(server(None), peer)
    assert not result.ok
    assert "client certificate refused" in result.reason and "not trusted" in result.reason
    assert peer.result == EapCode.FAILURE
    assert result.msk == b""


def test_expired_certificate_is_refused() -> None:
    old = make_cert(CA, "alice", san=["alice@example.org"], days=10)
    result = converse(server(None), Peer(old, b"alice@example.org"))
    assert not result.ok and "not trusted" in result.reason


def test_certificate_for_another_identity_is_refused() -> None:
    bob = make_cert(CA, "bob", san=["bob@example.org"])
    result = converse(server(None), Peer(bob, b"alice@example.org"))
    assert not result.ok
    assert "does not certify identity alice@example.org" in result.reason


def test_configured_identity_must_be_in_the_certificate() -> None:
    result = converse(server(Identity.parse("carol@example.org")), Peer(ALICE, b"ignored"))
    assert not result.ok and "carol@example.org" in result.reason


def _der_len(n: int) -> bytes:
    return bytes([n]) if n < 128 else bytes([0x82]) + n.to_bytes(2, "big")


def _version4(issued: Issued, ca: Issued) -> crypto.X509:
    """``issued``'s certificate as X.509 version 4 (INTEGER 3), signed again by ``ca``: OpenSSL
    loads and accepts it in a handshake, cryptography refuses to load it (InvalidVersion)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = issued.cert.public_bytes(serialization.Encoding.DER)
    tbs = issued.cert.tbs_certificate_bytes
    rest = der[der.index(tbs) + len(tbs):]
    alg_id = rest[:rest[1] + 2]
    tbs4 = tbs.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03", 1)
    assert tbs4 != tbs and isinstance(ca.key, ec.EllipticCurvePrivateKey)
    sig = ca.key.sign(tbs4, ec.ECDSA(hashes.SHA256()))
    body = tbs4 + alg_id + b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    return crypto.load_certificate(crypto.FILETYPE_ASN1, b"\x30" + _der_len(len(body)) + body)


# cryptography cannot load such a certificate, so the client is handed pyOpenSSL's X509 (deprecated)
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL X509 objects is deprecated:DeprecationWarning")
def test_certificate_cryptography_cannot_load_fails_cleanly() -> None:
    """A client certificate OpenSSL takes but cryptography refuses ends in EAP-Failure with the
    reason, not in an exception out of the authenticator (the CA need not even have issued it)."""
    peer = Peer(ALICE, b"alice@example.org")
    peer.tls.use_certificate(_version4(ALICE, CA))
    result = converse(server(None), peer)
    assert not result.ok and peer.result == EapCode.FAILURE
    assert result.reason == "client certificate unusable: 3 is not a valid X509 version"


def test_subject_dn_identity_is_accepted() -> None:
    # strongSwan writes a DN identity most significant RDN first
    result = converse(server(None), Peer(ALICE, b"C=CH, O=tunsec test, CN=alice"))
    assert result.ok, result.reason


# --- malformed and lying responses -------------------------------------------------------


def _tls_request_ident(srv: EapTlsAuthenticator) -> int:
    """Start a conversation with a known identity; the Identifier of the Start request."""
    start = EapPacket.decode(srv.start())
    assert start.type == EapType.TLS and start.data == bytes([FLAG_S])
    return start.ident


def _response(ident: int, body: bytes, eap_type: int = EapType.TLS) -> bytes:
    return EapPacket(EapCode.RESPONSE, ident, eap_type, body).encode()


def _refused(srv: EapTlsAuthenticator, raw: bytes) -> str:
    out, result = srv.process(raw)
    assert result is not None and not result.ok
    assert EapPacket.decode(out).code == EapCode.FAILURE
    assert srv._tls is None  # OpenSSL's state is gone at once
    return result.reason


@pytest.mark.parametrize(("body", "why"), [
    (b"", "without its Flags byte"),
    (bytes([FLAG_L]) + b"\x00\x00", "no 4-byte TLS Message Length"),
    (bytes([FLAG_L | FLAG_M]) + struct.pack("!I", 10 * 1024 * 1024) + b"x", "Message Length 10485760 refused"),
    (bytes([FLAG_L | FLAG_M]) + struct.pack("!I", 0) + b"x", "Message Length 0 refused"),
    (bytes([FLAG_M]) + b"x" * 10, "without the L flag"),
    (bytes([FLAG_L]) + struct.pack("!I", 5) + b"x" * 10, "more than the 5 bytes"),
    (bytes([FLAG_L]) + struct.pack("!I", 50) + b"x" * 10, "announced 50"),
    (bytes([0]), "where a TLS message was due"),
    (bytes([0]) + b"\x16\x03\x01\x00\x05hello", "TLS handshake failed"),
])
def test_bad_first_message_fails_cleanly(body: bytes, why: str) -> None:
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    assert why in _refused(srv, _response(ident, body))


def test_wrong_identifier_or_type_or_nak_fails() -> None:
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    assert "not the response to the last request" in _refused(srv, _response((ident + 1) & 0xFF, b"\x00"))
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    assert "EAP-Nak" in _refused(srv, _response(ident, bytes([EapType.MSCHAPV2]), EapType.NAK))
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    assert "expected an EAP-TLS packet" in _refused(srv, _response(ident, b"x", EapType.MSCHAPV2))


def test_length_changing_between_fragments_fails() -> None:
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    out, result = srv.process(_response(ident, bytes([FLAG_L | FLAG_M]) + struct.pack("!I", 100) + b"x" * 10))
    assert result is None
    ack = EapPacket.decode(out)
    assert ack.code == EapCode.REQUEST and ack.data == b"\x00"  # an empty request acknowledges the fragment
    reason = _refused(srv, _response(ack.ident, bytes([FLAG_L | FLAG_M]) + struct.pack("!I", 200) + b"x" * 10))
    assert "changed from 100 to 200" in reason


def test_empty_fragment_with_more_flag_fails() -> None:
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    out, _ = srv.process(_response(ident, bytes([FLAG_L | FLAG_M]) + struct.pack("!I", 100) + b"x" * 10))
    assert "empty EAP-TLS fragment" in _refused(srv, _response(EapPacket.decode(out).ident, bytes([FLAG_M])))


def test_data_instead_of_an_ack_of_our_fragment_fails() -> None:
    srv = server(Identity.parse("alice@example.org"), fragment=100)
    peer = Peer(ALICE, b"alice@example.org")
    first = peer.process(srv.start())
    assert first is not None
    out, result = srv.process(first)  # the ServerHello flight, first fragment (M set)
    assert result is None and TlsPacket.parse(EapPacket.decode(out)).flags & FLAG_M
    assert "acknowledging our fragment" in _refused(srv, _response(EapPacket.decode(out).ident, b"\x00junk"))


def test_a_client_that_never_finishes_is_cut_off() -> None:
    """Fragments of one byte under the 64 KiB limit: the request count ends it, not memory."""
    srv = server(Identity.parse("alice@example.org"))
    ident = _tls_request_ident(srv)
    body = bytes([FLAG_L | FLAG_M]) + struct.pack("!I", tls.MAX_MESSAGE) + b"x"
    for _ in range(tls.MAX_REQUESTS + 5):
        out, result = srv.process(_response(ident, body))
        if result is not None:
            assert not result.ok and "longer than" in result.reason
            return
        ident = EapPacket.decode(out).ident
        body = bytes([FLAG_M]) + b"x"
    raise AssertionError("the conversation was not cut off")


def test_bad_eap_identity_fails() -> None:
    srv = server(None)
    req = EapPacket.decode(srv.start())
    assert req.type == EapType.IDENTITY
    reason = _refused_identity(srv, _response(req.ident, b"CN=\xff\xfe", EapType.IDENTITY))
    assert "EAP identity" in reason


def _refused_identity(srv: EapTlsAuthenticator, raw: bytes) -> str:
    out, result = srv.process(raw)
    assert result is not None and not result.ok
    assert EapPacket.decode(out).code == EapCode.FAILURE
    return result.reason


def test_fragments_roundtrip_with_lengths() -> None:
    data = bytes(range(256)) * 10
    frags = Fragments(data, 1000)
    packets = []
    while frags.pending:
        packets.append(frags.next())
    assert [p.length for p in packets] == [len(data), None, None]
    assert [bool(p.flags & FLAG_M) for p in packets] == [True, True, False]
    r = Reassembly()
    got = [r.add(TlsPacket.parse(EapPacket.decode(p.encode(EapCode.REQUEST, 1)))) for p in packets]
    assert got == [None, None, data]


def test_tls13_only_client_is_refused_with_the_reason() -> None:
    """strongSwan's libtls negotiates TLS 1.2 by default; 1.3 (RFC 9190) is not offered."""
    peer = Peer(ALICE, b"alice@example.org")
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate(ALICE.cert)
    ctx.use_privatekey(ALICE.key)
    peer.tls = SSL.Connection(ctx, None)
    peer.tls.set_connect_state()
    result = converse(server(None), peer)
    assert not result.ok and result.reason == "TLS handshake failed: unsupported protocol"


# --- through the IKE engine ---------------------------------------------------------------


def _engine_configs(eap_id: str) -> tuple[IkeConfig, IkeConfig]:
    """The gateway (EAP-TLS for clients) and tunsec's own client, which has EAP-MSCHAPv2 only."""
    gw = IkeConfig("gw", LocalAuth("pubkey", Identity.parse("gw.example"), GW.cert, private_key=GW.key),
                   RemoteAuth("eap-tls", Identity.any(), cas=(CA.cert,), eap_id=eap_id), parse_proposals("default"),
                   (child_config("net", "10.2.0.0/16", "10.1.0.0/16"),), local_addr="192.0.2.2")
    cli = IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse("alice@example.org")),
                    RemoteAuth("pubkey", Identity.parse("gw.example"), cas=(CA.cert,)), parse_proposals("default"),
                    (child_config("net", "10.1.0.0/16", "10.2.0.0/16"),),
                    eap_secrets=(EapSecret(("alice@example.org",), Secret(b"pw")),),
                    local_addr="192.0.2.1", remote_addr="192.0.2.2")
    return gw, cli


def test_gateway_engine_offers_eap_tls_and_a_client_that_refuses_it_leaves_nothing() -> None:
    """tunsec's own client answers the EAP-TLS Start with EAP-Nak; the gateway ends the
    exchange with AUTHENTICATION_FAILED and keeps no SA."""
    gw, cli = _engine_configs("%any")
    net = Network()
    a = net.add("192.0.2.1", IkeEndpoint([cli], wall_clock=lambda: NOW))
    b = net.add("192.0.2.2", IkeEndpoint([gw], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run()
    ev_a, ev_b = net.take("192.0.2.1"), net.take("192.0.2.2")
    (fb,) = [e for e in ev_b if isinstance(e, AuthFailed)]
    assert fb.reason == "EAP-TLS authentication of 'alice@example.org' failed: peer refused EAP-TLS (EAP-Nak)"
    assert any(isinstance(e, AuthFailed) and e.by_peer for e in ev_a)
    assert not [e for e in ev_a + ev_b if isinstance(e, IkeSaUp)]
    assert not a.sas and not b.sas


def test_an_abandoned_eap_tls_conversation_is_reaped_with_its_half_open_sa() -> None:
    """The client goes silent after the EAP-TLS Start: the gateway's SA, which holds the TLS
    state, stays half-open and is closed at the half-open timeout like any other."""
    gw, cli = _engine_configs("")  # no EAP-Identity round: the first IKE_AUTH response starts TLS
    net = Network()
    a = net.add("192.0.2.1", IkeEndpoint([cli], wall_clock=lambda: NOW))
    b = net.add("192.0.2.2", IkeEndpoint([gw], wall_clock=lambda: NOW))
    auth_requests = 0

    def drop(sent: Sent) -> bool:
        nonlocal auth_requests
        if sent.src[0] != "192.0.2.1" or decode_header(sent.data).exchange != ExchangeType.IKE_AUTH:
            return False
        auth_requests += 1
        return auth_requests > 1  # the first IKE_AUTH passes; the answer to the TLS Start never arrives

    net.drop = drop
    a.initiate("rw", "net", net.now)
    net.run(until=1.0)
    assert b.half_open == 1 and len(b.sas) == 1
    answered = [x for x in net.log
                if x.src[0] == "192.0.2.2" and decode_header(x.data).exchange == ExchangeType.IKE_AUTH]
    assert len(answered) == 1  # IDr, CERT, AUTH and the EAP-TLS Start: the TLS server exists from here
    net.run()
    assert not b.sas and b.half_open == 0
    assert b.stats.half_open_closed == 1
    assert not [e for e in net.take("192.0.2.2") if isinstance(e, IkeSaUp)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, FLAG_L, FLAG_M, FLAG_L | FLAG_M, FLAG_S, 0x1F, 0xFF]),
                          st.binary(max_size=12), st.binary(max_size=40)), min_size=1, max_size=6))
def test_any_sequence_of_responses_ends_in_a_packet_or_a_clean_failure(
        frags: list[tuple[int, bytes, bytes]]) -> None:
    """Each response answers the last request (right Identifier), so the state machine gets past the
    first check; whatever flags, lengths and data follow, the answer is a request or EAP-Failure."""
    srv = server(Identity.parse("alice@example.org"), fragment=50)
    ident = _tls_request_ident(srv)
    for flags, length, data in frags:
        out, result = srv.process(_response(ident, bytes([flags]) + length + data))
        pkt = EapPacket.decode(out)
        if result is not None:
            assert not result.ok and result.reason and pkt.code == EapCode.FAILURE
            return
        assert pkt.code == EapCode.REQUEST and pkt.type == EapType.TLS
        ident = pkt.ident
