"""A Child SA whose install fails does not stay up in the engine (services/ike/install_failed.py).

The worker refuses a Child SA's ADD or SPDADD (its SAD or SPD full), or does not answer its install
in time: the engine had the Child SA up and the peer sent into it, its ESP dropped until a rekey.
Now it is deleted (the peer gets the DELETE and removes its side), nothing of it stays in the worker,
the failure is counted (``tunsec status``, metrics), and the IKE SA and its other Child SA go on.

Two real IkeServices with in-process workers (test_ikeservice_rekey.Pair), A with two children:
"net" (10.1/16 === 10.2/16) and "more" (10.3/16 === 10.4/16); only "more"'s install fails."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_ikeservice_peers import run
from test_ikeservice_rekey import Pair, adds, fire_timers, settle_holding_a_delete
from test_ikeservice_restart_spis import RestartablePair

from tunsec.conf.connections import Action, Child, Connection
from tunsec.dataplane import client, pipe
from tunsec.dataplane.fastpath import DataplaneError, lib
from tunsec.dataplane.pipe import Direction
from tunsec.ike.config import IkeConfig, child_config
from tunsec.ike.sa import IkeSa
from tunsec.metrics import event_families
from tunsec.services.ike import installs, recreate

MORE = {"a": ("10.3.0.0/16", "10.4.0.0/16"), "b": ("10.4.0.0/16", "10.3.0.0/16")}


class TwoChildPair(Pair):
    """Pair whose connection has a second child, "more", on other selectors."""

    def ike_config(self, side: str) -> IkeConfig:
        cfg = super().ike_config(side)
        more = child_config("more", *MORE[side], "aes128gcm16")
        return dataclasses.replace(cfg, children=(*cfg.children, more))

    def connection(self, side: str, close_action: Action) -> Connection:
        cfg = self.ike_config(side)
        return Connection(cfg.name, cfg, (Child("net", cfg.child("net"), close_action=close_action),
                                          Child("more", cfg.child("more"))))


def refuse_next(dp: Any, method: str) -> None:
    """The worker's data plane refuses the next call of ``method`` (its SAD or SPD full), then works
    again; or of its twin ``method``_fields, which the worker calls for a request laid out as encode
    lays it out (its raw way)."""
    names = (method, f"{method}_fields")
    reals = {name: getattr(dp, name) for name in names}

    def refusing(arg: object) -> None:
        for name, real in reals.items():
            setattr(dp, name, real)
        raise DataplaneError(method, lib.TS_ENOSPC)
    for name in names:
        setattr(dp, name, refusing)


def never_answer(kind: type[pipe.Message]) -> Callable[[pipe.Message], Awaitable[object] | None]:
    """The worker applies requests of ``kind`` but their answers never come (a hung worker)."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return lambda msg: never if isinstance(msg, kind) else None


async def given_up(pair: Pair) -> None:
    while not pair.svc["a"].events.install_failed:
        await asyncio.sleep(0.01)


def ike_up(pair: Pair, side: str) -> IkeSa:
    (sa,) = [sa for sa in pair.svc[side].endpoint.sas if sa.state.value == "established"]
    return sa


async def more_fails(pair: TwoChildPair, fail: Callable[[], None]) -> tuple[set[int], set[int]]:
    """"net" is up, then A's worker fails (``fail``) the install of "more", which A initiates.
    Returns A's worker's SAs and policy ids from before "more"."""
    await pair.start()
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
    before = {s.spi for s in pair.workers["a"].dp.sas()}, {p.id for p in pair.workers["a"].dp.policies()}
    fail()
    pair.svc["a"].initiate("tun", "more")
    await pair.settle()
    return before


