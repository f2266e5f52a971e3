"""eap-radius in the engine: the gateway relays the client's EAP to an AAA backend and holds the
IKE_AUTH request until the backend answers (``Response.awaits``, ``IkeSa.relay_reply``).

The backend here is the test: it answers each ``EapRelayRequest`` with a ``RelayReply`` that an
EAP-MSCHAPv2 server (the engine's own, standing in for FreeRADIUS) computes, and gives the MSK
as FreeRADIUS does, MS-MPPE-Recv-Key || MS-MPPE-Send-Key (32 bytes, not strongSwan's 64).
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tunsec.ike.config import EapSecret, IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import ExchangeType
from tunsec.ike.eap.mschapv2 import EapAuthenticator
from tunsec.ike.eap.packet import EapCode, EapPacket
from tunsec.ike.eap.relay import EapRelay, RelayAsk, RelayOutcome, RelayReply
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, EapRelayAbandoned, EapRelayRequest, Event, IkeSaUp
from tunsec.ike.exchanges.ike_auth_eap import GatewayEap, _BackendRound
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import IkeSa
from tunsec.ike.secret import Secret
from tunsec.ike.testing import EPOCH, Network, Sent, make_ca, make_cert

A, B = "192.0.2.1", "192.0.2.2"
E = TypeVar("E")
CA = make_ca()
GW = make_cert(CA, "sun", san=["sun.example"])
# the certificates' validity is checked against this, not the machine's date: the test certificates
# (make_cert: EPOCH + 365 days) run out on 2027-01-01
NOW = EPOCH + datetime.timedelta(days=30)
PASSWORDS = {b"alice": "Alice-pw-1"}


def gateway(eap_id: str = "%any") -> IkeConfig:
    child = child_config("net", "10.2.0.0/16", "10.1.0.0/16")
    return IkeConfig("gw", LocalAuth("pubkey", Identity.parse("sun.example"), GW.cert, private_key=GW.key),
                     RemoteAuth("eap-radius", Identity.any(), eap_id=eap_id), parse_proposals("default"),
                     (child,), local_addr=B, half_open_timeout=30.0)


def client(user: str = "alice", password: bytes = b"Alice-pw-1", ike_id: str = "moon.example") -> IkeConfig:
    child = child_config("net", "10.1.0.0/16", "10.2.0.0/16")
    return IkeConfig("rw", LocalAuth("eap-mschapv2", Identity.parse(ike_id), eap_id=user),
                     RemoteAuth("pubkey", Identity.parse("sun.example"), cas=(CA.cert,)),
                     parse_proposals("default"), (child,), eap_secrets=(EapSecret((user,), Secret(password)),),
                     local_addr=A, remote_addr=B)


class MschapBackend:
    """A RADIUS server's part, without RADIUS: EAP-MSCHAPv2 for the users it knows (``passwords``),
    and an Access-Accept with the user's ``groups`` (class_group) and the user the edge takes it to
    prove: the EAP identity (MSCHAPv2 checks its password), or what ``users`` says, another user
    (the Accept's User-Name) or None (a tunnelled method's server that named nobody)."""

    def __init__(self, passwords: dict[bytes, str] = PASSWORDS,
                 groups: dict[bytes, tuple[str, ...]] | None = None,
                 users: dict[bytes, bytes | None] | None = None) -> None:
        self.server: EapAuthenticator | None = None
        self.asked: list[EapRelayRequest] = []
        self.passwords = passwords
        self.groups = groups or {}
        self.users = users or {}

    def __call__(self, ev: EapRelayRequest) -> RelayReply:
        self.asked.append(ev)
        if ev.first:  # the client's EAP-Identity response: start MSCHAPv2 for that user
            self.server = EapAuthenticator(self.passwords.get, ev.identity)
            return RelayReply(RelayOutcome.CHALLENGE, self.server.start(), reason="backend")
        assert self.server is not None
        out, result = self.server.process(ev.eap)
        if result is None:
            return RelayReply(RelayOutcome.CHALLENGE, out, reason="backend")
        if result.ok:
            return RelayReply(RelayOutcome.ACCEPT, out, Secret(result.msk[:32]), reason="backend",
                              groups=self.groups.get(ev.identity, ()), user=self.users.get(ev.identity, ev.identity))
        return RelayReply(RelayOutcome.REJECT, out, reason=f"backend rejected it ({result.reason})")


Backend = Callable[[EapRelayRequest], "RelayReply | None"]


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def relay(net: Network, gw: IkeEndpoint, backend: Backend, until: float = 1000.0) -> list[tuple[IkeSa, Event]]:
    """Run the network; answer each EapRelayRequest of the gateway at once (None: never)."""
    seen = 0
    while True:
        net.run(until=min(until, net.now + 1.0))
        events = net.events[B]
        new, seen = events[seen:], len(events)
        for sa, ev in new:
            if isinstance(ev, EapRelayRequest):
                reply = backend(ev)
                if reply is not None:
                    assert gw.relay_reply(sa, reply, net.now)
        if not new and (net.now >= until or all(n.get_timer() is None for n in net.nodes.values())):
            return events


def setup(cli: IkeConfig, gw_cfg: IkeConfig) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([cli], wall_clock=lambda: NOW))
    b = net.add(B, IkeEndpoint([gw_cfg], wall_clock=lambda: NOW))
    a.initiate("rw", "net", net.now)
    return net, a, b


def ike_auth_responses(net: Network) -> int:
    return sum(1 for s in net.log if s.src[0] == B and decode_header(s.data).exchange == ExchangeType.IKE_AUTH)


def test_relayed_mschapv2_brings_up_the_child_sa_with_the_backends_32_byte_msk() -> None:
    net, a, b = setup(client(), gateway())
    backend = MschapBackend()
    relay(net, b, backend, until=20.0)
    ev_a, ev_b = net.take(A), net.take(B)
    assert [type(e) for e in ev_a] == [IkeSaUp, ChildSaUp]
    assert [type(e) for e in ev_b if not isinstance(e, EapRelayRequest)] == [IkeSaUp, ChildSaUp]
    # the gateway asked for the identity itself; the backend saw it, then MSCHAPv2's response and ack
    assert [(e.identity, e.first) for e in backend.asked] == [(b"alice", True), (b"alice", False), (b"alice", False)]
    assert backend.asked[0].peer[0] == A
    # with eap_id = %any the backend proved the EAP identity, not IDi: the peer is that user
    assert str(only(ev_b, IkeSaUp)[0].remote_id) == "alice"
    assert len(a.sas) == 1 and len(b.sas) == 1


def test_the_first_response_waits_for_the_backend_when_the_identity_is_known() -> None:
    net, _, b = setup(client(ike_id="alice"), gateway(eap_id=""))
    backend = MschapBackend()
    relay(net, b, backend, until=20.0)
    assert [type(e) for e in net.take(A)] == [IkeSaUp, ChildSaUp]
    # no EAP-Identity round: the gateway starts with an EAP-Response/Identity of the IKE identity
    assert backend.asked[0].identity == b"alice" and backend.asked[0].eap[:1] == b"\x02"


def _refused(reply: Callable[[EapRelayRequest], RelayReply | None], why: str, until: float = 20.0) -> Network:
    net, a, b = setup(client(), gateway())
    relay(net, b, reply, until=until)
    ev_a, ev_b = net.take(A), net.take(B)
    (fb,) = only(ev_b, AuthFailed)
    assert not fb.by_peer and why in fb.reason, fb.reason
    assert [e.by_peer for e in only(ev_a, AuthFailed)] == [True]   # EAP-Failure + AUTHENTICATION_FAILED
    assert not only(ev_a, IkeSaUp) and not only(ev_b, IkeSaUp) and not only(ev_b, ChildSaUp)
    assert not a.sas and not b.sas and b.half_open == 0
    # the backend gave its final answer: the gateway has no conversation to abandon, and the edge
    # kept nothing of an Access-Accept (it travels with the IKE SA: IkeSaUp.accepted)
    assert not only(ev_b, EapRelayAbandoned)
    return net


def test_access_reject_fails_the_client_with_the_backends_reason() -> None:
    backend = MschapBackend()
    PASSWORDS[b"alice"] = "another password"
    try:
        _refused(backend, "EAP-RADIUS authentication of 'alice' failed: backend rejected it "
                 "(wrong EAP-MSCHAPv2 password)")
    finally:
        PASSWORDS[b"alice"] = "Alice-pw-1"


def test_a_backend_that_does_not_answer_fails_the_client() -> None:
    _refused(lambda ev: RelayReply(RelayOutcome.FAILED, reason="no answer from RADIUS server r1"),
             "EAP-RADIUS authentication of 'alice' failed: no answer from RADIUS server r1")


def test_an_accept_without_keys_is_a_failure() -> None:
    backend = MschapBackend()

    def no_keys(ev: EapRelayRequest) -> RelayReply:
        reply = backend(ev)
        return RelayReply(reply.outcome, reply.eap, None, reply.reason)
    _refused(no_keys, "Access-Accept without MPPE keys")


def test_retransmissions_are_not_answered_while_the_backend_is_asked_and_abandon_is_reported() -> None:
    net, _, b = setup(client(), gateway())
    held: list[tuple[EapRelayRequest, float]] = []

    def slow(ev: EapRelayRequest) -> None:
        held.append((ev, net.now))
        return None   # never answers: the request stays held

    relay(net, b, slow, until=25.0)
    # the client retransmitted its IKE_AUTH request (4 s, 7.2 s, ...); the gateway answered only
    # the first one (IDr, CERT, AUTH, EAP-Identity) and is silent while the backend is asked
    assert len(held) == 1 and ike_auth_responses(net) == 1
    resent = [s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.IKE_AUTH]
    assert len(resent) >= 3 and resent[-1].data == resent[-2].data
    (sa,) = b.sas
    # the half-open timeout ends it: the backend's state is to be dropped, a late answer is refused
    relay(net, b, slow, until=40.0)
    ev_b = net.take(B)
    assert [type(e) for e in ev_b if isinstance(e, EapRelayAbandoned | IkeSaUp)] == [EapRelayAbandoned]
    assert not b.sas and b.half_open == 0
    assert not b.relay_reply(sa, RelayReply(RelayOutcome.CHALLENGE, b"\x01\x05\x00\x05\x1a", reason="late"), net.now)


def test_a_request_answered_after_the_backend_is_answered_again_when_retransmitted() -> None:
    """The request held for the backend is kept as what its retransmissions must copy (_Waiting):
    once answered, a copy of it gets the same response, where the request came from; before the
    client is authenticated not at another port (sa_responder.resend: a copy aimed elsewhere)."""
    net, _, b = setup(client(), gateway())
    held: list[EapRelayRequest] = []
    relay(net, b, held.append, until=1.0)   # never answers: the request is held
    (sa,) = b.sas
    assert b.relay_reply(sa, MschapBackend()(held[0]), net.now)
    sent = [s for s in net.collect() if s.src[0] == B]   # lost: not delivered
    assert len(sent) == 1
    request = [s for s in net.log if s.src[0] == A and decode_header(s.data).exchange == ExchangeType.IKE_AUTH][-1]
    net.deliver(Sent(net.now, (A, 61001), request.dst, request.data))
    assert net.collect() == [] and b.stats.preauth_elsewhere == 1
    net.deliver(Sent(net.now, request.src, request.dst, request.data))
    assert [(s.dst, s.data) for s in net.collect()] == [(sent[0].dst, sent[0].data)]
    assert b.stats.retransmit_not_identical == 0


def test_a_late_answer_after_a_reply_is_refused() -> None:
    net, _, b = setup(client(), gateway())
    backend = MschapBackend()
    captured: list[IkeSa] = []

    def once(ev: EapRelayRequest) -> RelayReply:
        captured.extend(sa for sa, e in net.events[B] if e is ev)
        return backend(ev)

    relay(net, b, once, until=20.0)
    (sa,) = set(captured)
    # every request was answered; a second answer to the last one has nothing to resume
    assert not b.relay_reply(sa, RelayReply(RelayOutcome.ACCEPT, b"\x03\x01\x00\x04", Secret(bytes(32))), net.now)
    assert [type(e) for e in net.take(A)] == [IkeSaUp, ChildSaUp]


def _accepted_then(net: Network, gw: IkeEndpoint, backend: Backend, until: float) -> list[Event]:
    """Run until ``until``; the gateway's events, which must show one Access-Accept relayed and no IkeSaUp.
    The edge kept nothing of the Accept (the IKE SA carried it, and is gone): nothing to tell it."""
    relay(net, gw, backend, until=until)
    events = [ev for _, ev in net.events[B]]
    assert not only(events, IkeSaUp) and not gw.sas and gw.half_open == 0
    assert not only(events, EapRelayAbandoned)
    return events


def test_an_accepted_client_whose_auth_does_not_match_leaves_nothing_at_the_edge() -> None:
    """The backend's MSK is not the client's: the client's AUTH after EAP fails. What the
    Access-Accept said went with the IKE SA (review revradius F2): nothing to drop at the edge."""
    net, _, b = setup(client(), gateway())
    backend = MschapBackend()

    def other_msk(ev: EapRelayRequest) -> RelayReply:
        reply = backend(ev)
        if reply.outcome is not RelayOutcome.ACCEPT:
            return reply
        return RelayReply(reply.outcome, reply.eap, Secret(bytes(32)), reply.reason)

    events = _accepted_then(net, b, other_msk, until=20.0)
    assert "AUTH from the EAP MSK does not match" in only(events, AuthFailed)[0].reason


def test_an_accepted_client_that_vanishes_before_its_auth_leaves_nothing_at_the_edge() -> None:
    """EAP succeeded at the backend, then the client is gone: the half-open timeout ends the SA,
    and what the Access-Accept said with it."""
    net, _, b = setup(client(), gateway())
    backend = MschapBackend()

    def then_gone(ev: EapRelayRequest) -> RelayReply:
        reply = backend(ev)
        if reply.outcome is RelayOutcome.ACCEPT:
            net.drop = lambda sent: sent.src[0] == A   # the client's AUTH never arrives
        return reply

    events = _accepted_then(net, b, then_gone, until=60.0)
    assert not only(events, AuthFailed)


def test_an_accepted_duplicate_refused_by_unique_keep_leaves_nothing_at_the_edge() -> None:
    net = Network()
    b = net.add(B, IkeEndpoint([gateway()], unique_keep=lambda conn: True, wall_clock=lambda: NOW))
    first = net.add(A, IkeEndpoint([client()], wall_clock=lambda: NOW))
    first.initiate("rw", "net", net.now)
    relay(net, b, MschapBackend(), until=20.0)
    assert len(only(net.take(B), IkeSaUp)) == 1
    # another device of alice's, without INITIAL_CONTACT (which would replace the first, as strongSwan)
    again = dataclasses.replace(client(), local_addr="192.0.2.3", initial_contact=False)
    second = net.add("192.0.2.3", IkeEndpoint([again], wall_clock=lambda: NOW))
    second.initiate("rw", "net", net.now)
    relay(net, b, MschapBackend(), until=40.0)
    events = net.take(B)
    assert "unique = keep" in only(events, AuthFailed)[0].reason and not only(events, IkeSaUp)
    assert not only(events, EapRelayAbandoned)
    assert len(b.sas) == 1   # the first client's SA is untouched


def test_an_established_client_is_not_abandoned_at_the_edge_when_it_goes() -> None:
    """The conversation ended with the Access-Accept: nothing is left to drop when the SA ends."""
    net, a, b = setup(client(), gateway())
    relay(net, b, MschapBackend(), until=20.0)
    assert len(only(net.take(B), IkeSaUp)) == 1
    a.sas[0].delete(net.now)
    relay(net, b, MschapBackend(), until=40.0)
    assert not b.sas
    assert not only(net.take(B), EapRelayAbandoned)


def _relay_rounds(challenges: int) -> tuple[int, bool | None]:
    """An EapRelay through ``challenges`` Access-Challenges (an EAP-TLS exchange carries a
    certificate chain in ~1 KiB fragments, one round trip each), then an Accept: how many rounds
    the backend saw, and whether the conversation succeeded."""
    relay = EapRelay(b"alice")
    ask = relay.start()
    for n in range(challenges + 1):   # the backend's round n + 1
        assert isinstance(ask, RelayAsk)
        if n == challenges:
            _out, result = relay.reply(RelayReply(RelayOutcome.ACCEPT, EapPacket(EapCode.SUCCESS, n % 256).encode(),
                                                  msk=Secret(bytes(64)), reason="backend"))
            assert result is not None
            return n + 1, result.ok
        challenge = EapPacket(EapCode.REQUEST, n % 256, 13).encode()   # EAP-TLS, one fragment
        _request, result = relay.reply(RelayReply(RelayOutcome.CHALLENGE, challenge, reason="backend"))
        assert result is None
        nxt = relay.process(EapPacket(EapCode.RESPONSE, n % 256, 13).encode())
        if not isinstance(nxt, RelayAsk):   # the relay gave up on the conversation
            return n + 1, nxt[1].ok
        ask = nxt
    raise AssertionError("unreachable")


def test_eap_tls_with_large_certificate_chains_fits_the_relays_round_limit() -> None:
    """EAP-TLS with chains of several KiB each way at 1 KiB fragments (TLS 1.3 adds a round) takes
    ~20-25 round trips; strongSwan's eap-tls allows 32 messages (max_message_count): so does the
    relay.  A backend that never ends the conversation is still cut off."""
    assert _relay_rounds(31) == (32, True)
    assert _relay_rounds(40) == (32, False)


class FreeRadiusLikeBackend(MschapBackend):
    """As FreeRADIUS's eap-mschapv2 with send_error = yes: a wrong password gets an Access-Challenge with the
    MSCHAPv2 Failure request (OpCode 4, "E=691"), the client's acknowledgement an Access-Reject."""

    def __call__(self, ev: EapRelayRequest) -> RelayReply:
        self.asked.append(ev)
        if ev.first:
            self.server = EapAuthenticator(self.passwords.get, ev.identity)
            return RelayReply(RelayOutcome.CHALLENGE, self.server.start(), reason="backend")
        pkt = EapPacket.decode(ev.eap)
        if pkt.data[:1] == b"\x04":   # the client's acknowledgement of the Failure request
            return RelayReply(RelayOutcome.REJECT, EapPacket(EapCode.FAILURE, pkt.ident).encode(),
                              reason="backend rejected it")
        assert self.server is not None
        out, result = self.server.process(ev.eap)
        if result is not None and not result.ok:
            body = b"E=691 R=0 C=00000000000000000000000000000000 V=3 M=Authentication failure"
            failure = bytes([4, 1]) + (4 + len(body)).to_bytes(2, "big") + body
            request = EapPacket(EapCode.REQUEST, (pkt.ident + 1) & 0xFF, 26, failure)
            return RelayReply(RelayOutcome.CHALLENGE, request.encode(), reason="backend")
        assert result is None, "these tests' passwords are wrong"
        return RelayReply(RelayOutcome.CHALLENGE, out, reason="backend")


