"""Review revrekeytail F2 (after h/fixrekeytail): revresp R1's rule, "after a refusal in our answer the
retry is the initiator's" (sa_timers.own_rekey_at), is skipped when our own rekey of the old Child SA
is queued behind another request of ours when the peer's rekey of it comes.  The peer's rekey is
answered (the old one rekeyed by the peer: our queued rekey would be dropped as obsolete), our answer
is refused (the install of its new Child SA failed: child_refusal.refuse_child), unrekey takes the old
one off "rekeyed by the peer", and sa_timers.rearm leaves it alone because ours is queued: so our
queued rekey is no longer obsolete and goes out as soon as the request ahead of it is answered --
within the seconds of the initiator's retry (tunsec 2-10 s, strongSwan 6-15 s), right after our
worker refused an install, the collision R1 was fixed to avoid.  Two engines on the fake clock; the
refusal is made as the service's barrier makes it (test_engine_refuse_child.py)."""

from __future__ import annotations

from test_child_retry import _requests
from test_engine_more import B
from test_engine_refuse_child import _refused_in_flight
from test_refused_rekey_timer import REKEY_TIME, _pair, _rekeying

from tunsec.ike.events import ChildSaUp
from tunsec.ike.sa_timers import REFUSED_REKEY_DELAY


def test_our_queued_rekey_waits_past_the_initiators_retry_after_a_refusal_in_our_answer() -> None:
    for seed in range(4):
        net, sa_a, sa_b = _pair(seed, _rekeying(False, REKEY_TIME))
        old_b = sa_b.children[0]
        net.run(until=100.0)
        mark, start = len(net.log), net.now
        sa_b.send_liveness()                           # a request of ours out (DPD, say) ...
        (liveness,) = net.collect()                    # ... its answer late
        sa_b.send_liveness()                           # another queued (any request: a new Child SA, ...)
        sa_b.rekey_child(old_b.unique_id)              # our rekey of the Child SA, queued behind them
        sa_a.rekey_child(sa_a.children[0].unique_id)   # the peer's rekey of it comes meanwhile:
        (request,) = net.collect()
        net.deliver(request)                           # answered (ours is now obsolete) ...
        new_b = next(c for c in sa_b.children if c.peer_rekey_of is not None)
        for sent in _refused_in_flight(net, sa_b, new_b.unique_id):
            net.deliver(sent)                          # ... and refused: its install failed
        assert sa_b.children == [old_b], seed
        net.take(B)
        net.deliver(liveness)                          # the requests ahead of ours are answered
        net.run(until=start + REFUSED_REKEY_DELAY)
        ours = _requests(net, mark, B)
        assert not ours, (seed, f"our rekey went {ours[0].time - start:.1f} s after the refusal, "
                                "in the seconds of the initiator's retry")
        ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
        assert [(e.rekey_of, e.initiator) for e in ups] == [(old_b.unique_id, False)], seed
