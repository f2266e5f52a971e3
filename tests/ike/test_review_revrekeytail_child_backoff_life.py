"""Review revrekeytail F1 (after h/fixrekeytail): our rekey of a Child SA that keeps failing backs off
(sa_timers.rearm_failed_rekey: 2-10 s times 2**(n-1), up to 64-320 s) with no regard to the Child SA's
hard lifetime, though the engine knows it now (ChildConfig.life_time, ChildSa.created_at, used only by
own_rekey_at) and the IKE SA's own retry is bounded so (at most half the time left to _expire_at).  A
peer busy for a while (TEMPORARY_FAILURE), or our worker out of inbound SPIs, pushes the next try past
the hard lifetime: the worker's hard EXPIRE ends the Child SA (its traffic stops, close_action), though
the peer or the worker was ready again before it.  Two engines on the fake clock."""

from __future__ import annotations

from test_child_retry import Pool
from test_engine_more import B
from test_refused_rekey_timer import _pair, _rekeying

from tunsec.ike.events import ChildSaUp

REKEY, LIFE = 100.0, 112.0   # strongSwan's margin is 10 % of rekey_time (3600 s: 360 s, 6 doublings)


def test_a_failing_rekeys_backoff_stays_before_the_hard_lifetime() -> None:
    for seed in range(4):
        pool = Pool(7)
        net, _, sa_b = _pair(seed, _rekeying(False, REKEY, rand_time=0.0, life_time=LIFE), pool)
        old = sa_b.children[0]
        assert old.created_at is not None
        hard = old.created_at + LIFE                  # the worker's hard EXPIRE of the Child SA
        pool.empty = 3                                # our first three rekeys find no inbound SPI
        net.take(B)                                   # (B's events so far)
        armed = []
        while net.now < hard - 0.01:
            net.run(until=min(hard - 0.01, net.now + 0.5))
            if old.rekey_at not in (None, float("inf")) and (not armed or armed[-1] != old.rekey_at):
                armed.append(old.rekey_at)
        ups = [e for e in net.take(B) if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id]
        late = [at for at in armed if at >= hard]
        assert not late and ups, (seed, f"hard lifetime {hard:.1f}: rekey re-armed at "
                                        f"{[round(t, 1) for t in armed]}, no rekey before it")