def _wrong_password_via_a_failure_request(abandon: bool) -> list[AuthFailed]:
    net, _, b = setup(client(password=b"wrong-pw"), gateway())
    backend = FreeRadiusLikeBackend()
    if abandon:   # the client says nothing after the Failure request: its next IKE_AUTH is lost
        seen = {"failure": False}

        def drop(s: Sent) -> bool:
            if s.src[0] == B and len(backend.asked) >= 2:
                seen["failure"] = True
                return False
            return s.src[0] == A and seen["failure"]

        net.drop = drop
    relay(net, b, backend, until=60.0)
    assert not b.sas and b.half_open == 0
    return only(net.take(B), AuthFailed)


def test_a_refusal_in_an_access_challenge_counts_once_when_the_client_acknowledges() -> None:
    """FreeRADIUS sends EAP-MSCHAPv2's verdict, a Failure request, in an Access-Challenge; the client's
    acknowledgement brings the Access-Reject.  The guess counts once: at the Failure request (it is the
    back end's verdict), the Reject's AuthFailed not again (counted)."""
    failed = _wrong_password_via_a_failure_request(abandon=False)
    assert [(f.counts, f.counted) for f in failed] == [(True, False), (False, True)], failed
    assert "Failure request in an Access-Challenge" in failed[0].reason


