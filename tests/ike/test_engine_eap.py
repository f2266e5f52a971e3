"""EAP-MSCHAPv2 in IKE_AUTH (RFC 7296 §2.16): a client engine against a gateway engine."""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from typing import TypeVar

import pytest

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, Event, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network, Sent, make_ca, make_cert
from tunsec.policy.pools import AddressPools, PoolConfig

A, B = "192.0.2.1", "192.0.2.2"
E = TypeVar("E")
CA = make_ca()
GW = make_cert(CA, "sun", san=["sun.example"])
# the certificates' validity is checked against this, not the machine's date: the test certificates
# (make_cert: EPOCH + 365 days) run out on 2027-01-01
NOW = GW.cert.not_valid_before_utc + datetime.timedelta(days=30)
USERS = (EapSecret(("alice",), Secret(b"Alice-pw-1")), EapSecret(("bob",), Secret(b"Bob-pw-2")))


def gateway(eap_id: str = "%any") -> IkeConfig:
    child = child_config("net", "10.2.0.0/16", "10.1.0.0/16")
    return IkeConfig("gw", LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert, private_key=GW.key),
                     RemoteAuth("eap-mschapv2", Identity.any(), eap_id=eap_id), parse_proposals("default"),
                     (child,), eap_secrets=USERS, local_addr=B)


def client(user: str = "alice", password: bytes = b"Alice-pw-1", ike_id: str = "moon.example") -> IkeConfig:
    child = child_config("net", "10.1.0.0/16", "10.2.0.0/16")
    return IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse(ike_id), eap_id=user),
                     RemoteAuth("pubkey", Identity.parse("sun.example"), cas=(CA.cert,)),
                     parse_proposals("default"), (child,), eap_secrets=(EapSecret((user,), Secret(password)),),
                     local_addr=A, remote_addr=B)


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def run(cli: IkeConfig, gw: IkeConfig) -> tuple[Network, IkeEndpoint, IkeEndpoint, list[Event], list[Event]]:
    net = Network()
    a = net.add(A, IkeEndpoint([cli], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([gw], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run()
    return net, a, b, net.take(A), net.take(B)


def _ike_auth_count(net: Network) -> int:
    return sum(1 for s in net.log if decode_header(s.data).exchange == ExchangeType.IKE_AUTH)


def test_eap_identity_then_mschapv2_brings_up_the_child_sa() -> None:
    net, a, b, ev_a, ev_b = run(client(), gateway("%any"))
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp]
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp]
    ca, cb = ev_a[1], ev_b[1]
    assert isinstance(ca, ChildSaUp) and isinstance(cb, ChildSaUp)
    assert ca.key_in == cb.key_out and (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    up_b = ev_b[0]
    # IDi moon.example is not what EAP proved: the gateway knows the client as its EAP identity
    assert isinstance(up_b, IkeSaUp) and str(up_b.remote_id) == "alice"
    # Identity, MSCHAPv2 challenge, MSCHAPv2 success, EAP-Success, AUTH: 5 requests, 5 responses
    assert _ike_auth_count(net) == 10
    assert len(a.sas) == 1 and len(b.sas) == 1


def test_eap_without_identity_round_uses_the_ike_identity() -> None:
    net, _, _, ev_a, ev_b = run(client("bob", b"Bob-pw-2", ike_id="bob"), gateway(""))
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp]
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp]
    assert _ike_auth_count(net) == 8


def _refused(cli: IkeConfig, why: str) -> None:
    _, a, b, ev_a, ev_b = run(cli, gateway())
    fa, fb = only(ev_a, AuthFailed), only(ev_b, AuthFailed)
    assert len(fb) == 1 and not fb[0].by_peer and why in fb[0].reason
    assert len(fa) == 1 and fa[0].by_peer
    assert not only(ev_a, IkeSaUp) and not only(ev_b, IkeSaUp) and not only(ev_b, ChildSaUp)
    assert not a.sas and not b.sas  # nothing left behind on either side
    for ev in ev_a + ev_b:  # neither password nor its hash in what gets logged
        assert "pw" not in repr(ev)


