"""Review revrekey4 F3: the peer's DELETE of the new Child SA of its own rekey (it refused our answer)
leaves the old one ``rekeyed_by_peer`` here for good.

h/fixrekey4 (and h/fixrekey1 before it) undo "rekeyed by the peer" when WE delete the successor
(informational.delete_ours: ``rekeyed_by_peer`` reset, ``successor_deleted``, our rekey timer re-armed),
but not when the PEER deletes it.  An initiator deletes the new Child SA of its rekey and keeps the old
one whenever it refuses our answer: a tunsec initiator does so for an answer whose selectors another
peer claims there (child.answer_not_others, a hub's spokes), whose selectors are not the old one's
(rekey_answer), a repeated Ni | Nr or a shown Nr (h/fixrekey2/3); strongSwan's child_rekey likewise.
Here the old Child SA then keeps ``rekey_at`` = inf (we never rekey it) and ``rekeyed_by_peer``, so the
peer's next rekey of it, which RFC 7296 §2.25 has it retry, is answered CHILD_SA_NOT_FOUND ("rekeys a
second time", create_child_sa._over_limit): the peer takes its own Child SA for lost (h/fixrekey4's
_gone_at_peer: it is confirmed), deletes it and creates the child again -- a re-creation (a traffic gap,
the WARNING 'peer lost', LOST_BY_PEER) where one rekey would do, after every refused answer.

The refusal at the initiator is forced once here (another peer's claim appearing at A between its
request and our answer: answer_not_others); everything else is the engines' own."""

from __future__ import annotations

import pytest
from test_engine_more import A, B
from test_rekey_collision import _pair
from test_withdrawn_rekey import refuse_answer_once

from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, NegotiationFailed


def test_the_peers_rekey_after_it_deleted_the_new_child_sa_of_its_refused_one_is_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = _pair(0)
    peer, ours = a.sas[0], b.sas[0]
    old = peer.children[0]
    refused = refuse_answer_once(monkeypatch, peer, old.name)   # another peer's claim there this once (a hub's spokes)
    net.take(A), net.take(B)
    peer.rekey_child(old.unique_id)                    # A's rekey; B answers; A refuses the answer and
    net.run(until=net.now + 1.0)                       # DELETEs the new Child SA, keeping the old one
    assert refused
    failed = [e for e in net.take(A) if isinstance(e, NegotiationFailed)]
    assert [e.reason for e in failed] == ["TS_UNACCEPTABLE"]
    assert len(ours.children) == 1 and len(peer.children) == 1   # the old one, on both sides
    net.run(until=net.now + 15.0)                      # A's rekey is tried again 2-10 s on
    a_events, b_events = net.take(A), net.take(B)
    lost = [e for e in a_events if isinstance(e, ChildSaDown) and e.reason is DownReason.LOST_BY_PEER]
    assert not lost, "the peer took its Child SA for lost (our CHILD_SA_NOT_FOUND to its retried rekey)"
    rekeyed = [e for e in b_events if isinstance(e, ChildSaUp) and e.rekey_of is not None]
    assert rekeyed, b_events                           # the retried rekey is answered: the old one rekeyed
