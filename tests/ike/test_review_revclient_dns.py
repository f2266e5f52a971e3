"""Review revclient (s20) F2: the DNS servers of a CFG_REPLY are taken whatever they are.

exchanges/ike_config.process_reply checks each virtual IP a gateway assigns (reserved, an IKE
peer's, this host's, a pool's, inside another tunnel: _refusal), but takes every INTERNAL_IP4_DNS /
INTERNAL_IP6_DNS as it comes (up to 8): the unspecified address, loopback, multicast, broadcast,
another IKE peer's address, or a host behind another of the client's tunnels.  They reach IkeSaUp.dns and
the updown script (PLUTO_DNS4_n/PLUTO_DNS6_n, what a resolvconf script writes to resolv.conf).
A gateway (the one of a split tunnel, trusted for its own networks only) then
sends the host's DNS queries, for every name, into another connection's tunnel to a host it picks
there, to the host itself (a local service on 127.0.0.1 or 0.0.0.0), or nowhere.
"""

from __future__ import annotations

import ipaddress

import pytest
from test_engine_vips import GW
from test_engine_vips_client import CLIENT, OTHER_GW
from test_engine_vips_client_tunnels import SITE_HOST, home, run, site, wide_gateway

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import IkeSaUp
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import Ts, parse_ts
from tunsec.updown import ChildEvent, environments


@pytest.mark.parametrize("dns", [
    "0.0.0.0",          # unspecified: Linux delivers it to the host itself
    "127.0.0.1",        # loopback: whatever listens on the host
    "224.0.0.251",      # multicast
    "255.255.255.255",  # broadcast
    OTHER_GW,           # the gateway of the client's other connection
    SITE_HOST,          # a host behind the client's other (site-to-site) tunnel: its queries go in there
])
def test_a_dns_server_that_is_none_is_not_taken(dns: str) -> None:
    net = Network()
    pool = AddressPools([PoolConfig.parse_addrs("v4", "10.9.0.7-10.9.0.7", (ipaddress.ip_address(dns),))])
    net.add(GW, IkeEndpoint([wide_gateway()], address_pool=pool))
    client = net.add(CLIENT, IkeEndpoint([home(), site("172.16.0.0/16")]))
    (up,) = [e for e in run(client, net) if isinstance(e, IkeSaUp)]
    assert up.own_vips == (ipaddress.ip_address("10.9.0.7"),)   # the address itself is fine
    # what the updown script is told
    env = environments(ChildEvent(True, "net", "tun0", 1, 1, CLIENT, GW, 4500, "c1.example", "gw.example",
                                  (Ts.host(up.own_vips[0]),), (parse_ts("10.9.0.0/16"),),
                                  own_vips=up.own_vips, dns=up.dns))[0]
    assert ipaddress.ip_address(dns) not in up.dns, f"DNS server {dns} taken; updown gets PLUTO_DNS4_1=" \
        f"{env.get('PLUTO_DNS4_1')}"
