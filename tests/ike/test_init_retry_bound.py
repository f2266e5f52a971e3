"""An initiator follows COOKIE and INVALID_KE_PAYLOAD answers to its IKE_SA_INIT a bounded number of
times: the answers are unauthenticated, anyone who saw the request (its SPIi) can send them."""

from __future__ import annotations

import struct
from collections.abc import Callable

from test_engine import B, initiator_cfg, only

from tunsec.ike.constants import ExchangeType, HeaderFlag, NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import Event, NegotiationFailed
from tunsec.ike.exchanges.ike_sa_init import MAX_RETRIES
from tunsec.ike.message import KePayload, Message, NotifyPayload, decode_message
from tunsec.ike.proposals import parse_proposals

Answer = Callable[[int, int], NotifyPayload]   # (round, KE group of the request) -> the notify answered


def _run(answer: Answer, rounds: int = 100) -> tuple[list[int], list[Event], IkeEndpoint]:
    """Answer each IKE_SA_INIT request with ``answer``'s notify; the KE groups of the requests sent."""
    cfg = initiator_cfg(proposals=parse_proposals("aes256gcm16-prfsha384-x25519-ecp256"))
    ep = IkeEndpoint([cfg])
    ep.initiate(cfg.name, "net", 0.0)
    groups: list[int] = []
    now = 0.0
    for i in range(rounds):
        out = ep.datagrams_to_send(now)
        if not out:
            break
        req = decode_message(out[-1].data)
        assert req.exchange == ExchangeType.IKE_SA_INIT
        group = next(p for p in req.payloads if isinstance(p, KePayload)).group
        groups.append(group)
        resp = Message(req.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, int(HeaderFlag.RESPONSE), 0,
                       (answer(i, group),))
        now += 0.01
        ep.receive(resp.encode(), (B, 500), now)
    events: list[Event] = []
    while (item := ep.next_event()) is not None:
        events.append(item[1])
    return groups, events, ep


def test_invalid_ke_naming_our_groups_in_turn_ends_after_each_was_tried() -> None:
    def other_group(_: int, group: int) -> NotifyPayload:
        return NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", 19 if group == 31 else 31))

    groups, events, ep = _run(other_group)
    assert groups == [31, 19]   # one request per offered group, then no more
    failed = only(events, NegotiationFailed)
    assert [e.reason for e in failed] == ["INVALID_KE_PAYLOAD"] and "tried already" in failed[0].detail
    assert not ep.sas and ep.get_timer() is None   # closed: nothing more is sent


def test_cookies_for_ever_end_after_max_retries() -> None:
    groups, events, ep = _run(lambda i, _: NotifyPayload(NotifyType.COOKIE, i.to_bytes(8, "big")))
    assert len(groups) == 1 + MAX_RETRIES
    failed = only(events, NegotiationFailed)
    assert [e.reason for e in failed] == ["COOKIE"] and f"after {MAX_RETRIES}" in failed[0].detail
    assert not ep.sas and ep.get_timer() is None   # closed: nothing more is sent


def test_cookies_and_invalid_ke_count_together() -> None:
    def alternate(i: int, group: int) -> NotifyPayload:
        if i == 1:
            return NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", 19))
        return NotifyPayload(NotifyType.COOKIE, bytes([i]) * 8)

    groups, events, _ = _run(alternate)
    assert len(groups) == 1 + MAX_RETRIES and groups[-1] == 19
    assert [e.reason for e in only(events, NegotiationFailed)] == ["COOKIE"]
