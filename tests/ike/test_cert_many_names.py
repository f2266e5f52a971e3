"""Review revcert3 F2 (its proofs, then the bound where it still applies).

A peer certificate with more than 64 subjectAltNames is refused even where no
certificate of its chain (nor the configured CA) has a name constraint, so no name is compared with
any subtree.

certs.check_names caps every certificate of the chain, the peer's own included, at MAX_NAMES = 64
names, against the cost of cryptography's name-constraint check (names x subtrees).  That cost is
bounded already by _check_name_cost (the chain's subtrees x names, 0 without any constraint) and by
cryptography's own budget; the per-certificate cap on the leaf refuses legitimate certificates whose
names cost nothing: a multi-domain certificate a site peer reuses (public CAs issue up to 100 SANs,
Let's Encrypt's limit; cloud and CDN certificates carry hundreds), which strongSwan, the usual other
end, accepts without such a limit.  The same cap refuses it during the EAP-TLS handshake
(eap/tls._cert_refused).
"""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import crypto
from test_eap_tls import CA, converse, server
from test_eap_tls_chain_bounds import ALICE, _peer

from tunsec.ike.auth import AuthError
from tunsec.ike.certs import MAX_NAMES, verify_peer
from tunsec.ike.eap import tls
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("revcert3 names root")
SUB = make_ca("revcert3 names sub", issuer=ROOT)
# a site gateway's certificate that also names the site's 100 web hosts (no name constraint anywhere)
NAMES = ["vpn.site.example", *(f"www{i}.site.example" for i in range(99))]
SITE = make_cert(SUB, "vpn.site.example", san=NAMES)


def test_a_peer_certificate_of_100_names_without_name_constraints_verifies() -> None:
    verify_peer([SITE.cert, SUB.cert], [ROOT.cert], NOW, Identity.parse("vpn.site.example"))


def test_eap_tls_takes_it_during_the_handshake_too() -> None:
    assert tls._cert_refused(crypto.X509.from_cryptography(SITE.cert)) is None


# the bound where it applies: below a name constraint (an intermediate's or a configured CA's) the
# peer's certificate still names at most MAX_NAMES; another connection's constrained CA does not count

def _constrained_ca(cn: str, issuer: Issued | None) -> Issued:
    """A CA (under ``issuer``, or a root) permitting the DNS subtree site.example and the mailboxes of example.org."""
    ca = make_ca(cn, issuer=issuer)
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("site.example"), x509.RFC822Name("example.org")],
                              excluded_subtrees=None)
    signer = issuer or ca
    cert = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(signer.cert.subject)
            .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(nc, critical=True).sign(signer.key, hashes.SHA256()))
    return Issued(cert, ca.key)


CAPPED = f"has 100 subjectAltNames (at most {MAX_NAMES})"


def test_below_a_constrained_intermediate_the_names_are_still_bounded() -> None:
    sub = _constrained_ca("revcert3 names constrained sub", ROOT)
    site = make_cert(sub, "vpn.site.example", san=NAMES)
    with pytest.raises(AuthError, match=re.escape(CAPPED)):
        verify_peer([site.cert, sub.cert], [ROOT.cert], NOW, Identity.parse("vpn.site.example"))


def test_below_a_constrained_configured_ca_too_but_not_beside_one() -> None:
    root = _constrained_ca("revcert3 names constrained root", None)
    site = make_cert(root, "vpn.site.example", san=NAMES)
    with pytest.raises(AuthError, match=re.escape(CAPPED)):
        verify_peer([site.cert], [root.cert], NOW, Identity.parse("vpn.site.example"))
    # another connection's constrained CA in the same build (exchanges/ike_auth_cas.py) is no CA of this path's
    verify_peer([SITE.cert, SUB.cert], [root.cert, ROOT.cert], NOW, Identity.parse("vpn.site.example"))


def _alice(issuer: Issued) -> Issued:
    return make_cert(issuer, "alice", san=[ALICE, *NAMES[1:]])


def test_an_eap_tls_client_of_100_names_authenticates_without_a_constraint() -> None:
    sub = make_ca("revcert3 names eap sub", issuer=CA)
    result = converse(server(), _peer(_alice(sub), [sub.cert]))
    assert result.ok, result.reason


def test_an_eap_tls_client_of_100_names_below_a_constraint_is_refused_in_the_handshake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused by the callback, before OpenSSL compares the names with the constraints (the
    handshake never gets to verify_peer)."""
    after: list[object] = []
    monkeypatch.setattr(tls, "verify_peer", lambda *args: after.append(args))
    sub = _constrained_ca("revcert3 names eap constrained sub", CA)
    result = converse(server(), _peer(_alice(sub), [sub.cert]))
    assert not result.ok and not after
    assert result.reason is not None and result.reason.startswith("client certificate refused: certificate ") \
        and CAPPED in result.reason, result.reason
