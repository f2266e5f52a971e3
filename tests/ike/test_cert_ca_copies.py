"""Review revcert3 F1 (its proofs, then a guard).

The union build of h/fixcerts2 lets one connection's copy of a CA stand in for
another connection's copy of the same CA (same name and key, other certificate), so a peer lands in
a connection whose configured CA does not trust its chain.

ike_auth_cas.verified_key builds the peer's path once against the CAs of all alike candidates and
then takes the first candidate "whose CAs hold the CA it verified to", compared by
certs.ca_fingerprint: SHA-256 of the CA's subject and key.  Two certificates of one CA's name and key
(a CA renewed with other extensions or validity: the old copy still configured for one connection,
the renewed one for another; or a name-constrained issue of a partner CA for one connection) have
one fingerprint but are different trust anchors to the path builder: the copy with the name
constraints (or the one that expired) refuses the chain, the other accepts it.  In the union the
builder ends at the accepting copy, the fingerprint names the first candidate, and the peer gets
that connection (its remote_ts, pools, privileges) although its own CA refused it.  Before
h/fixcerts2 each candidate's CAs were tried alone, and the module still says "the first that trusts
it is taken".  (A leaf alone: no second build; with intermediates the second build, with the
earlier candidates' CAs only, would refuse and keep the later one's choice -- but the leaf-only case
is the common one.)
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from test_engine_cert_two_cas import CLIENT, GATEWAY, GW, NOW, PROPOSALS, _client

from tunsec.ike import certs
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.testing import EPOCH, Issued, Network, make_ca, make_cert

PARTNER = make_ca("revcert3 partner CA")


def _copy(ca: Issued, until: datetime.datetime, constraints: x509.NameConstraints | None) -> x509.Certificate:
    """Another self-signed certificate of ``ca``'s name and key (a re-issue of the CA)."""
    builder = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(ca.cert.subject)
               .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(EPOCH - datetime.timedelta(days=400)).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder.sign(ca.key, hashes.SHA256())


# the first connection's copy of the partner CA: only the partner's staff.example mailboxes, or expired
CONSTRAINED = _copy(PARTNER, EPOCH + datetime.timedelta(days=3650),
                    x509.NameConstraints(permitted_subtrees=[x509.RFC822Name("staff.example")], excluded_subtrees=None))
EXPIRED = _copy(PARTNER, EPOCH, None)


def _conn(name: str, ca: x509.Certificate, client_net: str) -> IkeConfig:
    return IkeConfig(
        name, LocalAuth("pubkey", Identity.parse("gw.example"), GW.cert, (), GW.key),
        RemoteAuth("pubkey", Identity.any(), (ca,)), PROPOSALS,
        (child_config("net", "10.0.0.0/16", client_net, "aes128gcm16"),), local_addr=GATEWAY, send_cert="always")


@pytest.mark.parametrize("first_copy", [CONSTRAINED, EXPIRED], ids=["name-constrained", "expired"])
def test_a_chain_the_first_connections_ca_refuses_does_not_land_there(first_copy: x509.Certificate) -> None:
    bob = make_cert(PARTNER, "bob", san=["bob@contractors.example"])
    # what the first connection's CA says of the chain alone
    with pytest.raises(certs.NotTrusted):
        certs.verify_peer([bob.cert], [first_copy], NOW, Identity.parse("bob@contractors.example"))
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([_client(bob, "bob@contractors.example", "10.9.0.0/16")], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint([_conn("partner-staff", first_copy, "10.1.0.0/16"),
                                  _conn("partner-contractors", PARTNER.cert, "10.9.0.0/16")], wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    up = [sa.name for sa, ev in net.events[GATEWAY] if isinstance(ev, IkeSaUp)]
    assert up == ["partner-contractors"], f"the peer landed in {up}: its CA there does not trust its chain"


def test_a_chain_both_copies_trust_lands_in_the_first_connection() -> None:
    """Guard: the copy a path builds to does not choose; the first connection whose copy trusts the
    chain does (the second build, with the earlier connections' CAs, for a leaf alone too)."""
    bob = make_cert(PARTNER, "bob", san=["bob@contractors.example"])
    renewed = _copy(PARTNER, EPOCH + datetime.timedelta(days=3650), None)
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([_client(bob, "bob@contractors.example", "10.9.0.0/16")], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint([_conn("partner-staff", PARTNER.cert, "10.9.0.0/16"),
                                  _conn("partner-contractors", renewed, "10.9.0.0/16")], wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    assert [sa.name for sa, ev in net.events[GATEWAY] if isinstance(ev, IkeSaUp)] == ["partner-staff"]
