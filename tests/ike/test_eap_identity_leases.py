"""What an EAP login proves, and what keys a virtual IP lease (review reveapid F1, F4).

F1: with ``eap_id`` unset the EAP user is IDi's data, but IDi's type and (for a KEY_ID) its case
are the client's choice: the proven identity is the account the password was found in, so one
password is one client for the pools, ``unique`` and INITIAL_CONTACT however IDi is spelled.
F4: a lease is bound to the identity and how it was proven (IkeConfig.lease_proof): a group-PSK
client that calls itself alice does not get the EAP user alice's address, online or offline,
while alice, proving herself the same way again, gets hers back.
"""
from __future__ import annotations

import dataclasses
import ipaddress

from tests.ike.test_engine_eap import NOW, B, client, gateway, only
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

PSK = Secret(b"the road warriors' PSK, long enough")
ANY_V4 = (ipaddress.ip_address("0.0.0.0"),)


def test_one_eap_account_holds_one_lease_whatever_idi_type_or_case() -> None:
    pool = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    gw = dataclasses.replace(gateway(""), pools=("v4",),   # eap_id unset: the EAP user is IDi's data
                             children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    net = Network()
    net.add(B, IkeEndpoint([gw], address_pool=pool, wall_clock=lambda: NOW))
    # bob's own password each time; only IDi's type and case differ
    idis = ["bob", "keyid:626f62", "keyid:424f42", "keyid:426f62", "BOB"]   # FQDN bob; KEY_ID bob, BOB, Bob; FQDN BOB
    for n, idi in enumerate(idis):
        addr = f"192.0.2.{10 + n}"
        cli = dataclasses.replace(client("bob", b"Bob-pw-2", ike_id=idi), local_addr=addr, vips=ANY_V4,
                                  children=(child_config("net", "dynamic", "10.2.0.0/16"),))
        net.add(addr, IkeEndpoint([cli], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
        net.run(until=net.now + 5)
    ups = only(net.take(B), IkeSaUp)
    assert len(ups) == len(idis)   # each authenticated with bob's password
    # each is the account bob, as its secret's entry names it (not IDi as sent)
    assert [(u.remote_id.type, u.remote_id.data) for u in ups] == [(Identity.of_user(b"bob").type, b"bob")] * len(idis)
    leased = sorted({str(lease.address) for lease in pool.leases()})
    assert len(leased) == 1, f"one EAP account took {len(leased)} leases: {leased}"


def _alice_and_a_psk_pool() -> tuple[Network, AddressPools, IkeConfig]:
    pool = AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/24")])
    eap_gw = dataclasses.replace(gateway("%any"), pools=("v4",),
                                 children=(child_config("net", "10.2.0.0/16", "dynamic"),))
    psk_gw = IkeConfig("psk-rw", LocalAuth("psk", Identity.parse("sun.example")), RemoteAuth("psk"),
                       parse_proposals("default"), (child_config("net", "10.2.0.0/16", "dynamic"),),
                       psk=PSK, local_addr=B, pools=("v4",))
    net = Network()
    net.add(B, IkeEndpoint([eap_gw, psk_gw], address_pool=pool, wall_clock=lambda: NOW))
    alice = dataclasses.replace(client("alice", b"Alice-pw-1", ike_id="alice-laptop.example"), local_addr="192.0.2.5",
                                vips=ANY_V4, children=(child_config("net", "dynamic", "10.2.0.0/16"),))
    return net, pool, alice


def _mallory(addr: str) -> IkeConfig:
    """A holder of the road warriors' PSK who calls itself alice."""
    return IkeConfig("rw", LocalAuth("psk", Identity.parse("alice")), RemoteAuth("psk", Identity.parse("sun.example")),
                     parse_proposals("default"), (child_config("net", "dynamic", "10.2.0.0/16"),), psk=PSK,
                     local_addr=addr, remote_addr=B, vips=ANY_V4)


def test_a_psk_client_naming_itself_alice_does_not_get_the_eap_user_alices_online_address() -> None:
    net, _, alice = _alice_and_a_psk_pool()
    net.add("192.0.2.5", IkeEndpoint([alice], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    net.add("192.0.2.6", IkeEndpoint([_mallory("192.0.2.6")], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    ups = only(net.take(B), IkeSaUp)
    assert [(u.name, str(u.remote_id)) for u in ups] == [("gw", "alice"), ("psk-rw", "alice")]
    alice_vips, mallory_vips = ([str(v) for v in u.peer_vips] for u in ups)
    assert alice_vips and mallory_vips and mallory_vips != alice_vips, f"the PSK client was given alice's {alice_vips}"


def test_an_offline_eap_users_address_stays_hers_and_not_a_psk_clients_of_her_name() -> None:
    """alice goes; a PSK client calling itself alice gets another address (alice's stays bound
    to her, offline: the lease was released with the proof it was taken with); alice, back with
    her password, gets her own address again."""
    net, pool, alice = _alice_and_a_psk_pool()
    sa = net.add("192.0.2.5", IkeEndpoint([alice], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    (first,) = only(net.take(B), IkeSaUp)
    sa.delete(net.now)
    net.run(until=net.now + 5)
    assert [lease.online for lease in pool.leases()] == [False]   # released: bound to alice, offline
    net.add("192.0.2.6", IkeEndpoint([_mallory("192.0.2.6")], wall_clock=lambda: NOW)).initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    (mallory,) = only(net.take(B), IkeSaUp)
    assert mallory.peer_vips and mallory.peer_vips != first.peer_vips, "the PSK client took alice's offline address"
    back = net.add("192.0.2.7", IkeEndpoint([dataclasses.replace(alice, local_addr="192.0.2.7")],
                                            wall_clock=lambda: NOW))
    back.initiate("rw", "net", net.now)
    net.run(until=net.now + 5)
    (again,) = only(net.take(B), IkeSaUp)
    assert again.peer_vips == first.peer_vips