async def assert_more_deleted(pair: TwoChildPair, before: tuple[set[int], set[int]]) -> None:
    """Both engines and services hold "net" only, A's worker what it held before "more" (SAs and
    policies), the failure counted once, and "net"'s traffic passes both ways."""
    for side in ("a", "b"):
        assert [c.name for c in ike_up(pair, side).children] == ["net"]
        assert [c.child for c in pair.svc[side].children.values()] == ["net"]
    sas, policies = before
    worker = pair.workers["a"].dp
    assert {s.spi for s in worker.sas()} <= sas | set(pair.svc["a"].spi_pool.spis)
    assert {s.spi for s in worker.sas() if s.state == "mature"} == {s.spi for s in worker.sas()
                                                                     if s.state == "mature" and s.spi in sas}
    assert {p.id for p in worker.policies()} == policies
    # B removed its side too: only "net"'s mature SAs
    net_b = pair.child("b")
    assert pair.sa_spis("b", Direction.IN) == {net_b.spi_in}
    assert pair.sa_spis("b", Direction.OUT) == {net_b.spi_out}
    events = pair.svc["a"].events
    assert events.install_failed == {("tun", "more"): 1}
    (metric,) = [f for f in event_families(events, 0) if f.name == "tunsec_child_sa_install_failed"]
    assert [(s.labels, s.value) for s in metric.samples if s.name.endswith("_total")] == \
        [({"connection": "tun", "child": "more"}, 1.0)]
    assert "Child SAs deleted, their install failed: tun/more 1" in (await pair.status_text("a")).splitlines()
    assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5


@pytest.mark.parametrize("refused", ["add", "spd_add", "update"])
def test_a_child_sa_whose_install_the_worker_refuses_is_deleted_on_both_sides(refused: str) -> None:
    async def body() -> None:
        pair = TwoChildPair()
        before = await more_fails(pair, lambda: refuse_next(pair.workers["a"].dp, refused))
        await assert_more_deleted(pair, before)
    run(body())


