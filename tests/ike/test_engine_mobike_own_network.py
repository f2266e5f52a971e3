"""Review revmobfix F1: a peer whose outer address lies inside its own connection's remote_ts cannot
move within it, although it connected from there and the host reaches it outside the TUN.

h/fixmobike's ``address_role.refused_address(moving=True)`` counts every "tunnel" role, "the
connection's own too".  A spoke on a private WAN (its underlay 10.1.255.0/24 inside the branch
block 10.1.0.0/16 the hub routes to it: the hub's remote_ts of it), or any site whose remote_ts
covers its own public address (the case dataplane/exclude.py documents: "a site-to-site remote_ts
192.0.2.0/24 covers a peer 192.0.2.1 reached through a router"), is reached outside the TUN by an
exclude route or a more specific route of the host's: its IKE SA and ESP work from 10.1.255.1, and
a fresh IKE SA from 10.1.255.2 would be accepted and work the same way (the exclude gate puts a host
route in before the first datagram, services/ike/exclude_gate.py, "a MOBIKE move" named there).
Its failover to its second uplink 10.1.255.2 (MOBIKE), or its NAT's new mapping there (no MOBIKE),
is refused: "inside remote_ts 10.1.0.0/16 of connection spoke".  With MOBIKE the spoke gets
UNACCEPTABLE_ADDRESSES and keeps an IKE SA whose ESP goes to the uplink it left; without MOBIKE the
float is refused silently (a debug line) while its requests from the new address are still answered
there, so its DPD succeeds and it never reconnects: its traffic is black-holed until the SA expires.
"""

from __future__ import annotations

import pytest
from test_engine_mobike_tunnel_address import _move
from test_engine_vips import GW, PSK

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import Network

UPLINK1, UPLINK2 = "10.1.255.1", "10.1.255.2"   # the spoke's two WAN addresses, inside its block


def _hub_cfg() -> IkeConfig:
    """The hub's connection of the spoke: any address (a spoke with changing WAN addresses), its
    branch block 10.1.0.0/16 behind it."""
    return IkeConfig(
        "spoke",
        LocalAuth("psk", Identity.parse("gw.example")),
        RemoteAuth("psk", Identity.parse("spoke.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("lan", "10.9.0.0/16", "10.1.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=GW,
    )


def _spoke_cfg(ip: str, mobike: bool) -> IkeConfig:
    return IkeConfig(
        "hub",
        LocalAuth("psk", Identity.parse("spoke.example")),
        RemoteAuth("psk", Identity.parse("gw.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("lan", "10.1.0.0/16", "10.9.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=ip,
        remote_addr=GW,
        mobike=mobike,
    )


def test_the_spoke_may_connect_from_its_second_uplink() -> None:
    """What the move is refused is no refusal of the address: a fresh IKE SA from there is accepted."""
    net = Network()
    hub = net.add(GW, IkeEndpoint([_hub_cfg()]))
    spoke = net.add(UPLINK2, IkeEndpoint([_spoke_cfg(UPLINK2, True)]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (h_sa,) = hub.sas
    assert not h_sa.is_closed and h_sa.esp_remote == (UPLINK2, 4500)


@pytest.mark.parametrize("mobike", [True, False])
def test_a_spoke_is_followed_to_its_second_uplink_inside_its_own_remote_ts(mobike: bool) -> None:
    net = Network()
    hub = net.add(GW, IkeEndpoint([_hub_cfg()]))
    spoke = net.add(UPLINK1, IkeEndpoint([_spoke_cfg(UPLINK1, mobike)]))
    spoke.initiate("hub", "lan", net.now)
    net.run(until=net.now + 5)
    (s_sa,), (h_sa,) = spoke.sas, hub.sas
    assert h_sa.esp_remote == (UPLINK1, 4500) and s_sa.mobike == h_sa.mobike == mobike
    _move(net, UPLINK1, UPLINK2)   # the first uplink is down: the spoke speaks from its second
    if mobike:
        assert s_sa.update_addresses((UPLINK2, 4500))
    else:
        s_sa.send_liveness()   # tunsec's random NAT hashes make it look NAT'd: it is floated
    net.run(until=net.now + 30)
    assert not s_sa.is_closed and not h_sa.is_closed   # its DPD is answered at the new address ...
    # ... so its ESP had better go there too: the hub reaches 10.1.255.2 as it reached 10.1.255.1
    assert h_sa.esp_remote == (UPLINK2, 4500), "the spoke's ESP still goes to the uplink it left"
