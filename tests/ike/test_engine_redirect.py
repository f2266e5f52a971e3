"""Redirect (RFC 5685) on a fake clock: gateways that send new clients elsewhere, clients that follow.

Gateway A (``redirect_to`` B) answers a client's IKE_SA_INIT statelessly with
N(REDIRECT); the client starts over at B, which it tells where it came from
(N(REDIRECTED_FROM)), and gets its IKE and Child SA there. With ``redirect_on =
auth`` A first authenticates the client and redirects it in the IKE_AUTH response;
the client deletes that IKE SA and starts a new one at B. A gateway named by an
FQDN is looked up by the engine's user (ResolveGateway / IkeSa.gateway_resolved).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import (
    AuthFailed,
    ChildSaUp,
    DownReason,
    Event,
    IkeSaDown,
    IkeSaUp,
    NegotiationFailed,
    PeerRedirected,
    Redirected,
    ResolveGateway,
)
from tunsec.ike.exchanges.ike_sa_init import IkeSaInitTask
from tunsec.ike.identity import Identity
from tunsec.ike.message import Message, NoncePayload, NotifyPayload, Payload, SaPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.redirect import MAX_REDIRECTS, RESOLVE_TIMEOUT, encode_redirect
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.secret import Secret
from tunsec.ike.testing import Network, Sent, make_ca, make_cert

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


def gateway_cfg(address: str, **kw: Any) -> IkeConfig:
    base = IkeConfig(
        "rw",
        LocalAuth("psk", Identity.parse("gw.example")),
        RemoteAuth("psk", Identity.parse("carol.example")),
        parse_proposals("aes128gcm16-prfsha256-curve25519"),
        (child_config("net", "10.2.0.0/16", "10.1.0.0/16", "aes128gcm16"),),
        psk=PSK,
        local_addr=address,
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


def test_half_open_sas_do_not_count_toward_redirect_when() -> None:
    """A flood of IKE_SA_INITs (half-open SAs, nobody authenticated) must not push real clients to
    another gateway: ``redirect_when`` counts established IKE SAs only."""
    a = IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B, redirect_when=1)])
    for n in range(3):   # three clients that never go on to IKE_AUTH
        flooder = IkeEndpoint([client_cfg()])
        flooder.initiate("rw", "net", 0.0)
        (request,) = flooder.datagrams_to_send(0.0)
        a.receive(request.data, (f"198.51.100.{50 + n}", 500), 0.0, (GW_A, 500))
    assert a.half_open == 3 and a.established_count == 0
    client = IkeEndpoint([client_cfg()])
    client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    a.receive(request.data, (CLIENT, 500), 0.0, (GW_A, 500))
    answers = [d for d in a.datagrams_to_send(0.0) if d.addr == (CLIENT, 500)]
    assert len(answers) == 1 and not notifies(answers[0].data, NotifyType.REDIRECT)
    assert a.stats.redirects_sent == 0 and a.half_open == 4


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


def events_of(ep: IkeEndpoint) -> list[Event]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev[1])
    return out


def assert_init_redirect_refused(client: IkeEndpoint, target: str, why: str) -> None:
    """The client's first IKE_SA_INIT answered with a REDIRECT to ``target``: not followed, for
    ``why``, and the IKE SA closed."""
    sa = client.initiate("rw", "net", 0.0)
    (request,) = client.datagrams_to_send(0.0)
    reply = _answer(request.data, (NotifyPayload(NotifyType.REDIRECT, encode_redirect(target, _nonce(request.data))),))
    client.receive(reply, (GW_A, 500), 0.1, (CLIENT, 500))
    assert client.datagrams_to_send(0.1) == []
    events = events_of(client)
    assert [e for e in events if isinstance(e, NegotiationFailed)] == [
        NegotiationFailed("rw", "REDIRECT", f"REDIRECT not followed: {why}")]
    assert not any(isinstance(e, Redirected) for e in events)
    assert sa.state is State.CLOSED and client.sa_count == 0


MALFORMED: list[tuple[str, Any, str]] = [
    ("empty", lambda n: b"", "REDIRECT data of 0 bytes is shorter than its header"),
    ("length beyond data", lambda n: bytes((1, 40, 192, 0)), "REDIRECT gateway identity of length 40 exceeds"),
    ("ipv4 of 16 bytes", lambda n: bytes((1, 16)) + bytes(16) + n, "REDIRECT gateway identity of type 1 has length 16"),
    ("unknown type", lambda n: bytes((9, 4, 192, 0, 2, 3)) + n, "REDIRECT gateway identity type 9 is unknown"),
    ("fqdn with an empty label", lambda n: bytes((3, 11)) + b"gw..example" + n, "REDIRECT names 'gw..example', which"),
    ("fqdn with a space", lambda n: bytes((3, 10)) + b"gw example" + n, "REDIRECT names 'gw example', which is no"),
    ("fqdn of digits", lambda n: bytes((3, 7)) + b"1.2.3.4" + n, "REDIRECT names '1.2.3.4', which is no host"),
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


# --------------------------------------------------------------------------- in IKE_AUTH (RFC 5685 §6)


def sas_of(ep: IkeEndpoint) -> list[IkeSa]:
    return [s for s in ep.sas if not s.is_closed]


def test_redirect_in_ike_auth_after_authenticating_the_client() -> None:
    net, a, b = three({"redirect_to": GW_B, "redirect_on": "auth"})
    first = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)

    events = net.take(CLIENT)
    assert Redirected("rw", GW_A, GW_B, in_auth=True) in events
    downs = [e for e in events if isinstance(e, IkeSaDown)]
    assert downs == [IkeSaDown("rw", DownReason.REDIRECTED)]  # the SA with A, deleted by us
    ups = [e for e in events if isinstance(e, IkeSaUp)]
    assert len(ups) == 1 and ups[0].remote_addr[0] == GW_B  # only the one at B counts as up
    assert len([e for e in events if isinstance(e, ChildSaUp)]) == 1
    assert first.is_closed
    (second,) = sas_of(net.nodes[CLIENT])
    assert second.state is State.ESTABLISHED and second.remote_addr[0] == GW_B and len(second.children) == 1
    # A stateless in IKE_SA_INIT no more: it authenticated the client, sent no Child SA, heard our DELETE
    assert a.stats.redirects_sent == 0 and sas_of(a) == [] and len(sas_of(b)) == 1
    gw_events = net.take(GW_A)
    assert [e for e in gw_events if isinstance(e, PeerRedirected)] == [
        PeerRedirected("rw", Identity.parse("carol.example"), GW_B)]
    assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in gw_events)
    assert IkeSaDown("rw", DownReason.DELETED_BY_PEER) in gw_events
    auth_reply = next(s for s in net.log if s.src[0] == GW_A and s.data[18] == ExchangeType.IKE_AUTH)
    assert auth_reply  # encrypted: what it carried is what the client did with it (above)
    # B was told where the client came from
    init_to_b = next(s for s in net.log if s.dst[0] == GW_B)
    (came_from,) = notifies(init_to_b.data, NotifyType.REDIRECTED_FROM)
    assert came_from.data == bytes((1, 4)) + ipaddress.ip_address(GW_A).packed


def test_redirect_on_auth_respects_redirect_when() -> None:
    net, a, b = three({"redirect_to": GW_B, "redirect_on": "auth", "redirect_when": 1})
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert len(sas_of(a)) == 1 and sas_of(b) == []  # A held no other SA: served
    net.nodes[CLIENT].initiate("rw", "net", net.now)
    net.run(until=10.0)
    assert len(sas_of(a)) == 1 and len(sas_of(b)) == 1  # A held one: the second went to B


def test_client_without_redirect_support_is_served_in_ike_auth_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 5685 §6: a gateway redirects in IKE_AUTH only clients that announced support in IKE_SA_INIT;
    # this client sends a private-use status notify in place of REDIRECT_SUPPORTED (AUTH signs the request,
    # so it cannot be stripped on the way)
    monkeypatch.setattr(IkeSaInitTask, "_redirect_notify", lambda self, st: [NotifyPayload(40960, b"")])
    net, a, b = three({"redirect_to": GW_B, "redirect_on": "auth"})
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert len(sas_of(a)) == 1 and sas_of(b) == []
    assert not any(isinstance(e, PeerRedirected) for e in net.take(GW_A))


def client_informational_requests(sent: Sent) -> bool:
    """Lose the client's INFORMATIONAL requests (its DELETE), not its answers."""
    return sent.src[0] == CLIENT and sent.data[18] == ExchangeType.INFORMATIONAL and not sent.data[19] & 0x20