def test_a_guesser_that_stops_at_the_failure_request_is_still_counted() -> None:
    """A password guesser that learns the verdict from the Failure request and stops answering never
    brought the Access-Reject, so it was never counted towards a ban: it is, at the Failure request."""
    failed = _wrong_password_via_a_failure_request(abandon=True)
    assert [f.counts for f in failed] == [True], failed


@dataclass
class _FakeSt:
    name: str = "rw"
    events: list = field(default_factory=list)

    def emit(self, ev: object) -> None:
        self.events.append(ev)


def _mschap(ident: int, opcode: int, body: bytes) -> bytes:
    data = bytes([opcode, ident]) + (4 + len(body)).to_bytes(2, "big") + body
    return EapPacket(EapCode.REQUEST, ident, 26, data).encode()


def _backend_conversation(answers: list[RelayReply]) -> list[AuthFailed]:
    """The client answers every request (an opaque MSCHAPv2 response); the server answers ``answers``."""
    relay = EapRelay(b"alice")
    ge = GatewayEap(relay, idi=None, request=())  # type: ignore[arg-type]
    st = _FakeSt()
    ask = relay.start()
    assert not isinstance(ask, bytes)
    for reply in answers:
        _BackendRound(ge, []).resume(st, reply)  # type: ignore[arg-type]
        if relay._state == "done":
            break
        pkt = EapPacket.decode(reply.eap)
        nxt = relay.process(EapPacket(EapCode.RESPONSE, pkt.ident, 26, bytes([2, pkt.ident, 0, 4])).encode())
        assert not isinstance(nxt, tuple), nxt
    return [e for e in st.events if isinstance(e, AuthFailed)]


