"""Which of a peer's intermediates the path builder gets, and what a chain's names may cost
(certs._path_candidates, certs.check_names; review revcertfix F1-F3).

The rollover chains (tests/ike/test_cert_chain_rollover.py), the name loops
(test_cert_chain_name_constraints.py) and the unreachable intermediates (test_cert_chain_cost.py)
are the review's proofs; here the rules' edges: an intermediate that reaches a CA but no path
from the peer's certificate, three issues of one name, a chain whose every certificate is within
bounds but whose names times subtrees are not, an honest name-constrained CA, the EAP-TLS
callback's refusal, and an extension a hostile certificate repeats.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import crypto

from tunsec.ike import certs
from tunsec.ike.auth import AuthError
from tunsec.ike.eap import tls
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("candidates root")
SUB = make_ca("candidates sub", issuer=ROOT)


def _constrained(cn: str, issuer: Issued, subtrees: int) -> Issued:
    """A CA under ``issuer`` that permits ``subtrees`` DNS subtrees (example.org, then n.example.org)."""
    ca = make_ca(cn, issuer=issuer)
    names = [x509.DNSName("example.org"), *(x509.DNSName(f"{i}.example.org") for i in range(1, subtrees))]
    cert = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(issuer.cert.subject)
            .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.NameConstraints(permitted_subtrees=names, excluded_subtrees=None), critical=True)
            .sign(issuer.key, hashes.SHA256()))
    return Issued(cert, ca.key)


def _names(n: int) -> list[str]:
    return [f"h{i}.example.org" for i in range(n)]


def test_an_intermediate_no_path_from_the_peers_certificate_passes_is_left_out() -> None:
    """SUB reaches ROOT, but the leaf's issuer is ROOT itself: the builder need not look at SUB."""
    leaf = make_cert(ROOT, "direct", san=["direct.example.org"])
    assert certs._path_candidates([leaf.cert, SUB.cert], [ROOT.cert]) == []
    below = make_cert(SUB, "below", san=["below.example.org"])
    assert certs._path_candidates([below.cert, SUB.cert, ROOT.cert], [ROOT.cert]) == [SUB.cert]


def test_three_issues_of_one_name_are_refused_not_left_to_the_builder() -> None:
    """Two issues of a CA cover a key rollover and a cross-signature; a third is refused by name
    (an AuthError that is not NotTrusted: no other connection's CAs would change it)."""
    issues = [make_ca("candidates sub", issuer=ROOT, key=SUB.key).cert for _ in range(2)]
    leaf = make_cert(SUB, "leaf", san=["leaf.example.org"])
    chain = [leaf.cert, SUB.cert, *issues]
    assert len(set(chain)) == 4
    with pytest.raises(AuthError, match=r"3 CA certificates named CN=candidates sub.*at most 2") as refused:
        certs.verify_peer(chain, [ROOT.cert], NOW, Identity.parse("leaf.example.org"))
    assert not isinstance(refused.value, certs.NotTrusted)
    certs.verify_peer(chain[:3], [ROOT.cert], NOW, Identity.parse("leaf.example.org"))   # two: fine


def test_names_times_subtrees_are_bounded_though_each_certificate_is_within_bounds() -> None:
    """64 subtrees over a leaf of 64 names: 4096 comparisons, taken; one more subtree on the way (a
    lower CA's one) is refused before the path is built."""
    inter = _constrained("candidates constrained", ROOT, certs.MAX_SUBTREES)
    leaf = make_cert(inter, "many", san=_names(certs.MAX_NAMES))
    certs.verify_peer([leaf.cert, inter.cert], [ROOT.cert], NOW, Identity.parse("h0.example.org"))
    lower = _constrained("candidates lower", inter, 1)
    lower_leaf = make_cert(lower, "many", san=_names(certs.MAX_NAMES))
    with pytest.raises(AuthError, match="65 name-constraint subtrees over 64 subjectAltNames"):
        certs.verify_peer([lower_leaf.cert, lower.cert, inter.cert], [ROOT.cert], NOW,
                          Identity.parse("h0.example.org"))


def test_an_honest_name_constrained_ca_still_constrains() -> None:
    inter = _constrained("candidates honest", ROOT, 3)
    good = make_cert(inter, "good", san=["vpn.example.org", "1.example.org"])
    certs.verify_peer([good.cert, inter.cert], [ROOT.cert], NOW, Identity.parse("vpn.example.org"))
    bad = make_cert(inter, "bad", san=["vpn.example.com"])
    with pytest.raises(certs.NotTrusted):
        certs.verify_peer([bad.cert, inter.cert], [ROOT.cert], NOW, Identity.parse("vpn.example.com"))


def test_the_eap_tls_handshake_refuses_a_certificate_of_too_many_names() -> None:
    """OpenSSL compares the chain's names with its constraints in the handshake too: its callback
    refuses what verify_peer would, before that: an intermediate's names, or the client's own below
    a name constraint (``capped``; review revcert3 F2: without one they cost nothing)."""
    many = make_cert(ROOT, "many", san=_names(certs.MAX_NAMES + 1))
    assert tls._cert_refused(crypto.X509.from_cryptography(many.cert), capped=True) == (
        f"certificate CN=many,O=tunsec test,C=CH has {certs.MAX_NAMES + 1} subjectAltNames (at most {certs.MAX_NAMES})")
    assert tls._cert_refused(crypto.X509.from_cryptography(many.cert)) is None
    assert tls._cert_refused(crypto.X509.from_cryptography(SUB.cert), capped=True) is None


def test_a_repeated_extension_is_a_refusal_not_a_traceback() -> None:
    """Its names are read before the path is built: cryptography raises DuplicateExtension (no ValueError)."""
    leaf = make_cert(ROOT, "twice", san=["twice.example.org"],
                     extensions=[(x509.IssuerAlternativeName([x509.DNSName("x.example.org")]), False)])
    der = leaf.cert.public_bytes(Encoding.DER)
    issuer_alt_name, san = bytes([6, 3, 0x55, 0x1D, 0x12]), bytes([6, 3, 0x55, 0x1D, 0x11])
    twice = x509.load_der_x509_certificate(der.replace(issuer_alt_name, san))
    with pytest.raises(AuthError, match=r"unusable: Duplicate 2\.5\.29\.17 extension"):
        certs.verify_peer([twice], [ROOT.cert], NOW, Identity.parse("twice.example.org"))


def test_a_root_sent_along_is_left_out_a_link_of_another_key_kept() -> None:
    """Self-signed (the root itself, sent along) is no anchor of ours; self-issued under another key
    (the root's new key signed by its old one, RFC 4158 NewWithOld) may be on the path (review
    revcertfix F2)."""
    new_root = make_ca("candidates root")   # ROOT's name, a new key
    link = (x509.CertificateBuilder().subject_name(ROOT.cert.subject).issuer_name(ROOT.cert.subject)
            .public_key(new_root.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ROOT.key, hashes.SHA256()))
    under_new = make_ca("candidates new sub", issuer=new_root)
    leaf = make_cert(under_new, "leaf", san=["leaf.example.org"])
    assert certs._path_candidates([leaf.cert, under_new.cert, ROOT.cert, link, new_root.cert],
                                  [ROOT.cert]) == [under_new.cert, link]
