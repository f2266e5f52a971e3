"""The answer that created a Child SA, turned into TEMPORARY_FAILURE before it left (ike/child_refusal.py:
the responder's install of that Child SA failed, review revrekey F1's responder half): the initiator
keeps the old Child SA and tries again; no DELETE is sent; and only while nothing else decides (not
after the peer's next request, not in a rekey collision).  IKE_AUTH's Child SA: test_engine_refuse_auth_child.py."""

from __future__ import annotations

import dataclasses

from test_engine_more import A, B
from test_rekey_collision import CCSA, _one_child_pair, _pair

from tunsec.ike.constants import NotifyType
from tunsec.ike.events import ChildSaDown
from tunsec.ike.message import decode_header
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network, Sent


def _refused_in_flight(net: Network, sa: IkeSa, unique_id: int) -> list[Sent]:
    """What is in flight, with ``sa``'s answer that created Child SA ``unique_id`` refused (as the
    service's barrier swaps the answer it holds: Barrier.replace)."""
    flight = net.collect()
    old = sa.answer_of(unique_id)
    assert old is not None and len(old) == 1
    (new,) = sa.refuse_child(unique_id)
    flight = [dataclasses.replace(s, data=new) if s.data == old[0] else s for s in flight]
    return flight + net.collect()


def _kinds(flight: list[Sent], src: str) -> list[tuple[int, bool]]:
    return [(decode_header(s.data).exchange, decode_header(s.data).is_response) for s in flight if s.src[0] == src]


def test_a_refused_rekey_keeps_the_old_child_sa_on_both_sides_and_is_tried_again() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a = sa_a.children[0]
    old = (old_a.spi_in, old_a.spi_out)
    sa_a.rekey_child(old_a.unique_id)
    (request,) = net.collect()
    net.deliver(request)                                 # B answers: its new Child SA is up
    new_b = next(c for c in sa_b.children if c.spi_out != old_a.spi_in)
    net.take(B)
    flight = _refused_in_flight(net, sa_b, new_b.unique_id)
    assert _kinds(flight, B) == [(CCSA, True)]           # the refusal, no DELETE
    (down,) = [e for e in net.take(B) if isinstance(e, ChildSaDown)]
    assert down.unique_id == new_b.unique_id and "refused in our answer" in down.detail
    assert not sa_b.children[0].rekeyed_by_peer and not sa_b.children[0].successor_deleted
    for sent in flight:
        net.deliver(sent)
    assert _one_child_pair(a, b) == [old]                # A kept the old Child SA, B too
    net.run()                                            # A's rekey again (2-10 s later), answered
    pairs = _one_child_pair(a, b)
    assert len(pairs) == 1 and pairs != [old]


def test_a_refused_new_child_sa_is_asked_for_again() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    first = (sa_a.children[0].spi_in, sa_a.children[0].spi_out)
    sa_a.initiate("net")                                 # a second Child SA of the child
    (request,) = net.collect()
    net.deliver(request)
    new_b = sa_b.children[-1]
    flight = _refused_in_flight(net, sa_b, new_b.unique_id)
    for sent in flight:
        net.deliver(sent)
    assert _one_child_pair(a, b) == [first]
    net.run()
    assert len(_one_child_pair(a, b)) == 2


def test_nothing_is_refused_once_the_peer_has_sent_its_next_request() -> None:
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_a = sa_a.children[0]
    sa_a.rekey_child(old_a.unique_id)
    net.run()                                            # answered; A's DELETE of the old one served
    (new_b,) = sa_b.children
    assert sa_b.answer_of(new_b.unique_id) is None


def test_the_child_sa_of_ike_auth_is_refused_in_an_ike_auth_answer() -> None:
    """IKE_AUTH's Child SA is refusable too (fixauthchild), in an IKE_AUTH answer that keeps the IKE SA
    (not TEMPORARY_FAILURE: test_engine_refuse_auth_child.py); no longer once the worker took it."""
    _net, _a, b = _pair(0)
    sa_b = b.sas[0]
    uid = sa_b.children[0].unique_id
    assert sa_b.answer_of(uid) is not None and sa_b.refusal(uid) is NotifyType.NO_PROPOSAL_CHOSEN
    sa_b.child_installed(uid)
    assert sa_b.answer_of(uid) is None


def test_a_rekey_answered_in_a_collision_is_not_refused() -> None:
    """Both rekey the Child SA at once: B answers A's rekey while its own is out; the collision's rules
    (RFC 7296 §2.8.1) decide which new Child SA lives, so a failed install there is deleted as before."""
    net, a, b = _pair(0)
    sa_a, sa_b = a.sas[0], b.sas[0]
    sa_a.rekey_child(sa_a.children[0].unique_id)
    sa_b.rekey_child(sa_b.children[0].unique_id)
    flight = net.collect()
    (from_a,) = [s for s in flight if s.src[0] == A]
    net.deliver(from_a)                                  # B answers A's rekey, its own out
    old_b = next(c for c in sa_b.children if c.rekeyed_by_peer)
    theirs = next(c for c in sa_b.children if c.peer_rekey_of == old_b.unique_id)
    assert sa_b.answer_of(theirs.unique_id) is None
