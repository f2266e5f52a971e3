"""Review revlate5 F1 at the endpoint: a half-open SA its peer ends at IKE_AUTH before authentication
(N(NO_NATS_ALLOWED) naming other addresses: UNEXPECTED_NAT_DETECTED, RFC 4555 §3.9) counts as a
request refused after work of a real address (cookie_demand.py): towards the COOKIE thresholds and the
source's block_threshold for COOKIE_CALMDOWN_DELAY seconds.  Its peer read our IKE_SA_INIT answer
and spoke under its keys, from the address of its IKE_SA_INIT (sa_responder.foreign): a real address,
COOKIE or not.  Other addresses are not held, and the address is served again once its window ended.
A failed authentication is the ban's (auth_ban.py), not counted here (test_auth_failed_log_line); the
other ways a peer can spoil its IKE_AUTH before authentication are either failed authentications (no
IDi) or leave the half-open SA in place, held to block_threshold while it lasts (a bad ICV: dropped
unanswered; a payload that does not parse: answered INVALID_SYNTAX, the SA kept): guards below.

Two engines on the fake network (fake clock): the client's first IKE_AUTH claims a NAT'd source."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_engine import A, B, initiator_cfg, responder_cfg
from test_engine_mobike import _no_nats

from tunsec.ike.constants import ExchangeType, PayloadType
from tunsec.ike.cookie_demand import COOKIE_CALMDOWN_DELAY
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed, IkeSaUp, NegotiationFailed
from tunsec.ike.exchanges import mobike
from tunsec.ike.exchanges.ike_auth import IkeAuthTask
from tunsec.ike.message import IdPayload, Payload, decode_header
from tunsec.ike.state import IkeSaState
from tunsec.ike.testing import Network, Sent

A2 = "192.0.2.11"   # another client, not claiming a NAT
TRIES = 8


@pytest.fixture
def claims_a_nat(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every client's first IKE_AUTH says it was sent from 10.0.0.5: the gateway refuses it."""
    monkeypatch.setattr(mobike, "announce", lambda st: [_no_nats(("10.0.0.5", 4500), (B, 4500))])
    yield


def _network() -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    client = net.add(A, IkeEndpoint([initiator_cfg()]))
    gateway = net.add(B, IkeEndpoint([responder_cfg()]))
    return net, client, gateway


def _refused_tries(net: Network, client: IkeEndpoint, tries: int) -> None:
    """``tries`` IKE SAs from the client, one after the other (0.5 s apart on the fake clock)."""
    for _ in range(tries):
        client.initiate("a-to-b", "net", net.now)
        net.run(until=net.now + 0.5)


def test_closes_by_unexpected_nat_detected_hold_the_address_to_block_threshold(claims_a_nat: None) -> None:
    net, client, gateway = _network()
    _refused_tries(net, client, TRIES)
    refused = [e for e in net.take(B) if isinstance(e, NegotiationFailed) and e.reason == "UNEXPECTED_NAT_DETECTED"]
    limit = gateway.limits.block_threshold
    assert gateway.stats.half_open_closed == len(refused) == limit, (
        f"{gateway.stats.half_open_closed} IKE_SA_INITs of {TRIES} from {A} taken and keyed, each closed at "
        f"IKE_AUTH by UNEXPECTED_NAT_DETECTED: not held to block_threshold ({limit})")
    assert gateway.stats.block_threshold > 0


def test_another_address_is_not_held_and_the_address_is_served_after_its_window(
        claims_a_nat: None, monkeypatch: pytest.MonkeyPatch) -> None:
    net, client, gateway = _network()
    _refused_tries(net, client, TRIES)
    assert gateway.stats.block_threshold > 0
    monkeypatch.undo()   # honest clients from now on
    other = net.add(A2, IkeEndpoint([initiator_cfg()]))
    other.initiate("a-to-b", "net", net.now)
    net.run(until=net.now + 1)
    assert any(isinstance(e, IkeSaUp) for e in net.take(A2)), "another address was held with the refused one"
    for sa in list(client.sas):   # the refused tries still retransmitting: forget them
        sa.delete(net.now)
    net.run(until=net.now + COOKIE_CALMDOWN_DELAY)
    net.take(A)
    client.initiate("a-to-b", "net", net.now)
    net.run(until=net.now + 1)
    assert any(isinstance(e, IkeSaUp) for e in net.take(A)), "the address was still held after its window"


