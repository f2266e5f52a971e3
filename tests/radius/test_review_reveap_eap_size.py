"""Review reveap F1: an EAP response too large for any RADIUS Access-Request is the client's doing,
yet the gateway takes it for its own back end's failure.

A client's EAP packet can be up to 65535 bytes (EAP's Length; IKE fragmentation carries it), a RADIUS
packet at most 4096 (RFC 2865 §3): the relay's ``access_request`` raises TooLarge, RadiusRelay.round
turns it into ``RelayOutcome.FAILED`` ("no usable answer"), and _BackendRound.resume into an AuthFailed
with ``backend=True``: not counted towards the source's ban, logged as "our back end gave no verdict"
(which the shipped fail2ban filter skips).  One address may so cycle IKE_SA_INIT + IKE_AUTH + one
RADIUS round (an EAP session the server keeps for its timer_expire) forever, unbanned, its half-open
SA freed at once, where a malformed EAP packet of the same client (EapRelay.process) or a wrong
password counts.
Each such round also writes a WARNING through the relay's one process-wide LogLimiter (10 lines per
10 s), the one a real server outage's lines pass through: the client's lines hold the operator's back.

Real parts: the engine's relay state (EapRelay, _BackendRound), the real RadiusRelay and RADIUS client
over loopback UDP against a scripted server that challenges as FreeRADIUS does.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_radius_messages import SECRET, STATION, reply

from tunsec.ike.auth_ban import AuthBan, AuthBanSettings
from tunsec.ike.eap.packet import EapCode, EapPacket
from tunsec.ike.eap.relay import EapRelay, RelayAsk
from tunsec.ike.events import AuthFailed, EapRelayRequest
from tunsec.ike.exchanges.ike_auth_eap import GatewayEap, _BackendRound
from tunsec.ike.secret import Secret
from tunsec.loglimit import SourceLimiter
from tunsec.radius.messages import ACCESS_CHALLENGE
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import RadiusServer, RadiusSettings
from tunsec.services.ike import auth_log

# FreeRADIUS's first answer to an EAP-Identity: an EAP-MSCHAPv2 Challenge (type 26, OpCode 1)
CHALLENGE = EapPacket(EapCode.REQUEST, 7, 26, bytes([1, 7, 0, 26, 16]) + bytes(16) + b"radius").encode()


class Challenger(asyncio.DatagramProtocol):
    """Answers every Access-Request with an Access-Challenge (the EAP request above and a State)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)
        self.transport.sendto(reply(ACCESS_CHALLENGE, data, [(79, CHALLENGE), (24, b"state-1")]), addr)


@dataclass
class _St:
    """What _BackendRound.resume needs of the IKE SA's state: its name and its events."""

    name: str = "rw"
    events: list[Any] = field(default_factory=list)

    def emit(self, ev: object) -> None:
        self.events.append(ev)


def _ask(relay_ask: RelayAsk, first: bool, peer: str) -> EapRelayRequest:
    return EapRelayRequest("rw", relay_ask.identity, relay_ask.eap, (peer, 4500), first)


async def _conversation(radius: RadiusRelay, key: str, peer: str, size: int) -> list[AuthFailed]:
    """One client's conversation: the EAP-Identity the gateway sends for IDi, the server's Challenge,
    then the client's "response" of ``size`` bytes of EAP."""
    relay = EapRelay(b"mallory")
    ge = GatewayEap(relay, idi=None, request=())  # type: ignore[arg-type]
    st = _St()
    first = relay.start()
    assert isinstance(first, RelayAsk)
    answer = await radius.round(key, _ask(first, True, peer), STATION)
    _BackendRound(ge, []).resume(st, answer)  # type: ignore[arg-type]
    body = bytes([2, 7, 0, 0]) + bytes(size - 9)   # an MSCHAPv2 Response's OpCode, then anything
    step = relay.process(EapPacket(EapCode.RESPONSE, 7, 26, body).encode())
    if isinstance(step, RelayAsk):   # main: relayed (the edge finds out it cannot be carried)
        answer = await radius.round(key, _ask(step, False, peer), STATION)
        _BackendRound(ge, []).resume(st, answer)  # type: ignore[arg-type]
    else:   # refused by the engine itself, as any EAP packet the relay cannot take
        st.emit(AuthFailed("rw", step[1].reason, by_peer=False))
    return [e for e in st.events if isinstance(e, AuthFailed)]