def test_wrong_password_is_refused_and_nothing_stays() -> None:
    _refused(client(password=b"Alice-pw-X"), "wrong EAP-MSCHAPv2 password")


def test_unknown_user_is_refused_and_nothing_stays() -> None:
    _refused(client(user="mallory", password=b"Mallory-pw"), "unknown EAP user")


def test_client_gives_up_on_a_gateway_that_never_ends_eap(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunsec.ike.eap.mschapv2 import EapAuthenticator
    from tunsec.ike.eap.packet import EapCode, EapPacket, EapType

    endless = EapPacket(EapCode.REQUEST, 7, EapType.IDENTITY).encode()

    def process(self: EapAuthenticator, raw: bytes) -> tuple[bytes, None]:
        return endless, None  # asks for the identity again and again

    monkeypatch.setattr(EapAuthenticator, "process", process)
    _, a, _, ev_a, _ = run(client(), gateway())
    (fa,) = only(ev_a, AuthFailed)
    assert "more than 8 requests" in fa.reason and not fa.by_peer
    assert not a.sas and not only(ev_a, IkeSaUp)


def test_a_client_claiming_another_users_ike_identity_gets_neither_its_address_nor_its_sa() -> None:
    """eap_id = %any: EAP proves the EAP identity, not IDi. bob is up with a pool address; alice
    (her own password) claims IDi "bob" with INITIAL_CONTACT. She is known as alice: her own
    address, and bob's IKE SA stays (INITIAL_CONTACT only replaces SAs of the same identity)."""
    net, b, pool = _two_pool_clients((A, "bob", b"Bob-pw-2"), ("192.0.2.3", "alice", b"Alice-pw-1"))
    ups = only(net.take(B), IkeSaUp)
    assert [(str(u.remote_id), [str(v) for v in u.peer_vips]) for u in ups] == [
        ("bob", ["10.3.0.1"]), ("alice", ["10.3.0.2"])]
    assert len(b.sas) == 2 and all(not sa.is_closed for sa in b.sas)
    assert sorted((lease.identity, str(lease.address)) for lease in pool.leases()) == [
        ("alice", "10.3.0.2"), ("bob", "10.3.0.1")]


def test_an_eap_user_name_in_another_case_finds_its_secret() -> None:
    """"ALICE" is alice (a name regardless of ASCII case, as strongSwan's identities and the
    proven identity): her password lets her in, another does not."""
    _, _, _, _, ev_b = run(client("ALICE", b"Alice-pw-1"), gateway())
    ups = only(ev_b, IkeSaUp)
    assert len(ups) == 1 and ups[0].remote_id == Identity.of_user(b"alice")
    _refused(client("ALICE", b"Bob-pw-2"), "wrong EAP-MSCHAPv2 password")


def test_a_connection_naming_the_client_that_wants_another_auth_method_is_passed_by() -> None:
    """The gateway has the EAP connection of %any first and, after it, one naming moon.example
    that wants a PSK.  The client (IDi moon.example) asks for EAP (no AUTH): it stays on the EAP
    connection, whose way of authenticating it fits, and comes up; the named one would refuse it."""
    named = IkeConfig("moon", LocalAuth("psk", Identity.parse("sun.example")),
                      RemoteAuth("psk", Identity.parse("moon.example")), parse_proposals("default"),
                      (child_config("net", "10.2.0.0/16", "10.1.0.0/16"),), psk=Secret(b"moon-psk"), local_addr=B)
    net = Network()
    a = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
    net.add(B, IkeEndpoint([gateway(), named], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run()
    ups = only(net.take(B), IkeSaUp)
    assert [(u.name, str(u.remote_id)) for u in ups] == [("gw", "alice")]
    assert only(net.take(A), IkeSaUp)


def test_eap_user_names_that_parse_alike_are_still_two_users() -> None:
    """"@alice" would parse as the FQDN identity alice: the gateway keeps the user name as it is."""
    users = (EapSecret(("alice",), Secret(b"Alice-pw-1")), EapSecret(("@alice",), Secret(b"At-alice-pw")))
    net, b, pool = _two_pool_clients((A, "alice", b"Alice-pw-1"), ("192.0.2.3", "@alice", b"At-alice-pw"),
                                     users=users)
    assert [str(u.remote_id) for u in only(net.take(B), IkeSaUp)] == ["alice", "@alice"]
    assert len(b.sas) == 2 and sorted(str(lease.address) for lease in pool.leases()) == ["10.3.0.1", "10.3.0.2"]


def _two_pool_clients(*clients: tuple[str, str, bytes], users: tuple[EapSecret, ...] = USERS,
                      ) -> tuple[Network, IkeEndpoint, AddressPools]:
    """A gateway (eap_id = %any) with a pool, and clients (address, EAP user, password) that all
    claim IDi "bob", one after the other; each asks for a virtual IP."""
    pool = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    gw = dataclasses.replace(gateway("%any"), pools=("v4",), eap_secrets=users,
                             children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    net = Network()
    b = net.add(B, IkeEndpoint([gw], address_pool=pool, wall_clock=lambda: NOW))
    for addr, user, password in clients:
        cli = dataclasses.replace(client(user, password, ike_id="bob"), local_addr=addr,
                                  vips=(ipaddress.ip_address("0.0.0.0"),),
                                  children=(child_config("net", "dynamic", "10.2.0.0/16"),))
        net.add(addr, IkeEndpoint([cli], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
        net.run(until=net.now + 5)
    return net, b, pool


def test_the_gateway_keeps_of_the_first_request_only_what_the_last_round_answers() -> None:
    """While EAP runs (the SA half-open) the gateway holds of the first IKE_AUTH request its IDr,
    SA, TS and MOBIKE_SUPPORTED, not its CERTREQ, vendor IDs or other notifies; the last round
    still answers from them: the Child SA comes up, and MOBIKE with it."""
    from tunsec.ike.constants import NotifyType
    from tunsec.ike.exchanges.ike_auth_eap import answered_last
    from tunsec.ike.message import (
        CertReqPayload,
        IdPayload,
        NotifyPayload,
        SaPayload,
        TsPayload,
        VendorIdPayload,
        decode_message,
    )

    first = (IdPayload(True, 2, b"moon.example"), CertReqPayload(4, bytes(20) * 50), IdPayload(False, 2, b"sun"),
             NotifyPayload(NotifyType.INITIAL_CONTACT), NotifyPayload(40000, bytes(3000)), VendorIdPayload(bytes(900)),
             NotifyPayload(NotifyType.MOBIKE_SUPPORTED), SaPayload(()), TsPayload(True, ()), TsPayload(False, ()))
    assert [type(p) for p in answered_last(first)] == [IdPayload, NotifyPayload, SaPayload, TsPayload, TsPayload]
    assert [p.initiator for p in answered_last(first) if isinstance(p, IdPayload)] == [False]

    net = Network()
    a = net.add(A, IkeEndpoint([dataclasses.replace(client(), mobike=True)]))
    b = net.add(B, IkeEndpoint([dataclasses.replace(gateway(), mobike=True)]))
    held: list[bytes] = []

    def second_round(sent: Sent) -> bool:   # the client's answer to the first EAP request waits
        header = decode_header(sent.data)
        if sent.src[0] == A and header.exchange == ExchangeType.IKE_AUTH and header.message_id == 2:
            held.append(sent.data)
            return True
        return False
    a.initiate("rw", "net", net.now)
    net.drop = second_round
    net.run(until=0.5)
    (sa,) = b.sas
    kept = sa._st.eap.request if sa._st.eap is not None else None
    assert kept is not None and b.half_open == 1
    assert {type(p) for p in kept} <= {IdPayload, NotifyPayload, SaPayload, TsPayload}
    assert all(p.type == NotifyType.MOBIKE_SUPPORTED for p in kept if isinstance(p, NotifyPayload))
    assert any(isinstance(p, SaPayload) for p in kept) and decode_message(held[0]).message_id == 2
    net.drop = None
    net.run()
    ev_b = net.take(B)
    assert [type(e) for e in ev_b] == [IkeSaUp, ChildSaUp]
    assert b.sas[0]._st.mobike and a.sas[0]._st.mobike
