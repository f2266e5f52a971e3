"""A REDIRECT into another connection's tunnel or one of our own pools is not followed (review revclient F2).

A REDIRECT in IKE_SA_INIT is unauthenticated: whoever saw our request (RFC 5685 §5 needs only its
nonce) may send one.  A target inside another connection's remote_ts (a host behind a site-to-site
tunnel) or inside a pool our gateway connections lease from (a road warrior) would have the client's
next IKE SA, its identity and its PSK-keyed AUTH (offline-guessable by whoever completes the DH) sent
into that tunnel, or into its prohibit route while it is down.  As a target inside the connection's
own remote_ts already was, such a target is refused, named or resolved from a host name; a remote_ts
of everything (0.0.0.0/0) is no tunnel's in particular (address_role.py).
"""
from __future__ import annotations

import dataclasses

import pytest
from test_engine_redirect import (
    CLIENT,
    GW_A,
    GW_B,
    assert_init_redirect_refused,
    client_cfg,
    gateway_cfg,
    sas_of,
)
from test_engine_vips import gateway_cfg as rw_gateway_cfg

from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import NegotiationFailed
from tunsec.ike.sa import State
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

BEHIND_SITE = "172.16.0.7"   # a host behind the client's other (site-to-site) tunnel
ROAD_WARRIOR = "172.20.0.9"  # an address of the pool the client's host serves road warriors from


def site(remote_ts: str = "172.16.0.0/16") -> IkeConfig:
    return dataclasses.replace(client_cfg(), name="site", remote_addr="203.0.113.9",
                               children=(child_config("lan", "10.1.0.0/16", remote_ts, "aes128gcm16"),))


def client_endpoint() -> IkeEndpoint:
    """The client: ``rw`` (remote_ts 10.2.0.0/16) to GW_A, a site-to-site tunnel, and a gateway
    connection of its own leasing from pool ``ours``."""
    serving = dataclasses.replace(rw_gateway_cfg(("ours",)), name="rw-server", local_addr=CLIENT)
    return IkeEndpoint([client_cfg(), site(), serving],
                       address_pool=AddressPools([PoolConfig.parse_addrs("ours", "172.20.0.0/24")]))


@pytest.mark.parametrize(("target", "why"), [
    (BEHIND_SITE, f"{BEHIND_SITE} is inside remote_ts 172.16.0.0/16 of connection site (IKE would go into that "
                  "tunnel)"),
    (f"::ffff:{BEHIND_SITE}", f"{BEHIND_SITE} is inside remote_ts 172.16.0.0/16 of connection site (IKE would "
                              "go into that tunnel)"),
    (ROAD_WARRIOR, f"{ROAD_WARRIOR} is inside pool ours of connection rw-server (IKE would go to a road warrior)"),
])
def test_a_redirect_into_another_tunnel_or_our_pool_is_not_followed(target: str, why: str) -> None:
    assert_init_redirect_refused(client_endpoint(), target, why)


def three(client: IkeEndpoint, a_kw: dict[str, object]) -> tuple[Network, IkeEndpoint]:
    net = Network()
    net.add(CLIENT, client)
    net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, **a_kw)]))
    b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    return net, b


def test_a_redirect_in_ike_auth_into_another_tunnel_is_not_followed() -> None:
    net, _b = three(client_endpoint(), {"redirect_to": BEHIND_SITE, "redirect_on": "auth"})
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    events = net.take(CLIENT)
    assert NegotiationFailed("rw", "REDIRECT", f"IKE_AUTH: REDIRECT not followed: {BEHIND_SITE} is inside remote_ts "
                             "172.16.0.0/16 of connection site (IKE would go into that tunnel)") in events
    assert sas_of(net.nodes[CLIENT]) == [] and not any(s.dst[0] == BEHIND_SITE for s in net.log)


def test_an_fqdn_resolving_into_another_tunnel_and_to_a_gateway_goes_to_the_gateway() -> None:
    net, b = three(client_endpoint(), {"redirect_to": "gw-b.example"})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    sa.gateway_resolved("gw-b.example", [BEHIND_SITE, ROAD_WARRIOR, GW_B], net.now)
    net.run(until=5.0)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B
    assert not any(s.dst[0] in (BEHIND_SITE, ROAD_WARRIOR) for s in net.log) and b.sa_count == 1


def test_a_redirect_inside_another_connections_full_tunnel_is_followed() -> None:
    """Where the fix stops (passes before it too): every address is inside a remote_ts 0.0.0.0/0,
    the gateway we were sent from as well; such a tunnel is no one's in particular."""
    net, b = three(IkeEndpoint([client_cfg(), site("0.0.0.0/0")]), {"redirect_to": GW_B})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B and b.sa_count == 1
