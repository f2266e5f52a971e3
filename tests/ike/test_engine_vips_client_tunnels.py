"""A client's virtual IP inside another connection's tunnel or one of our own pools (review revclient F1).

The address a gateway assigns goes on the TUN as a local address of the host, and the local routing
table comes before the TUN's routes: from then on the host's traffic to it is delivered to the host.
Inside another connection's remote_ts (a host behind a site-to-site tunnel) or inside a pool our
gateway connections lease from (a road warrior's address, routed to it through the TUN), that cuts
the host behind the tunnel, or the road warrior, off: a malicious gateway picks whom.  The client
refuses such an address (FAILED_CP_REQUIRED, the reason logged), unless the connection's own
remote_ts holds it as specifically as the other's (two full tunnels; our gateway is then the one
that traffic goes to anyway); a remote_ts of everything (0.0.0.0/0, or 0.0.0.0/1 + 128.0.0.0/1: review
revvip F2; for IPv6 2000::/3 is everything) is no tunnel's in particular.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest
from test_engine_vips import V4, client_cfg, gateway, gateway_cfg, only
from test_engine_vips_client import CLIENT, OTHER_GW

from tunsec.ike.address_role import Role, address_role
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed
from tunsec.ike.testing import Network
from tunsec.policy.pools import AddressPools, PoolConfig

SITE_HOST = "172.16.0.10"   # a host behind the client's site-to-site tunnel to OTHER_GW


def home(remote_ts: str | list[str] = "10.9.0.0/16") -> IkeConfig:
    """The road-warrior connection whose gateway assigns the virtual IP."""
    cfg = client_cfg("c1.example", CLIENT, (V4,))
    return dataclasses.replace(cfg, children=(child_config("net", "dynamic", remote_ts, "aes128gcm16"),))


def site(remote_ts: str | list[str]) -> IkeConfig:
    """The client's site-to-site connection to another gateway (not up)."""
    return dataclasses.replace(client_cfg("c1.example", CLIENT, ()), name="site", remote_addr=OTHER_GW,
                               children=(child_config("lan", "10.1.0.0/24", remote_ts, "aes128gcm16"),))


def wide_gateway() -> IkeConfig:
    """The gateway, offering whatever the client asks for behind it (no narrowing refuses it first)."""
    cfg = gateway_cfg()
    return dataclasses.replace(cfg, children=(child_config("net", ["0.0.0.0/0", "::/0"], "dynamic", "aes128gcm16"),))


def leasing(address: str) -> AddressPools:
    """The gateway's pool: that one address (a malicious gateway's choice, or an honest overlap)."""
    return AddressPools([PoolConfig.parse_addrs("v4", f"{address}-{address}")])


def run(client: IkeEndpoint, net: Network) -> list[object]:
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return net.take(CLIENT)


def refused(events: list[object], address: str, why: str) -> None:
    (up,) = only(events, IkeSaUp)
    assert ipaddress.ip_address(address) not in up.own_vips and up.own_vips == ()
    assert not only(events, ChildSaUp)
    (failed,) = only(events, NegotiationFailed)
    assert failed.reason == NotifyType.FAILED_CP_REQUIRED.name
    assert why in failed.detail, failed.detail


@pytest.mark.parametrize(("own", "other"), [
    ("10.9.0.0/16", "172.16.0.0/16"),     # ours does not hold it at all
    ("0.0.0.0/0", "172.16.0.0/16"),       # ours is a full tunnel: the site's is more specific
    ("172.0.0.0/8", "172.16.0.0/12"),     # ours holds it, less specifically
])
def test_a_vip_inside_another_connections_remote_ts_is_refused(
        caplog: pytest.LogCaptureFixture, own: str, other: str) -> None:
    net = Network()
    gateway(net, leasing(SITE_HOST), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home(own), site(other)]))
    with caplog.at_level(logging.WARNING, "tunsec.ike"):
        events = run(client, net)
    other_net = str(ipaddress.ip_network(other))
    refused(events, SITE_HOST, f"virtual IP {SITE_HOST} (inside remote_ts {other_net} of connection site: "
                               "as ours it would take that tunnel's traffic to it)")
    assert f"inside remote_ts {other_net} of connection site" in caplog.text


