"""A NAT float (no MOBIKE) the gateway refuses is not answered at the refused address (review
revmobfix F1, its second half).

Answered there, the peer's requests (its DPD) would succeed from an address its ESP is never sent
to: it would keep a dead tunnel until the SA expired.  Unanswered, its liveness check fails and it
closes the IKE SA (then connects again from where it is, a new IKE SA checked as any other).  The
gateway's SA stays where it was, and the genuine copy of a request someone sent ahead from a
refused (spoofed) source is served and answered at the peer's own address.
"""

from __future__ import annotations

import dataclasses

from test_engine_mobike_tunnel_address import CLIENT, VIP, _move
from test_engine_vips import GW, V4, client_cfg, gateway, pools

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.testing import Network


def _connected(net: Network) -> IkeEndpoint:
    gateway(net, pools())
    client = net.add(CLIENT, IkeEndpoint([dataclasses.replace(client_cfg("c1.example", CLIENT, (V4,)),
                                                              mobike=False)]))
    client.initiate("home", "net", net.now)
    net.run(until=net.now + 5)
    return client


def test_a_refused_float_is_not_answered_so_the_peer_notices() -> None:
    net = Network()
    client = _connected(net)
    (c_sa,), (g_sa,) = client.sas, net.nodes[GW].sas
    assert not g_sa.mobike and g_sa.esp_remote[0] == CLIENT
    start = len(net.log)
    _move(net, CLIENT, VIP)   # its IKE now leaves through its own tunnel
    c_sa.send_liveness()
    net.run(until=net.now + 600)
    assert not [s for s in net.log[start:] if s.src[0] == GW and s.dst[0] == VIP], "answered at the refused address"
    assert c_sa.is_closed, "the client's liveness check succeeded: it keeps a tunnel whose ESP goes elsewhere"
    assert g_sa.esp_remote[0] == CLIENT


def test_the_genuine_copy_of_a_spoofed_request_is_answered_at_the_peers_address() -> None:
    net = Network()
    client = _connected(net)
    (c_sa,), (g_sa,) = client.sas, net.nodes[GW].sas
    c_sa.send_liveness()
    (request,) = net.collect()
    spoofed = dataclasses.replace(request, src=(VIP, request.src[1]))
    net.deliver(spoofed)   # someone's copy, sent first from the client's virtual IP
    net.deliver(request)
    answers = net.collect()
    assert [a.dst[0] for a in answers] == [CLIENT]
    for answer in answers:
        net.deliver(answer)
    net.run(until=net.now + 5)
    assert not c_sa.is_closed and g_sa.esp_remote[0] == CLIENT
