"""A try of the re-creation (services/ike/recreate.py) that never completes is abandoned at its
deadline: the next try follows, and after the last one the re-creation ends.  Meanwhile the
child's policies stay in the worker bound to no SA (its traffic dropped, never sent in clear) and
its selectors stay claimed; at the end both go, and nothing of the re-creation is left.

Such a try is one whose request the engine has finished with, but whose end reached no part of the
re-creation: here each try's Child SA comes up with an ESP algorithm the fast path is made not to
do, so it is refused here (deleted, never booked) and nothing of it joins.  A try whose request is
still in the engine at its deadline is waited for instead (test_ikeservice_recreate_once.py).

Two real IkeServices with in-process workers (test_ikeservice_install_failed.TwoChildPair); the
service's timers are fired by hand (a fake clock)."""

from __future__ import annotations

import logging

import pytest
from test_ikeservice_install_failed import TwoChildPair, ike_up, our_rekey_fails
from test_ikeservice_peers import child_claims, run, unconfigured
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane.pipe import Direction
from tunsec.ike.ts import Ts
from tunsec.services.ike import installs, recreate

ANOTHER = object()   # any other authenticated identity


def test_tries_that_never_complete_are_abandoned_at_their_deadlines_until_the_re_creation_ends(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        pair = TwoChildPair()
        policies, _reqid = await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        remote_ts: tuple[Ts, ...] = pending.remote_ts
        local_ts: tuple[Ts, ...] = pending.local_ts
        monkeypatch.delitem(installs.ALGS, "aes128gcm16")   # each try's Child SA is refused here
        for n in range(1, recreate.TRIES + 1):
            fire_timers(a)   # the delay before try n ends: its CREATE_CHILD_SA is asked for
            await pair.settle()
            # its Child SA came up and was deleted here: the engine holds nothing of "net" any more
            assert a.events.install_failed[("tun", "net")] == n + 1
            assert ike_up(pair, "a").children == [] and not ike_up(pair, "a").creating("net")
            assert a._recreating == {(pending.ike, "net"): pending}
            assert pending.tries == n and pending.trying and pending.joined is None
            assert a.events.child_recreate == {("tun", "net"): n}
            # its deadline is the one timer the re-creation has now
            assert pending.timer is not None and pending.timer in a._timers
            # held meanwhile: the same policies, bound to no SA (nothing sent, in clear or not),
            # and the selectors claimed for this peer alone
            assert {p.id for p in pair.workers["a"].dp.policies()} == policies
            assert not pair.sa_spis("a", Direction.OUT) and pair.traffic("a", 3) == 0
            found = unconfigured(a.ts_claims.overlaps(ANOTHER, remote_ts, local_ts))
            assert {c.handle for c, _ts in found} == {pending.token}
            fire_timers(a)   # the deadline passes, nothing came back for the try
            await pair.settle()
            assert not pending.trying
            if n < recreate.TRIES:   # the next try is scheduled, still held
                assert a._recreating and pending.timer is not None and pending.timer in a._timers
                assert {p.id for p in pair.workers["a"].dp.policies()} == policies
        # the end: nothing held, nothing left to fire, the IKE SA up, B holding nothing of "net"
        assert a._recreating == {} and a._timers == {}
        assert a.events.child_recreate == {("tun", "net"): recreate.TRIES}
        assert pair.workers["a"].dp.policies() == [] and a.child_policies == {}
        assert child_claims(a) == 0 and unconfigured(a.ts_claims.overlaps(ANOTHER, remote_ts, local_ts)) == []
        assert ike_up(pair, "a").state.value == "established"
        assert ike_up(pair, "b").children == []
    run(body())
    ends = [r for r in caplog.records if "not created again after" in r.getMessage()]
    assert len(ends) == 1 and f"after {recreate.TRIES} tries" in ends[0].getMessage()
