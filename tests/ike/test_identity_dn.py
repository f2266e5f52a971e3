"""Peer identities before authentication: bounded DER parsing and sizes, and DN comparison that
never takes one name for another (review of 2026-12-03, ninth session)."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from test_engine import initiator_cfg, make_net, responder_cfg
from test_engine_more import net_of, only, pubkey_cfg

from tunsec.ike import _der, identity
from tunsec.ike.auth import AuthError
from tunsec.ike.config import IkeConfig, RemoteAuth
from tunsec.ike.constants import CertEncoding, IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaDown, IkeSaUp
from tunsec.ike.exchanges import ike_auth
from tunsec.ike.identity import Identity, IdentityError, certificate_has_identity, check_peer_identity, dn_equal
from tunsec.ike.message import CertPayload, IdPayload
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert, new_key

CN = _der.encode_oid("2.5.4.3")


def _dn(*attrs: tuple[bytes, int, bytes]) -> bytes:
    """A Name of one RDN per (OID value, string tag, value bytes), as a peer may encode it."""
    rdns = b"".join(_der.encode_tlv(_der.SET, _atv(oid, tag, v)) for oid, tag, v in attrs)
    return _der.encode_tlv(_der.SEQUENCE, rdns)


def _atv(oid: bytes, tag: int, value: bytes) -> bytes:
    return _der.encode_tlv(_der.SEQUENCE, _der.encode_tlv(_der.OID, oid) + _der.encode_tlv(tag, value))


def _huge_oid_dn(n: int = 60000) -> bytes:
    return _dn((b"\x2a" + b"\xff" * n + b"\x01", _der.UTF8_STRING, b"x"))


# ------------------------------------------------------------------ DER


def test_decode_oid_refuses_a_huge_oid() -> None:
    with pytest.raises(_der.DerError, match="OID of 60002 bytes"):
        _der.decode_oid(b"\x2a" + b"\xff" * 60000 + b"\x01")
    with pytest.raises(_der.DerError, match="arc longer"):   # 10 bytes: over 63 bits
        _der.decode_oid(b"\x2a" + b"\x81" * 9 + b"\x01")
    with pytest.raises(_der.DerError, match="not minimally"):   # 2.5.4.3 with a leading zero group
        _der.decode_oid(b"\x55\x80\x04\x03")
    with pytest.raises(_der.DerError, match="truncated"):
        _der.decode_oid(b"\x55\x84")


def test_decode_oid_reads_what_encode_oid_writes() -> None:
    for dotted in ("2.5.4.3", "1.2.840.113549.1.1.11", "0.9.2342.19200300.100.1.1", "2.999.7", "1.3.6.1.5.5.7.3.17"):
        assert _der.decode_oid(_der.encode_oid(dotted)) == dotted
    assert _der.decode_oid(bytes.fromhex("883703")) == "2.999.3"   # a first subidentifier of two bytes
    assert _der.decode_oid(b"\x2a" + b"\xff" * 8 + b"\x7f") == f"1.2.{2 ** 63 - 1}"


def test_a_name_with_a_huge_oid_does_not_parse() -> None:
    with pytest.raises(_der.DerError):
        _der.parse_name(_huge_oid_dn())


@pytest.mark.parametrize(("tag", "value", "text"), [
    (_der.UTF8_STRING, "Jürgen".encode(), "Jürgen"),
    (_der.BMP_STRING, "Jürgen".encode("utf-16-be"), "Jürgen"),
    (_der.UNIVERSAL_STRING, "Jürgen".encode("utf-32-be"), "Jürgen"),
    (_der.PRINTABLE_STRING, b"moon", "moon"),
    (_der.TELETEX_STRING, b"J\xfcrgen", "Jürgen"),
    (_der.UTF8_STRING, b"J\xfcrgen", None),          # not UTF-8
    (_der.BMP_STRING, b"\x00J\x00", None),           # odd length
    (_der.BMP_STRING, b"\xd8\x00", None),            # a lone surrogate
    (_der.PRINTABLE_STRING, b"J\xfcrgen", None),     # not ASCII
    (_der.UNIVERSAL_STRING, b"\x00\x11\x00\x00", None),   # past U+10FFFF
    (0x04, b"moon", None),                           # an OCTET STRING is no text
], ids=["utf8", "bmp", "universal", "printable", "teletex", "bad-utf8", "odd-bmp", "surrogate", "non-ascii",
        "past-unicode", "octets"])
def test_strings_are_read_strictly_by_their_tag(tag: int, value: bytes, text: str | None) -> None:
    assert _der.decode_string(tag, value) == text


# ------------------------------------------------------------------ DN comparison


def test_dn_equal_compares_text_by_type_and_never_a_replacement() -> None:
    bmp = _der.BMP_STRING
    juergen, joergen = "Jürgen Müller".encode("utf-16-be"), "Jörgen Möller".encode("utf-16-be")
    assert not dn_equal(_dn((CN, bmp, juergen)), _dn((CN, bmp, joergen)))
    # the same name in another string type is the same name
    assert dn_equal(_dn((CN, bmp, juergen)), _dn((CN, _der.UTF8_STRING, "Jürgen Müller".encode())))
    assert dn_equal(_dn((CN, _der.PRINTABLE_STRING, b"moon")), _dn((CN, _der.UTF8_STRING, b"moon")))
    # bytes that are no valid text match the same type and bytes only
    assert not dn_equal(_dn((CN, _der.UTF8_STRING, b"J\xfcrgen")), _dn((CN, _der.UTF8_STRING, b"J\xf6rgen")))
    assert not dn_equal(_dn((CN, _der.UTF8_STRING, b"J\xfcrgen")), _dn((CN, _der.TELETEX_STRING, b"J\xfcrgen")))
    assert dn_equal(_dn((CN, _der.UTF8_STRING, b"J\xfcrgen")) + b"", _dn((CN, _der.UTF8_STRING, b"J\xfcrgen")))
    # an RDN of two attributes is not two RDNs
    two = _der.encode_tlv(_der.SEQUENCE, _der.encode_tlv(_der.SET, b"".join(
        _atv(CN, _der.UTF8_STRING, v) for v in (b"a", b"b"))))
    assert not dn_equal(two, _dn((CN, _der.UTF8_STRING, b"a"), (CN, _der.UTF8_STRING, b"b")))


def test_identity_text_reads_each_string_type() -> None:
    ident = Identity(IdType.DER_ASN1_DN, _dn((_der.encode_oid("2.5.4.10"), _der.PRINTABLE_STRING, b"corp"),
                                             (CN, _der.BMP_STRING, "Jürgen".encode("utf-16-be"))))
    assert str(ident) == "O=corp, CN=Jürgen"
    odd = Identity(IdType.DER_ASN1_DN, _dn((CN, _der.UTF8_STRING, b"J\xfcrgen")))
    assert str(odd) == "CN=#0c064afc7267656e"   # RFC 4514's hex form of the element, never U+FFFD


def _bmp_cert(ca: Issued, cn: str) -> Issued:
    """A certificate whose CN is a BMPString, as some CAs encode non-ASCII names."""
    key = new_key("ecdsa")
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "corp"),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn, _type=_ASN1Type.BMPString)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=365))
            .sign(ca.key, hashes.SHA256()))
    return Issued(cert, key)


@pytest.fixture(scope="module")
def people() -> tuple[Issued, Issued, Issued, Issued]:
    """The CA, the gateway's certificate, the victim's (CN=Jürgen Müller) and Mallory's (CN=Jörgen Möller)."""
    ca = make_ca()
    return ca, make_cert(ca, "sun", ["sun.example"]), _bmp_cert(ca, "Jürgen Müller"), _bmp_cert(ca, "Jörgen Möller")


