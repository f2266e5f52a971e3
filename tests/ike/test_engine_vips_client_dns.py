"""The DNS servers of a gateway's CFG_REPLY, checked as the virtual IP is (review revclient s20 F2; the
proof is test_review_revclient_dns.py).

exchanges/ike_config._dns_refusal drops a DNS server that is nobody's (reserved, broadcast,
multicast, loopback, link-local), this host's own (configured or on an interface), another
connection's IKE peer, inside one of our pools, or behind another tunnel: every name the host looks
up would go there.  The rest are kept in the gateway's order, the virtual IP and the Child SA too;
one warning per reply (limited) names what was dropped, with the gateway's address.  Kept: servers
inside the connection's own remote_ts, on the internet, and the gateway's own address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest
from test_engine_vips import GW, gateway_cfg
from test_engine_vips_client import CLIENT, OTHER_GW
from test_engine_vips_client_tunnels import SITE_HOST, home, run, site, wide_gateway

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

VIP = "10.9.0.7"
ON_AN_INTERFACE = "192.168.77.1"   # an address of one of the client host's interfaces (no local_addrs)
ROAD_WARRIOR = "172.20.0.9"        # inside the pool of the client host's own gateway connection


def _client(net: Network, dns: list[str]) -> IkeEndpoint:
    pool = AddressPools([PoolConfig.parse_addrs("v4", f"{VIP}-{VIP}", tuple(ipaddress.ip_address(d) for d in dns))])
    net.add(GW, IkeEndpoint([wide_gateway()], address_pool=pool))
    serving = dataclasses.replace(gateway_cfg(("ours",)), name="rw-server", local_addr=CLIENT)
    own_pools = AddressPools([PoolConfig.parse_addrs("ours", "172.20.0.0/24")])
    client = net.add(CLIENT, IkeEndpoint([home(), site("172.16.0.0/16"), serving], address_pool=own_pools))
    client.host_addresses = frozenset({ipaddress.ip_address(ON_AN_INTERFACE)})
    return client


@pytest.mark.parametrize(("dns", "why"), [
    ("::1", "a reserved, broadcast, multicast, loopback or link-local address"),
    ("ff02::1", "a reserved, broadcast, multicast, loopback or link-local address"),
    ("fe80::53", "a reserved, broadcast, multicast, loopback or link-local address"),
    ("::ffff:127.0.0.1", "a reserved, broadcast, multicast, loopback or link-local address"),
    (ON_AN_INTERFACE, "an address of this host"),
    (CLIENT, "an address of this host"),
    (ROAD_WARRIOR, "inside pool ours of connection rw-server"),
    (OTHER_GW, "the address of an IKE peer of connection site"),
    (SITE_HOST, "inside remote_ts 172.16.0.0/16 of connection site"),
])
def test_such_a_dns_server_is_dropped_and_logged(caplog: pytest.LogCaptureFixture, dns: str, why: str) -> None:
    net = Network()
    client = _client(net, [dns])
    with caplog.at_level(logging.WARNING, "tunsec.ike"):
        events = run(client, net)
    (up,) = [e for e in events if isinstance(e, IkeSaUp)]
    assert up.dns == () and up.own_vips == (ipaddress.ip_address(VIP),)
    assert any(isinstance(e, ChildSaUp) for e in events)
    assert f"home: gateway {GW} sent DNS server {ipaddress.ip_address(dns)} ({why}): dropped" in caplog.text


def test_the_others_are_kept_in_order() -> None:
    """Inside the connection's own remote_ts, on the internet, the gateway itself, IPv6: kept; the
    dropped ones between them cost nothing else."""
    net = Network()
    sent = ["10.9.0.53", "127.0.0.1", "9.9.9.9", SITE_HOST, GW, "2001:db8:53::1", "0.0.0.0"]
    events = run(_client(net, sent), net)
    (up,) = [e for e in events if isinstance(e, IkeSaUp)]
    assert [str(d) for d in up.dns] == ["10.9.0.53", "9.9.9.9", GW, "2001:db8:53::1"]


def test_the_warning_is_limited(caplog: pytest.LogCaptureFixture) -> None:
    net = Network()
    client = _client(net, ["127.0.0.1"])
    client.peer_logs.clock = lambda: 0.0   # a window that stands still: what passes is not the machine's pace
    with caplog.at_level(logging.WARNING, "tunsec.ike"):
        for _ in range(8):
            run(client, net)
    lines = [r.getMessage() for r in caplog.records if "sent DNS server" in r.getMessage()]
    assert len(lines) == 5   # peer_logs.BURST for the gateway (one peer), the rest held
