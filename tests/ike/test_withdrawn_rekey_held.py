"""Review revrekey5 F2: the peer withdraws its rekey of ``old`` (it refused our answer and deletes n1,
the new Child SA we answered) while our own rekey of n1 is out (an operator's rekey --child of it, say).
The peer's DELETE of n1 is then taken by our request (CreateChildTask.takes_peer_delete: n1 held until
our answer, informational._delete_children ``continue``s) before informational._withdrawn is reached,
and nothing resets ``old`` when our rekey of n1 ends without a successor: it stays rekeyed_by_peer with
no rekey timer, as before h/fixrekey5 (review revrekey4 F3).  The peer's retried rekey of old is answered
CHILD_SA_NOT_FOUND, and the peer takes its Child SA for lost and creates the child again (LOST_BY_PEER)."""

from __future__ import annotations

import pytest
from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _pair
from test_withdrawn_rekey import refuse_answer_once

from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason


def test_a_rekey_withdrawn_while_our_rekey_of_its_new_child_sa_is_out_is_answered_when_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = _pair(5)
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    refused = refuse_answer_once(monkeypatch, peer, old.name)   # A refuses our answer to its rekey
    net.take(A), net.take(B)
    peer.rekey_child(peer.children[0].unique_id)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)          # A's rekey of old reaches B: answered (n1)
    assert wire.deliver(B, CCSA, True)           # A refuses the answer: its DELETE of n1 goes out
    assert refused
    n1 = next(c for c in ours.children if c.peer_rekey_of == old.unique_id)
    ours.rekey_child(n1.unique_id)               # B rekeys n1 meanwhile: its request is out
    assert wire.deliver(A, INFO, False)          # A's DELETE of n1 reaches B while B's rekey of it is out
    wire.run()                                   # B's rekey of n1 fails (A has no n1); A retries its rekey of old
    net.run(until=net.now + 15.0)
    a_events, b_events = net.take(A), net.take(B)
    lost = [e for e in a_events if isinstance(e, ChildSaDown) and e.reason is DownReason.LOST_BY_PEER]
    assert not lost, "the peer took its Child SA for lost (our CHILD_SA_NOT_FOUND to its retried rekey)"
    rekeyed = [e for e in b_events if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id]
    assert rekeyed, b_events                     # the retried rekey of old is answered
