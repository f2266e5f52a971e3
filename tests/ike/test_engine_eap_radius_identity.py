"""eap-radius: who a client is, for INITIAL_CONTACT, leases, ``unique`` and the selector claims.

With a tunnelled method (PEAP, TTLS) the RADIUS server authenticates the user inside the tunnel
and does not tie the EAP identity the client gave outside to it (FreeRADIUS's default): mallory,
with an account of her own, answers EAP-Identity "alice". The edge tells the engine whom the
Accept proved (tunsec.radius.proven, tested against a RADIUS server in tests/radius): the user its
User-Name names, or nobody; unproven, the EAP identity is this IKE SA's own and acts on no other
client's state. The backends here stand for the server and that verdict (``MschapBackend.users``):
the client's EAP-MSCHAPv2 plays the inner method, mallory's password checked for the name "alice".
"""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from test_engine_eap_groups import _status  # a gateway's one IKE SA as `tunsec status` shows it
from test_engine_eap_relay import A, B, MschapBackend, client, gateway, only, relay

from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, Event, IkeSaDown, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

C = "192.0.2.3"   # mallory's address
ANY4 = ipaddress.ip_address("0.0.0.0")


def road_warrior(password: bytes, addr: str, initial_contact: bool = True) -> IkeConfig:
    """A client whose EAP-Identity answer is "alice", asking for a virtual IP."""
    c = client("alice", password)
    return dataclasses.replace(c, local_addr=addr, vips=(ANY4,), initial_contact=initial_contact,
                               children=(child_config("net", "dynamic", "10.2.0.0/16"),))