def test_gateway_deletes_a_redirected_client_that_stays() -> None:
    # a client that ignores the REDIRECT (here: never sends its DELETE) is deleted after half_open_timeout
    net, a, _b = three({"redirect_to": GW_B, "redirect_on": "auth", "half_open_timeout": 7.0})
    net.drop = client_informational_requests
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    (held,) = sas_of(a)
    assert held.state is State.ESTABLISHED and held.children == []
    net.run(until=6.9)
    assert sas_of(a) == [held]
    net.run(until=30.0)
    assert sas_of(a) == []
    assert IkeSaDown("rw", DownReason.REDIRECTED) in net.take(GW_A)


def test_redirected_client_gets_no_child_sa_by_create_child_sa() -> None:
    # the client was authenticated and redirected, and asks for a Child SA on that IKE SA anyway: refused
    net, a, _b = three({"redirect_to": GW_B, "redirect_on": "auth"})
    net.drop = client_informational_requests
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    (stays,) = [s for s in net.nodes[CLIENT].sas if s.remote_addr[0] == GW_A]
    assert stays.state is State.DELETING  # its DELETE is lost on the way; the SA still talks to A
    # a client that ignores the REDIRECT: forget the lost DELETE, ask for a Child SA instead
    stays._pending, stays._state = None, State.ESTABLISHED  # (the DELETE's message ID was never used up)
    stays.initiate("net")
    net.drop = None
    net.run(until=6.0)
    (held,) = sas_of(a)
    assert held.children == [] and not any(isinstance(e, ChildSaUp) for e in net.take(GW_A))
    refused = [e for e in net.take(CLIENT) if isinstance(e, NegotiationFailed)]
    assert [e.reason for e in refused] == ["NO_ADDITIONAL_SAS"]


