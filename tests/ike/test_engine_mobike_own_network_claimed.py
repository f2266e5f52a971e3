"""Review revcert3 F3 (its proofs, then a guard).

address_role.own_network takes a network another peer of the same connection
holds as the moving peer's own, when that peer's claim is exactly one of the connection's configured
remote_ts networks.

own_network (h/fixmobike2) follows a peer within "the most specific network holding the new address"
if that network is one of the connection's configured remote_ts (or the peer's own negotiated ones)
and holds the peer's current address.  It compares networks, not holders: address_role resolves an
address in 10.1.0.0/16 to Role("tunnel", "spokes", 10.1.0.0/16) whether the connection only
configures it or another spoke's Child SA holds it (its claim, booked under the same connection
name; the configured network comes first at equal length).  So a spoke A whose outer address lies
in 10.1.0.0/16 (a hub's private WAN carved from a branch block) while spoke B holds 10.1.0.0/16 (B's
LAN) is followed to any host of B's LAN: by MOBIKE, or without MOBIKE by one of its own requests
from a spoofed source (no return routability check).  The hub then puts an exclude route for that
host of B's LAN in (services/ike/exclude_gate.py, before its first datagram there): the gateway's
traffic to B's host leaves outside B's tunnel, towards A's underlay, and A's ESP goes there.  A
narrower claim of B's (10.1.0.0/24) is refused already (test_engine_mobike_routed.py); an equal one is
not.  One peer affects another's traffic: the project's first promise.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_engine_mobike_own_network import UPLINK1, UPLINK2, _hub_cfg, _spoke_cfg
from test_engine_mobike_tunnel_address import _move
from test_engine_vips import GW

from tunsec.ike.config import child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.testing import Network
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.selector import Ts

A_WAN = "10.1.255.1"      # spoke A's outer address, inside the block 10.1.0.0/16 ...
B_HOST = "10.1.0.5"       # ... that spoke B holds as its LAN: a host there


@pytest.mark.parametrize("mobike", [True, False])
def test_a_spoke_is_not_followed_into_the_lan_another_spoke_of_its_connection_holds(mobike: bool) -> None:
    booked = TsClaims()   # spoke B's Child SA of the same connection holds 10.1.0.0/16 (as the IKE service books it)
    booked.add(1, "spoke", Identity.parse("b.spoke.example"), [Ts.parse("10.1.0.0/16")], [Ts.parse("10.9.0.0/16")])
    hub_cfg = dataclasses.replace(_hub_cfg(), children=(
        child_config("lan", "10.9.0.0/16", ["10.1.0.0/16", "10.2.0.0/16"], "aes128gcm16"),))
    spoke_cfg = dataclasses.replace(_spoke_cfg(A_WAN, mobike), children=(   # A's own LAN is 10.2.0.0/16
        child_config("lan", "10.2.0.0/16", "10.9.0.0/16", "aes128gcm16"),))
    net = Network()
    hub = net.add(GW, IkeEndpoint([hub_cfg], ts_claims=booked))
    spoke = net.add(A_WAN, IkeEndpoint([spoke_cfg]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (s_sa,), (h_sa,) = spoke.sas, hub.sas
    assert h_sa.esp_remote == (A_WAN, 4500)
    assert [str(ts) for child in h_sa._st.children.values() for ts in child.remote_ts] == ["10.2.0.0/16"]
    _move(net, A_WAN, B_HOST)   # A's requests now come from a host of B's LAN (spoofed, or A moved there)
    if mobike:
        assert s_sa.update_addresses((B_HOST, 4500))
    else:
        s_sa.send_liveness()
    net.run(until=net.now + 30)
    assert h_sa.esp_remote == (A_WAN, 4500), "spoke A's ESP now goes to a host of spoke B's LAN"


@pytest.mark.parametrize("mobike", [True, False])
def test_a_spoke_is_still_followed_inside_the_lan_its_own_child_sa_holds(mobike: bool) -> None:
    """Guard: a claim of the moving peer's own (its Child SA of 10.1.0.0/16, booked as the IKE
    service books it: its identity and proof) is no other peer's."""
    hub_cfg = _hub_cfg()
    booked = TsClaims()
    booked.add(1, "spoke", Peer(Identity.parse("spoke.example"), hub_cfg.lease_proof), [Ts.parse("10.1.0.0/16")],
               [Ts.parse("10.9.0.0/16")], by_name=hub_cfg.names_its_peer)
    net = Network()
    hub = net.add(GW, IkeEndpoint([hub_cfg], ts_claims=booked))
    spoke = net.add(UPLINK1, IkeEndpoint([_spoke_cfg(UPLINK1, mobike)]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (s_sa,), (h_sa,) = spoke.sas, hub.sas
    assert h_sa.esp_remote == (UPLINK1, 4500)
    _move(net, UPLINK1, UPLINK2)
    if mobike:
        assert s_sa.update_addresses((UPLINK2, 4500))
    else:
        s_sa.send_liveness()
    net.run(until=net.now + 30)
    assert h_sa.esp_remote == (UPLINK2, 4500)
