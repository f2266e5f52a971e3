"""The responder's connection chosen by the CA that trusts the peer's certificate (ike_auth_cas.py).

test_engine_cert_two_cas.py shows the choice (a contractor lands in "contractors", staff stay
in "staff"); here what it must not do: try one CA set twice, try again after a refusal that is
not about trust, count a chain no connection trusts more than once, or move the peer to a
connection that authenticates us otherwise than the one whose IDr and AUTH it gets; and, since
the chain is built once with all their CAs (review revcertfix F1), the connection it lands in
is still the first whose CAs trust it, and holds the CA it verified to (IkeSaUp.peer_anchor).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

import pytest
from cryptography import x509
from test_engine_cert_two_cas import CLIENT, CONTRACTORS_CA, GATEWAY, GW, NOW, STAFF_CA, _client, _gateway_conn

from tunsec.ike import certs
from tunsec.ike.config import IkeConfig, LocalAuth
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp
from tunsec.ike.exchanges import ike_auth_cas
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Issued, Network, make_ca, make_cert

OUTSIDERS_CA = make_ca("ca choice outsiders CA")


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The CA sets the gateway verified a chain with, by their subjects, in order."""
    seen: list[tuple[str, ...]] = []

    def spy(chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate], when: datetime.datetime,
            peer_id: Identity) -> certs.VerifiedPeer:
        seen.append(tuple(ca.subject.rfc4514_string() for ca in cas))
        return certs.verify_peer(chain, cas, when, peer_id)
    monkeypatch.setattr(ike_auth_cas, "verify_peer", spy)
    return seen


def _connect(me: Issued, ident: str, gateway: Sequence[IkeConfig]) -> list[tuple[str, object]]:
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([_client(me, ident, "10.9.0.0/16")], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint(list(gateway), wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    return [(sa.name, ev) for sa, ev in net.events[GATEWAY]]


def _staff_contractors() -> list[IkeConfig]:
    return [_gateway_conn("staff", STAFF_CA, "10.1.0.0/16"), _gateway_conn("staff-lab", STAFF_CA, "10.2.0.0/16"),
            _gateway_conn("contractors", CONTRACTORS_CA, "10.9.0.0/16")]


def test_a_chain_no_connection_trusts_fails_once_built_once(tried: list[tuple[str, ...]]) -> None:
    eve = make_cert(OUTSIDERS_CA, "eve", san=["eve@outside.example"])
    events = _connect(eve, "eve@outside.example", _staff_contractors())
    failed = [(name, ev) for name, ev in events if isinstance(ev, AuthFailed)]
    assert len(failed) == 1 and failed[0][0] == "staff", events   # in the first's name, counted once
    assert "not trusted" in failed[0][1].reason
    assert not [ev for _, ev in events if isinstance(ev, IkeSaUp)]
    # one build, with the CAs of all three (staff and staff-lab share theirs: once), best first
    # (review revcertfix F1: one path build per IKE_AUTH however many CA sets)
    assert tried == [(STAFF_CA.cert.subject.rfc4514_string(), CONTRACTORS_CA.cert.subject.rfc4514_string())]


def test_a_refusal_other_than_trust_ends_the_search(tried: list[tuple[str, ...]]) -> None:
    """A staff certificate that does not certify the identity sent: the staff CAs trust it, the
    refusal is about the certificate itself, and no other CA set would change that."""
    alice = make_cert(STAFF_CA, "alice", san=["alice@staff.example"])
    events = _connect(alice, "mallory@staff.example", _staff_contractors())
    failed = [ev for _, ev in events if isinstance(ev, AuthFailed)]
    assert len(failed) == 1 and "does not certify" in failed[0].reason, events
    assert len(tried) == 1


def test_a_connection_with_other_own_credentials_is_not_taken() -> None:
    """The contractors' connection authenticates the gateway with another certificate: the
    client gets the IDr and AUTH of the connection chosen by its identities, so its CA does not
    move it there (as after EAP, ike_auth._after_eap)."""
    gw2 = make_cert(STAFF_CA, "gw2", san=["gw.example"])
    contractors = _gateway_conn("contractors", CONTRACTORS_CA, "10.9.0.0/16")
    contractors = dataclasses.replace(contractors, local=LocalAuth(
        "pubkey", Identity.parse("gw.example"), gw2.cert, (), gw2.key))
    assert contractors.local.cert != GW.cert
    bob = make_cert(CONTRACTORS_CA, "bob", san=["bob@contractors.example"])
    events = _connect(bob, "bob@contractors.example", [_gateway_conn("staff", STAFF_CA, "10.1.0.0/16"), contractors])
    assert [name for name, ev in events if isinstance(ev, AuthFailed)] == ["staff"], events
    assert not [ev for _, ev in events if isinstance(ev, IkeSaUp)]


ROOT = make_ca("ca choice corporate root")
SUB = make_ca("ca choice department sub-CA", issuer=ROOT)


def _root_then_sub() -> list[IkeConfig]:
    """"corporate" trusts the root, "department" (ranked after it) the sub-CA the root issued."""
    return [_gateway_conn("corporate", ROOT, "10.1.0.0/16"), _gateway_conn("department", SUB, "10.9.0.0/16")]


def _up(events: list[tuple[str, object]]) -> list[tuple[str, bytes | None]]:
    return [(name, ev.peer_anchor) for name, ev in events if isinstance(ev, IkeSaUp)]


def test_a_chain_through_the_sub_ca_it_sent_lands_where_the_root_is_trusted() -> None:
    """As when each CA set was tried in turn: the first connection's root trusts the chain
    leaf <- sub-CA, although the path builder, given both, finds the sub-CA in its store first.
    The anchor kept is the root, a CA of the connection taken (services/ike/revoked.py)."""
    dan = make_cert(SUB, "dan", san=["dan@dept.example"])
    events = _connect_sending(dan, "dan@dept.example", (SUB.cert,), _root_then_sub())
    assert _up(events) == [("corporate", certs.ca_fingerprint(ROOT.cert))], events


def test_a_leaf_alone_of_the_sub_ca_lands_where_the_sub_ca_is_trusted(tried: list[tuple[str, ...]]) -> None:
    dan = make_cert(SUB, "dan", san=["dan@dept.example"])
    events = _connect_sending(dan, "dan@dept.example", (), _root_then_sub())
    assert _up(events) == [("department", certs.ca_fingerprint(SUB.cert))], events
    # the gateway's builds (the client's of the gateway's chain use the staff CA alone): one, as a
    # leaf alone reaches one anchor
    assert [cas for cas in tried if cas != (STAFF_CA.cert.subject.rfc4514_string(),)] == [
        (ROOT.cert.subject.rfc4514_string(), SUB.cert.subject.rfc4514_string())]


def _connect_sending(me: Issued, ident: str, chain: tuple[x509.Certificate, ...],
                     gateway: Sequence[IkeConfig]) -> list[tuple[str, object]]:
    client = _client(me, ident, "10.9.0.0/16")
    client = dataclasses.replace(client, local=dataclasses.replace(client.local, intermediates=chain))
    net = Network()
    a = net.add(CLIENT, IkeEndpoint([client], wall_clock=lambda: NOW))
    net.add(GATEWAY, IkeEndpoint(list(gateway), wall_clock=lambda: NOW))
    a.initiate("c", "net", net.now)
    net.run()
    return [(sa.name, ev) for sa, ev in net.events[GATEWAY]]