@pytest.mark.parametrize("unanswered", [pipe.Add, pipe.SpdAdd])
def test_a_child_sa_whose_install_is_not_answered_in_time_is_deleted_on_both_sides(
        unanswered: type[pipe.Message], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker applies the request, its answer never comes: given up (GiveUp for the last request,
    client.answered for an earlier one), what it may have applied is deleted too."""
    monkeypatch.setattr(installs, "request_timeout", lambda: 0.01)   # read as the services start
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.01)   # what answered() waits for the rest

    async def body() -> None:
        pair = TwoChildPair()

        def hang() -> None:
            pair.workers["a"].hold = never_answer(unanswered)
        before = await more_fails(pair, hang)
        pair.workers["a"].hold = None
        await asyncio.wait_for(given_up(pair), 30)   # the give-up's timer (a real one) fires
        await pair.settle()
        await assert_more_deleted(pair, before)
    run(body())


def test_an_ike_sa_whose_only_child_sa_failed_to_install_stays_up() -> None:
    """The peer may create its Child SA again: its IKE SA is not deleted with the Child SA."""
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        refuse_next(pair.workers["b"].dp, "add")   # B's first ADD: its Child SA of the IKE_AUTH
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        for side in ("a", "b"):
            assert ike_up(pair, side).children == []
            assert pair.svc[side].children == {}
        assert pair.workers["b"].dp.policies() == []
        assert not pair.sa_spis("b", Direction.IN) and not pair.sa_spis("b", Direction.OUT)
        assert pair.svc["b"].events.install_failed == {("tun", "net"): 1}
        pair.svc["a"].initiate("tun", "net")   # created again in the same IKE SA, installed this time
        await pair.settle()
        assert [c.name for c in ike_up(pair, "b").children] == ["net"]
        assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
    run(body())


def test_a_rekey_responder_whose_held_back_add_is_refused_deletes_the_new_child_sa() -> None:
    """B answers A's rekey of "net" and holds its new outbound SA back (standby) until A's DELETE of
    the old one; then the worker refuses that ADD: B cannot send on the new Child SA, so it is
    deleted too, A is told, and nothing of "net" stays in B's worker (its lingering inbound SA gone
    at its timer).  The IKE SA stays."""
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        refuse_next(pair.workers["b"].dp, "add")
        pair.rekey("a")
        await pair.settle()
        fire_timers(pair.svc["b"])
        await pair.settle()
        for side in ("a", "b"):
            assert ike_up(pair, side).children == []
            assert pair.svc[side].children == {}
        assert pair.workers["b"].dp.policies() == []
        assert not pair.sa_spis("b", Direction.IN) and not pair.sa_spis("b", Direction.OUT)
        assert pair.svc["b"].events.install_failed == {("tun", "net"): 1}
    run(body())


def test_a_held_back_add_failing_after_the_peer_deleted_its_child_sa_removes_it_once() -> None:
    """B holds its new outbound SA back after answering A's rekey; A's DELETE of the old Child SA makes
    B ADD it, and while that ADD is in flight A deletes the new Child SA too; then the worker refuses
    the ADD.  The DELETE already took the Child SA out: it is removed once (one inbound DELETE), and
    no install failure is counted or sent to A (review M, F4)."""
    async def body() -> None:
        pair = TwoChildPair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        old_b = pair.child("b")
        pair.rekey("a")
        held = await settle_holding_a_delete(pair)
        new_b = next(c for c in pair.svc["b"].children.values() if c.handle != old_b.handle)
        assert new_b.standby is not None
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        refuse_next(pair.workers["b"].dp, "add")
        pair.workers["b"].hold = lambda msg: answer if isinstance(msg, pipe.Add) else None
        mark = len(pair.timeline)
        pair.wire.extend(held)   # A's DELETE of the old Child SA: B ADDs the new one, its answer held
        await deliver_without_waiting(pair)
        assert pair.after(mark, "pipe", "b", adds(new_b.spi_out)), "the held-back ADD was not sent"
        a_sa = ike_up(pair, "a")
        (new_a,) = [c for c in a_sa.children if c.spi_in == new_b.spi_out]
        a_sa.delete_child(new_a.unique_id)
        pair.svc["a"]._pump()
        await deliver_without_waiting(pair)
        assert new_b.handle not in pair.svc["b"].children   # B's engine saw the DELETE
        pair.workers["b"].hold = None
        answer.set_result(None)   # the refused ADD's answer comes
        await pair.settle()
        deletes = pair.after(mark, "pipe", "b", lambda m: isinstance(m, pipe.Delete) and m.spi == new_b.spi_in
                             and m.direction is Direction.IN)
        assert len(deletes) == 1, [pair.timeline[i][2] for i in deletes]
        assert pair.svc["b"].events.install_failed == {}
        assert pair.svc["b"].children == {} and pair.workers["b"].dp.policies() == []
        assert not pair.sa_spis("b", Direction.IN) and not pair.sa_spis("b", Direction.OUT)
    run(body())


async def deliver_without_waiting(pair: Pair) -> None:
    """The datagrams on the wire delivered, each side's tasks given turns but not awaited (one of
    them waits for an answer the test holds)."""
    while pair.wire:
        pair.deliver(*pair.wire.pop(0))
        for _ in range(20):
            await asyncio.sleep(0)


async def our_rekey_fails(pair: TwoChildPair) -> tuple[set[int], int]:
    """"net" is up; A rekeys it and A's worker refuses the new Child SA's ADD.  Returns A's worker's
    policy ids and "net"'s reqid from before."""
    await pair.start()
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    policies = {p.id for p in pair.workers["a"].dp.policies()}
    (state,) = pair.svc["a"].children.values()
    refuse_next(pair.workers["a"].dp, "add")
    pair.rekey("a")
    await pair.settle()
    return policies, state.reqid


