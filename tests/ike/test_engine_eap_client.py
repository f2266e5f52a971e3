"""tunsec as an EAP-MSCHAPv2 client against gateways that refuse or lie (RFC 2759, draft-kamath).

The gateway is an engine whose EAP authenticator is replaced by a script (a fake
gateway in memory): it answers the client's MSCHAPv2 Response with a Failure
request (E=691 R=1, E=648), asks again after refusing, or claims success with a
proof (S=) that does not match. Whatever it does, the client answers one Challenge
only, never retries the same password, fails with one clear AuthFailed and keeps
nothing (no IKE SA, its inbound SPI handed back).
"""
from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType, HeaderFlag
from tunsec.ike.eap.mschapv2 import EapAuthenticator, EapResult, OpCode
from tunsec.ike.eap.packet import EapCode, EapPacket, EapType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, Event, IkeSaUp, SpiUnused
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Network, make_ca, make_cert

A, B = "192.0.2.1", "192.0.2.2"
CA = make_ca()
GW = make_cert(CA, "sun", san=["sun.example"])
# the certificates' validity is checked against this, not the machine's date: the test certificates
# (make_cert: EPOCH + 365 days) run out on 2027-01-01
NOW = EPOCH + datetime.timedelta(days=30)
PASSWORD = b"Bob-pw-2"


def gateway() -> IkeConfig:
    return IkeConfig("gw", LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert, private_key=GW.key),
                     RemoteAuth("eap-mschapv2", Identity.any(), eap_id=""), parse_proposals("default"),
                     (child_config("net", "10.2.0.0/16", "10.1.0.0/16"),),
                     eap_secrets=(EapSecret(("bob",), Secret(PASSWORD)),), local_addr=B, half_open_timeout=10.0)


def client() -> IkeConfig:
    return IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse("bob"), eap_id="bob"),
                     RemoteAuth("pubkey", Identity.parse("sun.example"), cas=(CA.cert,)),
                     parse_proposals("default"), (child_config("net", "10.1.0.0/16", "10.2.0.0/16"),),
                     eap_secrets=(EapSecret(("bob",), Secret(PASSWORD)),), local_addr=A, remote_addr=B)


def ms_request(ident: int, op: OpCode, ms_id: int, body: bytes) -> bytes:
    data = struct.pack("!BBH", op, ms_id, 4 + len(body)) + body
    return EapPacket(EapCode.REQUEST, ident, EapType.MSCHAPV2, data).encode()


Step = Callable[[EapAuthenticator, EapPacket], bytes]


Real = Callable[[EapAuthenticator, bytes], tuple[bytes, EapResult | None]]


@dataclass
class Script:
    """What the fake gateway sends after the client's MSCHAPv2 Response, and after each later answer;
    once the steps are used up, the real authenticator answers (``real``)."""

    steps: list[Step]
    real: Real
    seen: list[EapPacket] = field(default_factory=list)

    def process(self, auth: EapAuthenticator, raw: bytes) -> tuple[bytes, EapResult | None]:
        pkt = EapPacket.decode(raw)
        self.seen.append(pkt)
        if len(self.seen) == 1 or not self.steps:  # the Response to the real Challenge: the real check
            out, result = self.real(auth, raw)
            if not self.steps:
                return out, result
        return self.steps.pop(0)(auth, pkt), None


def failure_request(message: bytes) -> Step:
    return lambda auth, pkt: ms_request((pkt.ident + 1) & 0xFF, OpCode.FAILURE, pkt.data[1], message)


def eap_code(code: EapCode) -> Step:
    return lambda auth, pkt: EapPacket(code, pkt.ident).encode()


def challenge_again(auth: EapAuthenticator, pkt: EapPacket) -> bytes:
    return ms_request((pkt.ident + 1) & 0xFF, OpCode.CHALLENGE, 9, bytes([16]) + bytes(16) + b"tunsec")


def lying_success(auth: EapAuthenticator, pkt: EapPacket) -> bytes:
    return ms_request((pkt.ident + 1) & 0xFF, OpCode.SUCCESS, pkt.data[1], b"S=" + b"0" * 40 + b" M=welcome")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Step]], Script]:
    real = EapAuthenticator.process

    def install(steps: list[Step]) -> Script:
        script = Script(steps, real)

        def process(self: EapAuthenticator, raw: bytes) -> tuple[bytes, EapResult | None]:
            return script.process(self, raw)

        monkeypatch.setattr(EapAuthenticator, "process", process)
        return script

    return install


