"""A rekey responder's held-back ADD (standby.add_standby) that the worker applies but never
answers: the new outbound SA counts as possibly installed, so it goes with the Child SA, which is
deleted (the peer told) as any whose install failed; nothing of "net" is left in the worker.

The worker's request() gives up after client.REQUEST_TIMEOUT, as WorkerClient's does; the
in-process worker of these tests used to wait for ever, which hung the test (each step is
bounded here, so a regression fails instead).  Two real IkeServices with in-process workers
(test_ikeservice_install_failed.TwoChildPair)."""

from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_install_failed import TwoChildPair, ike_up, never_answer
from test_ikeservice_peers import child_claims, run
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane import client, pipe
from tunsec.dataplane.pipe import Direction
from tunsec.services.ike import installs

BOUND = 30.0   # seconds: a step that waits for ever fails the test instead of hanging it


async def settle(pair: TwoChildPair) -> None:
    await asyncio.wait_for(pair.settle(), BOUND)


def test_a_held_back_add_not_answered_in_time_goes_with_its_child_sa(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(installs, "request_timeout", lambda: 0.05)   # read as the services start
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await settle(pair)
        b, dp = pair.svc["b"], pair.workers["b"].dp
        old_b = pair.child("b")
        # B answers A's rekey and holds its new outbound SA back; A's DELETE of the old Child SA makes
        # B ADD it, and B's worker applies that ADD but never answers it
        pair.workers["b"].hold = never_answer(pipe.Add)
        mark = len(pair.timeline)
        pair.rekey("a")
        await settle(pair)
        (new_add,) = pair.after(mark, "pipe", "b", lambda m: isinstance(m, pipe.Add))
        new_spi_out = pair.timeline[new_add][2].sa.spi
        assert new_spi_out != old_b.spi_out
        # given up: deleted on both sides, counted once
        assert b.events.install_failed == {("tun", "net"): 1}
        for side in ("a", "b"):
            assert ike_up(pair, side).children == [] and pair.svc[side].children == {}
        # the ADD it applied late is deleted with the Child SA (by its SPI and peer)
        assert pair.after(mark, "pipe", "b", lambda m: isinstance(m, pipe.Delete) and m.spi == new_spi_out
                          and m.direction is Direction.OUT)
        pair.workers["b"].hold = None
        fire_timers(b)   # the old inbound SA's linger
        await settle(pair)
        assert not pair.sa_spis("b", Direction.OUT) and not pair.sa_spis("b", Direction.IN)
        assert {s.spi for s in dp.sas()} <= set(b.spi_pool.spis)   # the pool's larval SAs only
        assert dp.policies() == [] and b.child_policies == {} and child_claims(b) == 0
    run(body())
    (line,) = [r.getMessage() for r in caplog.records if "installing CHILD_SA" in r.getMessage()]
    assert "failed: Add (no answer within" in line and line.endswith("deleting it")
    assert not any(r.exc_info for r in caplog.records)
