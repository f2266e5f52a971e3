"""INVALID_SPI events from the C fast path: one a second per source address (its port aside), ten a
second from all sources together, so a source sending junk ESP cannot crowd out the hint for a peer
that lost its state (RFC 7296 §2.21.4).  The limiters' clock is stopped with the test hook
ts_test_set_clock: the test says when a second has passed, it never waits."""

from __future__ import annotations

import ipaddress

from esp_ref import esp_seal, inner, new_key, receiver
from tunsec.dataplane._fastpath import ffi, lib

from tunsec.dataplane.fastpath import Dataplane, Drop, EventType
from tunsec.dataplane.pipe import Endpoint

SECOND = 1_000_000_000
T0 = 1 << 62   # far ahead of CLOCK_MONOTONIC, as a stopped clock may be
PKT4 = inner(4)
A = Endpoint(ipaddress.ip_address("198.51.100.1"), 4500)


def _at(dp: Dataplane, ns: int) -> None:
    lib.ts_test_set_clock(dp._dp, ns)


def _slot(dp: Dataplane, ep: Endpoint) -> int:
    a = ffi.new("ts_addr *")
    a.family = ep.addr.version
    a.addr[0:len(ep.addr.packed)] = ep.addr.packed
    a.port = ep.port
    return int(lib.ts_test_invalid_spi_slot(dp._dp, a))


def _apart_from_a(dp: Dataplane) -> Endpoint:
    """An IPv6 source limited apart from A: the slots are a keyed hash of the address (random key
    per context), so now and then two addresses share one, and with it one limit."""
    for last in range(0xb, 0x10000):
        b = Endpoint(ipaddress.ip_address(f"2001:db8::{last:x}"), 4500)
        if _slot(dp, b) != _slot(dp, A):
            return b
    raise AssertionError("every address in A's slot")


def _reported(dp: Dataplane) -> list[tuple[int, Endpoint | None]]:
    return [(e.spi, e.remote) for e in dp.events() if e.type is EventType.INVALID_SPI]


def test_one_source_cannot_crowd_out_another() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    B = _apart_from_a(dp)
    _at(dp, T0)
    for i in range(50):   # junk from one source within its second: one hint
        assert dp.inbound(esp_seal(key, 0xA000 + i, 1, PKT4, 4), A) == (b"", Drop.NO_SA)
    assert _reported(dp) == [(0xA000, A)]
    # another source still gets its hint (past the shared limiter's 100 ms spacing)
    _at(dp, T0 + SECOND // 10)
    assert dp.inbound(esp_seal(key, 0xB000, 1, PKT4, 4), B) == (b"", Drop.NO_SA)
    assert _reported(dp) == [(0xB000, B)]
    # A again, from another port (a NAT): the same source, whose second is not over
    a_port = Endpoint(A.addr, 31337)
    _at(dp, T0 + SECOND - 1)
    dp.inbound(esp_seal(key, 0xA100, 1, PKT4, 4), a_port)
    assert _reported(dp) == []
    _at(dp, T0 + SECOND)
    dp.inbound(esp_seal(key, 0xA200, 1, PKT4, 4), a_port)
    assert _reported(dp) == [(0xA200, a_port)]
    drops = dp.drops()
    assert drops["no_sa"] == 53 and drops["invalid_spi_source_limit"] == 50 and drops["invalid_spi_rate_limit"] == 0


def test_shared_budget_is_not_spent_by_a_source_over_its_limit() -> None:
    """A source over its own limit takes no turn from the others: B's hint, right after A's
    refused ones, is not held back by the shared limiter."""
    key = new_key()
    dp, _spi = receiver(key)
    B = _apart_from_a(dp)
    _at(dp, T0)
    dp.inbound(esp_seal(key, 0xA000, 1, PKT4, 4), A)
    _at(dp, T0 + SECOND // 10)
    for i in range(20):
        dp.inbound(esp_seal(key, 0xA100 + i, 1, PKT4, 4), A)
    dp.inbound(esp_seal(key, 0xB000, 1, PKT4, 4), B)
    assert _reported(dp) == [(0xA000, A), (0xB000, B)]
    assert dp.drops()["invalid_spi_source_limit"] == 20 and dp.drops()["invalid_spi_rate_limit"] == 0


def test_a_spent_shared_budget_costs_a_source_no_turn() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    B = _apart_from_a(dp)
    _at(dp, T0)
    dp.inbound(esp_seal(key, 0xA000, 1, PKT4, 4), A)
    _at(dp, T0 + SECOND // 20)   # within the shared limiter's 100 ms: B's hint is withheld ...
    dp.inbound(esp_seal(key, 0xB000, 1, PKT4, 4), B)
    assert _reported(dp) == [(0xA000, A)] and dp.drops()["invalid_spi_rate_limit"] == 1
    _at(dp, T0 + SECOND // 10)   # ... and B's own second did not start with it
    dp.inbound(esp_seal(key, 0xB001, 1, PKT4, 4), B)
    assert _reported(dp) == [(0xB001, B)]


def test_all_sources_together_ten_a_second() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    sources = [Endpoint(ipaddress.ip_address(f"192.0.2.{i}"), 4500) for i in range(1, 101)]
    reported = 0
    for tick in range(20):   # 100 new sources every 50 ms for a second
        _at(dp, T0 + tick * SECOND // 20)
        for src in sources:
            dp.inbound(esp_seal(key, 0xC000 + tick, 1, PKT4, 4), Endpoint(src.addr, 4500 + tick))
        reported += len(_reported(dp))
    assert reported == 10
    drops = dp.drops()
    assert drops["invalid_spi_source_limit"] + drops["invalid_spi_rate_limit"] == 20 * 100 - 10
    assert drops["invalid_spi_rate_limit"] > 0
