"""Review revcertfix F3: an unauthenticated peer's certificates make each IKE_AUTH cost
~0.2 s of the control process in name-constraint checks, whatever h/fixcerts bounds.

h/fixcerts bounds a chain by its number of certificates (8) and its keys' sizes, so that the path
builder does at most a few signature checks. Name constraints are not bounded: cryptography's
builder compares every subjectAltName of the certificates below an intermediate with every
subtree of that intermediate's nameConstraints, up to its own cap of 2^20 comparisons a
verification. The peer owns every key of its chain, so every signature it needs verifies:

- an intermediate I1 with 500 excluded subtrees ("a.x", repeated) and a leaf with 800 DNS SANs
  ("b.y", repeated) fit in 8.4 KB, under MAX_IKE_MESSAGE (10,000 bytes);
- no CA's name is needed: I1 says it was issued by I2 and I2 by I1, so certs._path_candidates
  keeps both (each one's issuer is "another sent certificate"; neither is self-issued), and the
  builder goes round I1 -> I2 -> I1 evaluating the constraints again at each step until the cap:
  "Exceeded maximum name constraint check limit", ~180 ms a verification on the review machine,
  before the AUTH payload is looked at;
- F5 (ike_auth_cas.verified_key) then does it again for each alike connection's CA set;
- an EAP-TLS client's chain goes through the same verify_peer after its handshake (up to 16 KiB).

At ~5 such IKE_AUTHs a second the control process (one thread) does nothing else: every peer's
IKE waits. The assertions are on what the verifier says and on whether the path builder was
handed the chain, not on time.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from test_cert_chain_budget import gateway_refusals
from test_eap_tls import converse, server
from test_eap_tls_chain_bounds import _peer

from tunsec.ike import certs
from tunsec.ike.auth import AuthError
from tunsec.ike.constants import MAX_IKE_MESSAGE
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
CA = make_ca("revcertfix NC trusted CA")
GW = make_cert(CA, "gw", san=["gw.example"])
BUDGET = "name constraint check limit"
SUBTREES, SANS = 500, 800


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


def _ca(key: ec.EllipticCurvePrivateKey, subject: str, issuer: x509.Name, constrained: bool) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if constrained:
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[x509.DNSName("a.x")] * SUBTREES),
            critical=True)
    return builder.sign(key, hashes.SHA256())


def _chain(top_issuer: x509.Name | None) -> tuple[Issued, tuple[x509.Certificate, ...]]:
    """A leaf of SANS DNS names under I1 (SUBTREES excluded subtrees), one key of the peer's for all.
    I1's issuer: ``top_issuer``, or else I2, sent too, whose issuer is I1 (a loop of names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("mallory")).issuer_name(_name("I1"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("b.y")] * SANS), critical=False)
            .sign(key, hashes.SHA256()))
    if top_issuer is not None:
        return Issued(leaf, key), (_ca(key, "I1", top_issuer, True),)
    return Issued(leaf, key), (_ca(key, "I1", _name("I2"), True), _ca(key, "I2", _name("I1"), False))


def _size(certs_: Sequence[x509.Certificate]) -> int:
    return sum(len(c.public_bytes(Encoding.DER)) for c in certs_)


def test_a_name_loop_does_not_spend_the_name_constraint_budget() -> None:
    leaf, chain = _chain(None)
    assert _size([leaf.cert, *chain]) < MAX_IKE_MESSAGE - 1000   # fits one IKE_AUTH
    with pytest.raises(AuthError) as refused:
        certs.verify_peer([leaf.cert, *chain], [CA.cert], NOW, Identity.from_name(leaf.cert.subject))
    assert BUDGET not in str(refused.value), refused.value


def test_name_constraints_times_names_are_bounded_before_the_path_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """I1 claims the CA's name (kept by the pruning, rank 0): 400,000 comparisons, under the cap,
    ~45 ms. A chain whose constraints cost that should be refused before the builder gets it."""
    built: list[int] = []
    original = certs._policy_builder

    def spy(cas: Sequence[x509.Certificate], when: datetime.datetime) -> object:
        built.append(len(cas))
        return original(cas, when)
    monkeypatch.setattr(certs, "_policy_builder", spy)
    leaf, chain = _chain(CA.cert.subject)
    with pytest.raises(AuthError):
        certs.verify_peer([leaf.cert, *chain], [CA.cert], NOW, Identity.from_name(leaf.cert.subject))
    assert not built, f"a chain of {SUBTREES} name-constraint subtrees over {SANS} names went to the path builder"


def test_through_ike_auth_the_budget_is_not_spent() -> None:
    """The same chain in an IKE_AUTH's CERT payloads: the gateway's refusal."""
    leaf, chain = _chain(None)
    failed = gateway_refusals(leaf, chain, CA, GW)
    assert failed, "the gateway refused nothing"
    assert BUDGET not in failed[0].reason, failed[0].reason


def test_an_eap_tls_client_does_not_spend_the_budget_either() -> None:
    leaf, chain = _chain(None)
    result = converse(server(), _peer(leaf, chain))
    assert not result.ok
    assert result.reason is not None and BUDGET not in result.reason, result.reason
