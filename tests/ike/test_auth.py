"""AUTH payloads (PSK, RFC 7427 and classic signatures), certificates and identities."""

from __future__ import annotations

import datetime
import hmac
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

from tunsec.ike.auth import (
    AuthError,
    parse_alg_id,
    psk_auth_data,
    sign,
    signed_octets,
    verify_psk,
    verify_signature,
)
from tunsec.ike.certs import ca_fingerprint, certreq_data, verify_peer
from tunsec.ike.constants import AuthMethod, HashAlgorithm, IdType, PrfId
from tunsec.ike.crypto import Prf
from tunsec.ike.identity import Identity, certificate_has_identity
from tunsec.ike.message import AuthPayload, IdPayload
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, make_ca, make_cert, new_key

NOW = EPOCH + datetime.timedelta(days=10)
ALL_HASHES = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)


def test_psk_auth_matches_rfc_formula() -> None:
    prf = Prf(PrfId.HMAC_SHA2_256)
    sk_pi = os.urandom(32)
    idp = IdPayload(True, IdType.FQDN, b"moon.example")
    octets = signed_octets(b"MSG1", b"NONCE-R", prf, Secret(sk_pi), idp)
    maced_id = hmac.new(sk_pi, bytes([IdType.FQDN, 0, 0, 0]) + b"moon.example", "sha256").digest()
    assert octets == b"MSG1NONCE-R" + maced_id
    inner = hmac.new(b"secret", b"Key Pad for IKEv2", "sha256").digest()
    expected = hmac.new(inner, octets, "sha256").digest()
    assert psk_auth_data(prf, Secret(b"secret"), octets) == expected
    verify_psk(prf, Secret(b"secret"), octets, AuthPayload(AuthMethod.PSK, expected))
    with pytest.raises(AuthError):
        verify_psk(prf, Secret(b"wrong"), octets, AuthPayload(AuthMethod.PSK, expected))
    with pytest.raises(AuthError):
        verify_psk(prf, Secret(b"secret"), octets, AuthPayload(AuthMethod.RSA_SIG, expected))
    assert expected.hex() not in repr(AuthPayload(AuthMethod.PSK, expected))


def test_psk_key_pad_held_per_prf() -> None:
    """One Secret serves peers under different PRFs: each PRF gets its own prf(PSK, KEY_PAD),
    again and again, and the Secret's repr shows none of it."""
    psk = Secret(b"secret")
    for _ in range(2):
        for prf_id, name in ((PrfId.HMAC_SHA2_256, "sha256"), (PrfId.HMAC_SHA2_512, "sha512")):
            inner = hmac.new(b"secret", b"Key Pad for IKEv2", name).digest()
            assert psk_auth_data(Prf(prf_id), psk, b"octets") == hmac.new(inner, b"octets", name).digest()
            assert inner.hex() not in repr(psk) and b"secret".hex() not in repr(psk)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ecdsa384", "ecdsa521"])
@pytest.mark.parametrize("rfc7427", [True, False])
def test_signature_round_trip(kind: str, rfc7427: bool) -> None:
    key = new_key(kind)
    octets = os.urandom(200)
    auth = sign(key, octets, ALL_HASHES if rfc7427 else ())
    if rfc7427:
        assert auth.method == AuthMethod.DIGITAL_SIGNATURE
    else:
        assert auth.method in (AuthMethod.RSA_SIG, 9, 10, 11)
    verify_signature(key.public_key(), octets, auth)
    with pytest.raises(AuthError):
        verify_signature(key.public_key(), octets + b"x", auth)
    with pytest.raises(AuthError):
        verify_signature(new_key(kind).public_key(), octets, auth)


def test_rsa_pss_and_ed25519() -> None:
    key = new_key("rsa")
    auth = sign(key, b"data", ALL_HASHES, rsa_pss=True)
    verify_signature(key.public_key(), b"data", auth)
    alg = auth.data[1 : 1 + auth.data[0]]
    # RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 (the RFC 7427 App. A.4 layout)
    assert alg.hex() == (
        "3041"
        "06092a864886f70d01010a"
        "3034"
        "a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500"
        "a203020120"
    )
    ed = ed25519.Ed25519PrivateKey.generate()
    auth = sign(ed, b"data", (HashAlgorithm.IDENTITY,))
    verify_signature(ed.public_key(), b"data", auth)


