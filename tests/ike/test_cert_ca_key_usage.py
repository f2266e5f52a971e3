"""Review revfrag F2: a CA certificate whose keyUsage forbids certificate signing still issues.

RFC 5280 §4.2.1.3: a keyUsage without keyCertSign means the key must not verify certificate
signatures; §6.1.4 (n) checks it for every intermediate of a path. certs._policy_builder's CA
policy is ``permit_all()`` plus basicConstraints, so cryptography checks no keyUsage of a CA: a
certificate a trusted CA issued with basicConstraints cA but keyUsage digitalSignature only (a
signing or service certificate some PKIs mark cA for their own reasons) signs peer certificates
for any name, accepted by every connection that trusts that CA (IKE pubkey and EAP-TLS alike).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tunsec.ike.auth import AuthError
from tunsec.ike.certs import verify_peer
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert, new_key

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("revfrag root")
SIGNING_ONLY = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                             crl_sign=False, encipher_only=False, decipher_only=False)


def _signing_only_ca() -> Issued:
    key = new_key("ecdsa")
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "revfrag signing service")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ROOT.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(SIGNING_ONLY, critical=True)
            .sign(ROOT.key, hashes.SHA256()))
    return Issued(cert, key)


def test_an_intermediate_whose_key_usage_lacks_key_cert_sign_issues_nothing() -> None:
    service = _signing_only_ca()
    forged = make_cert(service, "alice", san=["alice@example.org"])
    with pytest.raises(AuthError):
        verify_peer([forged.cert, service.cert], [ROOT.cert], NOW, Identity.parse("alice@example.org"))


def test_an_intermediate_with_key_cert_sign_still_issues() -> None:
    """What the fix must keep: make_ca's intermediates (keyCertSign, cRLSign) issue as before."""
    sub = make_ca("revfrag sub CA", issuer=ROOT)
    alice = make_cert(sub, "alice", san=["alice@example.org"])
    verify_peer([alice.cert, sub.cert], [ROOT.cert], NOW, Identity.parse("alice@example.org"))
