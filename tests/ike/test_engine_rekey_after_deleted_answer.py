"""Review revrekey F1, after the fix: the responder B deleted the new Child SA of A's rekey at once (its
install failed) and its DELETE overtook the answer, so A does not install that answer and keeps the old
Child SA (test_engine_delete_overtakes_answer.py).  B keeps the old one too, and must take A's next
rekey of it: B answered one rekey of it already (ChildSa.rekeyed_by_peer, which refuses a second
with CHILD_SA_NOT_FOUND, create_child_sa._over_limit), but deleting that rekey's result undoes it
(informational.delete_ours).  Otherwise A's retried rekey would be refused, A would end the Child SA
and create the child anew, and B would keep the old one, which nobody deletes, until its hard lifetime."""

from __future__ import annotations

from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _one_child_pair, _pair

from tunsec.ike.events import ChildSaUp, DownReason, NegotiationFailed


def test_the_rekey_tried_again_after_the_responder_deleted_its_result_rekeys_the_old_child_sa() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a = sa_a.children[0]
    sa_a.rekey_child(old_a.unique_id)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)               # B answers: the new Child SA is up at B ...
    new_b = next(c for c in sa_b.children if c.spi_out != old_a.spi_in)
    sa_b.delete_child(new_b.unique_id, DownReason.DELETED)   # ... its install fails there: deleted
    wire.flight += net.collect()
    assert wire.deliver(B, INFO, False)               # B's DELETE of it overtakes the answer
    net.take(A)
    wire.run()                                        # the answer (resent), A's rekey again later
    events = net.take(A)
    refused = [e.reason for e in events if isinstance(e, NegotiationFailed)]
    assert refused == ["DELETED_BY_PEER"]             # the answer B's DELETE overtook; none after
    ups = [e for e in events if isinstance(e, ChildSaUp)]
    assert ups and ups[0].rekey_of == old_a.unique_id   # the retried rekey replaced the old Child SA
    assert len(_one_child_pair(a, b)) == 1