def test_rfc7427_alg_ids() -> None:
    key = new_key("ecdsa384")
    auth = sign(key, b"x", ALL_HASHES)
    assert auth.data[1 : 1 + auth.data[0]].hex() == "300a06082a8648ce3d040303"
    rsa_auth = sign(new_key("rsa"), b"x", (HashAlgorithm.SHA2_384,))
    assert rsa_auth.data[1 : 1 + rsa_auth.data[0]].hex() == "300d06092a864886f70d01010c0500"
    for bad in (b"", b"\x30\x00", b"\x30\x03\x06\x01\x00", bytes.fromhex("300b06092a864886f70d010105")):
        with pytest.raises(Exception):  # noqa: B017 - AuthError or DerError
            parse_alg_id(bad)


def test_garbage_auth_data_is_auth_error() -> None:
    key = new_key("ecdsa")
    for data in (b"", b"\xff", b"\x05abc", os.urandom(80)):
        with pytest.raises(AuthError):
            verify_signature(key.public_key(), b"x", AuthPayload(AuthMethod.DIGITAL_SIGNATURE, data))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_chain_verification(kind: str) -> None:
    root = make_ca(kind=kind)
    inter = make_ca("intermediate", kind=kind, issuer=root)
    leaf = make_cert(inter, "moon", san=["moon.example", "10.0.0.1", "moon@example"], kind=kind, days=365)
    pub, anchor, anchor_cert = verify_peer([leaf.cert, inter.cert], [root.cert], NOW, Identity.parse("moon.example"))
    assert anchor == ca_fingerprint(root.cert)   # the chain verified to the root, not the intermediate sent
    assert anchor_cert == root.cert
    assert pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == leaf.key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    verify_peer([leaf.cert, inter.cert], [root.cert], NOW, Identity.parse("10.0.0.1"))
    verify_peer([leaf.cert, inter.cert], [root.cert], NOW, Identity.parse("moon@example"))
    verify_peer([leaf.cert, inter.cert], [root.cert], NOW, Identity.parse("C=CH, O=tunsec test, CN=moon"))
    with pytest.raises(AuthError, match="does not certify"):
        verify_peer([leaf.cert, inter.cert], [root.cert], NOW, Identity.parse("sun.example"))
    with pytest.raises(AuthError, match="not trusted"):
        verify_peer([leaf.cert], [root.cert], NOW, Identity.parse("moon.example"))
    with pytest.raises(AuthError, match="not trusted"):
        verify_peer([leaf.cert, inter.cert], [make_ca().cert], NOW, Identity.parse("moon.example"))
    with pytest.raises(AuthError, match="not trusted"):
        later = EPOCH + datetime.timedelta(days=400)
        verify_peer([leaf.cert, inter.cert], [root.cert], later, Identity.parse("moon.example"))


def test_email_and_dns_sans_match_an_identity_in_any_case_as_identities_compare() -> None:
    """RFC822 and FQDN identities compare caselessly (Identity.__eq__, strongSwan's strcasecmp); a
    certificate's email SAN is matched the same way, local part included (strongSwan's has_subject)."""
    ca = make_ca()
    leaf = make_cert(ca, "moon", san=["Moon.Example", "Carol.Smith@Example.ORG"])
    for text in ("carol.smith@example.org", "CAROL.SMITH@EXAMPLE.ORG", "Carol.Smith@Example.ORG",
                 "moon.example", "MOON.EXAMPLE"):
        assert Identity.parse(text) == Identity.parse(text.swapcase())
        assert certificate_has_identity(leaf.cert, Identity.parse(text)), text
    assert not certificate_has_identity(leaf.cert, Identity.parse("carol.smith@example.com"))
    assert not certificate_has_identity(leaf.cert, Identity.parse("carol@example.org"))


def test_cert_without_san_matches_dn_only() -> None:
    ca = make_ca()
    leaf = make_cert(ca, "sun")
    verify_peer([leaf.cert], [ca.cert], NOW, Identity.parse("C=CH, O=tunsec test, CN=sun"))
    assert not certificate_has_identity(leaf.cert, Identity.parse("sun"))


def test_certreq_is_sha1_of_spki() -> None:
    a, b = make_ca(), make_ca(kind="rsa")
    data = certreq_data([a.cert, b.cert])
    assert len(data) == 40


