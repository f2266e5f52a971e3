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
from test_engine_vips import V4, client_cfg, gateway, pools

from tunsec.ike.endpoint import IkeEndpoint
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