def test_ike_auths_without_idi_are_failed_authentications_not_counted_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard (passes before and after): a first IKE_AUTH without IDi is a failed authentication, which
    the service's ban counts (auth_failures, not backend nor refused): the endpoint does not hold the
    address for it, or a NAT'd office's typing errors would be held to block_threshold per 10 s."""
    build = IkeAuthTask.build

    def without_idi(self: IkeAuthTask, st: IkeSaState) -> list[Payload]:
        return [p for p in build(self, st) if not (isinstance(p, IdPayload) and p.initiator)]

    monkeypatch.setattr(IkeAuthTask, "build", without_idi)
    net, client, gateway = _network()
    _refused_tries(net, client, TRIES)
    failed = [e for e in net.take(B) if isinstance(e, AuthFailed)]
    assert len(failed) == TRIES and not any(e.backend or e.refused or e.by_peer for e in failed)
    assert gateway.stats.half_open_closed == TRIES and gateway.stats.block_threshold == 0


def _first_auth_spoiled(net: Network, spoil: int) -> None:
    """Deliver what is in flight, the client's first IKE_AUTH with its byte at ``spoil`` flipped."""
    for sent in net.collect():
        header = decode_header(sent.data)
        if header.exchange == ExchangeType.IKE_AUTH and not header.is_response and sent.dst[0] == B:
            data = bytearray(sent.data)
            data[spoil] ^= 0xFF
            sent = Sent(sent.time, sent.src, sent.dst, bytes(data))
        net.deliver(sent)


@pytest.mark.parametrize("spoil", [-1, 28 + 4 + 16], ids=["bad ICV", "bad ciphertext"])
def test_a_spoiled_ike_auth_keeps_its_half_open_sa(spoil: int) -> None:
    """Guard: an IKE_AUTH that fails its integrity check is dropped (a ciphertext changed fails it too:
    the ICV covers it), and the half-open SA stays, counted towards block_threshold until
    half_open_timeout: not free for its sender, not counted as a refusal."""
    net, client, gateway = _network()
    client.initiate("a-to-b", "net", net.now)
    net.step()   # IKE_SA_INIT
    net.step()   # its answer
    _first_auth_spoiled(net, spoil)
    assert gateway.half_open == 1 and gateway.stats.half_open_closed == 0
    assert not any(isinstance(e, (IkeSaUp, NegotiationFailed)) for e in net.take(B))


class _ShortNotify:
    """A Notify payload of 2 octets (it has at least 8): the gateway's parse of the plaintext fails."""

    ptype = PayloadType.NOTIFY

    def encode_body(self) -> bytes:
        return b"\x00\x00"


def test_an_ike_auth_that_does_not_parse_keeps_its_half_open_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: a first IKE_AUTH whose plaintext does not parse is answered INVALID_SYNTAX and its half-open
    SA kept (sa_responder._Refuse), counted towards block_threshold until half_open_timeout: not
    free for its sender, not counted as a refusal."""
    build = IkeAuthTask.build

    def spoiled(self: IkeAuthTask, st: IkeSaState) -> list[Payload]:
        return [*build(self, st), _ShortNotify()]  # type: ignore[list-item]

    monkeypatch.setattr(IkeAuthTask, "build", spoiled)
    net, client, gateway = _network()
    client.initiate("a-to-b", "net", net.now)
    net.run(until=net.now + 1)
    assert [e.reason for e in net.take(A) if isinstance(e, NegotiationFailed)] == ["INVALID_SYNTAX"]
    assert gateway.half_open == 1 and gateway.stats.half_open_closed == 0
