"""Redirect (RFC 5685) on a fake clock: gateways that send new clients elsewhere, clients that follow.

Gateway A (``redirect_to`` B) answers a client's IKE_SA_INIT statelessly with
N(REDIRECT); the client starts over at B, which it tells where it came from
(N(REDIRECTED_FROM)), and gets its IKE and Child SA there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, IkeSaUp, NegotiationFailed, Redirected
from tunsec.ike.identity import Identity
from tunsec.ike.message import Message, NoncePayload, NotifyPayload, Payload, SaPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.redirect import MAX_REDIRECTS, encode_redirect
from tunsec.ike.sa import State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network

CLIENT, GW_A, GW_B = "192.0.2.1", "192.0.2.2", "192.0.2.3"
PSK = Secret(b"a shared secret of some length")


def client_cfg(**kw: Any) -> IkeConfig:
    base = IkeConfig(
        "rw",
        LocalAuth("psk", Identity.parse("carol.example")),
        RemoteAuth("psk", Identity.parse("gw.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", "10.1.0.0/16", "10.2.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=CLIENT,
        remote_addr=GW_A,
    )
    return dataclasses.replace(base, **kw)


def gateway_cfg(local: str, **kw: Any) -> IkeConfig:
    base = IkeConfig(
        "rw",
        LocalAuth("psk", Identity.parse("gw.example")),
        RemoteAuth("psk", Identity.parse("carol.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", "10.2.0.0/16", "10.1.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=local,
    )
    return dataclasses.replace(base, **kw)


def notifies(data: bytes, kind: NotifyType) -> list[NotifyPayload]:
    return [p for p in decode_message(data).payloads if isinstance(p, NotifyPayload) and p.type == kind]


def three(a_kw: dict[str, Any], b_kw: dict[str, Any] | None = None) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    net.add(CLIENT, IkeEndpoint([client_cfg()]))
    a = net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, **a_kw)]))
    b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B, **(b_kw or {}))]))
    return net, a, b


def test_client_redirected_from_a_gets_its_sas_at_b() -> None:
    net, a, b = three({"redirect_to": GW_B})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)

    events = net.take(CLIENT)
    assert events[0] == Redirected("rw", GW_A, GW_B)
    assert any(isinstance(e, IkeSaUp) for e in events) and any(isinstance(e, ChildSaUp) for e in events)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B
    # A answered once, statelessly; B holds the SA and saw where the client came from
    assert (a.stats.redirects_sent, a.sa_count, b.sa_count) == (1, 0, 1)
    to_a = [s for s in net.log if s.dst[0] == GW_A]
    assert len(to_a) == 1 and notifies(to_a[0].data, NotifyType.REDIRECT_SUPPORTED)
    init_to_b = next(s for s in net.log if s.dst[0] == GW_B)
    (came_from,) = notifies(init_to_b.data, NotifyType.REDIRECTED_FROM)
    assert came_from.data == bytes((1, 4)) + ipaddress.ip_address(GW_A).packed
    assert not notifies(init_to_b.data, NotifyType.REDIRECT_SUPPORTED)
    # the redirect carried the client's first nonce; B's request has a fresh one
    (redirect,) = notifies(next(s for s in net.log if s.src[0] == GW_A).data, NotifyType.REDIRECT)
    nonce_to_a = next(p for p in decode_message(to_a[0].data).payloads if isinstance(p, NoncePayload)).data
    nonce_to_b = next(p for p in decode_message(init_to_b.data).payloads if isinstance(p, NoncePayload)).data
    assert redirect.data == bytes((1, 4)) + ipaddress.ip_address(GW_B).packed + nonce_to_a
    assert nonce_to_b != nonce_to_a


def test_redirect_when_counts_the_ike_sas_the_gateway_holds() -> None:
    net, a, b = three({"redirect_to": GW_B, "redirect_when": 1})
    first = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    second = net.nodes[CLIENT].initiate("rw", "net", net.now)
    net.run(until=10.0)
    assert first.state is State.ESTABLISHED and first.remote_addr[0] == GW_A  # A held no SA yet
    assert second.state is State.ESTABLISHED and second.remote_addr[0] == GW_B  # A held one
    assert (a.stats.redirects_sent, a.sa_count, b.sa_count) == (1, 1, 1)


def _without_redirect_supported(request: bytes) -> bytes:
    msg = decode_message(request)
    kept = tuple(
        p for p in msg.payloads if not (isinstance(p, NotifyPayload) and p.type == NotifyType.REDIRECT_SUPPORTED)
    )
    assert len(kept) == len(msg.payloads) - 1
    return dataclasses.replace(msg, payloads=kept).encode()


def test_client_without_redirect_supported_is_served_not_redirected() -> None:
    client = IkeEndpoint([client_cfg()])
    client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    a = IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B)])
    a.receive(_without_redirect_supported(request.data), (CLIENT, 500), 0.0, (GW_A, 500))
    (reply,) = a.datagrams_to_send(0.0)
    payloads = decode_message(reply.data).payloads
    assert any(isinstance(p, SaPayload) for p in payloads)
    assert not any(isinstance(p, NotifyPayload) and p.type == NotifyType.REDIRECT for p in payloads)
    assert (a.stats.redirects_sent, a.sa_count) == (0, 1)


def test_redirect_loop_is_bounded() -> None:
    net, a, b = three({"redirect_to": GW_B}, {"redirect_to": GW_A})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run()
    events = net.take(CLIENT)
    assert [e for e in events if isinstance(e, Redirected)] == [
        Redirected("rw", (GW_A, GW_B)[i % 2], (GW_B, GW_A)[i % 2]) for i in range(MAX_REDIRECTS)
    ]
    failed = [e for e in events if isinstance(e, NegotiationFailed)]
    assert len(failed) == 1 and failed[0].reason == "REDIRECT"
    assert sa.state is State.CLOSED
    assert a.stats.redirects_sent + b.stats.redirects_sent == MAX_REDIRECTS + 1
    assert (a.sa_count, b.sa_count, net.nodes[CLIENT].sa_count) == (0, 0, 0)


def _answer(request: bytes, payloads: tuple[Payload, ...]) -> bytes:
    msg = decode_message(request)
    return Message(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, int(HeaderFlag.RESPONSE), 0, payloads).encode()


def _nonce(request: bytes) -> bytes:
    return next(p.data for p in decode_message(request).payloads if isinstance(p, NoncePayload))


MALFORMED: list[tuple[str, Any, str]] = [
    ("empty", lambda n: b"", "REDIRECT data of 0 bytes is shorter than its header"),
    ("length beyond data", lambda n: bytes((1, 40, 192, 0)), "REDIRECT gateway identity of length 40 exceeds"),
    ("ipv4 of 16 bytes", lambda n: bytes((1, 16)) + bytes(16) + n, "REDIRECT gateway identity of type 1 has length 16"),
    ("unknown type", lambda n: bytes((9, 4, 192, 0, 2, 3)) + n, "REDIRECT gateway identity type 9 is unknown"),
    ("fqdn", lambda n: bytes((3, 11)) + b"gw.example." + n, "REDIRECT to an FQDN is not followed"),
    ("unspecified", lambda n: bytes((1, 4, 0, 0, 0, 0)) + n, "REDIRECT names 0.0.0.0, which is no gateway"),
    ("wrong nonce", lambda n: encode_redirect(GW_B, bytes(len(n))), "REDIRECT does not carry our nonce"),
    ("no nonce", lambda n: encode_redirect(GW_B, b""), "REDIRECT does not carry our nonce"),
]


@pytest.mark.parametrize(("case", "data", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_redirect_is_refused(case: str, data: Any, message: str) -> None:
    client = IkeEndpoint([client_cfg()])
    sa = client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    reply = _answer(request.data, (NotifyPayload(NotifyType.REDIRECT, data(_nonce(request.data))),))
    client.receive(reply, (GW_A, 500), 0.1, (CLIENT, 500))
    assert client.datagrams_to_send(0.1) == []  # nothing goes anywhere, least of all to a new gateway
    events = []
    while (ev := client.next_event()) is not None:
        events.append(ev[1])
    failed = [e for e in events if isinstance(e, NegotiationFailed)]
    assert len(failed) == 1 and failed[0].reason == "INVALID_SYNTAX" and failed[0].detail.startswith(message)
    assert not any(isinstance(e, Redirected) for e in events)
    assert sa.state is State.CLOSED and client.sa_count == 0
