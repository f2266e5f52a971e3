"""Where a moving peer is still followed, and where it is not (review revmobike F1's fix).

A peer's new address (MOBIKE's UPDATE_SA_ADDRESSES, or a NAT float without MOBIKE) is refused
when this host routes it into the TUN or to itself (address_role.refused_address): the proofs are
test_engine_mobike_tunnel_address.py.  Here: the check outlives an IKE rekey (the successor
gets the endpoint's address roles too), and what must keep working: a full tunnel is nobody's (a
client on the internet is followed although another connection's remote_ts is 0.0.0.0/0), and a
client behind the NAT another client is behind (the address of an established peer) is followed;
and what another peer of the same connection holds is refused (a hub's spokes).
"""

from __future__ import annotations

import dataclasses

import pytest
from test_engine_mobike_own_network import _hub_cfg, _spoke_cfg
from test_engine_mobike_tunnel_address import CLIENT, VIP, _move, _site_cfg
from test_engine_vips import GW, V4, client_cfg, gateway, gateway_cfg, pools

from tunsec.ike.config import ChildConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network
from tunsec.policy.claims import TsClaims
from tunsec.policy.selector import Ts

ELSEWHERE = "203.0.113.50"   # a public address, nobody's in particular
OTHER_CLIENT = "198.51.100.2"
SPOKE_HOST = "172.16.0.10"   # behind another peer of the client's own connection


def _client(net: Network, ident: str, ip: str, mobike: bool = True) -> IkeEndpoint:
    cfg = dataclasses.replace(client_cfg(ident, ip, (V4,)), mobike=mobike)
    client = net.add(ip, IkeEndpoint([cfg]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return client


def test_the_ike_sa_that_replaced_the_one_checked_refuses_the_virtual_ip_too() -> None:
    """After an IKE rekey the gateway's new IKE SA asks the same question: a move to the client's own
    virtual IP is refused there too, and the client keeps its SA (the refusal echoes its COOKIE2)."""
    net, pool = Network(), pools()
    gw = gateway(net, pool)
    client = _client(net, "c1.example", CLIENT)
    (c_sa,) = client.sas
    c_sa.rekey()
    net.run(until=net.now + 5)
    (c_new,), (g_new,) = client.sas, gw.sas
    assert c_new is not c_sa and not g_new.is_closed
    _move(net, CLIENT, VIP)
    assert c_new.update_addresses((VIP, 4500))
    net.run(until=net.now + 30)
    assert g_new.esp_remote[0] == CLIENT and g_new.remote_addr[0] == CLIENT
    assert not c_new.is_closed


def _moves(net: Network, c_sa: IkeSa, to: str, mobike: bool) -> None:
    """The client at CLIENT now speaks from ``to``: its UPDATE_SA_ADDRESSES (MOBIKE), or any request
    (without: tunsec's random NAT hashes make it look NAT'd, so it is floated)."""
    _move(net, CLIENT, to)
    if mobike:
        assert c_sa.update_addresses((to, 4500))
    else:
        c_sa.send_liveness()
    net.run(until=net.now + 30)


def _full_site() -> ChildConfig:
    return child_config("lan", "10.9.0.0/16", "0.0.0.0/0", "aes128gcm16")


@pytest.mark.parametrize("mobike", [True, False])
def test_a_client_moving_to_the_internet_is_followed_beside_a_full_tunnel(mobike: bool) -> None:
    """Another connection's remote_ts 0.0.0.0/0 holds every address, the client's new one too:
    a full tunnel is nobody's in particular (address_role.py), so the client is followed."""
    net, pool = Network(), pools()
    site = dataclasses.replace(_site_cfg(), children=(_full_site(),))
    gw = net.add(GW, IkeEndpoint([gateway_cfg(), site], address_pool=pool))
    client = _client(net, "c1.example", CLIENT, mobike)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    _moves(net, c_sa, ELSEWHERE, mobike)
    assert g_sa.esp_remote == (ELSEWHERE, 4500) and not c_sa.is_closed


@pytest.mark.parametrize("mobike", [True, False])
def test_a_client_moving_behind_another_clients_nat_is_followed(mobike: bool) -> None:
    """The address of an established peer is a "peer" role, not refused: clients behind one NAT
    share its public address, and one whose mapping changes may land on the other's."""
    net, pool = Network(), pools()
    gw = gateway(net, pool)
    client = _client(net, "c1.example", CLIENT, mobike)
    (c_sa,) = client.sas
    (g_sa,) = gw.sas
    _client(net, "c2.example", OTHER_CLIENT)
    _moves(net, c_sa, OTHER_CLIENT, mobike)   # the test network keys nodes by IP: the other client steps aside
    assert g_sa.esp_remote == (OTHER_CLIENT, 4500) and not c_sa.is_closed


@pytest.mark.parametrize("mobike", [True, False])
def test_a_client_cannot_move_into_what_another_peer_of_its_connection_holds(mobike: bool) -> None:
    """A hub's peers of one connection: another peer's Child SA holds 172.16.0.0/24 (its LAN, chosen at
    negotiation, booked in the claims as the IKE service books it).  For a REDIRECT or a virtual IP the
    asking connection's own claims count for none (other_tunnel: the gateway we talk to routes it
    anyway); for a move they count, the host routes that LAN into the TUN whichever peer holds it."""
    booked = TsClaims()
    booked.add(1, "rw", Identity.parse("spoke.example"), [Ts.parse("172.16.0.0/24")], [Ts.parse("10.9.0.0/16")])
    net = Network()
    gw = net.add(GW, IkeEndpoint([gateway_cfg()], address_pool=pools(), ts_claims=booked))
    client = _client(net, "c1.example", CLIENT, mobike)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    _moves(net, c_sa, SPOKE_HOST, mobike)
    assert g_sa.esp_remote == (CLIENT, 4500) and g_sa.remote_addr == (CLIENT, 4500)
    assert not c_sa.is_closed


@pytest.mark.parametrize("mobike", [True, False])
def test_a_peer_cannot_move_into_its_own_remote_ts_from_outside_it(mobike: bool) -> None:
    """A move within the peer's own remote_ts is followed only if its current address lies in that
    network already (address_role.own_network, review revmobfix F1): a spoke on the internet whose
    request arrives from a host of its own LAN (its IKE through its own tunnel, or a spoofed source)
    stays where it is, or its ESP would go into its own tunnel."""
    net = Network()
    gw = net.add(GW, IkeEndpoint([_hub_cfg()]))
    spoke = net.add(CLIENT, IkeEndpoint([_spoke_cfg(CLIENT, mobike)]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (s_sa,), (g_sa,) = spoke.sas, gw.sas
    assert g_sa.esp_remote == (CLIENT, 4500)
    _moves(net, s_sa, "10.1.0.5", mobike)
    assert g_sa.esp_remote == (CLIENT, 4500) and g_sa.remote_addr == (CLIENT, 4500)