def test_a_vip_inside_one_of_our_own_pools_is_refused() -> None:
    """The host is also a gateway to road warriors (pool 172.20.0.0/24, routed to them through the
    TUN); the upstream gateway assigns it an address of that pool, leased or not yet."""
    leased = "172.20.0.9"
    net = Network()
    gateway(net, leasing(leased), wide_gateway())
    serving = dataclasses.replace(gateway_cfg(("ours",)), name="rw-server", local_addr=CLIENT)
    own_pools = AddressPools([PoolConfig.parse_addrs("ours", "172.20.0.0/24")])
    client = net.add(CLIENT, IkeEndpoint([home(), serving], address_pool=own_pools))
    refused(run(client, net), leased, f"virtual IP {leased} (inside pool ours of connection rw-server: "
                                      "as ours it would take a road warrior's traffic)")


@pytest.mark.parametrize(("own", "other", "address"), [
    ("0.0.0.0/0", "0.0.0.0/0", SITE_HOST),          # two full tunnels
    ("172.16.0.0/24", "172.16.0.0/16", SITE_HOST),  # ours holds it more specifically
    ("172.16.0.0/16", "172.16.0.0/16", SITE_HOST),  # as specifically: our gateway gets that traffic anyway
    ("10.9.0.0/16", "0.0.0.0/0", "10.3.0.1"),       # a split tunnel beside a full one: /0 is no one's
    ("10.9.0.0/16", ["0.0.0.0/1", "128.0.0.0/1"], "10.3.0.1"),   # a full one in halves (review revvip F2)
    ("10.9.0.0/16", ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"], "10.3.0.1"),   # in three pieces
    ("10.9.0.0/16", "172.16.0.0/16", "10.3.0.1"),   # the other tunnel's network does not hold it
    (["10.9.0.0/16", "172.16.0.10"], "172.16.0.0/16", SITE_HOST),   # one of our remote_ts is that host
])
def test_a_vip_no_other_tunnel_holds_more_specifically_is_taken(
        own: str | list[str], other: str | list[str], address: str) -> None:
    """Where the fix stops: these pass before it too, and fail for a check that refused more."""
    net = Network()
    gateway(net, leasing(address), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home(own), site(other)]))
    events = run(client, net)
    (up,) = only(events, IkeSaUp)
    assert up.own_vips == (ipaddress.ip_address(address),)
    assert not only(events, NegotiationFailed)
    (child,) = only(events, ChildSaUp)
    assert [str(t) for t in child.local_ts] == [f"{address}/32"]


@pytest.mark.parametrize("other", [
    ["0.0.0.0/0", "172.16.0.0/16"],
    ["0.0.0.0/1", "128.0.0.0/1", "172.16.0.0/16"],
])
def test_a_specific_network_beside_a_full_tunnel_still_counts(other: list[str]) -> None:
    """A full tunnel is only its widest networks (review revvip F2): 172.16.0.0/16 beside them is
    routed to that gateway specifically, and a VIP inside it is refused as before."""
    net = Network()
    gateway(net, leasing(SITE_HOST), wide_gateway())
    client = net.add(CLIENT, IkeEndpoint([home(), site(other)]))
    refused(run(client, net), SITE_HOST, "inside remote_ts 172.16.0.0/16 of connection site")


@pytest.mark.parametrize(("other", "address", "network"), [
    ("2000::/3", "2001:db8::1", None),                    # IPv6 global unicast: a full tunnel
    (["::/1", "8000::/1"], "2001:db8::1", None),          # ::/0 in halves
    (["2000::/4", "3000::/4"], "2001:db8::1", None),      # 2000::/3 in halves
    (["2000::/3", "fd00::/8"], "fd00::1", "fd00::/8"),    # a ULA beside it still counts
    (["2000::/3", "2001:db8::/32"], "2001:db8::1", "2001:db8::/32"),   # so does a specific global one
    ("2000::/4", "2001:db8::1", "2000::/4"),              # half of it is a network like any other
])
def test_an_ipv6_full_tunnel_is_the_global_unicast_space(
        other: str | list[str], address: str, network: str | None) -> None:
    """The decision for IPv6 (address_role.py): everything is 2000::/3, where every global address
    lies; ::/0 covers it too.  Asked of address_role directly: the engine's IPv6 VIP path is the IPv4
    one's."""
    cfg = dataclasses.replace(site("10.3.0.0/16"), children=(child_config("lan", "fd01::/64", other, "aes128gcm16"),))
    role = address_role([home(), cfg], {}, None, ipaddress.ip_address(address))   # type: ignore[arg-type]
    if network is None:
        assert role is None
    else:
        assert role == Role("tunnel", "site", network=ipaddress.ip_network(network))
