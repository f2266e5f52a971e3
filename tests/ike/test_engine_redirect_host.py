"""Every address of the client's own host is "this host's own" for a REDIRECT, once resolved for an
FQDN, and for a peer's move (review revclient s20 F3; the proof, with two daemons in namespaces, is
e2e/test_review_revclient_redirect_own.py).

The engine knew the host only by the connections' ``local_addrs``; the IKE service now hands it the
addresses of the host's interfaces (``IkeEndpoint.host_addresses``, services/ike/host_addresses.py),
which address_role counts as role "own" when the question is a REDIRECT's or a move's
(refused_address).  A virtual IP is not asked so: ours are on the TUN, and a reauthentication is
given the address it has (vips.py checks the other interfaces as it installs one).
"""

from __future__ import annotations

import ipaddress

import pytest
from test_engine_mobike_routed import _client, _moves
from test_engine_redirect import CLIENT, GW_B, assert_init_redirect_refused, three
from test_engine_redirect_targets import client_endpoint
from test_engine_vips import GW, gateway, pools
from test_engine_vips_client_tunnels import home, leasing, run, wide_gateway

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp, NegotiationFailed, Redirected
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

ON_AN_INTERFACE = "192.168.77.1"   # an address of the client host (on lo, a bridge, a second uplink)
ROAD_WARRIOR = "198.51.100.1"      # the client of test_engine_vips*.py (whose CLIENT is the gateway of the above)


def _host(endpoint: IkeEndpoint, *addresses: str) -> IkeEndpoint:
    endpoint.host_addresses = frozenset(ipaddress.ip_address(a) for a in addresses)
    return endpoint


@pytest.mark.parametrize("target", [ON_AN_INTERFACE, f"::ffff:{ON_AN_INTERFACE}"])
def test_a_redirect_in_ike_sa_init_to_an_address_of_the_host_is_not_followed(target: str) -> None:
    client = _host(client_endpoint(), ON_AN_INTERFACE)
    assert_init_redirect_refused(client, target, f"{ON_AN_INTERFACE} is an address of this host")


def test_a_redirect_in_ike_auth_to_an_address_of_the_host_is_not_followed() -> None:
    net, _a, _b = three({"redirect_to": ON_AN_INTERFACE, "redirect_on": "auth"})
    client = _host(net.nodes[CLIENT], ON_AN_INTERFACE)
    client.initiate("rw", "net", 0.0)
    net.run(until=5.0)
    events = net.take(CLIENT)
    assert NegotiationFailed("rw", "REDIRECT", f"IKE_AUTH: REDIRECT not followed: {ON_AN_INTERFACE} is an address "
                             "of this host") in events
    assert not any(isinstance(e, Redirected) for e in events)
    assert not any(s.dst[0] == ON_AN_INTERFACE for s in net.log)


@pytest.mark.parametrize("resolved", [[ON_AN_INTERFACE, GW_B], [ON_AN_INTERFACE]])
def test_an_fqdn_is_not_used_at_an_address_of_the_host(resolved: list[str]) -> None:
    """Checked once resolved: the client goes to the gateway the name also resolves to, or nowhere."""
    net, _a, _b = three({"redirect_to": "gw-b.example"})
    _host(net.nodes[CLIENT], ON_AN_INTERFACE)
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    sa.gateway_resolved("gw-b.example", resolved, net.now)
    net.run(until=5.0)
    failed = [e for e in net.take(CLIENT) if isinstance(e, NegotiationFailed)]
    if GW_B in resolved:
        assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B and failed == []
    else:
        assert failed == [NegotiationFailed("rw", "REDIRECT", "gateway gw-b.example has no usable address")]
    assert not any(s.dst[0] == ON_AN_INTERFACE for s in net.log)


@pytest.mark.parametrize("mobike", [True, False])
def test_a_peer_cannot_move_to_an_address_of_this_host(mobike: bool) -> None:
    net = Network()
    gw = _host(gateway(net, pools()), ON_AN_INTERFACE)
    client = _client(net, "c1.example", ROAD_WARRIOR, mobike)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    _moves(net, c_sa, ON_AN_INTERFACE, mobike)
    assert g_sa.esp_remote[0] == ROAD_WARRIOR and g_sa.remote_addr[0] == ROAD_WARRIOR


def test_a_virtual_ip_the_host_has_already_is_taken() -> None:
    """Our own virtual IP is on the TUN, so among the host's addresses: a reauthentication is given
    it again, and takes it (the check the virtual IP passes does not count them)."""
    vip = "10.9.0.7"
    net = Network()
    net.add(GW, IkeEndpoint([wide_gateway()], address_pool=leasing(vip)))
    client = _host(net.add(ROAD_WARRIOR, IkeEndpoint([home()])), vip)
    (up,) = [e for e in run(client, net) if isinstance(e, IkeSaUp)]
    assert up.own_vips == (ipaddress.ip_address(vip),)
