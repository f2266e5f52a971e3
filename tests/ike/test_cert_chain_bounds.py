"""A peer's certificate chain is bounded before the path is built (certs.py, review revfrag F1).

The peer's certificates are checked before anything of the peer is proven, so what the path builder
gets is trimmed first: at most MAX_CERTS certificates (EAP-TLS, too, whose TLS message may hold
many more), no RSA key beyond MAX_RSA_BITS or with an exponent beyond MAX_RSA_EXPONENT_BITS bits,
and of the intermediates those on a path of issuer names toward a CA, none self-signed, at most
two per subject name (since review revcertfix F1/F2: tests/ike/test_cert_path_candidates.py).
What must keep working: honest chains in any order, with the root sent along, and a cross-signed
intermediate that reaches our CA through one of its two issuers.
"""

from __future__ import annotations

import datetime
import math

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from tunsec.ike.auth import AuthError, PrivateKey
from tunsec.ike.certs import MAX_CERTS, MAX_RSA_BITS, verify_peer
from tunsec.ike.identity import MAX_TEXT, Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert, new_key

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("bounds root")
ALICE = "alice@example.org"


def _issue(subject: x509.Name, issuer: Issued, public_key: object, ca: bool = True) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.cert.subject)
               .public_key(public_key)  # type: ignore[arg-type]
               .serial_number(x509.random_serial_number())
               .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer.key, hashes.SHA256())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


def _verify(chain: list[x509.Certificate], cas: tuple[x509.Certificate, ...] = (ROOT.cert,)) -> None:
    verify_peer(chain, cas, NOW, Identity.parse(ALICE))


def test_an_honest_chain_verifies_in_any_order_with_its_root_sent_along() -> None:
    sub = make_ca("bounds sub", issuer=ROOT)
    subsub = make_ca("bounds subsub", issuer=sub)
    alice = make_cert(subsub, "alice", san=[ALICE])
    _verify([alice.cert, subsub.cert, sub.cert])
    _verify([alice.cert, sub.cert, ROOT.cert, subsub.cert])


def test_a_cross_signed_intermediate_reaches_the_ca_we_trust() -> None:
    """One subject and key, issued by two roots: whichever comes first, the one our CA issued is kept."""
    other = make_ca("bounds other root")
    key = new_key("ecdsa")
    by_other = _issue(_name("bounds cross"), other, key.public_key())
    by_ours = _issue(_name("bounds cross"), ROOT, key.public_key())
    alice = make_cert(Issued(by_ours, key), "alice", san=[ALICE])
    _verify([alice.cert, by_other, by_ours])
    _verify([alice.cert, by_ours, by_other])
    with pytest.raises(AuthError, match="not trusted"):
        _verify([alice.cert, by_other])


def test_more_than_max_certs_are_refused_before_any_is_looked_at() -> None:
    """EAP-TLS hands verify_peer whatever its 16 KiB TLS message held; IKE already counted its CERTs."""
    sub = make_ca("bounds sub", issuer=ROOT)
    alice = make_cert(sub, "alice", san=[ALICE])
    _verify([alice.cert, *[sub.cert] * (MAX_CERTS - 1)])
    with pytest.raises(AuthError, match=f"{MAX_CERTS + 1} certificates"):
        _verify([alice.cert, *[sub.cert] * MAX_CERTS])


def _rsa_with_exponent(bits: int) -> PrivateKey:
    """An RSA-2048 key whose public exponent has ``bits`` bits: verifying with it costs about what
    signing does (OpenSSL bounds the exponent only for moduli over 3072 bits)."""
    base = rsa.generate_private_key(65537, 2048).private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    e = (1 << (bits - 1)) + 1
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    public = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public).private_key()


def test_an_rsa_key_with_a_huge_public_exponent_is_refused() -> None:
    key = _rsa_with_exponent(2000)
    sub = Issued(_issue(_name("bounds huge exponent"), ROOT, key.public_key()), key)
    alice = make_cert(sub, "alice", san=[ALICE])
    with pytest.raises(AuthError, match="exponent of more than 64 bits"):
        _verify([alice.cert, sub.cert])


def test_an_rsa_key_over_the_size_limit_is_refused() -> None:
    """The leaf's key: any RSA modulus loads (no key of that size is made: it takes minutes)."""
    n = (1 << (MAX_RSA_BITS + 511)) + 1234567   # odd, MAX_RSA_BITS + 512 bits
    big = rsa.RSAPublicNumbers(65537, n).public_key()
    leaf = _issue(_name("alice"), ROOT, big, ca=False)
    with pytest.raises(AuthError, match=f"{MAX_RSA_BITS + 512}-bit RSA key"):
        verify_peer([leaf], (ROOT.cert,), NOW, Identity.from_name(leaf.subject))


def test_the_reason_for_an_untrusted_chain_is_cut() -> None:
    """The path builder's reason quotes a refused key's parameters (a DSA key's: KiB): the log
    line of a failed authentication stays short."""
    key = dsa.generate_private_key(2048)
    sub = _issue(_name("bounds dsa"), ROOT, key.public_key())
    alice = make_cert(Issued(sub, new_key("ecdsa")), "alice", san=[ALICE])
    alice_by_dsa = _issue(alice.cert.subject, Issued(sub, key), alice.key.public_key(), ca=False)  # type: ignore[arg-type]
    with pytest.raises(AuthError) as refused:
        _verify([alice_by_dsa, sub])
    assert "not trusted" in str(refused.value)
    assert len(str(refused.value)) < 2 * MAX_TEXT + 100, len(str(refused.value))
