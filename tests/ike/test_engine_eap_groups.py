"""``remote.groups`` with eap-radius in the engine: the gateway has two connections alike but for
their groups and pools (strongSwan's "group selection"); after EAP it stays on, or switches to,
the first one whose groups the user is a member of, by the groups the backend's Accept gave
(``RelayReply.groups``), and refuses a user of no such group with AUTHENTICATION_FAILED before
any address is leased or Child SA made, telling the edge to forget what the Accept said.

The backend is test_engine_eap_relay.py's (MschapBackend): EAP-MSCHAPv2 run by the engine's own
server, the groups of each user added to its Access-Accept.
"""
from __future__ import annotations

import dataclasses
import ipaddress

from test_engine_eap_relay import CA, GW, MschapBackend, only, relay

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, EapRelayAbandoned, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

A, B = "192.0.2.1", "192.0.2.2"
PASSWORDS = {b"alice": "Alice-pw-1", b"bob": "Bob-pw-2", b"carol": "Carol-pw-3"}
GROUPS: dict[bytes, tuple[str, ...]] = {b"alice": ("staff",), b"bob": ("vpn", "Guests"), b"carol": ("other",)}


def gateway(name: str, groups: str, eap_id: str = "%any") -> IkeConfig:
    """A connection of the gateway for ``groups``, leasing from the pool of its own name."""
    return IkeConfig(name, LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert, private_key=GW.key),
                     RemoteAuth("eap-radius", Identity.any(), eap_id=eap_id,
                                groups=tuple(Identity.parse(g) for g in groups.split(","))),
                     parse_proposals("default"), (child_config("net", "10.2.0.0/16", "dynamic"),),
                     local_addr=B, pools=(name,))


STAFF, GUESTS = gateway("staff", "staff"), gateway("guests", "guests,contractors")


def client(user: str) -> IkeConfig:
    password = PASSWORDS[user.encode()].encode()
    return IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse("moon.example"), eap_id=user),
                     RemoteAuth("pubkey", Identity.parse("sun.example"), cas=(CA.cert,)),
                     parse_proposals("default"), (child_config("net", "dynamic", "10.2.0.0/16"),),
                     eap_secrets=(EapSecret((user,), Secret(password)),), local_addr=A, remote_addr=B,
                     vips=(ipaddress.ip_address("0.0.0.0"),))


def pools() -> AddressPools:
    return AddressPools([PoolConfig.parse_addrs("staff", "10.3.1.0/24"),
                         PoolConfig.parse_addrs("guests", "10.3.2.0/24")])


def login(user: str, configs: tuple[IkeConfig, ...] = (STAFF, GUESTS),
          pool: AddressPools | None = None) -> tuple[Network, IkeEndpoint, AddressPools]:
    pool = pool or pools()
    net = Network()
    net.add(A, IkeEndpoint([client(user)])).initiate("rw", "net", net.now)
    gw = net.add(B, IkeEndpoint(list(configs), address_pool=pool))
    relay(net, gw, MschapBackend(PASSWORDS, GROUPS), until=20.0)
    return net, gw, pool


def test_each_user_ends_in_the_connection_of_its_group_with_an_address_of_its_pool() -> None:
    net, _, pool = login("alice")
    (up,) = only(net.take(B), IkeSaUp)
    assert (up.name, [str(a) for a in up.peer_vips]) == ("staff", ["10.3.1.1"])
    # bob starts on the first connection (its identities fit both) and is moved to the one of
    # his group; a group name matches regardless of case, as strongSwan's identities do
    net, _, pool = login("bob")
    events = net.take(B)
    (up,) = only(events, IkeSaUp)
    (child,) = only(events, ChildSaUp)
    assert (up.name, child.name, [str(a) for a in up.peer_vips]) == ("guests", "guests", ["10.3.2.1"])
    assert [(x.pool, str(x.address), x.identity) for x in pool.leases()] == [("guests", "10.3.2.1", "bob")]
    (client_up,) = only(net.take(A), IkeSaUp)
    assert [str(a) for a in client_up.own_vips] == ["10.3.2.1"]


def test_a_user_of_no_required_group_is_refused_and_nothing_stays_behind() -> None:
    net, gw, pool = login("carol")
    ev_b, ev_a = net.take(B), net.take(A)
    (failed,) = only(ev_b, AuthFailed)
    assert failed.reason == ("EAP-RADIUS user 'carol' is a member of no group its connections require "
                             "(staff: staff; guests: guests, contractors); its groups from RADIUS: 'other'")
    assert [e.by_peer for e in only(ev_a, AuthFailed)] == [True]   # AUTHENTICATION_FAILED after EAP-Success
    assert not only(ev_a + ev_b, IkeSaUp) and not only(ev_b, ChildSaUp)
    assert not gw.sas and gw.half_open == 0 and not pool.leases()
    # the backend had given its final answer: what it said is dropped at the edge too
    assert len(only(ev_b, EapRelayAbandoned)) == 1


def test_a_user_the_backend_gave_no_group_is_refused() -> None:
    GROUPS[b"alice"], saved = (), GROUPS[b"alice"]
    try:
        net, gw, _ = login("alice", (STAFF,))
    finally:
        GROUPS[b"alice"] = saved
    (failed,) = only(net.take(B), AuthFailed)
    assert failed.reason.endswith("(staff: staff); its groups from RADIUS: none"), failed.reason
    assert not gw.sas


def test_a_connection_without_groups_takes_anyone_and_the_one_in_use_comes_first() -> None:
    anyone = dataclasses.replace(STAFF, name="anyone", remote=dataclasses.replace(STAFF.remote, groups=()),
                                 pools=("staff",))
    net, _, _ = login("bob", (anyone, GUESTS))
    assert [e.name for e in only(net.take(B), IkeSaUp)] == ["anyone"]


def test_no_switch_to_a_connection_unlike_in_the_eap_conversation_done() -> None:
    # guests asks the EAP identity otherwise (eap_id): the conversation bob finished was staff's,
    # which proves nothing for it; he is refused rather than moved there
    other = gateway("guests", "guests", eap_id="")
    net, gw, pool = login("bob", (STAFF, other))
    (failed,) = only(net.take(B), AuthFailed)
    assert "(staff: staff); its groups from RADIUS: 'vpn', 'Guests'" in failed.reason, failed.reason
    assert not gw.sas and not pool.leases()