def pool_gateway(net: Network) -> tuple[IkeEndpoint, AddressPools]:
    cfg = dataclasses.replace(gateway(), pools=("v4",), children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    return net.add(B, IkeEndpoint([cfg], address_pool=pools)), pools


def log_in(net: Network, gw: IkeEndpoint, addr: str, cfg: IkeConfig, backend: MschapBackend) -> IkeSaUp:
    """``cfg``'s client at ``addr`` comes up at the gateway: its IkeSaUp there."""
    node = net.nodes.get(addr) or net.add(addr, IkeEndpoint([cfg]))
    node.initiate("rw", "net", net.now)
    relay(net, gw, backend, until=net.now + 20.0)
    (up,) = only(net.take(B), IkeSaUp)
    assert up.remote_addr[0] == addr
    return up


def gateway_sa(gw: IkeEndpoint, addr: str) -> IkeSa:
    (sa,) = [s for s in gw.sas if s.remote_addr[0] == addr and not s.is_closed]
    return sa


def alice_then_mallory(alice_is: bytes | None, mallory_is: bytes | None) -> tuple[IkeEndpoint, IkeSaUp, IkeSaUp,
                                                                                  list[Event]]:
    """alice, then mallory with EAP identity "alice": each proven the user the edge says (None: unproven)."""
    net = Network()
    gw, _ = pool_gateway(net)
    alice_backend = MschapBackend({b"alice": "Alice-pw-1"}, users={b"alice": alice_is})
    mallory_backend = MschapBackend({b"alice": "Mallory-pw"}, users={b"alice": mallory_is})
    alice = log_in(net, gw, A, road_warrior(b"Alice-pw-1", A), alice_backend)
    node = net.add(C, IkeEndpoint([road_warrior(b"Mallory-pw", C)]))
    node.initiate("rw", "net", net.now)
    events = relay(net, gw, mallory_backend, until=net.now + 20.0)
    later = [ev for _, ev in events]
    (mallory,) = only(later, IkeSaUp)
    assert mallory.initial_contact   # it says it has no other SA with us: drop "its" old ones
    return gw, alice, mallory, later


def test_the_accepts_user_name_is_the_peer_and_leaves_alices_sa_and_address_alone() -> None:
    gw, alice, mallory, later = alice_then_mallory(b"alice", b"mallory")
    assert mallory.remote_id == Identity.of_user(b"mallory") and str(mallory.remote_id) == "mallory"
    assert gateway_sa(gw, C).peer_id == Identity.of_user(b"mallory")
    assert not only(later, IkeSaDown)
    assert gateway_sa(gw, A).peer_id == alice.remote_id == Identity.of_user(b"alice")
    assert alice.peer_vips and mallory.peer_vips and set(alice.peer_vips).isdisjoint(mallory.peer_vips)
    # status shows the user RADIUS named as the EAP identity
    assert mallory.peer_eap is not None and mallory.peer_eap.user == b"mallory"


@pytest.mark.parametrize("alice_proven", [True, False])
def test_an_accept_without_user_name_drops_no_sa_and_shares_no_lease(alice_proven: bool) -> None:
    gw, alice, mallory, later = alice_then_mallory(b"alice" if alice_proven else None, None)
    assert not only(later, IkeSaDown)   # INITIAL_CONTACT dropped nothing
    assert len([s for s in gw.sas if not s.is_closed]) == 2
    # shown by the name the client gave, but the peer of its own IKE SA only
    assert str(mallory.remote_id) == "alice" and mallory.remote_id != alice.remote_id
    assert alice.peer_vips and mallory.peer_vips and set(alice.peer_vips).isdisjoint(mallory.peer_vips)


def test_a_proven_eap_identity_is_the_peer_as_before() -> None:
    """EAP-MSCHAPv2 (its server checks the password of that very identity), or trust_eap_identity:
    INITIAL_CONTACT of the name replaces the older IKE SA and the lease is shared, as strongSwan does."""
    gw, alice, mallory, later = alice_then_mallory(b"alice", b"alice")
    assert mallory.remote_id == alice.remote_id
    assert [(type(e), e.reason) for e in only(later, IkeSaDown)] == [(IkeSaDown, DownReason.REPLACED)]
    assert [sa.remote_addr[0] for sa in gw.sas if not sa.is_closed] == [C]
    assert mallory.peer_vips == alice.peer_vips


def test_an_unproven_client_gets_its_address_back_once_no_one_holds_it() -> None:
    net = Network()
    gw, pools = pool_gateway(net)
    backend = MschapBackend({b"alice": "Alice-pw-1"}, users={b"alice": None})
    first = log_in(net, gw, A, road_warrior(b"Alice-pw-1", A), backend)
    net.nodes[A].sas[0].delete(net.now)
    relay(net, gw, backend, until=net.now + 10.0)
    assert not [s for s in gw.sas if not s.is_closed]
    assert [(str(lease.address), lease.identity, lease.online) for lease in pools.leases()] == \
        [(str(first.peer_vips[0]), "alice", False)]
    net.take(B)
    again = log_in(net, gw, A, road_warrior(b"Alice-pw-1", A), backend)
    assert again.remote_id != first.remote_id and again.peer_vips == first.peer_vips


def test_status_says_whose_identity_is_unproven() -> None:
    for proves, proven in ((b"alice", True), (None, False)):
        net = Network()
        gw, _ = pool_gateway(net)
        up = log_in(net, gw, A, road_warrior(b"Alice-pw-1", A), MschapBackend(users={b"alice": proves}))
        doc, lines = _status(gw, up)
        assert (doc["remote_id"], doc["remote_id_proven"]) == ("alice", proven)
        shown = "EAP identity alice (IKE identity moon.example)"
        assert lines[1] == "  " + shown + ("" if proven else ", identity unproven (RADIUS proved no user)")


def test_without_eap_id_the_accepted_user_is_the_peer_whatever_the_type_of_idi() -> None:
    """Review reveapid F1 with eap-radius: without ``eap_id`` the EAP identity is IDi's data, but the
    back end accepted a user name, not IDi's type: FQDN "bob" and KEY_ID "bob" with bob's password
    are the one user bob (one lease, not one per spelling)."""
    net = Network()
    cfg = dataclasses.replace(gateway(""), pools=("v4",), children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    pools = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    gw = net.add(B, IkeEndpoint([cfg], address_pool=pools))
    backend = MschapBackend({b"bob": "Bob-pw-2"})
    ups = []
    for addr, idi in ((A, "bob"), (C, "keyid:626f62")):
        cli = dataclasses.replace(client("bob", b"Bob-pw-2", ike_id=idi), local_addr=addr, vips=(ANY4,),
                                  children=(child_config("net", "dynamic", "10.2.0.0/16"),))
        ups.append(log_in(net, gw, addr, cli, backend))
    assert [u.remote_id for u in ups] == [Identity.of_user(b"bob")] * 2
    assert [(lease.identity, lease.online) for lease in pools.leases()] == [("bob", True)]