def test_redirect_loop_in_ike_auth_is_bounded() -> None:
    net, a, b = three({"redirect_to": GW_B, "redirect_on": "auth"}, {"redirect_to": GW_A, "redirect_on": "auth"})
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=60.0)
    events = net.take(CLIENT)
    assert len([e for e in events if isinstance(e, Redirected)]) == MAX_REDIRECTS
    (failed,) = [e for e in events if isinstance(e, NegotiationFailed)]
    assert failed.reason == "REDIRECT" and f"more than {MAX_REDIRECTS} times within" in failed.detail
    assert not any(isinstance(e, IkeSaUp) for e in events)
    assert sas_of(net.nodes[CLIENT]) == [] and sas_of(a) == [] and sas_of(b) == []


@pytest.mark.parametrize(("history", "followed"), [
    ((-350.0, -310.0, -200.0, -100.0, -50.0), True),  # three within REDIRECT_PERIOD: this is the fourth
    ((-250.0, -200.0, -150.0, -100.0, -50.0), False),  # five within it: a sixth is a loop
])
def test_redirects_count_within_the_period(history: tuple[float, ...], followed: bool) -> None:
    net, _a, b = three({"redirect_to": GW_B, "redirect_on": "auth"})
    first = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    first._redirect_history = history  # as an SA a chain of earlier redirects made
    net.run(until=5.0)
    events = net.take(CLIENT)
    assert (Redirected("rw", GW_A, GW_B, in_auth=True) in events) is followed
    assert len(sas_of(b)) == int(followed)
    assert any(isinstance(e, NegotiationFailed) and e.reason == "REDIRECT" for e in events) is not followed