@dataclass
class Outcome:
    net: Network
    client: IkeEndpoint
    gateway: IkeEndpoint
    events: list[Event]

    def failed(self) -> AuthFailed:
        (failed,) = [e for e in self.events if isinstance(e, AuthFailed)]
        return failed

    def responses(self, script: Script) -> list[EapPacket]:
        """The client's MSCHAPv2 Responses to a Challenge (each one a try of the password)."""
        return [p for p in script.seen if p.type == EapType.MSCHAPV2 and p.data[:1] == bytes([OpCode.RESPONSE])
                and len(p.data) > 1]

    def client_informationals(self) -> int:
        return sum(1 for s in self.net.log if s.src[0] == A and decode_header(s.data).exchange
                   == ExchangeType.INFORMATIONAL and not decode_header(s.data).flags & HeaderFlag.RESPONSE)


def run() -> Outcome:
    net = Network()
    a = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([gateway()], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    net.run(until=60.0)
    return Outcome(net, a, b, net.take(A))


def assert_nothing_left(out: Outcome) -> None:
    assert not any(isinstance(e, (IkeSaUp, ChildSaUp)) for e in out.events)
    assert [e for e in out.events if isinstance(e, SpiUnused)]  # the Child SA's inbound SPI went back
    assert out.client.sa_count == 0 and out.gateway.sa_count == 0
    for ev in out.events:
        assert PASSWORD.decode() not in repr(ev)


def test_failure_691_with_retry_allowed_fails_cleanly_without_a_retry(scripted: Callable[..., Script]) -> None:
    # strongSwan's gateway: Failure request, the client's acknowledgement, then EAP-Failure alone
    script = scripted([failure_request(b"E=691 R=1 C=00112233445566778899AABBCCDDEEFF V=3 M=Authentication failed"),
                       eap_code(EapCode.FAILURE)])
    out = run()
    failed = out.failed()
    assert failed.by_peer
    assert failed.reason == ("the gateway refused our EAP-MSCHAPv2 authentication: E=691 (authentication failure: "
                             "wrong user name or password), retry allowed (R=1) but not attempted: the same password "
                             "would fail again; the gateway says 'Authentication failed'")
    assert len(out.responses(script)) == 1  # one try of the password, no second
    assert script.seen[-1].data == bytes([OpCode.FAILURE])  # the Failure acknowledged (RFC 2759 §6)
    assert_nothing_left(out)


def test_failure_648_password_expired_fails_cleanly(scripted: Callable[..., Script]) -> None:
    script = scripted([failure_request(b"E=648 R=0 V=3 M=Password expired"), eap_code(EapCode.FAILURE)])
    out = run()
    assert "E=648 (password expired: it must be changed at the server" in out.failed().reason
    assert out.failed().by_peer and len(out.responses(script)) == 1
    assert_nothing_left(out)


def test_failure_with_authentication_failed_notify_keeps_the_reason(scripted: Callable[..., Script]) -> None:
    # a gateway that ends with EAP-Failure and N(AUTHENTICATION_FAILED) together (as tunsec's own does):
    # after the scripted Failure request the real authenticator refuses the acknowledgement that way
    script = scripted([failure_request(b"E=691 R=0 V=3")])
    out = run()
    failed = out.failed()
    assert failed.by_peer and failed.reason.startswith("peer refused our authentication (AUTHENTICATION_FAILED): "
                                                       "EAP-MSCHAPv2 E=691 (authentication failure")
    assert len(out.responses(script)) == 1
    assert_nothing_left(out)


def test_gateway_asking_again_after_a_failure_gets_no_second_answer(scripted: Callable[..., Script]) -> None:
    script = scripted([failure_request(b"E=691 R=1 V=3"), challenge_again])
    out = run()
    failed = out.failed()
    assert not failed.by_peer and "after refusing us" in failed.reason and "E=691" in failed.reason
    assert len(out.responses(script)) == 1
    assert out.client_informationals() == 1  # N(AUTHENTICATION_FAILED) to the gateway, once
    assert_nothing_left(out)


def test_gateway_with_a_wrong_proof_is_rejected(scripted: Callable[..., Script]) -> None:
    # it claims success but its S= does not match: it does not know the password (or is not the gateway)
    scripted([lying_success])
    out = run()
    failed = out.failed()
    assert not failed.by_peer
    assert failed.reason == ("EAP-MSCHAPv2: the server's MSCHAPv2 proof is wrong (it does not know the password)")
    assert out.client_informationals() == 1
    assert_nothing_left(out)


@pytest.mark.parametrize("step", [eap_code(EapCode.SUCCESS), challenge_again], ids=["eap-success", "2nd-challenge"])
def test_success_or_a_new_challenge_before_the_proof_is_refused(scripted: Callable[..., Script], step: Step) -> None:
    script = scripted([step])
    out = run()
    failed = out.failed()
    assert not failed.by_peer and failed.reason.startswith("EAP-MSCHAPv2: ")
    assert len(out.responses(script)) == 1
    assert_nothing_left(out)
