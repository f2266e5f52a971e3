"""A REDIRECT answered to IKE_SA_INIT counts towards the COOKIE thresholds (review revinit F1).

With ``redirect_to`` set (redirect on init), the gateway answers an IKE_SA_INIT that supports
REDIRECT with N(REDIRECT) and keeps nothing, as it answers NO_PROPOSAL_CHOSEN; but unlike those
refusals it was counted nowhere, so a spoofed source had one answered per datagram without end and
never a COOKIE: a reflector (an answer of up to ~300 bytes for a 77-byte request with a long FQDN).
Now the first cookie_threshold_ip from one address are redirected at once, the rest must bring a
COOKIE first, and one that does is redirected.
"""

from __future__ import annotations

import dataclasses

from endpoint_dos_data import A, cfg, cookie_of, init_request, with_cookie, with_spi

from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.message import KePayload, Message, NoncePayload, NotifyPayload, Proposal, SaPayload, decode_message

VICTIM = A   # the spoofed source: it never returns a COOKIE
GATEWAY_B = "vpn-gateway-2.eu-west.example.net"


def _asking_for_redirect() -> bytes:
    msg = decode_message(init_request())
    return dataclasses.replace(msg, payloads=(*msg.payloads, NotifyPayload(NotifyType.REDIRECT_SUPPORTED))).encode()


def _smallest_asking_for_redirect() -> bytes:
    """77 bytes: a proposal of no transforms and a 1-byte KE pass the first parse, and the redirect
    is decided before any proposal or KE is looked at."""
    return Message(b"\x11" * 8, bytes(8), ExchangeType.IKE_SA_INIT, int(HeaderFlag.INITIATOR), 0,
                   (SaPayload((Proposal(1, 1, b"", ()),)), KePayload(31, b"\x01"), NoncePayload(bytes(16)),
                    NotifyPayload(NotifyType.REDIRECT_SUPPORTED))).encode()


def _answers(gateway: IkeEndpoint, request: bytes, n: int) -> tuple[list[int], int, int]:
    """n copies of ``request`` (each its own SPIi) from the spoofed VICTIM, 1 ms apart: the notify
    type of each answer, the bytes sent back and the bytes received."""
    answers: list[int] = []
    sent = received = 0
    for i in range(n):
        now = 1.0 + i * 0.001
        datagram = with_spi(request, i)
        received += len(datagram)
        gateway.receive(datagram, (VICTIM, 500), now)
        for d in gateway.datagrams_to_send(now):
            assert d.addr == (VICTIM, 500)
            sent += len(d.data)
            (payload,) = decode_message(d.data).payloads
            assert isinstance(payload, NotifyPayload)
            answers.append(payload.type)
    return answers, sent, received


def test_spoofed_requests_for_a_redirect_soon_get_cookies_like_other_stateless_refusals() -> None:
    gateway = IkeEndpoint([cfg(False, redirect_to=GATEWAY_B, redirect_when=0)])
    answers, _, _ = _answers(gateway, _asking_for_redirect(), 1000)
    assert gateway.sa_count == 0 and gateway.half_open == 0   # nothing kept either way
    threshold = gateway.limits.cookie_threshold_ip
    assert answers[:threshold] == [NotifyType.REDIRECT] * threshold
    assert set(answers[threshold:]) == {NotifyType.COOKIE}


def test_what_a_spoofed_source_gets_reflected_is_not_more_than_it_sent() -> None:
    gateway = IkeEndpoint([cfg(False, redirect_to=GATEWAY_B, redirect_when=0)])
    _, sent, received = _answers(gateway, _smallest_asking_for_redirect(), 1000)
    assert sent <= received, f"{sent} bytes reflected at {VICTIM} for {received} bytes spoofed"


def test_a_client_that_brings_the_cookie_is_redirected() -> None:
    gateway = IkeEndpoint([cfg(False, redirect_to=GATEWAY_B, redirect_when=0)])
    request = _asking_for_redirect()
    answers, _, _ = _answers(gateway, request, gateway.limits.cookie_threshold_ip + 1)
    assert answers[-1] == NotifyType.COOKIE
    now = 2.0
    gateway.receive(with_spi(request, 99), (VICTIM, 500), now)
    (reply,) = gateway.datagrams_to_send(now)
    gateway.receive(with_cookie(with_spi(request, 99), cookie_of(reply.data)), (VICTIM, 500), now)
    (answer,) = gateway.datagrams_to_send(now)
    (payload,) = decode_message(answer.data).payloads
    assert isinstance(payload, NotifyPayload) and payload.type == NotifyType.REDIRECT
    assert gateway.sa_count == 0
