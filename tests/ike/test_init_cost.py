"""What an unauthenticated IKE_SA_INIT may cost the responder (review of 2026-12-03, ninth session):
oversized datagrams are dropped unparsed, payload counts are bounded, a bad KE costs no key pair,
and requests refused after work count towards the COOKIE thresholds as half-open SAs do."""

from __future__ import annotations

import dataclasses
import os

import pytest
from endpoint_dos_data import A, B, cfg, init_request, with_spi

from tunsec.ike import dh
from tunsec.ike.constants import MAX_IKE_MESSAGE, DhGroup, ExchangeType, HeaderFlag, NotifyType, PayloadType
from tunsec.ike.cookie_demand import address_slot
from tunsec.ike.dh_pool import KeyPairPool
from tunsec.ike.endpoint import COOKIE_CALMDOWN_DELAY, DosLimits, IkeEndpoint
from tunsec.ike.message import (
    MAX_INIT_PAYLOADS,
    MAX_PAYLOADS,
    MAX_PROPOSALS,
    MAX_SA_TRANSFORMS,
    DecodeError,
    KePayload,
    Message,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    decode_message,
    decode_payloads,
)

PORT = 500


def _with(request: bytes, *, drop: type | None = None, add: tuple[Payload, ...] = (), **swap: Payload) -> bytes:
    """``request`` with payloads replaced (by class name: ``KePayload=...``), dropped or added."""
    msg = decode_message(request)
    payloads = [swap.get(type(p).__name__, p) for p in msg.payloads if drop is None or not isinstance(p, drop)]
    return dataclasses.replace(msg, payloads=(*payloads, *add)).encode()


def _padded_to(request: bytes, size: int) -> bytes:
    """``request`` with a private-use status notify that makes it ``size`` bytes long."""
    return _with(request, add=(NotifyPayload(40001, bytes(size - len(request) - 8)),))


def _sent(ep: IkeEndpoint, now: float) -> list[Message]:
    return [decode_message(d.data) for d in ep.datagrams_to_send(now)]


def test_a_datagram_longer_than_the_maximum_is_dropped_before_it_is_parsed() -> None:
    """A 64 KiB IKE_SA_INIT request, well-formed but for its size, makes nothing and is counted
    too_big; so is a longer one that is no IKE at all (it was not even looked at: not malformed);
    one of exactly MAX_IKE_MESSAGE bytes is served."""
    gateway = IkeEndpoint([cfg(False)])
    huge = _padded_to(init_request(), 65_000)
    assert decode_message(huge).exchange == ExchangeType.IKE_SA_INIT
    gateway.receive(huge, (A, PORT), 1.0)
    gateway.receive(os.urandom(MAX_IKE_MESSAGE + 1), (A, PORT), 1.0)
    assert (gateway.stats.too_big, gateway.stats.malformed) == (2, 0)
    assert gateway.sa_count == 0 and _sent(gateway, 1.0) == []

    longest = _padded_to(init_request(), MAX_IKE_MESSAGE)
    assert len(longest) == MAX_IKE_MESSAGE
    gateway.receive(longest, (A, PORT), 2.0)
    assert gateway.half_open == 1 and gateway.stats.too_big == 2
    (answer,) = _sent(gateway, 2.0)
    assert answer.spi_r != bytes(8)


def test_a_chain_of_ten_thousand_payloads_is_a_clean_parse_error() -> None:
    """decode_payloads stops at the bound with a DecodeError (nothing else escapes), whether the
    payloads are known (Vendor IDs) or unknown and skipped."""
    for ptype in (PayloadType.VENDOR_ID, 200):
        chain = b"".join(bytes([ptype if i < 9_999 else 0, 0, 0, 4]) for i in range(10_000))
        with pytest.raises(DecodeError, match=f"more than {MAX_PAYLOADS} payloads"):
            decode_payloads(ptype, chain)
    at_bound = b"".join(bytes([PayloadType.VENDOR_ID if i < MAX_PAYLOADS - 1 else 0, 0, 0, 4])
                        for i in range(MAX_PAYLOADS))
    assert len(decode_payloads(PayloadType.VENDOR_ID, at_bound)) == MAX_PAYLOADS


