"""Review revdelete F2: `terminate --child` while our rekey of that Child SA is in flight brings it
back: the rekey's new Child SA comes up after the terminate took the old one down at once.

``delete_child(at_once=True)`` (commands.terminate_child, h/fixreload) reports the old Child SA down
and unregisters it, but leaves our CREATE_CHILD_SA (REKEY_SA) that is out: its new Child SA is still
registered, so when the peer's answer comes, ``exchanges/child.install`` finds it registered and
reports it up (ChildSaUp, rekey_of the terminated one): the service installs it, with the old
lineage's policies, and the child the operator terminated carries traffic again, until its own
rekey and beyond.  The whole IKE SA's delete has the guard (all Child SAs unregistered, so the new
one is not installed: test_engine_delete_at_once); one Child SA's at-once delete has none.

Two engines on a fake clock (test_engine_crossings' pair: A initiated, B answered)."""

from __future__ import annotations

import asyncio

from test_engine_crossings import A, Pair, established
from test_engine_delete_at_once import events
from test_ikeservice_delete_silent_peer import answer_late, gateway_sa, silence
from test_ikeservice_peers import connected, run

from tunsec.ike.events import ChildSaDown, ChildSaUp
from tunsec.ike.sa import State


def _terminated_during_our_rekey(pair: Pair) -> None:
    net, sa = pair.net, pair.live(A)
    (old,) = sa.children
    sa.rekey_child(old.unique_id)
    for sent in net.collect():
        net.deliver(sent)   # B answers: it installs the new Child SA
    answer = net.collect()
    sa.delete_child(old.unique_id, at_once=True)   # the operator's terminate --child, before the answer is read
    for sent in answer:
        net.deliver(sent)
    net.run(until=net.now + 1)


def test_terminate_child_during_our_rekey_of_it_leaves_no_child_sa_up() -> None:
    pair = established()
    sa = pair.live(A)
    (old,) = sa.children
    _terminated_during_our_rekey(pair)
    evs = events(pair, A)
    assert [e.spi_in for e in evs if isinstance(e, ChildSaDown)][:1] == [old.spi_in]
    ups = [e for e in evs if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id]
    assert sa.state is State.ESTABLISHED
    assert (ups, sa.children) == ([], []), "the terminated child came back up by our rekey in flight"


def test_through_the_service_terminate_child_during_our_rekey_leaves_nothing_in_the_worker() -> None:
    """The same through the real IKE service (test_ikeservice_peers.Gateway: the worker's logic and C
    fast path in process): the rekey's Child SA is installed, a lineage of its own, and the site's
    traffic flows again after `tunsec terminate --child`."""
    async def body() -> tuple[int, list[object]]:
        gw = await connected(1)
        sa = gateway_sa(gw, 0)
        (old,) = sa.children
        lost = silence(gw, 0)
        sa.rekey_child(old.unique_id)
        gw.service._pump()
        await gw.settle()
        assert lost, "the site answered our rekey; its answer is held back"
        assert gw.service.terminate_child("gw", "net").deleted == 1
        await gw.settle()
        assert gw.children_of(0) == []   # out at once
        await answer_late(gw, 0, lost)
        await asyncio.sleep(0)
        return len(gw.children_of(0)), list(gateway_sa(gw, 0).children)

    booked, children = run(body())
    assert (booked, children) == (0, []), "the terminated child is installed again (our rekey's answer)"
