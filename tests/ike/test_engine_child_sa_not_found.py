"""Review revrekey F1, the repair: CHILD_SA_NOT_FOUND to our rekey ends the Child SA and creates the
child again (test_engine_delete_overtakes_answer.py shows a peer that lost it).  A peer that answers
so may still hold the Child SA: a tunsec peer refuses a second rekey of one it answered a rekey of
already (create_child_sa._over_limit), e.g. one whose answer we never got (our request handed over in
an IKE SA rekey).  Our DELETE of it after the new one is created lets it go there too; else it waited
for a DELETE until its hard lifetime."""

from __future__ import annotations

from test_engine_more import A
from test_rekey_collision import _one_child_pair, _pair

from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason


def test_a_child_sa_the_peer_refuses_to_rekey_as_not_found_is_replaced_on_both_sides() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a, old_b = sa_a.children[0], sa_b.children[0]
    old_b.rekeyed_by_peer, old_b.rekey_at = True, float("inf")   # B answered a rekey of it A never got
    net.take(A)
    sa_a.rekey_child(old_a.unique_id)
    net.run(until=net.now + 60)
    events = net.take(A)
    assert [e.reason for e in events if isinstance(e, ChildSaDown)] == [DownReason.LOST_BY_PEER]
    assert [e.rekey_of for e in events if isinstance(e, ChildSaUp)] == [None]   # a new Child SA of the child
    pairs = _one_child_pair(a, b)                      # B no longer holds the old one
    assert len(pairs) == 1 and pairs[0][0] != old_a.spi_in
