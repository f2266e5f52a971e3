"""Review revmobike F1: a peer moving its SAs to an address this gateway routes into a tunnel.

A road warrior's UPDATE_SA_ADDRESSES (or, without MOBIKE, any authenticated request of a peer
seen behind a NAT) sent through its own tunnel arrives from its virtual IP: the gateway decrypts
it, writes it to the TUN, and the kernel hands it to the IKE socket (the destination is ours).
The return routability check sent to that address goes through the same tunnel back to the
client, which answers it: the Child SAs then send their ESP to the client's virtual IP, which the
gateway routes into the TUN, where the same SA encrypts it again (with a full-tunnel local_ts),
each round a larger datagram, fragments of it encrypted again: a loop in the worker.  An address
of another tunnel's remote_ts (a host behind a site-to-site peer) would put this peer's ESP into
that tunnel.  ``mobike._unacceptable`` (and ``sa_responder._acceptable`` for the NAT float) check
only the address family and ``remote_addrs`` (%any for road warriors)."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from test_engine_vips import GW, PSK, V4, client_cfg, gateway, gateway_cfg, pools

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.testing import Network

CLIENT = "198.51.100.1"
VIP = "10.3.0.1"   # the first lease of test_engine_vips.pools' v4 pool


def _move(net: Network, old: str, new: str) -> None:
    """The node at ``old`` now speaks from ``new`` (as the client does through its tunnel)."""
    net.nodes[new] = net.nodes.pop(old)
    net.events[new] = net.events.pop(old)


@pytest.mark.parametrize("mobike", [True, False])
def test_a_client_cannot_move_its_sas_to_its_own_virtual_ip(mobike: bool) -> None:
    net, pool = Network(), pools()
    gw = gateway(net, pool)
    cfg = dataclasses.replace(client_cfg("c1.example", CLIENT, (V4,)), mobike=mobike)
    client = net.add(CLIENT, IkeEndpoint([cfg]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    assert c_sa.mobike == g_sa.mobike == mobike
    assert ipaddress.ip_address(VIP) in {lease.address for lease in pool.leases()}
    # the client's IKE now leaves through its own tunnel: its source is its virtual IP
    _move(net, CLIENT, VIP)
    if mobike:
        assert c_sa.update_addresses((VIP, 4500))
    else:
        c_sa.send_liveness()   # tunsec's random NAT hashes make it look NAT'd: it is followed
    net.run(until=net.now + 30)
    assert not g_sa.is_closed
    # the gateway must not send this peer's ESP (nor its IKE) to an address it routes into the TUN
    assert g_sa.esp_remote[0] != VIP, "the Child SAs' ESP now goes to the client's own virtual IP"
    assert g_sa.remote_addr[0] != VIP


SITE_HOST = "10.1.0.5"   # a host behind another peer's site-to-site tunnel


def _site_cfg() -> IkeConfig:
    """Another connection of the gateway's: a site whose LAN 10.1.0.0/16 is routed into the TUN."""
    return IkeConfig(
        "site",
        LocalAuth("psk", Identity.parse("gw.example")),
        RemoteAuth("psk", Identity.parse("site.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("lan", "10.9.0.0/16", "10.1.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=GW,
        remote_addr="203.0.113.9",
    )


def test_a_client_without_mobike_cannot_float_its_sas_into_another_peers_tunnel() -> None:
    """Without MOBIKE no return routability check stands in the way: one authenticated request from
    a spoofed source inside another connection's remote_ts (a NAT'd-looking client is followed at
    once) sends this client's ESP into that other peer's tunnel, to a host on its LAN: the other
    peer's SA carries it (its bandwidth, its sequence numbers), its host gets the datagrams."""
    net, pool = Network(), pools()
    gw = net.add(GW, IkeEndpoint([gateway_cfg(), _site_cfg()], address_pool=pool))
    client = net.add(CLIENT, IkeEndpoint([dataclasses.replace(client_cfg("c1.example", CLIENT, (V4,)),
                                                              mobike=False)]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    (c_sa,), (g_sa,) = client.sas, gw.sas
    assert not g_sa.mobike and g_sa.esp_remote[0] == CLIENT
    _move(net, CLIENT, SITE_HOST)   # its next request's source: spoofed, nothing need come back
    c_sa.send_liveness()
    net.run(until=net.now + 1)
    assert g_sa.esp_remote[0] != SITE_HOST, "the client's ESP now goes into the site's tunnel"
