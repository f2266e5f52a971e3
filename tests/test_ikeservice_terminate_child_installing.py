"""Review revops F3 (fifteenth session) of h/opcmd: terminate --child while the re-creation's Child SA is up in
the engine and its install is under way (pending.joined set). terminate_child deletes that Child SA itself (it
is in sa.children) AND marks the re-creation stopped, so installed() deletes it a second time."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_ikeservice_install_failed import TwoChildPair, deliver_without_waiting, ike_up, our_rekey_fails
from test_ikeservice_peers import run
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane import pipe
from tunsec.ike.sa import State


def nets(pair: TwoChildPair, side: str) -> int:
    return sum(c.name == "net" for sa in pair.svc[side].endpoint.sas if sa.state is State.ESTABLISHED
               for c in sa.children)


def test_terminate_child_during_the_joined_install_deletes_it_once_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        caplog.clear()   # the setup's own ERROR (the rekey's refused ADD) is not this test's
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pair.workers["a"].hold = lambda m: gate if isinstance(m, pipe.Add) else None
        fire_timers(a)   # the try: its CREATE_CHILD_SA out
        await deliver_without_waiting(pair)
        for _ in range(50):
            await asyncio.sleep(0)
        assert pending.joined is not None, "the try's Child SA joined, its ADD held"
        done = a.terminate_child("tun", "net")
        sent_deletes = done.deleted
        gate.set_result(None)
        pair.workers["a"].hold = None
        await pair.settle()
        fire_timers(a)
        await pair.settle()
        assert nets(pair, "a") == 0 and nets(pair, "b") == 0
        assert a._recreating == {} and a.children == {}
        # the one Child SA is deleted once: terminate's DELETE, not a second from installed()
        came_up_deleted = [r for r in caplog.records if "came up after terminate stopped" in r.getMessage()]
        assert not (sent_deletes and came_up_deleted), (
            f"terminate_child sent {sent_deletes} DELETE(s) for the joined Child SA and installed() "
            f"deleted it again: {[r.getMessage() for r in came_up_deleted]}")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
        assert ike_up(pair, "a").state is State.ESTABLISHED
    run(body())
