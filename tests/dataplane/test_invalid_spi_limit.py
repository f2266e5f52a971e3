"""INVALID_SPI events from the C fast path: one a second per source address (its port aside), and
from all sources together a burst of ten, then ten a second, so a source sending junk ESP cannot
crowd out the hint for a peer that lost its state (RFC 7296 §2.21.4), and a crowd of peers (after a
restart) is not thinned to one hint per 100 ms.  The limiters' clock is stopped with the test hook
ts_test_set_clock: the test says when time has passed, it never waits."""

from __future__ import annotations

import ipaddress

from esp_ref import c_addr, esp_seal, inner, new_key, receiver
from tunsec.dataplane._fastpath import lib

from tunsec.dataplane.fastpath import Dataplane, Drop, EventType
from tunsec.dataplane.pipe import Endpoint

SECOND = 1_000_000_000
TICK = SECOND // 10   # the shared budget refills one hint per tick
BURST = 10
T0 = 1 << 62   # far ahead of CLOCK_MONOTONIC, as a stopped clock may be
PKT4 = inner(4)
A = Endpoint(ipaddress.ip_address("198.51.100.1"), 4500)


def _at(dp: Dataplane, ns: int) -> None:
    lib.ts_test_set_clock(dp._dp, ns)


def _slot(dp: Dataplane, ep: Endpoint) -> int:
    return int(lib.ts_test_invalid_spi_slot(dp._dp, c_addr(ep)))


def _apart(dp: Dataplane, n: int) -> list[Endpoint]:
    """n IPv6 sources (each of a /64 of its own) limited apart from A and from each other: the slots
    are a keyed hash of the address (random key per context), so now and then two addresses share
    one, and with it one limit."""
    taken = {_slot(dp, A)}
    found: list[Endpoint] = []
    for last in range(0xb, 0x10000):
        ep = Endpoint(ipaddress.ip_address(f"2001:db8:0:{last:x}::1"), 4500)   # a source is its /64
        if _slot(dp, ep) not in taken:
            taken.add(_slot(dp, ep))
            found.append(ep)
            if len(found) == n:
                return found
    raise AssertionError("too few slots apart")


def _reported(dp: Dataplane) -> list[tuple[int, Endpoint | None]]:
    return [(e.spi, e.remote) for e in dp.events() if e.type is EventType.INVALID_SPI]


def _junk(dp: Dataplane, key: bytes, spi: int, src: Endpoint) -> None:
    assert dp.inbound(esp_seal(key, spi, 1, PKT4, 4), src) == (b"", Drop.NO_SA)


def test_one_source_cannot_crowd_out_another() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    (B,) = _apart(dp, 1)
    _at(dp, T0)
    for i in range(50):   # junk from one source within its second: one hint
        _junk(dp, key, 0xA000 + i, A)
    assert _reported(dp) == [(0xA000, A)]
    _junk(dp, key, 0xB000, B)   # another source still gets its hint
    assert _reported(dp) == [(0xB000, B)]
    # A again, from another port (a NAT): the same source, whose second is not over
    a_port = Endpoint(A.addr, 31337)
    _at(dp, T0 + SECOND - 1)
    _junk(dp, key, 0xA100, a_port)
    assert _reported(dp) == []
    _at(dp, T0 + SECOND)
    _junk(dp, key, 0xA200, a_port)
    assert _reported(dp) == [(0xA200, a_port)]
    drops = dp.drops()
    assert drops["no_sa"] == 53 and drops["invalid_spi_source_limit"] == 50 and drops["invalid_spi_rate_limit"] == 0


