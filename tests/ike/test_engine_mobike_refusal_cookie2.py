"""Review revmobike F2: a refused UPDATE_SA_ADDRESSES is answered without the request's COOKIE2.

RFC 4555 §3.7: a responder that receives COOKIE2 MUST copy it into the response.  mobike.respond
returns UNACCEPTABLE_ADDRESSES (and UNEXPECTED_NAT_DETECTED) before it reaches the echo, and every
tunsec and strongSwan client sends COOKIE2 in its update: tunsec's UpdateSaAddressesTask.process
checks the cookie first and closes the IKE SA ("lacks our COOKIE2") instead of reading the refusal
it has a branch for (strongSwan's ike_mobike fails the exchange the same way).  A client whose new
address the gateway refuses loses its IKE SA and Child SAs at once, rather than keeping them at the
address it still has or being refused cleanly."""

from __future__ import annotations

from test_engine_mobike import V6, A, B, _informational_requests, _no_nats, _say, _up

from tunsec.ike.constants import NotifyType
from tunsec.ike.exchanges.base import find_notify, notify


def test_a_refused_update_still_echoes_cookie2_and_the_client_keeps_its_sa() -> None:
    net, client, gateway = _up()
    net.nodes[V6] = net.nodes.pop(A)     # a family the gateway's Child SAs cannot move to
    net.events[V6] = net.events.pop(A)
    assert client.update_addresses()
    net.run(until=net.now + 1)
    assert gateway.remote_addr == (A, 4500) and not _informational_requests(net, B, V6)   # refused
    assert not client.is_closed, "the client closed its IKE SA: the refusal came without its COOKIE2"


def test_unexpected_nat_detected_echoes_cookie2() -> None:
    net, client, _ = _up()
    cookie = b"\x5a" * 16
    answer = _say(net, client, [notify(NotifyType.UPDATE_SA_ADDRESSES), notify(NotifyType.COOKIE2, cookie),
                                _no_nats(("10.0.0.5", 4500), (B, 4500))])
    assert find_notify(answer, NotifyType.UNEXPECTED_NAT_DETECTED) is not None
    echoed = find_notify(answer, NotifyType.COOKIE2)
    assert echoed is not None and echoed.data == cookie