def test_an_ike_sa_init_of_too_many_payloads_is_refused_without_state() -> None:
    """Under the size limit an IKE_SA_INIT request may still carry a thousand payloads: beyond
    MAX_INIT_PAYLOADS it is malformed, dropped unanswered, and nothing is kept; one at the bound
    is served."""
    gateway = IkeEndpoint([cfg(False)])
    request = init_request()
    room = MAX_INIT_PAYLOADS - len(decode_message(request).payloads)
    crowded = _with(request, add=tuple(NotifyPayload(40000, b"") for _ in range(1_000)))
    assert len(crowded) <= MAX_IKE_MESSAGE
    gateway.receive(crowded, (A, PORT), 1.0)
    gateway.receive(with_spi(_with(request, add=tuple(NotifyPayload(40000, b"") for _ in range(room + 1))), 1),
                    (A, PORT), 1.0)
    assert gateway.stats.malformed == 2 and gateway.sa_count == 0 and _sent(gateway, 1.0) == []
    gateway.receive(_with(request, add=tuple(NotifyPayload(40000, b"") for _ in range(room))), (A, PORT), 1.0)
    assert gateway.half_open == 1


def test_an_sa_payload_of_too_many_proposals_or_transforms_is_refused() -> None:
    """Proposal selection compares each of ours with each of theirs: an SA payload may hold
    MAX_PROPOSALS proposals and MAX_SA_TRANSFORMS transforms in all (both under the size limit
    here); beyond, the request is malformed and makes nothing."""
    gateway = IkeEndpoint([cfg(False)])
    request = init_request()
    (ours,) = decode_message(request).payloads[:1]
    assert isinstance(ours, SaPayload)
    junk = (Transform(1, 9000),)
    many_proposals = tuple(Proposal(i + 1, 1, b"", junk) for i in range(MAX_PROPOSALS)) + ours.proposals
    per = MAX_SA_TRANSFORMS // 4 + 1
    many_transforms = tuple(Proposal(i + 1, 1, b"", tuple(Transform(1, 9000 + k) for k in range(per)))
                            for i in range(4))
    for i, proposals in enumerate((many_proposals, many_transforms)):
        datagram = with_spi(_with(request, SaPayload=SaPayload(proposals)), i)
        assert len(datagram) <= MAX_IKE_MESSAGE
        gateway.receive(datagram, (A, PORT), 1.0)
    assert gateway.stats.malformed == 2 and gateway.sa_count == 0 and _sent(gateway, 1.0) == []


def _pooled(monkeypatch: pytest.MonkeyPatch, group: int, n: int) -> KeyPairPool:
    pool = KeyPairPool(dh.generate_key_exchange)
    pool.configure({group: n})
    pool.refill(pool.now())
    monkeypatch.setattr(dh, "POOL", pool)
    return pool


