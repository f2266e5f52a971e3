"""Review revrekeytail F3: a rekey asked for while the peer's rekey of the Child SA is under way is
forgotten, and sa_timers.rearm (h/fixrekeytail's one rule for re-arming) does not bring it back without
rekey_time.  A Child SA rekeyed on bytes or packets (rekey_bytes/rekey_packets, rekey_time 0: the
engine has no timer for it) gets our rekey from the worker's soft EXPIRE, which fires once per SA
(dp.c soft_fired) and reaches the engine as IkeSa.rekey_child (IkeService._rekey_child).  Coming while
the peer's rekey of that Child SA is answered (rekey_at inf), it does nothing.  When the peer then
withdraws its rekey (it deletes the new Child SA: informational._withdrawn), rearm sets the old one's
timer to ``None`` for want of rekey_time: we never rekey it, though its soft limit passed and the peer,
"which retries its own, may not" (the reason rearm exists); the hard limit (life_bytes) then deletes
the child.  The same for our DELETE of the peer's new Child SA (delete_ours) and for a refusal in our
answer (own_rekey_at, where with rekey_time set the restored rekey_due may also lie far beyond a
soft limit in bytes already passed).  Two engines on the fake clock, the peer's withdrawal made as in
test_withdrawn_rekey.py."""

from __future__ import annotations

import random

import pytest
from test_engine_more import A, B, cfg, only
from test_withdrawn_rekey import refuse_answer_once

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.testing import EPOCH, Network


def test_a_soft_expire_during_the_peers_withdrawn_rekey_still_rekeys_the_child_sa(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], random.Random(3).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False)], random.Random(1003).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    assert old.config.rekey_time is None and old.rekey_at is None   # rekeyed on bytes: no timer
    refuse_answer_once(monkeypatch, peer, old.name)
    peer.rekey_child(peer.children[0].unique_id)   # A's rekey ...
    (request,) = net.collect()
    net.deliver(request)                           # ... answered by B (its answer on the way)
    ours.rekey_child(old.unique_id)                # the worker's soft EXPIRE of the old one, meanwhile
    net.run(until=net.now + 1.0)                   # A refuses the answer, deletes the new one: withdrawn
    assert [e.reason for e in net.take(A) if isinstance(e, NegotiationFailed)] == ["TS_UNACCEPTABLE"]
    assert ours.children == [old] and not old.rekeyed_by_peer
    net.take(B)                                    # the withdrawn one, up and deleted
    peer.children[0].rekey_at = None               # the peer does not try again (test_withdrawn_rekey.py)
    net.run(until=net.now + 15.0)                  # ours with rekey_time: 2-10 s on (retry_at)
    rekeyed = [e for e in net.take(B) if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id
               and e.initiator]
    assert rekeyed, f"our rekey of the Child SA past its soft limit never came (rekey_at {old.rekey_at})"
