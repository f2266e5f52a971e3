"""Review revrekey2 F2, the fix: CHILD_SA_NOT_FOUND to our rekey of a Child SA means "the peer lost it"
(create_child_sa._lost_by_peer: end it, create the child again) only if the peer had it when our
request left.  A Child SA the peer's request created is unconfirmed (ChildSa.unconfirmed) until the
peer sends a later request on the IKE SA (or its successor): our window of one lets it send one only
after it has our answer.  Before that, the NOT_FOUND is a refusal and the rekey is tried again (as
before h/fixrekey1), so the answer the peer gets later is not refused and the child not created twice
(ike/test_engine_not_found_before_answer.py).

Two engines on the fake clock (test_rekey_collision._pair); B answers NOT_FOUND as a tunsec peer does
to a Child SA whose rekey it answered and whose answer we never got (create_child_sa._over_limit;
test_engine_child_sa_not_found.py sets it so too)."""

from __future__ import annotations

import pytest
from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _pair

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, DownReason, NegotiationFailed
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import ChildSa
from tunsec.ike.testing import Network


def _peer_rekeyed(net: Network, a: IkeEndpoint, b: IkeEndpoint) -> tuple[Reordering, ChildSa, ChildSa]:
    """B rekeys the Child SA and installs A's answer; B's DELETE of the old one stays in flight.
    A's and B's halves of the new Child SA."""
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_b = sa_b.children[0]
    sa_b.rekey_child(old_b.unique_id)
    wire = Reordering(net)
    assert wire.deliver(B, CCSA, False)             # B's rekey reaches A: A answers with the new one
    assert wire.deliver(A, CCSA, True)              # B installs it and DELETEs the old one (in flight)
    new_a = next(c for c in sa_a.children if c.spi_out != old_b.spi_in)
    new_b = next(c for c in sa_b.children if c is not old_b)
    return wire, new_a, new_b


def _not_found(net: Network, wire: Reordering, sa_a: IkeSa, new_a: ChildSa, new_b: ChildSa) -> list[object]:
    """A rekeys its new Child SA; B answers CHILD_SA_NOT_FOUND.  A's events."""
    new_b.rekeyed_by_peer, new_b.rekey_at = True, float("inf")   # B answered a rekey of it A never got
    net.take(A)
    sa_a.rekey_child(new_a.unique_id)
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)
    assert wire.deliver(B, CCSA, True)
    return list(net.take(A))


@pytest.mark.parametrize("confirmed", [False, True])
def test_not_found_is_a_loss_only_once_the_peer_sent_a_request_after_our_answer(confirmed: bool) -> None:
    """Unconfirmed: a refusal, the Child SA stays and its rekey is tried again (failed before the fix:
    LOST_BY_PEER).  Confirmed by B's DELETE of the old one: the peer lost it, the child is created again."""
    net, a, b = _pair(0)
    sa_a = a.sas[0]
    wire, new_a, new_b = _peer_rekeyed(net, a, b)
    if confirmed:
        assert wire.deliver(B, INFO, False)         # B's DELETE of the old one: a request after our answer
        assert wire.deliver(A, INFO, True)
    events = _not_found(net, wire, sa_a, new_a, new_b)
    downs = [e.reason for e in events if isinstance(e, ChildSaDown)]
    if confirmed:
        assert downs == [DownReason.LOST_BY_PEER] and sa_a.creating("net")
        return
    assert downs == [] and not sa_a.creating("net")
    assert [e.reason for e in events if isinstance(e, NegotiationFailed)] == ["CHILD_SA_NOT_FOUND"]
    assert new_a in sa_a.children and new_a.rekey_at is not None and new_a.rekey_at < net.now + 11


def test_a_request_on_the_new_ike_sa_confirms_a_child_sa_answered_on_the_old_one() -> None:
    """B asks for another Child SA, and A rekeys the IKE SA before B's next request, which comes on the
    new IKE SA: it confirms the Child SA there (IkeSaState.unconfirmed moves to the successor; else it
    stayed unconfirmed for good and a NOT_FOUND to its rekey was never taken as a loss)."""
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    first = sa_a.children[0]
    sa_b.initiate("net")                            # a second Child SA of the child, B's request
    net.run(until=net.now + 1)
    (new_a,) = [c for c in sa_a.children if c is not first]
    (new_b,) = [c for c in sa_b.children if c.spi_in == new_a.spi_out]
    sa_a.rekey()
    net.run(until=net.now + 1)
    heir_a, heir_b = sa_a.heir, sa_b.heir
    assert heir_a is not None and heir_b is not None and new_a in heir_a.children
    wire = Reordering(net)
    events = _not_found(net, wire, heir_a, new_a, new_b)   # no request of B's since the answer: refused
    assert [e.reason for e in events if isinstance(e, ChildSaDown)] == []
    assert [e.reason for e in events if isinstance(e, NegotiationFailed)] == ["CHILD_SA_NOT_FOUND"]
    heir_b.send_liveness()                          # B's next request, on the new IKE SA
    net.run(until=net.now + 1)
    events = _not_found(net, Reordering(net), heir_a, new_a, new_b)
    assert [e.reason for e in events if isinstance(e, ChildSaDown)] == [DownReason.LOST_BY_PEER]
