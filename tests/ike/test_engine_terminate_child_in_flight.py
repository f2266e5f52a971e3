"""``terminate --child`` while a CREATE_CHILD_SA of that child is out (review revdelete F2): the new Child
SA it asks for never comes up here, and the peer, which installed its half when it answered, is asked
to delete it (as strongSwan's child_rekey deletes the new CHILD_SA of a rekey whose old one went).

Two engines on a fake clock (test_engine_crossings' pair: A initiated, B answered)."""

from __future__ import annotations

import asyncio

from test_engine_crossings import A, B, Pair, established
from test_engine_delete_at_once import events
from test_engine_terminate_child_rekey_in_flight import _terminated_during_our_rekey
from test_ikeservice_delete_silent_peer import answer_late, gateway_sa, silence
from test_ikeservice_peers import connected, run

from tunsec.ike.events import ChildSaUp, SpiUnused


def _answered_but_unread(pair: Pair) -> list[object]:
    """Deliver what A sent, and take B's answers off the wire (to deliver later)."""
    for sent in pair.net.collect():
        pair.net.deliver(sent)
    return list(pair.net.collect())


def _deliver(pair: Pair, answers: list[object]) -> None:
    for sent in answers:
        pair.net.deliver(sent)  # type: ignore[arg-type]
    pair.net.run(until=pair.net.now + 1)


def test_the_peer_deletes_the_new_child_sa_of_our_rekey_of_a_child_terminated_meanwhile() -> None:
    pair = established()
    _terminated_during_our_rekey(pair)
    assert pair.live(A).children == []
    assert pair.live(B).children == [], "the peer kept the half of our rekey's new Child SA it installed"


def test_a_new_child_sa_whose_request_is_out_when_its_child_is_terminated_never_comes_up() -> None:
    pair = established()
    sa = pair.live(A)
    (old,) = sa.children
    sa.initiate("net")   # an operator's initiate --child just before the terminate
    answers = _answered_but_unread(pair)
    assert len(pair.live(B).children) == 2   # the peer installed its half
    assert sa.creating("net")
    assert sa.abandon_creating("net") == 1
    assert not sa.creating("net")   # nothing of it waits any more (a re-creation need not)
    _deliver(pair, answers)
    ups = [e for e in events(pair, A) if isinstance(e, ChildSaUp)]
    assert [e.spi_in for e in ups] == [old.spi_in], "the terminated child's new Child SA came up"
    assert [c.spi_in for c in sa.children] == [old.spi_in]
    assert [c.spi_out for c in pair.live(B).children] == [old.spi_in], "the peer kept its half"
    # its larval inbound SA is given back
    assert [e.spi for e in events(pair, A) if isinstance(e, SpiUnused)] == [pair.allocated[A][-1]]


def test_queued_new_child_sas_of_a_terminated_child_are_not_sent() -> None:
    pair = established()
    sa = pair.live(A)
    (old,) = sa.children
    sa.initiate("net")
    sa.initiate("net")   # queued behind the first
    answers = _answered_but_unread(pair)
    assert sa.abandon_creating("net") == 2
    _deliver(pair, answers)
    assert [c.spi_in for c in sa.children] == [old.spi_in]
    assert len(pair.live(B).children) == 1


def test_through_the_service_terminate_child_during_an_initiate_of_it_leaves_nothing_in_the_worker() -> None:
    """The same through the real IKE service (test_ikeservice_peers.Gateway, the worker in process): an
    initiate of the child, the site's answer held back, `terminate --child`, the answer delivered: the
    new Child SA is not installed (on main it came up, the child the operator terminated)."""
    async def body() -> tuple[int, list[object]]:
        gw = await connected(1)
        lost = silence(gw, 0)
        gw.service.initiate("gw", "net")
        await gw.settle()
        assert lost, "the site answered our CREATE_CHILD_SA; its answer is held back"
        assert gw.service.terminate_child("gw", "net").deleted == 1   # the one up
        await gw.settle()
        await answer_late(gw, 0, lost)
        await asyncio.sleep(0)
        return len(gw.children_of(0)), list(gateway_sa(gw, 0).children)

    booked, children = run(body())
    assert (booked, children) == (0, []), "the terminated child's new Child SA was installed"