def test_mallorys_certificate_does_not_certify_the_victims_dn(people: tuple[Issued, ...]) -> None:
    _, _, victim, mallory = people
    victim_id, mallory_id = Identity.from_name(victim.cert.subject), Identity.from_name(mallory.cert.subject)
    assert not certificate_has_identity(mallory.cert, victim_id)
    assert certificate_has_identity(mallory.cert, mallory_id) and certificate_has_identity(victim.cert, victim_id)


@pytest.fixture()
def hostile_idi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mallory's client sends the IDi it is configured with, byte for byte, whatever its certificate
    says (tunsec's own client would send its certificate's subject)."""
    honest = ike_auth._id_payload

    def send_as_configured(st: IkeSaState, initiator: bool) -> IdPayload:
        ident = st.config.local.id
        return IdPayload(True, ident.type, ident.data) if initiator else honest(st, initiator)
    monkeypatch.setattr(ike_auth, "_id_payload", send_as_configured)


GW, VICTIM, MALLORY = "192.0.2.2", "192.0.2.10", "192.0.2.66"
NOW = EPOCH + datetime.timedelta(days=30)


def _client(me: Issued, ca: Issued, claims: Identity, addr: str) -> IkeConfig:
    c = pubkey_cfg(True, me, ca, "sun.example", "sun.example")
    return dataclasses.replace(c, local=dataclasses.replace(c.local, id=claims), local_addr=addr, remote_addr=GW)


@pytest.mark.usefixtures("hostile_idi")
def test_mallory_claiming_the_victims_dn_is_refused(people: tuple[Issued, ...]) -> None:
    ca, sun, victim, mallory = people
    victim_id = Identity.from_name(victim.cert.subject)
    net, a, _ = net_of(_client(mallory, ca, victim_id, "192.0.2.1"), pubkey_cfg(False, sun, ca, "sun.example", "%any"))
    a.initiate("conn", "net", net.now)
    net.run()
    evs = net.take(GW)
    assert not only(evs, IkeSaUp)
    (failed,) = only(evs, AuthFailed)
    assert "does not certify identity O=corp, CN=Jürgen Müller" in failed.reason
    assert only(net.take("192.0.2.1"), AuthFailed)[0].by_peer


@pytest.mark.usefixtures("hostile_idi")
def test_the_victims_sa_survives_mallorys_initial_contact(people: tuple[Issued, ...]) -> None:
    ca, sun, victim, mallory = people
    victim_id = Identity.from_name(victim.cert.subject)
    net = Network()
    net.add(GW, IkeEndpoint([pubkey_cfg(False, sun, ca, "sun.example", "%any")], wall_clock=lambda: NOW))
    ju = net.add(VICTIM, IkeEndpoint([_client(victim, ca, victim_id, VICTIM)], wall_clock=lambda: NOW))
    ju.initiate("conn", "net", net.now)
    net.run(until=net.now + 5)
    assert [e.remote_addr[0] for e in only(net.take(GW), IkeSaUp)] == [VICTIM]
    net.take(VICTIM)
    ma = net.add(MALLORY, IkeEndpoint([_client(mallory, ca, victim_id, MALLORY)], wall_clock=lambda: NOW))
    ma.initiate("conn", "net", net.now)
    net.run(until=net.now + 5)
    evs = net.take(GW)
    assert not only(evs, IkeSaUp) and not only(evs, IkeSaDown)
    assert only(evs, AuthFailed)
    assert not only(net.take(VICTIM), IkeSaDown)
    assert ju.sa_count == 1


# ------------------------------------------------------------------ sizes


def _send_idi(resp: IkeConfig, ident: Identity) -> tuple[list[AuthFailed], list[AuthFailed], list[IkeSaUp]]:
    """An initiator claiming ``ident`` against ``resp``: (responder's AuthFailed, initiator's, responder's IkeSaUp)."""
    init = initiator_cfg(fragmentation="no")
    init = dataclasses.replace(init, local=dataclasses.replace(init.local, id=ident))
    net, a, b = make_net(init, resp)
    a.initiate("a-to-b", "net", net.now)
    net.run()
    assert (b.sa_count, b.stats.half_open_closed) == (0, 1)   # nothing kept, and counted
    evs = net.take("192.0.2.2")
    return only(evs, AuthFailed), only(net.take("192.0.2.1"), AuthFailed), only(evs, IkeSaUp)


# the largest DN an IKE_AUTH can carry: a whole message is at most MAX_IKE_MESSAGE bytes (a 60 KB one
# is dropped before it is parsed, ike/test_init_cost.py), reassembled fragments too
_IKE_AUTH_DN = 8000


@pytest.mark.parametrize("remote_id", ["C=CH, CN=moon", "moon.example", "%any"])
def test_an_8_kb_dn_idi_gets_authentication_failed_and_a_short_reason(remote_id: str) -> None:
    resp = responder_cfg(fragmentation="no")
    resp = dataclasses.replace(resp, remote=RemoteAuth("psk", Identity.parse(remote_id)))
    ours, theirs, ups = _send_idi(resp, Identity(IdType.DER_ASN1_DN, _huge_oid_dn(_IKE_AUTH_DN)))
    assert not ups
    (failed,) = ours
    assert failed.reason == "peer identity of type DER_ASN1_DN has 8021 bytes (at most 2048)"
    assert [e.by_peer for e in theirs] == [True]   # the initiator got AUTHENTICATION_FAILED


@pytest.mark.parametrize(("kind", "data"), [
    (IdType.FQDN, b"a" * 256), (IdType.RFC822_ADDR, b"a@" + b"b" * 254), (IdType.KEY_ID, b"\x01" * 2049),
    (IdType.IPV4_ADDR, b"\x0a\x00\x00"), (IdType.IPV6_ADDR, b"\x00" * 17), (200, b"\x00" * 2049),
], ids=["fqdn", "rfc822", "keyid", "ipv4", "ipv6", "unknown"])
def test_identities_out_of_bounds_are_refused(kind: int, data: bytes) -> None:
    with pytest.raises(IdentityError, match="peer identity of type"):
        check_peer_identity(kind, data)


@pytest.mark.parametrize(("kind", "data"), [
    (IdType.FQDN, b"a" * 255), (IdType.RFC822_ADDR, b"a@" + b"b" * 253), (IdType.KEY_ID, b"\x01" * 2048),
    (IdType.IPV4_ADDR, b"\x0a\x00\x00\x01"), (IdType.IPV6_ADDR, b"\x00" * 16), (200, b"\x00" * 2048),
    (IdType.DER_ASN1_DN, _dn(*[(CN, _der.UTF8_STRING, b"x" * 60)] * 28)),   # 1992 bytes
], ids=["fqdn", "rfc822", "keyid", "ipv4", "ipv6", "unknown", "dn"])
def test_identities_within_bounds_pass(kind: int, data: bytes) -> None:
    check_peer_identity(kind, data)


def test_an_oversized_idr_the_initiator_asks_for_is_refused() -> None:
    """IDr is compared with each connection's local id (a DN parse) before IDi is checked."""
    init = initiator_cfg(fragmentation="no")
    init = dataclasses.replace(init, remote=RemoteAuth("psk", Identity(IdType.DER_ASN1_DN,
                                                                      _huge_oid_dn(_IKE_AUTH_DN))))
    net, a, _ = make_net(init, responder_cfg(fragmentation="no"))
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (failed,) = only(net.take("192.0.2.2"), AuthFailed)
    assert failed.reason == "peer identity of type DER_ASN1_DN has 8021 bytes (at most 2048)"


def test_identity_text_is_bounded() -> None:
    key_id = Identity(IdType.KEY_ID, bytes(range(256)) * 8)
    assert str(key_id) == "@#" + (bytes(range(256)) * 8).hex()[:254] + "…"
    many = Identity(IdType.DER_ASN1_DN, _dn(*[(CN, _der.UTF8_STRING, b"x" * 20)] * 60))
    assert len(str(many)) == 257 and str(many).startswith("CN=xxxx") and str(many).endswith("…")
    no_text = Identity(IdType.DER_ASN1_DN, b"\x30\x82\x10\x00" + b"\x00" * 4096)   # does not parse
    assert str(no_text) == "9:#" + (b"\x30\x82\x10\x00" + b"\x00" * 60).hex() + "…"


def test_more_certificates_than_strongswan_takes_are_refused() -> None:
    ders = [CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x00")] * (ike_auth.MAX_CERTS + 1)
    with pytest.raises(AuthError, match="9 certificates"):
        ike_auth._peer_certs(ders)
    assert len(ike_auth._peer_certs(ders[: ike_auth.MAX_CERTS])) == ike_auth.MAX_CERTS


def test_the_peers_dn_is_read_once_however_many_connections_name_dns() -> None:
    """A hub with a connection per spoke, each naming its DN: the peer's IDi is parsed once per
    IKE_AUTH, not once per connection (a 2 KiB DN against 1000 connections cost seconds)."""
    spokes = [dataclasses.replace(responder_cfg(fragmentation="no"), name=f"spoke{i}",
                                  remote=RemoteAuth("psk", Identity.parse(f"O=corp, CN=spoke{i}")))
              for i in range(50)]
    init = initiator_cfg(fragmentation="no")
    init = dataclasses.replace(init, local=dataclasses.replace(init.local, id=Identity.parse("O=corp, CN=spoke49")))
    net = Network()
    a = net.add("192.0.2.1", IkeEndpoint([init]))
    net.add("192.0.2.2", IkeEndpoint(spokes))
    identity._dn_key.cache_clear()
    a.initiate("a-to-b", "net", net.now)
    net.run()
    (up,) = only(net.take("192.0.2.2"), IkeSaUp)
    assert up.name == "spoke49"
    assert identity._dn_key.cache_info().misses <= 52   # each connection's DN, the peer's, and ours
