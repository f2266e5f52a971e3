"""The peer's DELETE of a Child SA our rekey of which is out (review revdel3 F1, h/fixdel4): the old
Child SA is unregistered at once but reported down only when our request ends
(CreateChildTask.takes_peer_delete), so that the service sees the new one's ChildSaUp (rekey_of the
old one) before the old one's ChildSaDown and carries the lineage on.

What ends the request otherwise reports it down too, once: the peer's refusal of our rekey, the
whole IKE SA's delete, an operator's terminate --child (which must not see it come back).

Two engines on a fake clock, the wire of test_rekey_collision (datagrams delivered in a chosen order)."""

from __future__ import annotations

from test_engine_more import A, B, only
from test_rekey_collision import CCSA, INFO, Reordering, _pair

from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, Event, IkeSaDeleting
from tunsec.ike.message import decode_header
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network


def _answered_then_deleted(seed: int) -> tuple[Network, IkeEndpoint, IkeEndpoint, Reordering, int]:
    """A rekeys its Child SA; B answers, then deletes the old one (its hard lifetime); B's DELETE
    reaches A, the answer to A's rekey is still in flight.  The old Child SA's unique id at A."""
    net, a, b = _pair(seed)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old = sa_a.children[0]
    sa_a.rekey_child(old.unique_id)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)
    old_b = next(c for c in sa_b.children if c.spi_out == old.spi_in)
    sa_b.delete_child(old_b.unique_id, DownReason.EXPIRED)
    wire.flight += net.collect()
    assert wire.deliver(B, INFO, False)
    wire.flight += net.collect()
    return net, a, b, wire, old.unique_id


def _downs(events: list[Event], unique_id: int) -> list[DownReason]:
    return [e.reason for e in only(events, ChildSaDown) if e.unique_id == unique_id]


def _deletes_from(net: Network, ip: str, since: int) -> int:
    """Requests with a Delete payload ``ip`` sent since log entry ``since`` (not the answers)."""
    n = 0
    for sent in net.log[since:]:
        hdr = decode_header(sent.data)
        if sent.src[0] == ip and hdr.exchange == INFO and not hdr.is_response:
            n += 1
    return n


def test_the_new_child_sa_comes_up_before_the_old_one_is_reported_down() -> None:
    net, a, b, wire, old = _answered_then_deleted(0)
    assert _downs(net.take(A), old) == [], "reported down before our rekey of it ended"
    assert a.sas[0].children == [], "the old Child SA is still registered"
    mark = len(net.log)
    wire.run()
    events = net.take(A)
    ups = [i for i, e in enumerate(events) if isinstance(e, ChildSaUp) and e.rekey_of == old]
    downs = [i for i, e in enumerate(events) if isinstance(e, ChildSaDown) and e.unique_id == old]
    assert len(ups) == 1 and len(downs) == 1 and ups[0] < downs[0], events
    assert _downs(events, old) == [DownReason.REKEYED]   # no close_action: its lineage goes on
    # A deletes nothing: not the old one (gone at B), not the new one
    assert _deletes_from(net, A, mark) == 0
    assert len(a.sas[0].children) == 1 and len(b.sas[0].children) == 1


def test_a_refused_rekey_reports_the_old_child_sa_deleted_by_the_peer_once() -> None:
    """B deletes the Child SA A is rekeying before it sees A's request: it refuses the rekey
    (TEMPORARY_FAILURE, deleting it).  Nothing comes up; the old one goes down once, as deleted by
    the peer (close_action = start re-creates it in the service)."""
    net, a, b = _pair(1)
    sa_a, sa_b = a.sas[0], b.sas[0]
    old = sa_a.children[0]
    sa_a.rekey_child(old.unique_id)
    sa_b.delete_child(sa_b.children[0].unique_id, DownReason.EXPIRED)
    wire = Reordering(net)
    assert wire.deliver(B, INFO, False)    # B's DELETE first: A holds the old one
    assert _downs(net.take(A), old.unique_id) == []
    wire.run()                             # A's rekey reaches B, which refuses it
    events = net.take(A)
    assert not only(events, ChildSaUp)
    assert _downs(events, old.unique_id) == [DownReason.DELETED_BY_PEER]
    assert sa_a.children == [] and sa_b.children == []


def test_deleting_the_ike_sa_meanwhile_reports_the_held_child_sa_down_with_it() -> None:
    net, a, _b, wire, old = _answered_then_deleted(2)
    sa_a: IkeSa = a.sas[0]
    sa_a.delete()
    wire.flight += net.collect()   # (the events the call left in the SA come with its datagrams)
    events = net.take(A)
    assert _downs(events, old) == [DownReason.DELETED_BY_PEER]
    assert [type(e) for e in events if isinstance(e, (ChildSaDown, IkeSaDeleting))][-1] is IkeSaDeleting
    wire.run()
    events = net.take(A)
    assert not only(events, ChildSaUp) and _downs(events, old) == []


def test_terminate_child_meanwhile_brings_nothing_back() -> None:
    """terminate --child (abandon_creating, then delete_child of the registered ones) while the old
    Child SA is held: it is down at once, and the answer to our rekey brings nothing up (review
    revdelete F2); the peer is asked to delete the new one."""
    net, a, b, wire, old = _answered_then_deleted(3)
    sa_a = a.sas[0]
    assert sa_a.abandon_creating("net") == 1
    wire.flight += net.collect()
    assert _downs(net.take(A), old) == [DownReason.DELETED]
    mark = len(net.log)
    wire.run()
    events = net.take(A)
    assert not only(events, ChildSaUp) and _downs(events, old) == []
    assert sa_a.children == [] and b.sas[0].children == []
    assert _deletes_from(net, A, mark) == 1   # of the new one, which B had up


def test_the_held_child_sas_inbound_spi_is_still_one_the_ike_sa_holds() -> None:
    """Review revlast2 R4: the held Child SA is out of ``children`` but still this IKE SA's (its inbound
    SPI at the worker until the rekey ends): IkeSa.inbound_spis names it, so that a worker restart's
    SpiPool.retire (services/ike/restart.py) sees it as the engine's, as it sees the installed ones."""
    _net, a, _b, wire, old = _answered_then_deleted(4)
    sa_a = a.sas[0]
    (held,) = sa_a.held_children()
    assert held.unique_id == old and sa_a.children == []
    assert held.spi_in in sa_a.inbound_spis(), "the held Child SA's inbound SPI is not among the IKE SA's"
    wire.run()   # the rekey ends: the new Child SA's SPI, no longer the old one's
    (new,) = sa_a.children
    assert sa_a.inbound_spis() == [new.spi_in]
