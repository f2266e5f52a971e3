"""A re-creation (services/ike/recreate.py) never has two requests for its child in the engine.

A try's CREATE_CHILD_SA can outlive its deadline in the engine: the peer refused it for now
(TEMPORARY_FAILURE) and the engine asks again a few seconds later, or it is still being
retransmitted.  Were the next try asked for meanwhile, both could come up: the peer would hold two
Child SAs of one lineage, each with its own keys, the traffic split between them.  So a deadline
that finds the child still under way in the engine waits for it, and the Child SA that comes up
(late) ends the re-creation.

Two real IkeServices with in-process workers (test_ikeservice_install_failed.TwoChildPair); the
service's timers are fired by hand and the engines' clocks moved on by hand (a fake clock)."""

from __future__ import annotations

import time

from test_ikeservice_install_failed import TwoChildPair, ike_up, our_rekey_fails
from test_ikeservice_peers import run
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane.fastpath import DataplaneError, lib
from tunsec.dataplane.pipe import Direction


def refuse_spis(pair: TwoChildPair, side: str) -> None:
    """``side``'s worker gives no inbound SPI until ``give_spis``: it refuses new Child SAs for now."""
    def refuse(*_args: object) -> None:
        raise DataplaneError("getspi", lib.TS_ENOSPC)
    pair.workers[side].dp.getspi = refuse
    pair.svc[side].spi_pool.spis.clear()


def give_spis(pair: TwoChildPair, side: str) -> None:
    del pair.workers[side].dp.getspi   # the instance's refusal goes: the class's method again


async def engine_clock(pair: TwoChildPair, side: str, seconds: float) -> None:
    """``side``'s engine timers as if ``seconds`` had passed."""
    svc = pair.svc[side]
    svc.endpoint.handle_timer(time.monotonic() + seconds)
    svc._pump()
    await pair.settle()


async def assert_one_net(pair: TwoChildPair) -> None:
    """Each side holds one Child SA "net" (engine and service), A's worker one outbound SA, and the
    traffic passes both ways."""
    for side in "ab":
        assert [c.name for c in ike_up(pair, side).children] == ["net"], side
        assert [c.child for c in pair.svc[side].children.values()] == ["net"], side
    (net,) = pair.svc["a"].children.values()
    assert pair.sa_spis("a", Direction.OUT) == {net.spi_out}
    assert pair.sa_spis("b", Direction.OUT) == {ike_up(pair, "b").children[0].spi_out}
    assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5


def test_a_try_the_peer_refused_for_now_is_waited_for_past_its_deadline() -> None:
    """B refuses the first try for now (no inbound SPI: TEMPORARY_FAILURE); its deadline passes
    before A's engine asks again: no second try is asked for, and the engine's retry brings up the
    one "net" (before the fix: two, each side holding both)."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        refuse_spis(pair, "b")
        fire_timers(a)   # the first try: B answers TEMPORARY_FAILURE, A's engine asks again in 2-10 s
        await pair.settle()
        assert ike_up(pair, "a").creating("net") and ike_up(pair, "b").children == []
        assert pending.tries == 1 and pending.trying
        fire_timers(a)   # its deadline passes before the engine's retry
        await pair.settle()
        give_spis(pair, "b")
        fire_timers(a)   # (were a next try scheduled, its delay ends now)
        await pair.settle()
        await engine_clock(pair, "a", 11.0)   # the engine's retry: "net" comes up
        await engine_clock(pair, "a", 22.0)
        await assert_one_net(pair)
        assert a.events.child_recreate == {("tun", "net"): 1}
        assert a._recreating == {} and not ike_up(pair, "a").creating("net")
    run(body())


def test_a_try_still_retransmitted_at_its_deadline_is_the_one_that_comes_up() -> None:
    """The first try's request is lost and its deadline passes (three times) while A's engine still
    retransmits it: no next try, the deadline re-armed; a retransmission brings up the one "net"
    (before the fix: a second try queued behind it, both came up)."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        fire_timers(a)   # the first try's CREATE_CHILD_SA: lost on the way
        pair.wire.clear()
        await pair.settle()
        for _ in range(3):   # its deadlines pass while the engine still retransmits it
            fire_timers(a)
            pair.wire.clear()
            await pair.settle()
            assert pending.tries == 1 and pending.trying and a._recreating
            assert pending.timer is not None and pending.timer in a._timers
        await engine_clock(pair, "a", 2.5)   # a retransmission gets through: "net" comes up
        await engine_clock(pair, "a", 60.0)
        await assert_one_net(pair)
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
    run(body())


def test_a_try_due_while_the_child_is_asked_for_already_takes_that_request_as_its_own() -> None:
    """An operator initiates "net" while the re-creation waits for its first try, whose delay ends
    before that request is answered: the try asks for nothing more (before the fix: a second
    CREATE_CHILD_SA, both came up), and the Child SA that comes up ends the re-creation."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        a.initiate("tun", "net")   # its CREATE_CHILD_SA is on the wire, unanswered
        assert ike_up(pair, "a").creating("net")
        fire_timers(a)   # the first try's delay ends
        assert pending.tries == 1 and pending.trying
        await pair.settle()
        await assert_one_net(pair)
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
    run(body())