async def _with_server(run: Any) -> Any:
    loop = asyncio.get_running_loop()
    proto = Challenger()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    server = RadiusServer("fr", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), port)
    radius = RadiusRelay(RadiusSettings((server,)))
    try:
        return await run(radius, proto)
    finally:
        radius.close()
        transport.close()


INIT = bytes(16) + bytes([33, 0x20, 34, 0x08]) + bytes(8)   # an IKE_SA_INIT request's header


def test_an_eap_response_no_access_request_can_carry_counts_as_the_clients_failure() -> None:
    """With auth_failures = 3, three such conversations from one address must ban it (as three
    malformed EAP packets or wrong passwords do); the service's dispatch (IkeService._on_event, case
    AuthFailed) is reproduced as tests/ike/test_auth_ban_counted.py does."""
    async def run(radius: RadiusRelay, proto: Challenger) -> tuple[list[AuthFailed], int]:
        failed = []
        for n in range(3):
            failed += await _conversation(radius, f"sa-{n}", "198.51.100.7", 5000)
        return failed, len(proto.got)

    failed, sent = asyncio.run(_with_server(run))
    assert sent == 3   # the server saw each EAP-Identity only: the 5000 bytes never left
    assert len(failed) == 3
    table = AuthBan(AuthBanSettings(max=3, window=600.0, ban=600.0))
    limiter = SourceLimiter(flush_to=auth_log.report)
    for ev in failed:
        auth_log.failed(limiter, ev.name, ("198.51.100.7", 4500), ev.by_peer, ev.reason, True, table,
                        backend=ev.backend, refused=ev.refused, counted=ev.counted)
    assert table.refuses(INIT, "198.51.100.7", time.monotonic()), (
        f"three conversations ended by the client's own 5000-byte EAP responses did not ban its address: "
        f"each was taken for our back end's failure (backend={failed[0].backend}): {failed[0].reason}")
    assert failed[0].counts, (
        f"the client's own {5000}-byte EAP response ended as our back end's failure (backend="
        f"{failed[0].backend}): not counted towards its ban, logged as our back end's: {failed[0].reason}")


def test_oversized_eap_responses_from_clients_do_not_hold_back_an_outage_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ten clients' oversized responses within 10 s (anyone who ran IKE_SA_INIT can send them); then
    the server goes silent for a legitimate user: the line saying so must reach the log."""
    async def run(radius: RadiusRelay, proto: Challenger) -> None:
        for n in range(10):
            await _conversation(radius, f"sa-{n}", f"203.0.113.{n + 1}", 5000)
        proto.transport.close()   # the server is gone now
        radius.settings = RadiusSettings(radius.settings.servers, retransmit_timeout=0.05, retransmit_base=1.0,
                                         retransmit_tries=0)
        radius.reconfigure(radius.settings)
        relay = EapRelay(b"alice")
        first = relay.start()
        assert isinstance(first, RelayAsk)
        await radius.round("sa-alice", _ask(first, True, "198.51.100.9"), STATION)

    with caplog.at_level(logging.WARNING, logger="tunsec.radius"):
        asyncio.run(_with_server(run))
    lines = [r.getMessage() for r in caplog.records if r.name == "tunsec.radius"]
    assert any("alice" in line and "no answer" in line for line in lines), (
        "the outage line for alice was held back by clients' oversized EAP responses: " + repr(lines[-3:]))
