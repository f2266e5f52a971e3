"""A Child SA being created again after our failed rekey (services/ike/recreate.py, review Q):
its selector claims stay held while its lineage's policies are (F1); a try whose Child SA is lost
(deleted during its install, or its install finding no larval SA) is tried again, in the held
lineage, and never leaves the lineage stuck (F2); a worker restart with a try out asks for no
second one (F4).

Two real IkeServices with in-process workers (test_ikeservice_install_failed.TwoChildPair)."""

from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_install_failed import (
    RestartableTwoChildPair,
    TwoChildPair,
    ike_up,
    never_answer,
    our_rekey_fails,
    refuse_next,
)
from test_ikeservice_peers import child_claims, run, unconfigured
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane import client, pipe
from tunsec.dataplane.fastpath import DataplaneError, lib
from tunsec.ike.ts import Ts
from tunsec.services.ike import installs, recreate

ANOTHER = object()   # any other authenticated identity


def test_the_claims_of_a_child_sa_being_created_again_are_held_until_it_is() -> None:
    """Between the failed rekey and the re-created Child SA, "net"'s held policies are still in A's
    worker: its selectors stay claimed (another identity would be refused them); once it is created
    again its own claims are the only ones; once the tries are used up none is left."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        found = unconfigured(a.ts_claims.overlaps(ANOTHER, pending.remote_ts, pending.local_ts))
        assert found and {c.handle for c, _ts in found} == {pending.token}
        fire_timers(a)
        await pair.settle()
        (state,) = a.children.values()
        found = unconfigured(a.ts_claims.overlaps(ANOTHER, state.remote_ts, state.local_ts))
        assert {c.handle for c, _ts in found} == {state.handle} and child_claims(a) == 1
    run(body())


def test_the_held_claims_go_when_the_tries_are_used_up() -> None:
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        for _ in range(recreate.TRIES):
            assert child_claims(a) == 1
            refuse_next(pair.workers["a"].dp, "add")
            fire_timers(a)
            await pair.settle()
        assert a._recreating == {} and child_claims(a) == 0
    run(body())


def test_a_re_created_child_sa_the_peer_deletes_during_its_install_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A's worker does not answer the re-created Child SA's ADD in time and B deletes that Child SA
    meanwhile: that try failed, the next one (at its timer) creates "net" in the held lineage (the
    same reqid and policies), and its traffic passes; nothing is left being created again."""
    monkeypatch.setattr(installs, "request_timeout", lambda: 0.05)
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", 0.05)

    async def body() -> None:
        pair = TwoChildPair()
        policies, reqid = await our_rekey_fails(pair)
        a = pair.svc["a"]
        pair.workers["a"].hold = never_answer(pipe.Add)
        fire_timers(a)
        await pair.settle()
        b_sa = ike_up(pair, "b")
        (child,) = b_sa.children
        b_sa.delete_child(child.unique_id)
        pair.svc["b"]._pump()
        await pair.settle()
        pair.workers["a"].hold = None
        await asyncio.sleep(0.2)
        await pair.settle()
        (pending,) = a._recreating.values()
        assert pending.joined is None and pending.timer is not None
        fire_timers(a)
        await pair.settle()
        assert a._recreating == {} and a.events.child_recreate == {("tun", "net"): 2}
        (state,) = a.children.values()
        assert state.reqid == reqid
        assert {p.id for p in pair.workers["a"].dp.policies()} == policies
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())


def test_a_re_created_child_sa_whose_install_finds_no_larval_sa_stays_in_the_held_lineage() -> None:
    """The re-created Child SA's UPDATE finds no larval SA (ENOENT): it is rekeyed into the worker
    (restart.rekey_uninstalled), and that rekey joins the held lineage: one reqid, the same
    policies (no second lineage behind the held one's), traffic both ways."""
    async def body() -> None:
        pair = TwoChildPair()
        policies, reqid = await our_rekey_fails(pair)
        a = pair.svc["a"]
        dp = pair.workers["a"].dp
        real, real_fields = dp.update, dp.update_fields   # the worker's raw way calls the latter

        def enoent(*_args: object) -> None:
            dp.update, dp.update_fields = real, real_fields
            raise DataplaneError("update", lib.TS_ENOENT)
        dp.update = dp.update_fields = enoent
        fire_timers(a)
        await pair.settle()
        assert a._recreating == {}
        assert {s.reqid for s in a.children.values()} == {reqid}
        assert {p.id for p in pair.workers["a"].dp.policies()} == policies
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())


def test_a_child_sa_of_the_child_on_other_selectors_ends_the_re_creation() -> None:
    """The held policies act on the failed rekey's selectors: a Child SA of that child on others
    does not join them (its claims would not cover them); the re-creation ends and they go."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        other = (Ts.parse("10.2.1.0/24"),)
        assert recreate.join(a, pending.ike, "net", pending.local_ts, other, 10**6) is None
        await pair.settle()
        assert a._recreating == {} and child_claims(a) == 0
        assert pair.workers["a"].dp.policies() == []
    run(body())


def test_a_worker_restart_with_a_try_out_asks_for_no_second_child_sa() -> None:
    """A's worker restarts while a try's CREATE_CHILD_SA is on the wire: that try's Child SA comes
    back (rekeyed into the new worker) and is the only "net" on each side."""
    async def body() -> None:
        pair = RestartableTwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        fire_timers(a)
        for _ in range(10):
            await asyncio.sleep(0)
        assert pair.wire   # the try's request, not yet delivered
        pair.wire.extend(await pair.restart("a"))
        await pair.settle()
        for _ in range(3):
            fire_timers(a)
            await pair.settle()
        assert [c.name for c in ike_up(pair, "a").children] == ["net"]
        assert [c.name for c in ike_up(pair, "b").children] == ["net"]
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
        assert pair.traffic("a", 5) == 5 and pair.traffic("b", 5) == 5
    run(body())

