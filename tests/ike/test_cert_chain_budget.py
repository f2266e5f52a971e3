"""Review revfrag F1: an unauthenticated peer's certificate chain makes the gateway exhaust the
chain builder's whole signature budget.

``certs.verify_peer`` hands every certificate the peer sent to cryptography's path builder before
anything is proven (IKE_AUTH: before the AUTH signature is checked; EAP-TLS: up to 16 KiB of
client chain). Two self-issued "intermediates" with one subject and one key (each verifies under
the other's key) give the builder a branching loop it explores until cryptography's own cap on
signature checks (~100-150) stops it: each IKE_AUTH of anyone who ran IKE_SA_INIT then costs that
many signature verifications with keys of the attacker's choice (RSA up to 16384 bits), where an
honest chain of n certificates costs n. The assertion is on what the verifier says, not on time:
on main the refusal is "Exceeded maximum signature check limit".
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tunsec.ike.auth import AuthError
from tunsec.ike.certs import verify_peer
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
CA = make_ca("revfrag trusted CA")
GW = make_cert(CA, "gw", san=["gw.example"])
LOOP_NAME = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "revfrag loop")])
BUDGET = "maximum signature check limit"


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(LOOP_NAME)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(signer, hashes.SHA256())


def _looping_chain(intermediates: int = 2) -> tuple[Issued, tuple[x509.Certificate, ...]]:
    """A leaf and ``intermediates`` self-issued CA certificates of one name and one key: none reaches
    the trusted CA, every one verifies under every other's key."""
    loop_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mallory")])
    leaf = _cert(subject, leaf_key, loop_key, ca=False)
    return Issued(leaf, leaf_key), tuple(_cert(LOOP_NAME, loop_key, loop_key, ca=True) for _ in range(intermediates))


def test_an_untrusted_chain_is_refused_before_the_signature_budget_is_spent() -> None:
    leaf, loop = _looping_chain()
    with pytest.raises(AuthError) as refused:
        verify_peer([leaf.cert, *loop], [CA.cert], NOW, Identity.from_name(leaf.cert.subject))
    # three certificates, none issued by the CA: at most a few signature checks decide that
    assert BUDGET not in str(refused.value), refused.value


def test_an_unauthenticated_initiator_cannot_make_the_gateway_spend_the_budget() -> None:
    """The same through the engine: IKE_SA_INIT, then an IKE_AUTH whose CERT payloads are that chain
    (the AUTH signature is never looked at: the chain is refused first)."""
    leaf, loop = _looping_chain()
    failed = gateway_refusals(leaf, loop, CA, GW)
    assert failed, "the gateway refused nothing"
    assert BUDGET not in failed[0].reason, failed[0].reason


def gateway_refusals(peer: Issued, chain: tuple[x509.Certificate, ...], ca: Issued,
                     gw: Issued) -> list[AuthFailed]:
    """An initiator authenticating with ``peer`` and its CERT payloads ``chain`` against a gateway
    (certificate ``gw``) trusting ``ca``: the gateway's AuthFailed events."""
    mallory = IkeConfig(
        "c", LocalAuth("pubkey", Identity.from_name(peer.cert.subject), peer.cert, chain, peer.key),
        RemoteAuth("pubkey", Identity.parse("gw.example"), (ca.cert,)),
        parse_proposals("aes128-sha256-ecp256"), (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),),
        local_addr="192.0.2.1", remote_addr="192.0.2.2", send_cert="always")
    gateway = IkeConfig(
        "c", LocalAuth("pubkey", Identity.parse("gw.example"), gw.cert, (), gw.key),
        RemoteAuth("pubkey", Identity.any(), (ca.cert,)),
        parse_proposals("aes128-sha256-ecp256"), (child_config("net", "10.2.0.0/16", "10.1.0.0/16", "aes128gcm16"),),
        local_addr="192.0.2.2", send_cert="always")
    net = Network()
    a = net.add("192.0.2.1", IkeEndpoint([mallory], wall_clock=lambda: NOW))
    net.add("192.0.2.2", IkeEndpoint([gateway], wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    return [ev for _, ev in net.events["192.0.2.2"] if isinstance(ev, AuthFailed)]
