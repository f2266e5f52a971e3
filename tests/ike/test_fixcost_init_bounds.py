"""h/fixcost (review revcost F1, F2): what IKE_SA_INIT asks of alike connections, and the bound on
requests refused after work from a source that returns its COOKIE, with what that bound must let
through (a real client's INVALID_KE_PAYLOAD retry, requests from spoofed sources that never bring a
COOKIE, the same address once its window ended)."""

from __future__ import annotations

import dataclasses

from endpoint_dos_data import A, B, cfg, init_request, with_spi
from test_review_revcost_init_work import (  # noqa: F401 (matches: a fixture)
    OURS,
    _gateway,
    _refusal,
    _unmatched_request,
    matches,
)

from tunsec.ike.constants import NotifyType
from tunsec.ike.cookie_demand import COOKIE_CALMDOWN_DELAY
from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import NegotiationFailed
from tunsec.ike.message import Message, NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

PORT = 500


# ------------------------------------------------------------------ F1


def test_an_accepted_request_asks_alike_connections_once(matches: list[int]) -> None:  # noqa: F811
    """A request the first of 50 alike connections takes: the candidates IKE_AUTH may still switch to
    are all 50 (they accept the chosen proposal), found with one acceptance check for their one
    proposal list, not one per connection (before: 49 more checks, ~50x the matches of one)."""
    request = init_request()
    work = []
    for connections in (1, 50):
        gateway = IkeEndpoint([cfg(False, name=f"c{i}") for i in range(connections)])
        matches[0] = 0
        gateway.receive(with_spi(request, connections), (A, PORT), 1.0)
        (sa,) = gateway.sas
        assert sa.config.name == "c0" and len(sa._st.candidates) == connections
        work.append(matches[0])
    one, many = work
    assert many <= 2 * one, f"50 alike connections made {many} matches for an accepted request, one {one}"


def test_a_refusal_names_each_configured_proposal_once() -> None:
    """The NO_PROPOSAL_CHOSEN event lists what was configured once per distinct proposal, not once per
    alike connection (before: 2 proposals x 50 connections, cut at the first few and "and 95 more")."""
    gateway = _gateway(50)
    gateway.receive(_unmatched_request().encode(), (A, PORT), 1.0)
    assert _refusal(gateway, 1.0) == [NotifyType.NO_PROPOSAL_CHOSEN]
    failed = []
    while (got := gateway.next_event()) is not None:
        if isinstance(got[1], NegotiationFailed):
            failed.append(got[1])
    (event,) = failed
    configured = event.detail.split("configured ", 1)[1]
    assert configured == ", ".join(str(p) for p in parse_proposals(OURS)), configured


# ------------------------------------------------------------------ F2


def _cookie_reply(gateway: IkeEndpoint, now: float) -> NotifyPayload:
    (cookie,) = decode_message(gateway.datagrams_to_send(now)[0].data).payloads
    assert isinstance(cookie, NotifyPayload) and cookie.type == NotifyType.COOKIE
    return cookie


def _with(msg: Message, cookie: NotifyPayload, i: int) -> bytes:
    varied = (cookie, *msg.payloads, NotifyPayload(40001, i.to_bytes(2, "big")))
    return dataclasses.replace(msg, payloads=varied).encode()


def test_a_client_whose_ke_guess_is_refused_is_served_under_cookie_demand() -> None:
    """A client that must bring a COOKIE (cookie_threshold_ip 0) and guesses the wrong KE group
    gets INVALID_KE_PAYLOAD after the selection (a refusal that counts), retries, and is served even
    at block_threshold 2: its refusal and its half-open SA are the two."""
    net = Network()
    client = net.add(A, IkeEndpoint([cfg(True, proposals=parse_proposals(
        "aes128gcm16-prfsha256-ecp256-curve25519"))]))
    gateway = net.add(B, IkeEndpoint([cfg(False, proposals=parse_proposals("aes128gcm16-prfsha256-curve25519"))],
                                     limits=DosLimits(cookie_threshold_ip=0, block_threshold=2)))
    (sa,) = [client.initiate("conn", "net", net.now)]
    net.run(until=net.now + 5)
    assert gateway.stats.cookies_sent >= 1 and gateway.stats.init_refused == 1   # the wrong guess
    assert gateway.stats.block_threshold == 0
    assert sa.state is State.ESTABLISHED


def test_refusals_of_requests_without_a_cookie_never_block_their_address() -> None:
    """Requests refused after work that brought no COOKIE (any sender may write this source address)
    are held by the COOKIE thresholds only: the address's real client is served after ten of them."""
    limits = DosLimits(cookie_threshold_ip=100, block_threshold=2)
    gateway = _gateway(1, limits, ours="aes128gcm16-prfsha256-curve25519")
    for i in range(10):
        gateway.receive(with_spi(_unmatched_request().encode(), i), (A, PORT), 1.0 + i * 0.01)
    assert gateway.stats.init_refused == 10
    gateway.receive(init_request(), (A, PORT), 1.5)
    assert gateway.half_open == 1 and gateway.stats.block_threshold == 0


def test_a_source_held_to_block_threshold_is_served_again_when_its_window_ends() -> None:
    """After its refusals with COOKIEs reached block_threshold the source is dropped (counted) for
    COOKIE_CALMDOWN_DELAY seconds from its first, then served again, its next request too."""
    limits = DosLimits(cookie_threshold_ip=1, block_threshold=3)
    gateway = _gateway(1, limits)
    first = _unmatched_request()
    gateway.receive(first.encode(), (A, PORT), 1.0)    # refused, no COOKIE asked yet
    gateway.datagrams_to_send(1.0)
    gateway.receive(first.encode(), (A, PORT), 1.1)
    cookie = _cookie_reply(gateway, 1.1)
    for i in range(10):
        gateway.receive(_with(first, cookie, i), (A, PORT), 1.2 + i * 0.01)
        gateway.datagrams_to_send(1.2 + i * 0.01)
    assert gateway.stats.init_refused == 1 + limits.block_threshold and gateway.stats.block_threshold == 7
    later = 1.2 + COOKIE_CALMDOWN_DELAY
    gateway.receive(_with(first, cookie, 99), (A, PORT), later)
    assert _refusal(gateway, later) == [NotifyType.NO_PROPOSAL_CHOSEN]   # selected again, refused again
    assert gateway.stats.init_refused == 2 + limits.block_threshold


def test_the_table_of_sources_is_bounded_and_forgets_ended_windows() -> None:
    """ProvenRefusals holds at most ``limit`` sources (the oldest window goes first) and forgets a
    window once it ended."""
    from tunsec.ike.cookie_demand import ProvenRefusals  # new with h/fixcost: the other tests run without it

    table = ProvenRefusals()
    for i in range(10):
        table.refused(f"192.0.2.{i}", 1.0 + i, limit=4)
    assert len(table) == 4
    assert table.count("192.0.2.0", 10.0) == 0 and table.count("192.0.2.9", 10.0) == 1
    table.refused("192.0.2.9", 10.5, limit=4)
    assert table.count("192.0.2.9", 10.5) == 2
    table.refused("198.51.100.1", 10.0 + COOKIE_CALMDOWN_DELAY, limit=4)   # 6..9's windows ended (or end now)
    assert table.count("192.0.2.9", 10.0 + COOKIE_CALMDOWN_DELAY) == 0 and len(table) == 1