@pytest.mark.parametrize(
    ("text", "kind", "data"),
    [
        ("moon.strongswan.org", IdType.FQDN, b"moon.strongswan.org"),
        ("carol@strongswan.org", IdType.RFC822_ADDR, b"carol@strongswan.org"),
        ("10.1.0.1", IdType.IPV4_ADDR, bytes([10, 1, 0, 1])),
        ("fec0::1", IdType.IPV6_ADDR, bytes.fromhex("fec00000000000000000000000000001")),
        ("@#0a0B", IdType.KEY_ID, b"\x0a\x0b"),
        ("keyid:0102", IdType.KEY_ID, b"\x01\x02"),
        ("@10.1.0.1", IdType.FQDN, b"10.1.0.1"),
        ("fqdn:x", IdType.FQDN, b"x"),
        ("email:a@b", IdType.RFC822_ADDR, b"a@b"),
    ],
)
def test_identity_parse(text: str, kind: int, data: bytes) -> None:
    ident = Identity.parse(text)
    assert (ident.type, ident.data) == (kind, data)
    if not text.startswith(("@", "keyid", "fqdn", "email")):
        assert str(ident) == text


def test_names_compare_without_regard_to_case_as_strongswans() -> None:
    """FQDN and RFC822 identities are one client whatever the case (strongSwan's equals() is
    strcasecmp for them): one key in the dicts of unique, leases and INITIAL_CONTACT.  Bytes of
    other kinds (a KEY_ID) keep their case."""
    alice, upper = Identity.parse("alice@example.org"), Identity.parse("ALICE@Example.ORG")
    assert alice == upper and hash(alice) == hash(upper) and {alice: 1}[upper] == 1
    assert Identity.of_user(b"Alice") == Identity.parse("alice") and Identity.of_user(b"alice") != alice
    assert Identity(IdType.KEY_ID, b"AB") != Identity(IdType.KEY_ID, b"ab")
    assert Identity(IdType.FQDN, b"alice") != Identity(IdType.RFC822_ADDR, b"alice")


def test_identity_dn_and_any() -> None:
    dn = Identity.parse("C=CH, O=strongSwan, CN=moon.strongswan.org")
    assert dn.type == IdType.DER_ASN1_DN
    assert str(dn) == "C=CH, O=strongSwan, CN=moon.strongswan.org"
    assert Identity.parse("%any").matches(dn)
    assert not Identity.parse("moon").matches(dn)
    garbage = Identity(IdType.DER_ASN1_DN, b"\x30\x05zz")
    assert "9" in str(garbage)  # printable even when malformed


def _ku(digital_signature: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature, False, key_encipherment, False, False, False, False, False, False)


def _eku(*oids: x509.ObjectIdentifier) -> x509.ExtendedKeyUsage:
    return x509.ExtendedKeyUsage(list(oids))


IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")
EKU = ExtendedKeyUsageOID

USABLE = {
    "no keyUsage, no EKU": [],
    "digitalSignature": [(_ku(True), True)],
    "digitalSignature + keyEncipherment": [(_ku(True, True), True)],
    "EKU ipsecIKE": [(_eku(IPSEC_IKE), False)],
    "EKU serverAuth": [(_eku(EKU.SERVER_AUTH), False)],
    "EKU clientAuth": [(_eku(EKU.CLIENT_AUTH), False)],
    "EKU anyExtendedKeyUsage": [(_eku(EKU.ANY_EXTENDED_KEY_USAGE), False)],
    "EKU emailProtection + ipsecIKE": [(_eku(EKU.EMAIL_PROTECTION, IPSEC_IKE), False)],
    "both, usable": [(_ku(True), True), (_eku(EKU.SERVER_AUTH, EKU.CLIENT_AUTH), False)],
}
UNUSABLE = {
    "keyUsage keyEncipherment only": ([(_ku(False, True), True)], "lacks digitalSignature"),
    "EKU emailProtection only": ([(_eku(EKU.EMAIL_PROTECTION), False)], "emailProtection, not ipsecIKE"),
    "EKU codeSigning + timeStamping": ([(_eku(EKU.CODE_SIGNING, EKU.TIME_STAMPING), False)], "not for IKE"),
    "good EKU, keyUsage without signing": (
        [(_ku(False, True), True), (_eku(IPSEC_IKE), False)], "lacks digitalSignature"),
}


@pytest.mark.parametrize("name", sorted(USABLE))
def test_end_entity_usage_that_allows_ike(name: str) -> None:
    ca = make_ca()
    leaf = make_cert(ca, "moon", san=["moon.example"], extensions=USABLE[name])
    verify_peer([leaf.cert], [ca.cert], NOW, Identity.parse("moon.example"))


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_end_entity_usage_that_forbids_ike_is_refused(name: str) -> None:
    """A chain that verifies and names the peer, but a leaf made for something else."""
    ca = make_ca()
    exts, why = UNUSABLE[name]
    leaf = make_cert(ca, "moon", san=["moon.example"], extensions=exts)
    with pytest.raises(AuthError, match=why):
        verify_peer([leaf.cert], [ca.cert], NOW, Identity.parse("moon.example"))