def test_ike_auth_redirect_next_to_an_auth_we_refuse_is_not_followed() -> None:
    # A accepts the client's PSK and redirects it, but proves itself with a signature where the client
    # expects a PSK: the client refuses A's AUTH and goes nowhere, least of all where A says
    ca = make_ca()
    gw = make_cert(ca, "gw", san=["gw.example"])
    own = LocalAuth("pubkey", Identity.parse("gw.example"), gw.cert, private_key=gw.key)
    net, _a, b = three({"redirect_to": GW_B, "redirect_on": "auth", "local": own})
    net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert [e.to for e in net.take(GW_A) if isinstance(e, PeerRedirected)] == [GW_B]  # A did redirect
    events = net.take(CLIENT)
    assert not any(isinstance(e, Redirected) for e in events)
    (failed,) = [e for e in events if isinstance(e, AuthFailed)]
    assert not failed.by_peer
    assert sas_of(net.nodes[CLIENT]) == [] and sas_of(b) == []
    assert not any(s.dst[0] == GW_B for s in net.log)


def test_redirect_to_an_fqdn_waits_for_its_address() -> None:
    net, _a, b = three({"redirect_to": "gw-b.example", "redirect_on": "auth"})
    client = net.nodes[CLIENT]
    client.initiate("rw", "net", 0.0)
    net.run(until=2.0)
    events = net.take(CLIENT)
    assert Redirected("rw", GW_A, "gw-b.example", in_auth=True) in events
    (ask,) = [e for e in events if isinstance(e, ResolveGateway)]
    assert ask == ResolveGateway("rw", "gw-b.example")
    (waiting,) = sas_of(client)
    assert waiting.state is State.CONNECTING and not any(s.dst[0] == GW_B for s in net.log)
    # the user's resolver answers; unusable addresses are skipped
    waiting.gateway_resolved("gw-b.example", ["0.0.0.0", "ff02::1", GW_B], net.now)
    net.run(until=10.0)
    assert waiting.state is State.ESTABLISHED and waiting.remote_addr[0] == GW_B and len(sas_of(b)) == 1


def test_fqdn_gateway_that_does_not_resolve_fails_cleanly() -> None:
    net, _a, _b = three({"redirect_to": "gw-b.example", "redirect_on": "auth"})
    client = net.nodes[CLIENT]
    client.initiate("rw", "net", 0.0)
    net.run(until=2.0)
    (waiting,) = sas_of(client)
    waiting.gateway_resolved("other.example", [GW_B], net.now)  # not what it asked for: ignored
    waiting.gateway_resolved("gw-b.example", [], net.now)
    net.run(until=5.0)
    (failed,) = [e for e in net.take(CLIENT) if isinstance(e, NegotiationFailed)]
    assert failed == NegotiationFailed("rw", "REDIRECT", "gateway gw-b.example has no usable address")
    assert sas_of(client) == [] and client.sa_count == 0


def test_fqdn_gateway_lookup_that_never_answers_times_out() -> None:
    net, _a, _b = three({"redirect_to": "gw-b.example", "redirect_on": "auth"})
    client = net.nodes[CLIENT]
    client.initiate("rw", "net", 0.0)
    net.run(until=2.0)
    assert len(sas_of(client)) == 1
    net.run(until=2.0 + RESOLVE_TIMEOUT + 1.0)
    (failed,) = [e for e in net.take(CLIENT) if isinstance(e, NegotiationFailed)]
    assert failed.reason == "REDIRECT" and failed.detail.startswith("no address for gateway gw-b.example within")
    assert client.sa_count == 0