def test_a_crowd_gets_a_burst_of_hints() -> None:
    """Peers that lost their state all at once (a restart): two within 100 ms both get their hint,
    ten at one instant all do, the eleventh is withheld until the budget refills."""
    key = new_key()
    dp, _spi = receiver(key)
    crowd = _apart(dp, BURST + 1)
    _at(dp, T0)
    _junk(dp, key, 0xA000, A)
    _at(dp, T0 + TICK // 2)
    _junk(dp, key, 0xB000, crowd[0])
    assert _reported(dp) == [(0xA000, A), (0xB000, crowd[0])]
    for i, src in enumerate(crowd[1:BURST - 1], start=1):
        _junk(dp, key, 0xB000 + i, src)
    assert len(_reported(dp)) == BURST - 2
    _junk(dp, key, 0xBFFF, crowd[BURST])   # the eleventh within the burst
    assert _reported(dp) == [] and dp.drops()["invalid_spi_rate_limit"] == 1
    _at(dp, T0 + TICK)   # one tick after the first: one hint back
    _junk(dp, key, 0xC000, crowd[BURST])
    _junk(dp, key, 0xC001, crowd[BURST - 1])
    assert _reported(dp) == [(0xC000, crowd[BURST])]
    assert dp.drops()["invalid_spi_rate_limit"] == 2 and dp.drops()["invalid_spi_source_limit"] == 0
    _at(dp, T0 + TICK + SECOND)   # the bucket full again, every source's second over
    for i, src in enumerate(crowd):   # eleven: ten hints
        _junk(dp, key, 0xD000 + i, src)
    assert len(_reported(dp)) == BURST and dp.drops()["invalid_spi_rate_limit"] == 3


def test_shared_budget_is_not_spent_by_a_source_over_its_limit() -> None:
    """A source over its own limit takes no turn from the others: after A's refused hints, nine
    other sources still have the rest of the burst."""
    key = new_key()
    dp, _spi = receiver(key)
    others = _apart(dp, BURST)
    _at(dp, T0)
    for i in range(20):
        _junk(dp, key, 0xA000 + i, A)
    for i, src in enumerate(others[:BURST - 1]):
        _junk(dp, key, 0xB000 + i, src)
    assert _reported(dp) == [(0xA000, A)] + [(0xB000 + i, src) for i, src in enumerate(others[:BURST - 1])]
    assert dp.drops()["invalid_spi_source_limit"] == 19 and dp.drops()["invalid_spi_rate_limit"] == 0
    _junk(dp, key, 0xBFFF, others[BURST - 1])
    assert _reported(dp) == [] and dp.drops()["invalid_spi_rate_limit"] == 1


def test_a_spent_shared_budget_costs_a_source_no_turn() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    *crowd, B = _apart(dp, BURST + 1)
    _at(dp, T0)
    for i, src in enumerate(crowd):
        _junk(dp, key, 0xA000 + i, src)
    assert len(_reported(dp)) == BURST
    _at(dp, T0 + TICK // 2)   # the burst spent: B's hint is withheld ...
    _junk(dp, key, 0xB000, B)
    assert _reported(dp) == [] and dp.drops()["invalid_spi_rate_limit"] == 1
    _at(dp, T0 + TICK)   # ... and B's own second did not start with it
    _junk(dp, key, 0xB001, B)
    assert _reported(dp) == [(0xB001, B)]


def test_all_sources_together_a_burst_then_ten_a_second() -> None:
    key = new_key()
    dp, _spi = receiver(key)
    sources = [Endpoint(ipaddress.ip_address(f"192.0.2.{i}"), 4500) for i in range(1, 101)]
    per_tick = []
    for tick in range(20):   # the same 100 sources every 50 ms (new ports) for a second
        _at(dp, T0 + tick * SECOND // 20)
        for src in sources:
            _junk(dp, key, 0xC000 + tick, Endpoint(src.addr, 4500 + tick))
        per_tick.append(len(_reported(dp)))
    # the burst at once, then one each 100 ms as the bucket refills (at 100, 200, ... 900 ms)
    assert per_tick[0] == BURST
    assert per_tick[1:] == [0, 1] * 9 + [0]
    drops = dp.drops()
    assert drops["invalid_spi_source_limit"] + drops["invalid_spi_rate_limit"] == 20 * 100 - sum(per_tick)
    assert drops["invalid_spi_rate_limit"] > 0


def test_one_ipv6_host_has_one_sources_hint_whatever_address_of_its_64_it_sends_from() -> None:
    """A host holds its whole /64 (SLAAC privacy addresses: no spoofing needed).  Ten addresses of
    one /64 at one instant took the whole shared budget, and the peer that lost its SA after them
    had its hint withheld (review revfast F1); now they are one source: one hint, nine source-limited."""
    key = new_key()
    dp, _spi = receiver(key)
    _at(dp, T0)
    for i in range(10):
        _junk(dp, key, 0x1000, Endpoint(ipaddress.ip_address(f"2001:db8:1:2::{i + 1:x}"), 4500))
    assert len(_reported(dp)) == 1
    _junk(dp, key, 0x1000, A)   # the peer that lost its SA (our restart)
    assert _reported(dp) == [(0x1000, A)]
    drops = dp.drops()
    assert (drops["invalid_spi_source_limit"], drops["invalid_spi_rate_limit"]) == (9, 0)
