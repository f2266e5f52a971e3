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
from typing import Any

from test_engine_eap_relay import CA, GW, MschapBackend, only, relay

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import IdType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, EapRelayAbandoned, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.services.ike import status as ike_status
from tunsec.services.ike.record import IkeUpRecord
from tunsec.status import render

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
    # RADIUS accepted carol's credentials: refused by our policy, not counted towards a ban (review revban F2)
    assert (failed.refused, failed.counts) == (True, False)
    assert [e.by_peer for e in only(ev_a, AuthFailed)] == [True]   # AUTHENTICATION_FAILED after EAP-Success
    assert not only(ev_a + ev_b, IkeSaUp) and not only(ev_b, ChildSaUp)
    assert not gw.sas and gw.half_open == 0 and not pool.leases()
    # the backend had given its final answer: the edge kept nothing of it (it went with the IKE SA)
    assert not only(ev_b, EapRelayAbandoned)


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


def _status(gw: IkeEndpoint, up: IkeSaUp) -> tuple[dict[str, Any], list[str]]:
    """The gateway's IKE SA as `tunsec status` shows it: its --json record and its text lines."""
    (sa,) = gw.sas
    (doc,) = ike_status.ike_sas([sa], {sa.local_spi: IkeUpRecord(up, 0.0)}, [], lambda s: 1, lambda h: sa)
    base = {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
            "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {}}
    lines = render({**base, "ike_sas": [doc]}).splitlines()
    return doc, lines[lines.index(next(x for x in lines if x.startswith(f"{up.name}: IKEv2"))):]


def test_status_shows_the_eap_identity_and_the_groups_the_backend_gave() -> None:
    """bob sent IDi moon.example and authenticated as EAP user bob (eap_id = %any): status names
    both, strongSwan's "remote EAP identity", and the groups of his Accept that admitted him."""
    net, gw, _ = login("bob")
    (up,) = only(net.take(B), IkeSaUp)
    doc, lines = _status(gw, up)
    assert (doc["remote_id"], doc["remote_ike_id"], doc["remote_eap_id"], doc["groups"]) == \
        ("bob", "moon.example", "bob", ["vpn", "Guests"])
    assert " sun.example <-> bob, " in lines[0]
    assert lines[1] == "  EAP identity bob (IKE identity moon.example), groups: vpn, Guests"


def test_status_shows_no_eap_identity_where_it_is_the_ike_identity() -> None:
    """Without eap_id the EAP user is IDi's name: only the groups are news (as strongSwan shows
    the EAP identity only where it differs)."""
    cli = client("alice")
    cli = dataclasses.replace(cli, local=dataclasses.replace(cli.local, id=Identity.parse("alice")))
    net = Network()
    net.add(A, IkeEndpoint([cli])).initiate("rw", "net", net.now)
    gw = net.add(B, IkeEndpoint([gateway("staff", "staff", eap_id="")], address_pool=pools()))
    relay(net, gw, MschapBackend(PASSWORDS, GROUPS), until=20.0)
    (up,) = only(net.take(B), IkeSaUp)
    doc, lines = _status(gw, up)
    assert (doc["remote_ike_id"], doc["remote_eap_id"], doc["groups"]) == ("alice", "alice", ["staff"])
    assert lines[1] == "  groups: staff"


def test_status_escapes_an_unproven_ike_identity() -> None:
    """With eap_id = %any IDi proves nothing: a client may put terminal control sequences in it.
    --json carries it as sent; the text escapes them."""
    cli = client("alice")
    sneaky = Identity(IdType.FQDN, b"moon\x1b[2J.example")
    net = Network()
    net.add(A, IkeEndpoint([dataclasses.replace(cli, local=dataclasses.replace(cli.local, id=sneaky))])) \
        .initiate("rw", "net", net.now)
    gw = net.add(B, IkeEndpoint([STAFF], address_pool=pools()))
    relay(net, gw, MschapBackend(PASSWORDS, GROUPS), until=20.0)
    (up,) = only(net.take(B), IkeSaUp)
    doc, lines = _status(gw, up)
    assert doc["remote_ike_id"] == "moon\x1b[2J.example"
    assert lines[1] == "  EAP identity alice (IKE identity moon\\x1b[2J.example), groups: staff"
    assert not any("\x1b" in x for x in lines)


def test_status_of_an_ike_sa_without_eap_has_no_eap_fields() -> None:
    psk = Secret(b"a-long-enough-psk-for-tests")
    a_cfg = IkeConfig("rw", LocalAuth("psk", Identity.parse("moon.example")),
                      RemoteAuth("psk", Identity.parse("sun.example")), parse_proposals("default"),
                      (child_config("net", "10.1.0.0/16", "10.2.0.0/16"),), psk=psk, local_addr=A, remote_addr=B)
    b_cfg = IkeConfig("gw", LocalAuth("psk", Identity.parse("sun.example")),
                      RemoteAuth("psk", Identity.parse("moon.example")), parse_proposals("default"),
                      (child_config("net", "10.2.0.0/16", "10.1.0.0/16"),), psk=psk, local_addr=B)
    net = Network()
    net.add(A, IkeEndpoint([a_cfg])).initiate("rw", "net", net.now)
    gw = net.add(B, IkeEndpoint([b_cfg]))
    net.run()
    (up,) = only(net.take(B), IkeSaUp)
    doc, lines = _status(gw, up)
    assert (doc["remote_ike_id"], doc["remote_eap_id"], doc["groups"]) == ("moon.example", None, [])
    assert lines[1] == "drops: "   # no line between the IKE SA's and the next section's