def test_fqdn_redirect_in_ike_sa_init_is_followed_after_the_lookup() -> None:
    net, a, _b = three({"redirect_to": "gw-b.example"})
    sa = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    net.run(until=1.0)
    assert [e for e in net.take(CLIENT) if isinstance(e, ResolveGateway)] == [ResolveGateway("rw", "gw-b.example")]
    assert sa.state is State.CONNECTING and a.stats.redirects_sent == 1
    sa.gateway_resolved("gw-b.example", [GW_B], net.now)
    net.run(until=5.0)
    assert sa.state is State.ESTABLISHED and sa.remote_addr[0] == GW_B
    init_to_b = next(s for s in net.log if s.dst[0] == GW_B)
    assert notifies(init_to_b.data, NotifyType.REDIRECTED_FROM)


# ------------------------------------------------------------------ per connection (issue 9 item 5)

CLIENT2 = "192.0.2.9"


def test_redirect_is_per_connection_in_ike_sa_init() -> None:
    """Gateway A has two connections: ``office`` for the client at CLIENT2 (no redirect) and ``rw``
    for anyone else (``redirect_to`` B). The client at CLIENT2 is served at A; the other goes to B."""
    net = Network()
    net.add(CLIENT, IkeEndpoint([client_cfg()]))
    net.add(CLIENT2, IkeEndpoint([client_cfg(local_addr=CLIENT2)]))
    office = gateway_cfg(GW_A, name="office", remote_addr=CLIENT2)
    a = net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B), office]))
    b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    redirected = net.nodes[CLIENT].initiate("rw", "net", 0.0)
    served = net.nodes[CLIENT2].initiate("rw", "net", 0.0)
    net.run(until=5.0)
    assert served.state is State.ESTABLISHED and served.remote_addr[0] == GW_A
    assert redirected.state is State.ESTABLISHED and redirected.remote_addr[0] == GW_B
    assert Redirected("rw", GW_A, GW_B) in net.take(CLIENT)
    assert not any(isinstance(e, Redirected) for e in net.take(CLIENT2))
    assert (a.stats.redirects_sent, a.sa_count, b.sa_count) == (1, 1, 1)
    (held,) = sas_of(a)
    assert held.config.name == "office" and held.remote_addr[0] == CLIENT2


def test_redirect_is_per_connection_in_ike_auth() -> None:
    """``redirect_on = auth`` follows the connection the client authenticated for: carol's
    connection redirects, dave's (same address, same gateway) does not."""
    dave = Identity.parse("dave.example")
    net = Network()
    net.add(CLIENT, IkeEndpoint([client_cfg(), client_cfg(name="dave", local=LocalAuth("psk", dave))]))
    dave_conn = gateway_cfg(GW_A, name="dave", remote=RemoteAuth("psk", dave))
    a = net.add(GW_A, IkeEndpoint([gateway_cfg(GW_A, redirect_to=GW_B, redirect_on="auth"), dave_conn]))
    b = net.add(GW_B, IkeEndpoint([gateway_cfg(GW_B)]))
    served = net.nodes[CLIENT].initiate("dave", "net", 0.0)
    net.run(until=5.0)
    assert served.state is State.ESTABLISHED and served.remote_addr[0] == GW_A and len(served.children) == 1
    assert [s.config.name for s in sas_of(a)] == ["dave"] and sas_of(b) == []
    net.nodes[CLIENT].initiate("rw", "net", net.now)
    net.run(until=10.0)
    assert [s.config.name for s in sas_of(a)] == ["dave"]      # carol was authenticated, then sent on
    assert [e for e in net.take(GW_A) if isinstance(e, PeerRedirected)] == [
        PeerRedirected("rw", Identity.parse("carol.example"), GW_B)]
    (at_b,) = sas_of(b)
    assert at_b.state is State.ESTABLISHED and len(at_b.children) == 1
