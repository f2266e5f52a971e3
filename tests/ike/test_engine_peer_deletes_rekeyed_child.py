"""Review revdel3 F1: the peer answers our Child SA rekey, then deletes the OLD Child SA itself (its
hard lifetime ran out, or its policy deletes a rekeyed SA), and that DELETE reaches us before the
answer (the answer was lost and resent, or overtaken).  The new Child SA is up at the peer and is
the lineage's only one: it must come up here too (strongSwan's child_rekey keeps it: "peer sent an
incorrect delete for CHILD_SA after responding to our rekeying").  h/fixdelete2 discards it and asks
the peer to delete it (CreateChildTask._discard), as for an operator's terminate: no Child SA is left
on either side.  Fixed in h/fixdel4: the old Child SA is held (CreateChildTask.takes_peer_delete) and the
answer brings the new one up as its rekey."""

from __future__ import annotations

from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _one_child_pair, _pair

from tunsec.ike.events import DownReason


def test_the_peers_delete_of_the_old_child_sa_overtaking_its_answer_keeps_the_new_one() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    sa_a.rekey_child(sa_a.children[0].unique_id)    # A rekeys the Child SA (no collision: B does not)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)               # B answers: the new Child SA is up at B
    assert len(sa_b.children) == 2
    old_b = next(c for c in sa_b.children if c.spi_out == sa_a.children[0].spi_in)
    sa_b.delete_child(old_b.unique_id, DownReason.EXPIRED)   # B's old Child SA hits its hard lifetime
    wire.flight += net.collect()
    assert wire.deliver(B, INFO, False)               # B's DELETE of the old one overtakes its answer
    wire.run()                                        # the answer, then whatever follows
    # the lineage lives on in the new Child SA, the same pair on both sides
    assert len(_one_child_pair(a, b)) == 1
