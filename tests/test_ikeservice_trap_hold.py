"""A trap child whose initiation failed is held down (services/ike/trap_hold.py, review revlan F2).

After a failed ACQUIRE initiation the next ACQUIRE starts nothing until HOLD_FIRST seconds after it,
doubling per failure in a row up to HOLD_MAX; the held ones are counted (status, metrics), one line
per failure; a Child SA that comes up ends it; the operator's initiate is never held back.

Two real IkeServices with the in-process worker and C fast path, wired in memory (the pairs of
test_review_revlan_trap_refused.py and test_ikeservice_traps.py); the hold-down's clock is faked.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from test_ikeservice_traps import TrapPair, ccsa_requests, refused_for_good, trapped, up_without_child
from test_review_revlan_trap_refused import RefusingPair, ike_sa_init_requests

from tunsec.metrics import event_families
from tunsec.services.ike.trap_hold import HOLD_FIRST, HOLD_MAX, TrapHolds, hold_for

KEY = ("tun", "net")


class Clock:
    """The hold-down's clock, moved by hand (the engines keep the real one)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def refused_trap() -> tuple[TrapPair, int, Clock]:
    pair = RefusingPair()
    await pair.start()
    await pair.configure("a", "trap")
    (pid,) = pair.svc["a"].trap_policies
    clock = Clock()
    pair.svc["a"].trap_holds.clock = clock
    return pair, pid, clock


def test_the_hold_doubles_from_two_seconds_to_strongswans_165() -> None:
    assert [hold_for(n) for n in range(1, 10)] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 165.0, 165.0]
    assert hold_for(10_000) == HOLD_MAX


def test_acquires_after_a_refused_ike_sa_wait_a_growing_hold_down() -> None:
    """B refuses A's IKE_SA_INIT (NO_PROPOSAL_CHOSEN).  Packets a second start one IKE SA, then
    one 2 s after it, then one 4 s after that: the ACQUIREs between are counted, not initiated."""
    async def body() -> None:
        pair, pid, clock = await refused_trap()
        svc = pair.svc["a"]
        started: list[float] = []
        t0 = clock.now
        for second in range(8):
            clock.now = t0 + second
            before = ike_sa_init_requests(pair)
            svc.acquire(pid)
            await pair.settle()
            if ike_sa_init_requests(pair) > before:
                started.append(second)
        assert started == [0, 2, 6]
        assert svc.events.acquires_held[KEY] == 5
        assert not [sa for sa in svc.endpoint.sas if not sa.is_closed]

    asyncio.run(body())


def test_a_failure_logs_one_line_and_the_held_acquires_are_in_status_and_metrics(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        pair, pid, clock = await refused_trap()
        svc = pair.svc["a"]
        svc.acquire(pid)
        await pair.settle()
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            for _ in range(3):
                clock.now += 0.5
                svc.acquire(pid)
                await pair.settle()
        held = [r for r in caplog.records if "tunsec_trap_acquires_held" in r.getMessage()]
        assert len(held) == 1 and "1 in a row" in held[0].getMessage()
        assert ike_sa_init_requests(pair) == 1
        text = await pair.status_text("a")
        assert "trap policy, held down after its initiation failed: tun/net 3" in text
        (family,) = [f for f in event_families(svc.events, 0) if f.name == "tunsec_trap_acquires_held"]
        assert [(s.labels, s.value) for s in family.samples] == [({"connection": "tun", "child": "net"}, 3.0)]

    asyncio.run(body())


def test_the_operators_initiate_is_not_held_back() -> None:
    async def body() -> None:
        pair, pid, _clock = await refused_trap()
        svc = pair.svc["a"]
        svc.acquire(pid)
        await pair.settle()
        svc.acquire(pid)                   # held down
        await pair.settle()
        assert ike_sa_init_requests(pair) == 1 and svc.events.acquires_held[KEY] == 1
        svc.initiate("tun", "net")         # tunsec initiate, within the hold-down
        await pair.settle()
        assert ike_sa_init_requests(pair) == 2

    asyncio.run(body())


def test_a_child_that_came_up_ends_the_hold_down() -> None:
    """The child refused for good (every try TEMPORARY_FAILURE): held down 2 s; the next initiation
    comes up.  Once it is gone again, the next packet initiates at once, not after a hold."""
    async def body() -> None:
        pair, pid = await trapped()
        sa = await up_without_child(pair)
        svc = pair.svc["a"]
        clock = Clock()
        svc.trap_holds.clock = clock
        await refused_for_good(pair, sa, pid)
        asked = ccsa_requests(pair)
        svc.acquire(pid)                   # failed for good: held down
        await pair.settle()
        assert ccsa_requests(pair) == asked and svc.events.acquires_held[KEY] == 1
        clock.now += HOLD_FIRST
        svc.acquire(pid)                   # the hold is over: B grants this one
        await pair.settle()
        assert ccsa_requests(pair) == asked + 1
        assert svc.child_index.has(*KEY) and not len(svc.trap_holds)
        svc.terminate_child(*KEY)
        await pair.settle()
        svc.acquire(pid)                   # gone, not failed: at once
        await pair.settle()
        assert ccsa_requests(pair) == asked + 2 and svc.child_index.has(*KEY)
        assert svc.events.acquires_held[KEY] == 1

    asyncio.run(body())


def test_a_failure_long_after_its_start_holds_nothing_back() -> None:
    """The hold counts from the initiation's start: one that failed after minutes of retransmissions,
    or a packet long after a failure, initiates at once."""
    holds = TrapHolds(clock=lambda: 1000.0)
    holds.started(KEY)
    holds.clock = lambda: 1000.0 + HOLD_FIRST
    assert not holds.holds(KEY)
    holds.started(KEY)                     # failed again at once: the second hold is 4 s
    holds.clock = lambda: 1000.0 + HOLD_FIRST + 3.9
    assert holds.holds(KEY)
    holds.forget({"tun"})                  # a reload replaced the connection
    assert not holds.holds(KEY)
