"""Where a client does not let a REDIRECT (RFC 5685) send it (review N5).

Not to an address that is no gateway's (loopback: a local service would get our IKE; broadcast,
reserved; link-local, which a REDIRECT cannot scope to an interface), not to this host's own, not
inside the connection's own remote_ts (the new IKE SA's IKE would go into the tunnel it is to set
up), whether the REDIRECT names the address or an FQDN resolves to it; and with follow_redirects =
no (strongSwan's charon.follow_redirects) not at all, nor does it announce REDIRECT_SUPPORTED.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_engine_redirect import (
    CLIENT,
    GW_A,
    GW_B,
    _answer,
    _nonce,
    assert_init_redirect_refused,
    client_cfg,
    events_of,
    gateway_cfg,
    notifies,
    sas_of,
    three,
)

from tunsec.ike.config import child_config
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import NegotiationFailed, Redirected
from tunsec.ike.message import NotifyPayload
from tunsec.ike.redirect import RedirectError, decode_redirect, encode_gateway, encode_redirect
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

OTHER_LOCAL = "192.0.2.50"   # another connection's local address: this host's


@pytest.mark.parametrize("target", ["127.0.0.1", "::1", "255.255.255.255", "240.0.0.1", "0.1.2.3", "169.254.10.1",
                                    "fe80::1", "::ffff:127.0.0.1", "224.0.0.1", "0.0.0.0"])
def test_decode_redirect_refuses_what_is_no_gateway_address(target: str) -> None:
    with pytest.raises(RedirectError, match="which is no gateway"):
        decode_redirect(encode_gateway(target) + b"N" * 32)


@pytest.mark.parametrize("target", ["198.51.100.1", "2001:db8::1", "10.9.0.5"])
def test_decode_redirect_takes_gateway_addresses(target: str) -> None:
    assert decode_redirect(encode_gateway(target) + b"N" * 32).gateway == target


def client_endpoint(**kw: object) -> IkeEndpoint:
    other = dataclasses.replace(client_cfg(), name="other", local_addr=OTHER_LOCAL, remote_addr="203.0.113.9")
    return IkeEndpoint([client_cfg(**kw), other])


@pytest.mark.parametrize(("target", "why"), [
    ("10.2.0.5", "10.2.0.5 is inside remote_ts 10.2.0.0/16 of child net (IKE would go into the tunnel)"),
    (CLIENT, f"{CLIENT} is an address of this host"),
    (OTHER_LOCAL, f"{OTHER_LOCAL} is an address of this host"),
    # IPv4-mapped (review T F4): checked as the IPv4 address they stand for
    ("::ffff:10.2.0.5", "10.2.0.5 is inside remote_ts 10.2.0.0/16 of child net (IKE would go into the tunnel)"),
    (f"::ffff:{CLIENT}", f"{CLIENT} is an address of this host"),
    (f"::ffff:{OTHER_LOCAL}", f"{OTHER_LOCAL} is an address of this host"),
])
def test_a_redirect_in_ike_sa_init_to_such_an_address_is_not_followed(target: str, why: str) -> None:
    assert_init_redirect_refused(client_endpoint(), target, why)


def test_an_fqdn_resolving_only_to_such_addresses_is_not_used() -> None:
    net, _a, b = three({"redirect_to": "gw-b.example"})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    sa.gateway_resolved("gw-b.example", ["127.0.0.1", "10.2.0.5", CLIENT, "fe80::1", "::ffff:10.2.0.5",
                                         f"::ffff:{CLIENT}"], net.now)
    net.run(until=5.0)
    failed = [e for e in net.take(CLIENT) if isinstance(e, NegotiationFailed)]
    assert failed == [NegotiationFailed("rw", "REDIRECT", "gateway gw-b.example has no usable address")]
    assert not any(s.dst[0] in ("127.0.0.1", "10.2.0.5", "::ffff:10.2.0.5") for s in net.log) and b.sa_count == 0


def test_an_fqdn_resolving_to_such_addresses_and_a_gateway_goes_to_the_gateway() -> None:
    net, _a, _b = three({"redirect_to": "gw-b.example"})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    sa.gateway_resolved("gw-b.example", ["10.2.0.5", "127.0.0.1", GW_B], net.now)
    net.run(until=5.0)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B


def test_an_fqdn_resolving_to_a_mapped_gateway_goes_to_its_ipv4_address() -> None:
    """::ffff:a.b.c.d is checked and connected to as a.b.c.d (review T F4)."""
    net, _a, _b = three({"redirect_to": "gw-b.example"})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    sa.gateway_resolved("gw-b.example", ["::ffff:10.2.0.5", f"::ffff:{GW_B}"], net.now)
    net.run(until=5.0)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B


def test_a_redirect_in_ike_auth_to_the_remote_ts_is_not_followed() -> None:
    net, _a, _b = three({"redirect_to": "10.2.0.5", "redirect_on": "auth"})
    client = net.nodes[CLIENT]
    client.initiate("rw", "net", 0.0)
    net.run(until=5.0)
    events = net.take(CLIENT)
    assert NegotiationFailed("rw", "REDIRECT", "IKE_AUTH: REDIRECT not followed: 10.2.0.5 is inside remote_ts "
                             "10.2.0.0/16 of child net (IKE would go into the tunnel)") in events
    assert not any(isinstance(e, Redirected) for e in events)
    assert sas_of(client) == [] and not any(s.dst[0] == "10.2.0.5" for s in net.log)


def test_follow_redirects_no_announces_no_support_and_is_served() -> None:
    net = Network()
    client = net.add(CLIENT, IkeEndpoint([client_cfg(follow_redirects=False)]))
    net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B)]))
    net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    sa = client.initiate("rw", "net", 0.0)
    net.run(until=5.0)
    first = next(s for s in net.log if s.dst[0] == GW_A)
    assert not notifies(first.data, NotifyType.REDIRECT_SUPPORTED)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_A   # A serves a client without support


def test_follow_redirects_no_refuses_a_redirect_anyway() -> None:
    client = IkeEndpoint([client_cfg(follow_redirects=False)])
    sa = client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    reply = _answer(request.data, (NotifyPayload(NotifyType.REDIRECT, encode_redirect(GW_B, _nonce(request.data))),))
    client.receive(reply, (GW_A, 500), 0.1, (CLIENT, 500))
    assert client.datagrams_to_send(0.1) == []
    failed = [e for e in events_of(client) if isinstance(e, NegotiationFailed)]
    assert failed == [NegotiationFailed("rw", "REDIRECT", f"REDIRECT to {GW_B} not followed: follow_redirects = no")]
    assert sa.state is State.CLOSED


@pytest.mark.parametrize("remote_ts", ["0.0.0.0/0", "0.0.0.0/1, 128.0.0.0/1"])
def test_a_full_tunnel_client_follows_a_redirect_into_its_remote_ts(remote_ts: str) -> None:
    """A full tunnel covers every gateway: the daemon keeps the new gateway's address out of the TUN's
    routes (an exclude route, as for the first), so its remote_ts refuses no target of an authenticated
    REDIRECT (IKE_AUTH); a narrower remote_ts beside it still does."""
    child = child_config("net", "10.1.0.0/16", f"{remote_ts}, 10.2.0.0/16", "aes128gcm16")
    net = Network()
    net.add(CLIENT, IkeEndpoint([client_cfg(children=(child,))]))
    net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B, redirect_on="auth")]))
    b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    (sa,) = net.nodes[CLIENT].sas   # the one the REDIRECT in IKE_AUTH started
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B and b.sa_count == 1
    assert_init_redirect_refused(client_endpoint(children=(child,)), "10.2.0.5", "10.2.0.5 is inside remote_ts "
                                 "10.2.0.0/16 of child net (IKE would go into the tunnel)")


@pytest.mark.parametrize("remote_ts", ["0.0.0.0/0", "0.0.0.0/1, 128.0.0.0/1"])
def test_a_full_tunnel_client_refuses_an_init_redirect_into_its_full_tunnel(remote_ts: str) -> None:
    """Review revfull F2: a REDIRECT in IKE_SA_INIT is unauthenticated (anyone on the path has the nonce);
    its target would get an exclude route, in clear around the full tunnel: refused, unless it is the
    connection's own remote address."""
    child = child_config("net", "10.1.0.0/16", remote_ts, "aes128gcm16")
    assert_init_redirect_refused(client_endpoint(children=(child,)), GW_B, f"{GW_B} is inside remote_ts "
                                 f"{remote_ts.split(', ')[-1]} of child net (IKE would go into the tunnel)")
    client = client_endpoint(children=(child,), remote_addr=GW_B)
    sa = client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    reply = _answer(request.data, (NotifyPayload(NotifyType.REDIRECT, encode_redirect(GW_B, _nonce(request.data))),))
    client.receive(reply, (GW_B, 500), 0.1, (CLIENT, 500))
    assert sa.state is not State.CLOSED and [d.addr[0] for d in client.datagrams_to_send(0.1)] == [GW_B]