def test_a_child_sa_whose_rekey_we_started_fails_to_install_is_created_again() -> None:
    """The old Child SA is deleted by the rekey, the new one after its failed install: the IKE SA
    holds no "net".  Meanwhile "net"'s policies stay in A's worker (its traffic dropped, never sent
    in clear: no outbound SA); at the retry timer A creates "net" again in the same lineage, and its
    traffic passes both ways."""
    async def body() -> None:
        pair = TwoChildPair()
        policies, reqid = await our_rekey_fails(pair)
        a = pair.svc["a"]
        assert ike_up(pair, "a").children == [] and a.children == {}
        assert {p.id for p in pair.workers["a"].dp.policies()} == policies
        assert pair.traffic("a", 3) == 0
        assert not pair.sa_spis("a", Direction.OUT)
        assert a.events.install_failed == {("tun", "net"): 1} and not a.events.child_recreate
        fire_timers(a)   # the retry's delay ends
        await pair.settle()
        assert [c.name for c in ike_up(pair, "a").children] == ["net"]
        (state,) = a.children.values()
        assert state.reqid == reqid
        assert {p.id for p in pair.workers["a"].dp.policies()} == policies
        assert a.events.child_recreate == {("tun", "net"): 1}
        assert a._recreating == {}
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())


def test_a_child_sa_created_again_gives_up_after_its_tries_and_removes_its_policies(
        caplog: pytest.LogCaptureFixture) -> None:
    """Every install of "net" is refused: A tries recreate.TRIES times, then its lineage ends (its
    policies and reqid go); the IKE SA stays, and B's side holds nothing of "net"."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        for _ in range(recreate.TRIES):
            refuse_next(pair.workers["a"].dp, "add")
            fire_timers(a)
            await pair.settle()
        assert a.events.child_recreate == {("tun", "net"): recreate.TRIES}
        assert a._recreating == {} and a._timers == {}
        assert pair.workers["a"].dp.policies() == []
        assert ike_up(pair, "a").children == [] and ike_up(pair, "b").children == []
        assert any("not created again after" in r.getMessage() for r in caplog.records)
    run(body())


def test_a_child_sa_created_again_whose_try_fails_is_tried_again_later() -> None:
    """The first CREATE_CHILD_SA of the re-creation fails (A's worker gives no inbound SPI): the
    engine asks again a few seconds later, and that creates "net".  The re-creation waits for it
    (its deadline re-armed): a try of its own beside it could bring up a second "net" (one try
    counted)."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        dp = pair.workers["a"].dp
        real = dp.getspi

        def refuse(*_args: object) -> None:
            raise DataplaneError("getspi", lib.TS_ENOSPC)
        dp.getspi = refuse
        a.spi_pool.spis.clear()
        fire_timers(a)
        await pair.settle()
        assert ike_up(pair, "a").children == []
        (pending,) = a._recreating.values()
        assert pending.tries == 1 and pending.trying and pending.timer is not None
        assert ike_up(pair, "a").creating("net")
        dp.getspi = real
        fire_timers(a)   # its deadline: the engine's request is waited for
        await pair.settle()
        assert ike_up(pair, "a").children == [] and pending.tries == 1 and pending.timer is not None
        for later in (11.0, 22.0):   # the engine's retries, 2-10 s apart (the first finds the pool empty)
            a.endpoint.handle_timer(time.monotonic() + later)
            a._pump()
            await pair.settle()
        assert [c.name for c in ike_up(pair, "a").children] == ["net"]
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())


def test_a_child_sa_being_created_again_ends_with_its_ike_sa() -> None:
    """The IKE SA goes while "net" waits for its next try: its held policies go at once (another
    client may be given those addresses), not at the timer, and nothing is tried any more."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        assert pair.workers["a"].dp.policies() != []
        a.terminate("tun")
        await pair.settle()
        assert a._recreating == {} and a._timers == {}
        assert pair.workers["a"].dp.policies() == []
        assert not a.events.child_recreate
    run(body())


class RestartableTwoChildPair(TwoChildPair, RestartablePair):
    """TwoChildPair whose workers can be replaced (test_ikeservice_restart_spis.RestartablePair)."""


def test_a_child_sa_being_created_again_is_asked_for_at_once_after_a_worker_restart() -> None:
    """A's worker restarts while "net" waits for its next try (the restart cancels the service's
    timers): "net" is created at once in the new worker, in a lineage of its own, and passes traffic."""
    async def body() -> None:
        pair = RestartableTwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        in_flight = await pair.restart("a")
        pair.wire.extend(in_flight)
        await pair.settle()
        assert [c.name for c in ike_up(pair, "a").children] == ["net"]
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())
