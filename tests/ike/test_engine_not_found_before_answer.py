"""Review revrekey2 F2: CHILD_SA_NOT_FOUND to our rekey of a Child SA the peer has not installed *yet*
is taken as "the peer no longer has it" (create_child_sa._lost_by_peer, h/fixrekey1), and both sides
end with two Child SAs of one child.

B rekeys Child SA C; A answers with C', and the answer is lost.  A rekeys C' before B's retransmission
brings B the answer (tunsec does at once after a worker restart, restart.py, which may also have lost
the answer the worker was to send; restart.stale_spi and rekey_uninstalled rekey such a Child SA at
once; mobility after five failed MIGRATEs; in a collision, the side that answered rekeys the other's
result).  B knows no C' yet and answers CHILD_SA_NOT_FOUND.  A ends C' (LOST_BY_PEER), asks for the
child again (N) and DELETEs C'; B records that DELETE while its rekey is out (Task.peer_deleted_unknown)
and so refuses the answer its retransmission gets (DELETED_BY_PEER), keeping C, which A keeps too (C is
rekeyed_by_peer there: A waits for B's DELETE of it, which never comes).  B's next try to rekey C is
answered CHILD_SA_NOT_FOUND (A's _over_limit: rekeyed by the peer already), so B in turn ends C and
asks for the child again (N2): N and N2, two Child SAs of the child, on both sides for good.  Before
h/fixrekey1 A kept C' and retried its rekey, and B's retransmission installed C' (passed on b43cbc25).

Two engines on the fake clock (test_rekey_collision._pair)."""

from __future__ import annotations

from test_engine_more import A, B
from test_rekey_collision import CCSA, Reordering, _one_child_pair, _pair

from tunsec.ike.message import decode_header


def test_a_rekey_of_a_child_sa_whose_answer_the_peer_has_not_yet_got_leaves_one_child_sa() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old = sa_b.children[0]
    sa_b.rekey_child(old.unique_id)                    # B rekeys C
    wire = Reordering(net)
    assert wire.deliver(B, CCSA, False)                # its request reaches A: A answers with C' ...
    (answer,) = [s for s in wire.flight if s.src[0] == A and decode_header(s.data).is_response]
    wire.flight.remove(answer)                         # ... and the answer is lost
    new_a = next(c for c in sa_a.children if c.spi_out != old.spi_in)
    sa_a.rekey_child(new_a.unique_id)                  # A rekeys C' at once (after a worker restart)
    wire.flight += net.collect()
    wire.run()                                         # B's retransmission, the retries ...
    net.run(until=net.now + 3000)                      # ... and whatever follows
    pairs = _one_child_pair(a, b)                      # (both sides agree on what they hold)
    assert len(pairs) == 1, f"{len(pairs)} Child SAs of child net on both sides"
