"""Review revrekey2 R1, the terminating side: we take a Child SA down at once (``terminate --child``:
IkeSa.delete_child at_once) and the peer's rekey of it crosses our DELETE.  The Child SA was no longer
among the IKE SA's, so the rekey was answered CHILD_SA_NOT_FOUND; a peer whose DELETE from us had not
come yet took the Child SA for lost and created the child again (tunsec does, strongSwan 6 too), even
with close_action = none: a child we are ending came back.  A rekey of a Child SA whose DELETE of ours
is queued or unanswered is answered TEMPORARY_FAILURE (RFC 7296 §2.25.1, sa_responder.rekey_of_deleted):
the peer keeps it until our DELETE comes.  Two engines on the fake clock."""

from __future__ import annotations

import pytest
from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _pair

from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason


@pytest.mark.parametrize("queued", [False, True])
def test_the_peers_rekey_of_a_child_sa_we_terminate_does_not_bring_the_child_back(queued: bool) -> None:
    net, a, b = _pair(0)
    peer, ours = a.sas[0], b.sas[0]
    net.take(A), net.take(B)
    if queued:
        ours.send_liveness()                        # a request of ours out: the DELETE waits behind it
    ours.delete_child(ours.children[0].unique_id, at_once=True)   # terminate --child
    peer.rekey_child(peer.children[0].unique_id)    # the peer's rekey of it, crossing our DELETE
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)             # the rekey reaches us first ...
    assert wire.deliver(B, CCSA, True)              # ... and our answer reaches the peer
    assert peer.children, "the peer took the Child SA for lost"
    if not queued:
        assert wire.deliver(B, INFO, False)         # our DELETE comes
    wire.run()
    assert not peer.children and not ours.children
    events_a = net.take(A)
    assert not [e for e in events_a if isinstance(e, ChildSaUp)], "the child came back"
    assert [e.reason for e in events_a if isinstance(e, ChildSaDown)] == [DownReason.DELETED_BY_PEER]
    assert not [e for e in net.take(B) if isinstance(e, ChildSaUp)]
