"""Review revcertfix F1: an unauthenticated peer's chain is still built once per CA set, each time
through every intermediate it sent, whether or not any of them can reach a configured CA.

Two parts of h/fixcerts multiply:

- certs._path_candidates keeps an intermediate whose issuer is the subject of *another sent
  intermediate*, even when that other one was itself left out (``names`` is every sent subject,
  not the kept ones). A peer's ``leaf <- I1 <- ... <- I7 <- (a name no CA has)`` keeps I1..I6: the
  path builder checks 6-7 signatures (with keys of the peer's choice, RSA up to 8192 bits:
  ~3.9 ms a chain on the review machine) before it finds I6 leads nowhere.
- exchanges/ike_auth_cas.verified_key verifies that chain again with each alike candidate's CA
  set (F5). N connections told apart by their cacerts (each trusting the corporate root and its
  own department's CA, a name the peer can use as the top's issuer: our own certificate names it)
  cost N path builds of 7 signature checks per IKE_AUTH, all before the AUTH payload is looked at.

The assertion counts the certificates handed to the path builder, not time.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tunsec.ike import certs
from tunsec.ike.auth import AuthError
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert

NOW = EPOCH + datetime.timedelta(days=30)
ROOT = make_ca("revcertfix corporate root")
DEPARTMENTS = [make_ca(f"revcertfix department {i}") for i in range(6)]
GW = make_cert(ROOT, "gw", san=["gw.example"])
PROPOSALS = parse_proposals("aes128-sha256-ecp256")
CLIENT, GATEWAY = "192.0.2.1", "192.0.2.2"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(EPOCH).not_valid_after(EPOCH + datetime.timedelta(days=3650)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(signer, hashes.SHA256())


def _forged_chain(top_issuer: x509.Name) -> tuple[Issued, tuple[x509.Certificate, ...]]:
    """A leaf and 7 intermediates I1..I7, each signed by the next (every signature valid, one key of
    the peer's), I7 claiming ``top_issuer``, which never signed it: no path reaches a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(_name("mallory"), _name("I1"), key, key, ca=False)
    chain = tuple(_cert(_name(f"I{i}"), _name(f"I{i + 1}") if i < 7 else top_issuer, key, key, ca=True)
                  for i in range(1, 8))
    return Issued(leaf, key), chain


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many intermediates each path build was given."""
    seen: list[int] = []
    original = certs._path_candidates

    def spy(chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        kept = original(chain, cas)
        seen.append(len(kept))
        return kept
    monkeypatch.setattr(certs, "_path_candidates", spy)
    return seen


def test_intermediates_that_lead_to_no_configured_ca_are_left_out(handed: list[int]) -> None:
    """I7's issuer is no CA's name, so I7 is left out, and then none of I6..I1 can be on a path to
    a CA either: the path builder should get none of them (on main it gets I1..I6)."""
    leaf, chain = _forged_chain(_name("nobody's CA"))
    with pytest.raises(AuthError):
        certs.verify_peer([leaf.cert, *chain], [ROOT.cert], NOW, Identity.from_name(leaf.cert.subject))
    assert handed == [0], f"the path builder was given {handed} intermediates that reach no CA"


def _department(i: int, ca: Issued) -> IkeConfig:
    return IkeConfig(
        f"dept{i}", LocalAuth("pubkey", Identity.parse("gw.example"), GW.cert, (), GW.key),
        RemoteAuth("pubkey", Identity.any(), (ROOT.cert, ca.cert)), PROPOSALS,
        (child_config("net", "10.0.0.0/16", f"10.{10 + i}.0.0/16", "aes128gcm16"),),
        local_addr=GATEWAY, send_cert="always")


def _connect(ident: Identity, me: Issued, chain: tuple[x509.Certificate, ...],
             net_of_client: str) -> list[tuple[str, object]]:
    """One client (``me``, sending ``chain``) against the six department connections: the gateway's
    (connection name, event) pairs."""
    client = IkeConfig(
        "c", LocalAuth("pubkey", ident, me.cert, chain, me.key),
        RemoteAuth("pubkey", Identity.parse("gw.example"), (ROOT.cert,)), PROPOSALS,
        (child_config("net", net_of_client, "10.0.0.0/16", "aes128gcm16"),),
        local_addr=CLIENT, remote_addr=GATEWAY, send_cert="always")
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([client], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint([_department(i, ca) for i, ca in enumerate(DEPARTMENTS)], wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    return [(sa.name, ev) for sa, ev in net.events[GATEWAY]]


def test_one_ike_auth_builds_the_path_once_however_many_ca_sets(handed: list[int]) -> None:
    """Six department connections (root + their own CA each) and a forged chain whose top claims
    the root: one IKE_AUTH of an unauthenticated peer should cost one chain's worth of signature
    checks (at most MAX_CERTS - 1 intermediates handed to the builder), not six."""
    leaf, chain = _forged_chain(ROOT.cert.subject)
    events = [ev for _, ev in _connect(Identity.from_name(leaf.cert.subject), leaf, chain, "10.10.0.0/16")]
    assert [ev for ev in events if isinstance(ev, AuthFailed)] and not [ev for ev in events if isinstance(ev, IkeSaUp)]
    assert sum(handed) <= certs.MAX_CERTS - 1, (
        f"one IKE_AUTH handed the path builder {sum(handed)} intermediates in {len(handed)} builds ({handed})")


def test_an_honest_department_client_still_lands_in_its_connection() -> None:
    """What a fix must keep (F5): a client of department 3's CA gets dept3."""
    bob = make_cert(DEPARTMENTS[3], "bob", san=["bob@dept3.example"])
    events = _connect(Identity.parse("bob@dept3.example"), bob, (), "10.13.0.0/16")
    assert [name for name, ev in events if isinstance(ev, IkeSaUp)] == ["dept3"]
