"""An EAP-TLS client's chain is bounded before OpenSSL checks its signatures (review revfrag F1).

The gateway's TLS server leaves the verdict to certs.verify_peer after the handshake, but OpenSSL
checks the signatures of whatever chain the client sent before that, each with the key of the one
above it: a client's Certificate message (16 KiB: a dozen RSA-3072 certificates whose exponents
make each check cost what a signature does) was checked in full. Now OpenSSL goes on only as deep
as verify_peer looks (MAX_CERTS) and only with keys verify_peer takes (tls._accept_for_now).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from OpenSSL import SSL
from test_cert_chain_bounds import _issue, _name, _rsa_with_exponent
from test_eap_tls import CA, Peer, _accept, converse, server

from tunsec.ike.certs import MAX_CERTS
from tunsec.ike.testing import Issued, make_ca, make_cert

ALICE = "alice@example.org"


def _peer(leaf: Issued, chain: Sequence[x509.Certificate]) -> Peer:
    """A client whose Certificate message carries ``chain`` after its own certificate."""
    peer = Peer(leaf, ALICE.encode())
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate(leaf.cert)
    ctx.use_privatekey(leaf.key)
    ctx.set_verify(SSL.VERIFY_PEER, _accept)
    for cert in chain:
        ctx.add_extra_chain_cert(cert)
    peer.tls = SSL.Connection(ctx, None)
    peer.tls.set_connect_state()
    return peer


def _ladder(length: int) -> list[Issued]:
    """``length`` intermediates under the trusted CA, the lowest first."""
    rungs = [CA]
    for i in range(length):
        rungs.append(make_ca(f"eap-tls rung {i}", issuer=rungs[-1]))
    return rungs[:0:-1]


def test_a_longer_chain_than_verify_peer_takes_is_refused_before_openssl_checks_it() -> None:
    rungs = _ladder(MAX_CERTS + 3)
    alice = make_cert(rungs[0], "alice", san=[ALICE])
    result = converse(server(), _peer(alice, [r.cert for r in rungs]))
    assert not result.ok
    assert result.reason == f"client certificate refused: client sent a chain of more than {MAX_CERTS} certificates"


def test_an_intermediate_with_a_huge_rsa_exponent_is_refused_before_its_key_is_used() -> None:
    key = _rsa_with_exponent(2000)
    sub = Issued(_issue(_name("eap-tls huge exponent"), CA, key.public_key()), key)
    alice = make_cert(sub, "alice", san=[ALICE])
    result = converse(server(), _peer(alice, [sub.cert]))
    assert not result.ok
    assert result.reason is not None and "exponent of more than 64 bits" in result.reason, result.reason


def test_a_chain_of_max_certs_with_the_root_sent_along_still_verifies() -> None:
    """Guard: the bound is verify_peer's own (the client's certificate, six intermediates, the root)."""
    rungs = _ladder(MAX_CERTS - 2)
    alice = make_cert(rungs[0], "alice", san=[ALICE])
    result = converse(server(), _peer(alice, [*(r.cert for r in rungs), CA.cert]))
    assert result.ok, result.reason