def test_bad_ke_requests_from_one_address_soon_get_cookies_and_take_no_key_pair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1000 IKE_SA_INITs with a KE value of the right group and the wrong length, from one address
    (spoofed, it never returns a COOKIE): none takes a key pair from the pool; the first
    cookie_threshold_ip are refused after work (INVALID_SYNTAX) and counted as half-open SAs for
    the calm-down, so all the others get a stateless COOKIE; nothing is kept."""
    bad = _with(init_request(), KePayload=KePayload(DhGroup.CURVE25519, b"\x01" * 7))
    genuine = init_request()   # (before the pool: an initiator takes its key pair there too)
    pool = _pooled(monkeypatch, DhGroup.CURVE25519, 8)
    gateway = IkeEndpoint([cfg(False)])
    threshold = gateway.limits.cookie_threshold_ip
    refusals: list[int] = []
    for i in range(1000):
        now = 1.0 + i * 0.001
        gateway.receive(with_spi(bad, i), (A, PORT), now)
        for answer in _sent(gateway, now):
            (payload,) = answer.payloads
            assert isinstance(payload, NotifyPayload)
            refusals.append(payload.type)
    assert refusals == [NotifyType.INVALID_SYNTAX] * threshold + [NotifyType.COOKIE] * (1000 - threshold)
    assert (gateway.stats.init_refused, gateway.stats.cookies_sent) == (threshold, 1000 - threshold)
    assert (pool.stats.hits, pool.stats.misses, pool.size(DhGroup.CURVE25519)) == (0, 0, 8)
    assert gateway.sa_count == 0 and gateway.half_open == 0 and gateway.half_open_addresses == 0
    # a genuine request from elsewhere takes its key pair as before (from an address whose
    # calm-down group is not A's: str hashes, and so the groups, differ per run)
    elsewhere = next(ip for ip in (B, *(f"198.51.100.{i}" for i in range(1, 255)))
                     if address_slot(ip) != address_slot(A))
    gateway.receive(genuine, (elsewhere, PORT), 2.0)
    assert gateway.half_open == 1 and pool.stats.hits == 1


def test_refusals_from_many_addresses_trip_the_global_threshold() -> None:
    """NO_PROPOSAL_CHOSEN from spoofed sources, each address once: after cookie_threshold of them
    every source is asked for a COOKIE; after a quiet calm-down requests are served again."""
    limits = DosLimits(cookie_threshold=5, cookie_threshold_ip=100, block_threshold=200)
    gateway = IkeEndpoint([cfg(False)], limits=limits)
    junk = SaPayload((Proposal(1, 1, b"", (Transform(1, 9000), Transform(2, 9000), Transform(4, 31))),))
    refused = _with(init_request(), SaPayload=junk)
    for i in range(20):
        gateway.receive(with_spi(refused, i), (f"198.51.100.{i + 1}", PORT), 1.0)
    assert (gateway.stats.init_refused, gateway.stats.cookies_sent) == (5, 15)
    assert gateway.sa_count == 0
    later = 1.0 + 2 * COOKIE_CALMDOWN_DELAY
    gateway.receive(init_request(), (B, PORT), later)
    assert gateway.half_open == 1 and gateway.stats.cookies_sent == 15


def test_a_refused_source_that_returns_its_cookie_is_answered() -> None:
    """The COOKIE a refusal brought on costs a real initiator one round trip: with it, its request
    is served (a wrong group offered first, as a client guessing the KE group does)."""
    gateway = IkeEndpoint([cfg(False)], limits=DosLimits(cookie_threshold_ip=1, block_threshold=5))
    wrong_group = _with(init_request(), KePayload=KePayload(DhGroup.ECP_256, bytes(64)))
    gateway.receive(wrong_group, (A, PORT), 1.0)
    (invalid_ke,) = _sent(gateway, 1.0)
    assert [p.type for p in invalid_ke.payloads if isinstance(p, NotifyPayload)] == [NotifyType.INVALID_KE_PAYLOAD]
    request = init_request()
    gateway.receive(request, (A, PORT), 1.5)
    (cookie,) = _sent(gateway, 1.5)
    (payload,) = cookie.payloads
    assert isinstance(payload, NotifyPayload) and payload.type == NotifyType.COOKIE
    gateway.receive(_first(request, payload), (A, PORT), 1.6)
    assert gateway.half_open == 1


def _first(request: bytes, cookie: NotifyPayload) -> bytes:
    msg = decode_message(request)
    return dataclasses.replace(msg, payloads=(cookie, *msg.payloads)).encode()


def test_an_init_response_of_too_many_payloads_fails_the_initiator_cleanly() -> None:
    """The initiator's side of the bound: a response of more than MAX_INIT_PAYLOADS payloads is
    dropped as undecodable (the initiator keeps waiting for a good one), no traceback."""
    initiator = IkeEndpoint([cfg(True)])
    sa = initiator.initiate("conn", "net", 0.0)
    (request,) = initiator.datagrams_to_send(0.0)
    spi_i = request.data[:8]
    crowded = Message(spi_i, b"\x07" * 8, ExchangeType.IKE_SA_INIT, int(HeaderFlag.RESPONSE), 0,
                      tuple(NotifyPayload(40000, b"") for _ in range(MAX_INIT_PAYLOADS + 1))).encode()
    initiator.receive(crowded, (B, PORT), 0.1)
    assert not sa.is_closed and initiator.datagrams_to_send(0.1) == []


@pytest.mark.parametrize("group", sorted(dh.SUPPORTED_GROUPS))
def test_a_peer_key_exchange_value_is_checked_before_a_key_pair_is_taken(group: int) -> None:
    """check_public refuses what shared_secret would: a wrong length, and for MODP 1 and p-1;
    a real public value of the group passes."""
    good = dh.generate_key_exchange(group).public
    dh.check_public(group, good)
    for bad in (good[:-1], good + b"\x00", b""):
        with pytest.raises(dh.DhError):
            dh.check_public(group, bad)
    if len(good) >= 256:   # MODP
        p = int.from_bytes(b"\xff" * len(good), "big")
        for y in (1, dh._MODP[DhGroup(group)] - 1, p):
            with pytest.raises(dh.DhError, match="out of range"):
                dh.check_public(group, y.to_bytes(len(good), "big"))
