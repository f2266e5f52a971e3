"""An IKE SA we delete takes its Child SAs down at once, not when the peer answers (review revreload
F1, ike/sa_teardown.py): ChildSaDown goes out with ``delete()``, the IKE SA waits (DELETING) for
the answer, which ends only it.  A Child SA negotiation of ours in flight then brings no Child SA
up; an IKE SA rekey in flight hands the deletion to the new IKE SA.  ``delete_child(at_once=True)``
(an operator's terminate --child) does the same for one Child SA.

Two engines on a fake clock (test_engine_crossings' pair: A initiated, B answered)."""

from __future__ import annotations

from test_engine_crossings import A, B, Pair, established, model

from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, IkeSaDeleting, IkeSaDown, IkeSaRekeyed, SpiUnused
from tunsec.ike.sa import State
from tunsec.ike.testing import Sent


def events(pair: Pair, ip: str) -> list[object]:
    pair.net.collect()   # what the calls made straight on the SAs left in them
    return [ev for _, ev in pair.net.events[ip]]


def silence(pair: Pair, ip: str) -> list[Sent]:
    """Lose whatever ``ip`` sends from now on; the datagrams lost, for a late delivery."""
    lost: list[Sent] = []

    def drop(sent: Sent) -> bool:
        if sent.src[0] == ip:
            lost.append(sent)
            return True
        return False
    pair.net.drop = drop
    return lost


def test_the_child_sas_go_down_with_delete_and_the_late_answer_ends_only_the_ike_sa() -> None:
    pair = established()
    sa = pair.live(A)
    (child,) = sa.children
    lost = silence(pair, B)
    sa.delete(pair.net.now, DownReason.REPLACED)
    pair.net.step()   # B hears the DELETE, its answer is lost
    downs = [e for e in events(pair, A) if isinstance(e, ChildSaDown)]
    assert [(d.spi_in, d.spi_out, d.reason) for d in downs] == [(child.spi_in, child.spi_out, DownReason.REPLACED)]
    assert sa.state is State.DELETING and sa.children == [] and sa.info().children == ()
    assert not any(isinstance(e, IkeSaDown) for e in events(pair, A))

    pair.net.drop = None
    for sent in lost:   # the answer arrives late: the IKE SA ends, nothing of its Child SA again
        pair.net.deliver(sent)
    pair.net.run()
    evs = events(pair, A)
    assert [e.reason for e in evs if isinstance(e, IkeSaDown)] == [DownReason.REPLACED]
    assert len([e for e in evs if isinstance(e, ChildSaDown)]) == 1
    installed, released = model(evs)   # every SPI went once, none twice
    assert installed == {} and released == set(pair.allocated[A])


def test_an_unanswered_delete_ends_the_ike_sa_when_it_gives_up_with_no_second_child_sa_down() -> None:
    pair = established()
    sa = pair.live(A)
    silence(pair, B)
    sa.delete(pair.net.now)
    pair.net.step()
    assert [type(e) for e in events(pair, A)][-2:] == [ChildSaDown, IkeSaDeleting]   # now, not after ~165 s
    pair.net.run()
    evs = events(pair, A)
    assert sa.is_closed and [e.reason for e in evs if isinstance(e, IkeSaDown)] == [DownReason.DELETED]
    assert len([e for e in evs if isinstance(e, ChildSaDown)]) == 1


def test_our_child_sa_rekey_in_flight_brings_no_child_sa_up_once_the_ike_sa_is_deleted() -> None:
    pair = established()
    net, sa = pair.net, pair.live(A)
    (old,) = sa.children
    sa.rekey_child(old.unique_id)
    request = net.collect()
    for sent in request:
        net.deliver(sent)   # B answers: it installs the new Child SA
    answer = net.collect()
    sa.delete(net.now)      # before A reads the answer
    for sent in answer:
        net.deliver(sent)
    net.run()
    evs = events(pair, A)
    assert not [e for e in evs if isinstance(e, ChildSaUp) and e.rekey_of is not None], "the rekey came up"
    installed, released = model(evs)
    assert installed == {} and released == set(pair.allocated[A])   # the new SPI went back once (SpiUnused)
    assert len([e for e in evs if isinstance(e, SpiUnused)]) == 1
    assert sa.is_closed and all(s.is_closed for s in pair.endpoints[B].sas)


def test_an_ike_sa_rekey_answered_after_the_delete_hands_the_delete_to_the_new_ike_sa() -> None:
    pair = established()
    net, sa = pair.net, pair.live(A)
    sa.rekey()
    for sent in net.collect():
        net.deliver(sent)
    answer = net.collect()
    sa.delete(net.now)
    for sent in answer:
        net.deliver(sent)
    new = sa.heir
    assert new is not None and new.state is State.DELETING   # takes no Child SA, the peer's are refused
    net.run()
    evs = events(pair, A)
    assert any(isinstance(e, IkeSaRekeyed) for e in evs)
    assert [e.reason for e in evs if isinstance(e, IkeSaDown)] == [DownReason.DELETED]
    assert model(evs)[0] == {}
    assert all(s.is_closed for s in (*pair.endpoints[A].sas, *pair.endpoints[B].sas))


def test_a_child_sa_deleted_at_once_goes_down_before_the_answer_and_once() -> None:
    pair = established()
    sa = pair.live(A)
    (child,) = sa.children
    lost = silence(pair, B)
    sa.delete_child(child.unique_id, at_once=True)
    pair.net.step()
    assert [e.spi_in for e in events(pair, A) if isinstance(e, ChildSaDown)] == [child.spi_in]
    assert sa.children == [] and sa.state is State.ESTABLISHED
    pair.net.drop = None
    for sent in lost:
        pair.net.deliver(sent)
    pair.net.run(until=pair.net.now + 1)
    assert len([e for e in events(pair, A) if isinstance(e, ChildSaDown)]) == 1
    assert sa.state is State.ESTABLISHED and pair.live(B).children == []
