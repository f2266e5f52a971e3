"""Review revrekey F1: the responder of a CREATE_CHILD_SA deletes the Child SA it has just created
(tunsec does when that Child SA's install fails, installs._child_up -> install_failed.delete_in_engine,
or its claims backstop refuses it; an operator's ``terminate --child``), and that DELETE reaches the
initiator before the answer (the answer was lost and is sent again for the retransmitted request).
The initiator answers the DELETE of an SPI it does not know yet with an empty Delete payload
(informational._delete_children), then takes the answer and installs the Child SA: it holds a
Child SA the responder no longer has, and sends into it.  For a rekey it also deletes the old
Child SA (the rekey "succeeded"), so neither side is left with one for that child: the
responder's "left to the peer to start again" (docs/issue9-coverage.md, What remains) never
happens, as the peer never heard of the delete."""

from __future__ import annotations

from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _one_child_pair, _pair

from tunsec.ike.events import DownReason


def test_the_responders_delete_of_the_new_child_sa_overtaking_its_answer_leaves_no_orphan() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a = sa_a.children[0]
    sa_a.rekey_child(old_a.unique_id)                 # A rekeys its Child SA
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)               # B answers: the new Child SA is up at B ...
    new_b = next(c for c in sa_b.children if c.spi_out != old_a.spi_in)
    sa_b.delete_child(new_b.unique_id, DownReason.DELETED)   # ... and its install fails there: deleted
    wire.flight += net.collect()
    assert wire.deliver(B, INFO, False)               # B's DELETE of the new one overtakes the answer
    wire.run()                                        # the answer (resent), then whatever follows
    # both sides hold the same Child SAs, and the child is still up (B kept the old one, which A
    # must not delete for a rekey whose result B deleted; or A rekeys again)
    assert len(_one_child_pair(a, b)) == 1


def test_the_responders_delete_of_a_new_child_sa_overtaking_its_answer_leaves_no_orphan() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    first_b = sa_b.children[0]
    sa_a.initiate("net")                              # A asks for a second Child SA of the child
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)               # B answers: it is up at B ...
    new_b = next(c for c in sa_b.children if c is not first_b)
    sa_b.delete_child(new_b.unique_id, DownReason.DELETED)   # ... its install fails: deleted
    wire.flight += net.collect()
    assert wire.deliver(B, INFO, False)               # the DELETE overtakes the answer
    wire.run()
    assert _one_child_pair(a, b) == [(sa_a.children[0].spi_in, first_b.spi_in)]


def test_a_child_sa_the_peer_answers_child_sa_not_found_for_is_replaced() -> None:
    """What the orphan above comes to (or any Child SA the peer no longer has: a strongSwan peer whose
    kernel state was flushed): our next rekey of it is answered CHILD_SA_NOT_FOUND (RFC 7296 §3.10.1:
    the responder has no such Child SA).  We keep it, log a refusal and try the rekey again and again
    with backoff (sa_timers.rearm_failed_rekey: at 3, 19, 29, 56, 144, 229, 533 s ...) until its hard
    lifetime, sending its traffic into an SA the peer does not have meanwhile; then it expires, and
    nothing creates it again (close_action acts on DELETED_BY_PEER only).  It should be dropped and
    the child created again (a new CREATE_CHILD_SA), as for a Child SA the peer deleted."""
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    sa_b._st.children.clear()                           # B no longer has the Child SA (A does not know)
    net.take(A)
    sa_a.rekey_child(sa_a.children[0].unique_id)        # A's rekey timer fires
    net.run(until=net.now + 600)
    assert len(_one_child_pair(a, b)) == 1              # the child is up on both sides again
