"""A REDIRECT to another connection's gateway is not followed, and no INITIAL_CONTACT goes to a peer
we have an IKE SA with (review revclient s20 F1; the proof is test_review_revclient_redirect_peer.py).

address_role.refused_address refuses a REDIRECT target whose role is "peer" of another connection
(other_peer), unless this connection has it as its remote address or an established IKE SA of this
connection is there: a gateway cluster redirecting among its members, which no other connection of
ours names, is followed as before (test_engine_redirect*.py).  Second line: endpoint._has_contact
counts an established IKE SA with our identity to the same address, so an IKE SA that gets there
by any path sends no INITIAL_CONTACT (which would end our IKE SA of the other connection there).
"""

from __future__ import annotations

import pytest
from test_engine_redirect import CLIENT, GW_A, GW_B, _answer, _nonce, client_cfg, events_of, gateway_cfg
from test_review_revclient_redirect_peer import GW_B_CERT, NOW, _client_conn, _gateway, _network

from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import DownReason, IkeSaDown, NegotiationFailed, Redirected
from tunsec.ike.message import NotifyPayload
from tunsec.ike.redirect import encode_redirect
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

ROAD_WARRIOR = "198.51.100.77"   # a road warrior of the client host's own gateway connection


@pytest.mark.parametrize(("redirect_on", "prefix"), [("init", ""), ("auth", "IKE_AUTH: ")])
def test_the_refusal_names_the_connection_whose_gateway_it_is(redirect_on: str, prefix: str) -> None:
    net, client, _gw_b = _network(redirect_on)
    client.initiate("corp", "net", net.now)
    net.run(until=5.0)
    events = net.take("192.0.2.1")
    assert NegotiationFailed("corp", "REDIRECT", f"{prefix}REDIRECT not followed: 192.0.2.3 is the address of an IKE "
                             "peer of connection site (IKE would go to that connection's gateway)") in events
    assert not any(isinstance(e, Redirected) for e in events)


def test_a_redirect_to_an_established_peer_of_our_gateway_connection_is_not_followed() -> None:
    """A road warrior of this host's gateway connection is nobody's gateway: our IKE (the client's
    identity, its AUTH) is not sent there."""
    net = Network()
    client = net.add(CLIENT, IkeEndpoint([client_cfg(), gateway_cfg(CLIENT, name="gw")]))
    net.add(ROAD_WARRIOR, IkeEndpoint([client_cfg(name="carol", local_addr=ROAD_WARRIOR, remote_addr=CLIENT)]))
    net.nodes[ROAD_WARRIOR].initiate("carol", "net", 0.0)
    net.run(until=5.0)
    (served,) = client.sas
    assert served.state is State.ESTABLISHED
    net.take(CLIENT)
    sa = client.initiate("rw", "net", net.now)
    (request,) = client.datagrams_to_send(net.now)
    reply = _answer(request.data, (NotifyPayload(NotifyType.REDIRECT,
                                                 encode_redirect(ROAD_WARRIOR, _nonce(request.data))),))
    client.receive(reply, (GW_A, 500), net.now, (CLIENT, 500))
    failed = [e for e in events_of(client) if isinstance(e, NegotiationFailed)]
    assert failed == [NegotiationFailed("rw", "REDIRECT", f"REDIRECT not followed: {ROAD_WARRIOR} is the address "
                                        "of an IKE peer of connection gw (IKE would go to that connection's gateway)")]
    assert sa.state is State.CLOSED and served.state is State.ESTABLISHED


def test_a_redirect_to_where_the_same_connection_is_up_already_is_followed() -> None:
    """A cluster: A sends the client to B, where its first IKE SA of the connection is up; a second
    IKE SA of the same connection is sent there too and follows (B is this connection's peer), and
    B keeps both: no INITIAL_CONTACT went with the second."""
    net = Network()
    client = net.add(CLIENT, IkeEndpoint([client_cfg()]))
    net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B)]))
    gw_b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    first = client.initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert first.state is State.ESTABLISHED and first.remote_addr[0] == GW_B
    second = client.initiate("rw", "net", net.now)
    net.run(until=10.0)
    assert second.state is State.ESTABLISHED and second.remote_addr[0] == GW_B
    assert first.state is State.ESTABLISHED and gw_b.sa_count == 2
    assert not any(isinstance(e, IkeSaDown) for e in net.take(GW_B))


def test_no_initial_contact_to_a_gateway_we_have_an_ike_sa_with_under_another_identity() -> None:
    """Two connections to one gateway address, which knows only one identity of its own: with the
    first up, the second's IKE_AUTH carries no INITIAL_CONTACT, so the gateway does not end the
    first (its identity then fails the second's check: the second fails alone)."""
    net = Network()
    client = net.add(CLIENT, IkeEndpoint([_client_conn("site", GW_B, "gw-b.example", "10.3.0.0/16"),
                                          _client_conn("site2", GW_B, "gw-b2.example", "10.3.0.0/16")],
                                         wall_clock=lambda: NOW))
    gw_b = net.add(GW_B, _gateway(GW_B, "gw-b.example", GW_B_CERT, "10.3.0.0/16"))
    site = client.initiate("site", "net", net.now)
    net.run(until=5.0)
    assert site.state is State.ESTABLISHED and gw_b.sa_count == 1
    net.take(GW_B)
    client.initiate("site2", "net", net.now)
    net.run(until=15.0)
    replaced = [e for e in net.take(GW_B) if isinstance(e, IkeSaDown) and e.reason is DownReason.REPLACED]
    assert replaced == [] and site.state is State.ESTABLISHED
