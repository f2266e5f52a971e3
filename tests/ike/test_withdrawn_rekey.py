"""The peer withdraws its rekey (it deletes the new Child SA of its own rekey that we answered, keeping
the old one): the old one is no longer "rekeyed by the peer" here, and our rekey timer runs for it again
(informational._withdrawn, sa_responder.rearm_withdrawn; review revrekey4 F3).  The proof that the
peer's retried rekey is answered is test_rekey_withdrawn_answered.py; here the peer does not retry."""

from __future__ import annotations

import dataclasses
import random

import pytest
from test_engine_more import A, B, cfg, only
from test_nonce_reflection import _next_nonce_is
from test_rekey_collision import CCSA, INFO, Reordering, _pair

import tunsec.ike.exchanges.child as childmod
from tunsec.ike.config import IkeConfig
from tunsec.ike.constants import NotifyType
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, NegotiationFailed
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import EPOCH, Network

REKEY_TIME = 3600.0   # ours: far beyond what the test runs, so only a re-armed timer rekeys in it


def refuse_answer_once(monkeypatch: pytest.MonkeyPatch, initiator: IkeSa, child: str) -> list[bool]:
    """``initiator`` refuses the next answer to its CREATE_CHILD_SA once (another peer's claim
    appearing there between its request and the answer: child.answer_not_others), so that it deletes
    the new Child SA; the list returned holds True once it did."""
    real = childmod.answer_not_others
    refused: list[bool] = []

    def once(*args: object, **kw: object) -> childmod.Refusal | None:
        if not refused and args[0] is initiator._st:
            refused.append(True)
            return childmod.Refusal(NotifyType.TS_UNACCEPTABLE, "another peer holds the selectors", child)
        return real(*args, **kw)   # type: ignore[arg-type]
    monkeypatch.setattr(childmod, "answer_not_others", once)
    return refused


def _ours_rekeys(initiator: bool) -> IkeConfig:
    base = cfg(initiator)
    return dataclasses.replace(base, children=tuple(dataclasses.replace(c, rekey_time=REKEY_TIME)
                                                    for c in base.children))


def test_we_rekey_a_child_sa_whose_rekey_the_peer_withdrew_when_the_peer_does_not_try_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng_a, rng_b = random.Random(3), random.Random(1003)
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], rng_a.randbytes, wall_clock=lambda: EPOCH))   # no rekey timer
    b = net.add(B, IkeEndpoint([_ours_rekeys(False)], rng_b.randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run(until=net.now + 1.0)   # (B's rekey timer is armed: the network never settles)
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    refuse_answer_once(monkeypatch, peer, old.name)
    peer.rekey_child(peer.children[0].unique_id)   # A's rekey; B answers; A refuses the answer, deletes the new
    net.run(until=net.now + 1.0)
    assert [e.reason for e in net.take(A) if isinstance(e, NegotiationFailed)] == ["TS_UNACCEPTABLE"]
    assert ours.children == [old]
    net.take(B)                                    # the withdrawn one, up and deleted
    assert not old.rekeyed_by_peer and not old.successor_deleted   # the peer withdrew: no rekey done
    peer.children[0].rekey_at = None               # the peer does not try again (its timer is off)
    net.run(until=net.now + 15.0)                  # ours: 2-10 s on (retry_at)
    b_events = net.take(B)
    rekeyed = [e for e in b_events if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id]
    assert rekeyed and rekeyed[0].initiator, b_events   # B's own rekey of it
    downs = [e for e in b_events if isinstance(e, ChildSaDown) and e.unique_id == old.unique_id]
    assert [e.reason for e in downs] == [DownReason.REKEYED]


def test_our_rekey_that_crossed_the_withdrawn_one_replaces_the_old_child_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides rekey one Child SA; the peer withdraws its rekey (it refused our answer) before our
    own rekey's answer comes.  Ours, the lowest nonce's (the one a collision makes redundant), then
    does not yield to the withdrawn one: it replaces the old Child SA, which we delete.  Were it
    deleted as redundant, both new Child SAs were gone and the old one left rekeyed by both sides,
    waiting for a DELETE neither sends."""
    net, a, b = _pair(5)
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    refused = refuse_answer_once(monkeypatch, peer, old.name)   # A refuses our answer to its rekey
    net.take(A), net.take(B)
    _next_nonce_is(ours, bytes(NONCE_LEN))         # our Ni: the lowest nonce of both exchanges
    ours.rekey_child(old.unique_id)                # B's rekey ...
    peer.rekey_child(peer.children[0].unique_id)   # ... and A's, crossing it
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)            # A's rekey reaches B: answered, a collision noted
    assert wire.deliver(B, CCSA, True)             # A refuses the answer ...
    assert refused
    assert wire.deliver(A, INFO, False)            # ... and deletes its new Child SA at B
    assert wire.deliver(B, CCSA, False)            # B's rekey reaches A at last: answered
    assert wire.deliver(A, CCSA, True)             # B installs its new Child SA
    wire.run()
    b_events = net.take(B)
    ups = [e for e in b_events if isinstance(e, ChildSaUp) and e.rekey_of == old.unique_id and e.initiator]
    assert len(ups) == 1, b_events
    downs = {e.unique_id: e.reason for e in b_events if isinstance(e, ChildSaDown)}
    assert downs.get(old.unique_id) is DownReason.REKEYED, b_events   # the old one goes (our DELETE)
    assert ups[0].unique_id not in downs, b_events                     # ours stays
    assert [c.unique_id for c in ours.children] == [ups[0].unique_id]
    assert [c.spi_out for c in peer.children] == [ups[0].spi_in]       # the same one at A