_CHALLENGE = _mschap(1, 1, bytes([16]) + bytes(16) + b"srv")


def test_an_expired_right_password_in_a_failure_request_is_not_counted() -> None:
    """Review reveap F1: E=648 (password expired): the password was RIGHT; the client changes it (OpCode 7)
    and gets an Access-Accept.  It must not count as a failed guess (the first fix counted every Failure
    request); a wrong password's (E=691) does."""
    expired = _mschap(2, 4, b"E=648 R=0 C=00000000000000000000000000000000 V=3 M=Password expired")
    # (the Change-Password round and the Accept after it add no AuthFailed: stopped before them, the
    # Accept path needs a whole IkeSaState; the count is already made at the E=648 request)
    failed = _backend_conversation([RelayReply(RelayOutcome.CHALLENGE, _CHALLENGE, reason="srv"),
                            RelayReply(RelayOutcome.CHALLENGE, expired, reason="srv")])
    assert [f.counts for f in failed] == [], f"a right (expired, then changed) password counted: {failed}"


def test_a_retry_after_a_failure_request_then_a_reject_counts_both_guesses() -> None:
    """Review reveap F2: R=1: the server lets the client retry; a server that answers the retry's wrong response with an
    Access-Reject directly (no second Failure request): two wrong guesses, counted once."""
    failure = _mschap(2, 4, b"E=691 R=1 C=00000000000000000000000000000000 V=3 M=Authentication failure")
    retry = _mschap(3, 1, bytes([16]) + bytes(16) + b"srv")   # a new Challenge: the retry
    reject = RelayReply(RelayOutcome.REJECT, EapPacket(EapCode.FAILURE, 4).encode(), reason="reject")
    failed = _backend_conversation([RelayReply(RelayOutcome.CHALLENGE, _CHALLENGE, reason="srv"),
                            RelayReply(RelayOutcome.CHALLENGE, failure, reason="srv"),
                            RelayReply(RelayOutcome.CHALLENGE, retry, reason="srv"), reject])
    assert [f.counts for f in failed] == [True, True], f"two wrong guesses, counted {sum(f.counts for f in failed)}"
