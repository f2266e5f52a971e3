"""Review revcost (2026-12-05): the work an unauthenticated IKE_SA_INIT makes the responder do,
per byte it sent, that its refusal does not stop.

F1: the responder's proposal selection (exchanges/ike_sa_init.respond) matches the request's SA
payload against every candidate connection in turn (all connections that accept the source
address: a gateway's %any connections), each one's proposals again, even when they are the very
same proposals as a candidate already refused: one request of 32 proposals x 8 transforms (3.5 KB)
cost ~1 ms at one connection and ~20 ms at 50 alike ones (Python calls: 9,560 and 247,053).

F2: a request refused after that work (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, a bad KE value)
counts towards the COOKIE thresholds only; a source that brings its COOKIE back is never held to
``block_threshold`` for them (which counts half-open SAs), so one real address may have the
selection done again and again, as often as it sends, for the cookie's lifetime (the COOKIE binds
SPIi, Ni and the address, not the rest of the request).

No timing here: the work is counted as the matches the selection makes (proposals._match), and
the refusals the responder answered after that work (stats.init_refused)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from endpoint_dos_data import A, cfg, init_request, with_spi

from tunsec.ike import proposals
from tunsec.ike.constants import EncrId, NotifyType, TransformType
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.message import Message, NotifyPayload, Proposal, SaPayload, Transform, decode_message
from tunsec.ike.proposals import parse_proposals

PORT = 500
CONNECTIONS = 50
# what a gateway configures: its own proposals, the same in every connection (or "default")
OURS = "aes128gcm16-prfsha256-curve25519,aes256-sha256-modp2048"


@pytest.fixture
def matches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many (our proposal, their proposal) matches the selection made, counted."""
    count = [0]
    real: Callable[..., Proposal | None] = proposals._match

    def counted(*args: object) -> Proposal | None:
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(proposals, "_match", counted)
    yield count


def _gateway(connections: int, limits: DosLimits | None = None, ours: str = OURS) -> IkeEndpoint:
    configs = [cfg(False, name=f"c{i}", proposals=parse_proposals(ours)) for i in range(connections)]
    return IkeEndpoint(configs, limits=limits) if limits is not None else IkeEndpoint(configs)


def _unmatched_request(proposal_count: int = 32, transforms: int = 8) -> Message:
    """A well-formed IKE_SA_INIT request whose SA payload offers only what no connection takes:
    MAX_PROPOSALS proposals of AES-CBC key lengths nobody uses (3.5 KB)."""
    msg = decode_message(init_request())
    offered = tuple(
        Proposal(i + 1, 1, b"", tuple(Transform.make(TransformType.ENCR, EncrId.AES_CBC, 64 + (i * transforms + k) % 64)
                                      for k in range(transforms)))
        for i in range(proposal_count))
    payloads = tuple(SaPayload(offered) if isinstance(p, SaPayload) else p for p in msg.payloads)
    return dataclasses.replace(msg, payloads=payloads)


def _refusal(gateway: IkeEndpoint, now: float) -> list[int]:
    return [p.type for d in gateway.datagrams_to_send(now) for p in decode_message(d.data).payloads
            if isinstance(p, NotifyPayload)]


def test_alike_connections_do_not_multiply_the_selection_work_of_one_request(matches: list[int]) -> None:
    """The same refused request costs a gateway of 50 connections with the same proposals as many
    matches as a gateway of one: the other 49 would refuse what the first refused (on main: 50x,
    ~20 ms of the control process per 3.5 KB datagram, before any COOKIE is asked for)."""
    request = _unmatched_request().encode()
    work = []
    for connections in (1, CONNECTIONS):
        gateway = _gateway(connections)
        matches[0] = 0
        gateway.receive(with_spi(request, connections), (A, PORT), 1.0)
        assert _refusal(gateway, 1.0) == [NotifyType.NO_PROPOSAL_CHOSEN]
        assert gateway.sa_count == 0
        work.append(matches[0])
    one, many = work
    assert one == 2 * 32   # our 2 proposals x its 32
    assert many <= 2 * one, f"{CONNECTIONS} alike connections made {many} matches, one makes {one}"


def test_a_connection_of_other_proposals_is_still_chosen_after_alike_ones_refused() -> None:
    """Guard for the fix: candidates whose proposals differ are each still asked, in order: a
    request only the last connection's proposals match (after five alike ones that refuse it, and
    one of its own kind that does too) is taken by that connection."""
    refusing = [cfg(False, name=f"c{i}", proposals=parse_proposals("aes256-sha256-modp2048")) for i in range(5)]
    other = cfg(False, name="other", proposals=parse_proposals("aes256gcm16-prfsha512-ecp384"))
    last = cfg(False, name="last", proposals=parse_proposals("aes128gcm16-prfsha256-curve25519"))
    gateway = IkeEndpoint([*refusing, other, last])
    gateway.receive(init_request(), (A, PORT), 1.0)
    assert gateway.half_open == 1 and gateway.stats.init_refused == 0
    (sa,) = gateway.sas
    assert sa.config.name == "last"


def test_a_source_that_returns_its_cookie_is_held_to_a_bound_of_refusals_after_work(matches: list[int]) -> None:
    """One address (a real one: it reads its COOKIE) sends 200 requests that are refused after the
    selection, each with the COOKIE its first one brought (the COOKIE binds SPIi, Ni and address:
    the rest of the request may change, here a private notify's byte).  The selection may be
    done for a few of them, as for the half-open SAs block_threshold allows it; on main it is done
    for every one, for as long as the COOKIE is valid (cookie_lifetime, 60 s by default)."""
    limits = DosLimits(cookie_threshold_ip=1, block_threshold=5)
    gateway = _gateway(1, limits)
    first = _unmatched_request()
    gateway.receive(first.encode(), (A, PORT), 1.0)
    assert _refusal(gateway, 1.0) == [NotifyType.NO_PROPOSAL_CHOSEN]
    gateway.receive(first.encode(), (A, PORT), 1.1)
    msg = decode_message(gateway.datagrams_to_send(1.1)[0].data)
    (cookie,) = msg.payloads
    assert isinstance(cookie, NotifyPayload) and cookie.type == NotifyType.COOKIE
    matches[0] = 0
    sent = 200
    for i in range(sent):
        varied = (cookie, *first.payloads, NotifyPayload(40001, i.to_bytes(2, "big")))
        now = 1.2 + i * 0.01
        gateway.receive(dataclasses.replace(first, payloads=varied).encode(), (A, PORT), now)
        gateway.datagrams_to_send(now)
    refused_after_work = gateway.stats.init_refused - 1
    assert gateway.sa_count == 0
    assert refused_after_work <= limits.block_threshold, (
        f"{refused_after_work} of {sent} requests from one address were refused after the selection "
        f"({matches[0]} matches), beyond block_threshold {limits.block_threshold}")
