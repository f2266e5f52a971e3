"""The operator's commands during a re-creation (services/ike/recreate.py, commands.py).

``tunsec terminate --child`` of a child being created again stops that re-creation (no later try
brings it back, nor the try whose request was out) and says so; an ``initiate`` of it joins the
re-creation in whichever of the connection's IKE SAs it runs, and answers with its outcome (the
failure with its reason when its tries are used up), never bringing up a second Child SA.

Two real IkeServices with in-process workers (test_ikeservice_install_failed.TwoChildPair); the
service's timers are fired by hand."""

from __future__ import annotations

import asyncio
import time

from test_ikeservice_install_failed import TwoChildPair, ike_up, our_rekey_fails, refuse_next
from test_ikeservice_peers import run
from test_ikeservice_rekey import fire_timers

from tunsec.ike.sa import IkeSa, State
from tunsec.services.ike import recreate


def established(pair: TwoChildPair, side: str) -> list[IkeSa]:
    return [sa for sa in pair.svc[side].endpoint.sas if sa.state is State.ESTABLISHED]


def nets(pair: TwoChildPair, side: str) -> int:
    """Child SAs "net" ``side`` holds, in all its IKE SAs."""
    return sum(c.name == "net" for sa in established(pair, side) for c in sa.children)


def test_terminate_child_stops_a_recreation_waiting_for_its_try_and_says_so() -> None:
    """"net" waits for its re-creation's first try when the operator terminates child "net": the
    answer names the stopped re-creation (before: 0 deletes, "no CHILD_SA is up"), its held
    policies go, and the try's delay passing brings nothing back (before: "net" came back)."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        done = a.terminate_child("tun", "net")
        assert done and done.deleted == 0
        assert "re-creation of CHILD_SA net" in done.message()
        await pair.settle()
        assert a._recreating == {}
        assert pair.workers["a"].dp.policies() == []
        fire_timers(a)
        await pair.settle()
        assert nets(pair, "a") == 0 and nets(pair, "b") == 0
        assert not a.events.child_recreate
    run(body())


def test_terminate_child_while_a_recreations_try_is_out_deletes_what_it_brings_up() -> None:
    """The re-creation's try has its CREATE_CHILD_SA on the wire when the operator terminates child
    "net": the Child SA it brings up is deleted on both sides (before: "net" came back and stayed),
    and no further try follows."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        fire_timers(a)   # the first try: its request out, unanswered yet
        assert pending.trying and ike_up(pair, "a").creating("net")
        done = a.terminate_child("tun", "net")
        assert "re-creation of CHILD_SA net" in done.message()
        await pair.settle()
        fire_timers(a)
        await pair.settle()
        assert nets(pair, "a") == 0 and nets(pair, "b") == 0
        assert a._recreating == {} and a.children == {}
        assert pair.workers["a"].dp.policies() == []
    run(body())


def test_an_initiate_joining_a_recreation_whose_tries_all_fail_answers_with_the_failure() -> None:
    """The operator initiates "net" while it waits for its re-creation; every install of it is
    refused: the initiate's answer is the failure with its reason (before: "initiating", and then
    nothing when the tries were used up)."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        refuse_next(pair.workers["a"].dp, "add")
        joined = a.initiate("tun", "net")
        assert joined is not None
        await pair.settle()
        for _ in range(recreate.TRIES):
            assert not joined.done()
            refuse_next(pair.workers["a"].dp, "add")
            fire_timers(a)
            await pair.settle()
        assert a._recreating == {}
        why = joined.result()
        assert why is not None and f"not created again after {recreate.TRIES} tries" in why
        assert "did not install" in why
        from tunsec.services.ike.commands import joined_answer  # (here: the test runs on the code before it too)
        answer = await joined_answer(joined, "tun", "net", None)
        assert answer["ok"] is False and why in answer["error"]
    run(body())


def test_an_initiate_joining_a_recreation_that_succeeds_answers_up() -> None:
    """The same with the install taken: the answer says "net" is up."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        joined = a.initiate("tun", "net")
        assert joined is not None
        await pair.settle()
        assert joined.done() and joined.result() is None and a._recreating == {}
        from tunsec.services.ike.commands import joined_answer  # (here: the test runs on the code before it too)
        answer = await joined_answer(joined, "tun", "net", None)
        assert answer["ok"] is True and "is up" in answer["message"]
        assert nets(pair, "a") == 1 and nets(pair, "b") == 1
    run(body())


def test_an_initiate_goes_to_the_ike_sa_recreating_the_child_of_two() -> None:
    """A holds two IKE SAs of "tun": the first with "more", the second with "net", whose rekey's
    install fails.  The operator's initiate of "net" goes to the second, joining its re-creation
    (before: to the first, which brought up a "net" of its own; the re-creation's try then a second)."""
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        a = pair.svc["a"]
        a.initiate("tun", "more")
        await pair.settle()
        a.endpoint.initiate("tun", "net", time.monotonic())   # a second IKE SA, with "net"
        a._pump()
        await pair.settle()
        first, second = established(pair, "a")
        assert [c.name for c in first.children] == ["more"] and [c.name for c in second.children] == ["net"]
        refuse_next(pair.workers["a"].dp, "add")
        second.rekey_child(second.children[0].unique_id)
        a._pump()
        await pair.settle()
        assert nets(pair, "a") == 0 and a._recreating
        a.initiate("tun", "net")
        await pair.settle()
        fire_timers(a)   # the re-creation's try, had the initiate not joined it
        await pair.settle()
        assert [c.name for c in second.children] == ["net"] and [c.name for c in first.children] == ["more"]
        assert nets(pair, "a") == 1 and nets(pair, "b") == 1
        assert a._recreating == {}
    run(body())


def test_a_joined_initiate_still_under_way_at_the_control_deadline_says_so() -> None:
    """The control socket's deadline (its margin for the answer included) ends before the
    re-creation: the answer says it is still under way, neither up nor failed, and does not wait."""
    async def body() -> None:
        from tunsec.services.ike.commands import joined_answer
        loop = asyncio.get_running_loop()
        joined: asyncio.Future[str | None] = loop.create_future()
        spent = asyncio.Timeout(loop.time())   # the control socket's deadline, passed (never entered here)
        answer = await joined_answer(joined, "tun", "net", spent)
        assert answer["ok"] is True and "still under way" in answer["message"] and not joined.done()
    run(body())


def test_an_initiate_after_terminate_child_keeps_the_try_that_was_out() -> None:
    """terminate --child while the re-creation's try is out, then initiate "net" again: the child is up
    once, and stays (not deleted as the terminate's alone would have it).  Since review revdelete F2 the
    terminate abandons the try that was out (its answer installs nothing, the peer deletes its half) and
    ends the re-creation, so the initiate is a request of its own, not joined to it."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        fire_timers(a)   # the first try: its request out, unanswered yet
        a.terminate_child("tun", "net")
        joined = a.initiate("tun", "net")
        await pair.settle()
        assert joined is None   # the re-creation ended with the terminate: nothing to join
        assert nets(pair, "a") == 1 and nets(pair, "b") == 1 and a._recreating == {}
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())
