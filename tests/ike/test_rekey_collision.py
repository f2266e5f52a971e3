"""Simultaneous IKE SA rekeying (RFC 7296 §2.8.2), two engines on a fake clock.

Both sides start a rekey of the same IKE SA at the same moment. Each answers
the other's request; of the two new IKE SAs the one whose exchange had the
lowest of the four nonces is deleted by the side that initiated it, the other
takes over the Child SAs, and its initiator deletes the old IKE SA. No
TEMPORARY_FAILURE, no retry some seconds later.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random

import pytest
from test_engine_more import A, B, cfg, only

from tunsec.ike.config import IkeConfig
from tunsec.ike.constants import ExchangeType
from tunsec.ike.endpoint import Datagram, IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason, IkeSaDown, IkeSaRekeyed, NegotiationFailed
from tunsec.ike.exchanges.rekey_ike import redundant_is_ours
from tunsec.ike.identity import Identity
from tunsec.ike.message import decode_header
from tunsec.ike.sa import State
from tunsec.ike.state import ChildSa
from tunsec.ike.testing import EPOCH, Network, Sent


def _pair(seed: int) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    rng_a, rng_b = random.Random(seed), random.Random(seed + 1000)
    net = Network()
    a = net.add(A, IkeEndpoint([cfg(True)], rng_a.randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([cfg(False)], rng_b.randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run()
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, b


def _held(a: IkeEndpoint, b: IkeEndpoint) -> tuple[int, int]:
    """The IKE SAs each side counts for its peer's identity (max_ike_sas_per_identity)."""
    return (a._ike_sa_counts.held("conn", Identity.parse("sun.example")),
            b._ike_sa_counts.held("conn", Identity.parse("moon.example")))


def _exchanges(net: Network, exchange: int, since: int) -> list[float]:
    return [s.time for s in net.log[since:] if decode_header(s.data).exchange == exchange]


def _collide(seed: int, first: str) -> bool:
    """Run one collision; True if A's exchange made the surviving IKE SA."""
    net, a, b = _pair(seed)
    old_a, old_b = a.sas[0], b.sas[0]
    children = [(c.unique_id, c.spi_in, c.spi_out) for c in old_a.children]
    peer_children = [(c.spi_in, c.spi_out) for c in old_b.children]
    start, mark = net.now, len(net.log)
    for sa in ((old_a, old_b) if first == "A" else (old_b, old_a)):
        sa.rekey()
    net.run()
    # exactly one new IKE SA, the same on both sides
    assert len(a.sas) == 1 and len(b.sas) == 1, (a.sas, b.sas)
    new_a, new_b = a.sas[0], b.sas[0]
    assert old_a.is_closed and old_b.is_closed
    assert (new_a.spi_i, new_a.spi_r) == (new_b.spi_i, new_b.spi_r) != (old_a.spi_i, old_a.spi_r)
    assert new_a.is_initiator != new_b.is_initiator
    # the Child SAs moved over untouched, on both sides
    assert [(c.unique_id, c.spi_in, c.spi_out) for c in new_a.children] == children
    assert [(c.spi_in, c.spi_out) for c in new_b.children] == peer_children
    # the survivor holds its lineage's place on both sides, not the redundant SA deleted meanwhile
    assert _held(a, b) == (1, 1)
    for ip in (A, B):
        events = net.take(ip)
        assert len(only(events, IkeSaRekeyed)) == 1, events
        assert not only(events, IkeSaDown) and not only(events, ChildSaDown), events
        (rekeyed,) = only(events, IkeSaRekeyed)
        assert (rekeyed.new_spi_i, rekeyed.new_spi_r) == (new_a.spi_i, new_a.spi_r)
    # two rekey exchanges, both at the start (no refusal, no retry seconds later);
    # two DELETEs (the old IKE SA and the redundant new one), answered at once
    assert _exchanges(net, ExchangeType.CREATE_CHILD_SA, mark) == [start] * 4
    assert _exchanges(net, ExchangeType.INFORMATIONAL, mark) == [start] * 4
    # the survivor works: a Child SA rekey, then a delete, over it
    new_b.rekey_child(new_b.children[0].unique_id)
    net.run()
    assert len(only(net.take(A), ChildSaUp)) == 1 and len(only(net.take(B), ChildSaUp)) == 1
    new_a.delete()
    net.run()
    assert [type(e).__name__ for e in net.take(B)] == ["ChildSaDown", "IkeSaDown"]
    assert _held(a, b) == (0, 0)
    return new_a.is_initiator


@pytest.mark.parametrize("first", ["A", "B"])
def test_simultaneous_ike_rekey_leaves_one_ike_sa(first: str) -> None:
    winners = {_collide(seed, first) for seed in range(8)}
    # the nonces decide: over these seeds each side's exchange survives at least once
    assert winners == {True, False}


@pytest.mark.parametrize("late", [A, B])
@pytest.mark.parametrize("seed", range(6))
def test_the_winners_delete_may_overtake_the_losers_answer(late: str, seed: int) -> None:
    """The answer to one side's rekey is lost: the other side settles the collision first and
    deletes the old IKE SA. Whichever side that leaves behind takes the surviving SA as it is,
    with the Child SAs, and does not close them with the old one."""
    net, a, b = _pair(seed)
    children = [(c.spi_in, c.spi_out) for c in a.sas[0].children]
    lost: list[bool] = []

    def lose_first_answer(sent: Sent) -> bool:
        hdr = decode_header(sent.data)
        if not lost and sent.dst[0] == late and hdr.exchange == ExchangeType.CREATE_CHILD_SA and hdr.is_response:
            lost.append(True)
            return True
        return False

    net.drop = lose_first_answer
    a.sas[0].rekey()
    b.sas[0].rekey()
    net.run()
    assert lost
    live_a = [sa for sa in a.sas if not sa.is_closed]
    live_b = [sa for sa in b.sas if not sa.is_closed]
    assert len(live_a) == 1 and len(live_b) == 1, (a.sas, b.sas)
    assert (live_a[0].spi_i, live_a[0].spi_r) == (live_b[0].spi_i, live_b[0].spi_r)
    assert [(c.spi_in, c.spi_out) for c in live_a[0].children] == children
    assert _held(a, b) == (1, 1)
    for ip in (A, B):
        events = net.take(ip)
        assert not only(events, IkeSaDown) and not only(events, ChildSaDown), events


def _child_collision_behind_ike_rekey(seed: int) -> bool:
    """One run of the test below; True if A's new Child SA was the redundant one."""
    net, a, b = _pair(seed)
    old_a, old_b = a.sas[0], b.sas[0]
    old_a.rekey_child(old_a.children[0].unique_id)
    old_b.rekey_child(old_b.children[0].unique_id)
    old_a.rekey()     # waits behind A's Child SA rekey
    net.run()
    live_a = [sa for sa in a.sas if not sa.is_closed]
    live_b = [sa for sa in b.sas if not sa.is_closed]
    assert len(live_a) == 1 and len(live_b) == 1, (a.sas, b.sas)
    assert live_a[0].spi_r == live_b[0].spi_r != old_a.spi_r   # the IKE SA was rekeyed
    pairs_a = [(c.spi_in, c.spi_out) for c in live_a[0].children]
    pairs_b = [(c.spi_out, c.spi_in) for c in live_b[0].children]
    assert len(pairs_a) == 1 and pairs_a == pairs_b, (pairs_a, pairs_b)
    downs = only(net.take(A), ChildSaDown)
    return any(d.reason is DownReason.REKEY_COLLISION for d in downs)


def test_a_child_rekey_collision_settled_behind_an_ike_rekey() -> None:
    """Both ends rekey the Child SA at once while A has an IKE SA rekey queued behind its own.
    A settles the collision when its answer comes (RFC 7296 §2.8.1) and queues the DELETE of
    its new Child SA if that one is redundant, behind the IKE SA rekey; the DELETE moves to the
    new IKE SA with the rest of the queue and must leave there at once.  It used to wait for the
    next exchange started on the new IKE SA: when that was the peer's rekey of the redundant
    Child SA (test_ike_memory, ~1 run in 10), the rekey replaced it first and both Child SAs
    lived on, each rekeyed for ever."""
    redundant = {_child_collision_behind_ike_rekey(seed) for seed in range(8)}
    assert redundant == {True, False}   # the nonces decide: each side's Child SA lost at least once


class Reordering:
    """The datagrams in flight, delivered one at a time in the order a test picks (the wire of
    ``Network`` keeps them in order; UDP does not)."""

    def __init__(self, net: Network) -> None:
        self.net, self.flight = net, net.collect()

    def deliver(self, src: str, exchange: int, response: bool) -> bool:
        """Deliver the first datagram in flight from ``src`` of this kind; False if there is none."""
        for sent in self.flight:
            hdr = decode_header(sent.data)
            if sent.src[0] == src and hdr.exchange == exchange and hdr.is_response == response:
                self.flight.remove(sent)
                self.net.deliver(sent)
                self.flight += self.net.collect()
                return True
        return False

    def run(self) -> None:
        """Deliver the rest in order, then let the network settle (timers included)."""
        while self.flight:
            self.net.deliver(self.flight.pop(0))
            self.flight += self.net.collect()
        self.net.run()


def _one_child_pair(a: IkeEndpoint, b: IkeEndpoint) -> list[tuple[int, int]]:
    live_a = [sa for sa in a.sas if not sa.is_closed]
    live_b = [sa for sa in b.sas if not sa.is_closed]
    assert len(live_a) == 1 and len(live_b) == 1, (a.sas, b.sas)
    pairs_a = [(c.spi_in, c.spi_out) for c in live_a[0].children]
    pairs_b = [(c.spi_out, c.spi_in) for c in live_b[0].children]
    assert pairs_a == pairs_b, (pairs_a, pairs_b)
    return pairs_a


CCSA, INFO = ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL


@pytest.mark.parametrize("seed", range(8))
def test_a_child_rekey_answered_across_an_ike_rekey_is_not_lost(seed: int) -> None:
    """test_ike_memory's 'IKE SA up but no Child SA'.  Both ends rekey the Child SA; A's rekey goes
    through first and A rekeys the IKE SA right after; B's rekey request is slow.  B answered A's
    IKE SA rekey while its own Child SA rekey was out, and A answered that rekey while its IKE SA
    rekey was out; A's DELETE of the old IKE SA then overtook its answer to B's rekey.  B took its
    rekey for unanswered and deleted the Child SA it had offered; A had settled the collision for
    that very SA and deleted its own: no Child SA was left on either side.  RFC 7296 §2.25 refuses
    both crossings with TEMPORARY_FAILURE, and each side tries again."""
    net, a, b = _pair(seed)
    old_a, old_b = a.sas[0], b.sas[0]
    old_a.rekey_child(old_a.children[0].unique_id)
    old_a.rekey()                                  # waits behind A's Child SA rekey
    old_b.rekey_child(old_b.children[0].unique_id)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)            # A's Child SA rekey reaches B first...
    assert wire.deliver(B, CCSA, True)             # ... and its answer comes back: A rekeys the IKE SA
    assert wire.deliver(A, CCSA, False)            # which B answers while its Child SA rekey is out
    assert wire.deliver(B, CCSA, False)            # B's Child SA rekey reaches A, still rekeying
    wire.deliver(B, CCSA, True)                    # B's answer to the IKE SA rekey
    while wire.deliver(A, INFO, False):            # A's DELETEs overtake its answer to B's rekey
        pass
    wire.run()
    assert len(_one_child_pair(a, b)) == 1


def _rekeying(initiator: bool) -> IkeConfig:
    """One child, rekeyed every ~20 s, the IKE SA every ~50 s (strongSwan's 10 % jitter), from both ends."""
    base = cfg(initiator)
    child = dataclasses.replace(base.children[0], rekey_time=20.0)
    return dataclasses.replace(base, children=(child,), rekey_time=50.0, over_time=40.0)


@pytest.mark.parametrize("seed", range(4))
def test_rekeys_over_a_reordering_wire_leave_one_child_sa(seed: int) -> None:
    """Both ends rekey the Child SA and the IKE SA on their timers for 1000 s while the wire delays
    each datagram by 1 ms to 2 s at random, so that exchanges cross and datagrams overtake each
    other.  Whenever nothing is in flight and no exchange is out, each side has one IKE SA and one
    Child SA, the same pair on both sides, and exactly the Child SAs its events installed."""
    rng = random.Random(seed)
    eps = {ip: IkeEndpoint([_rekeying(ip == A)], random.Random(f"{seed}{ip}").randbytes, wall_clock=lambda: EPOCH)
           for ip in (A, B)}
    installed: dict[str, dict[int, int]] = {A: {}, B: {}}
    wire: list[tuple[float, int, str, Datagram]] = []
    seq = itertools.count()
    now, quiet = 0.0, 0

    def collect() -> None:
        for ip, ep in eps.items():
            for d in ep.datagrams_to_send(now):
                heapq.heappush(wire, (now + rng.uniform(0.001, 2.0), next(seq), ip, d))
            while (got := ep.next_event()) is not None:
                ev = got[1]
                if isinstance(ev, ChildSaUp):
                    installed[ip][ev.spi_in] = ev.spi_out
                elif isinstance(ev, ChildSaDown):
                    assert installed[ip].pop(ev.spi_in) == ev.spi_out
                assert not isinstance(ev, IkeSaDown), ev

    eps[A].initiate("conn", "net", now)
    collect()
    while now < 1000.0:
        timers = [t for t in (ep.get_timer() for ep in eps.values()) if t is not None]
        now = max(now, min([*timers, *(wire[0][:1] if wire else ())]))
        while wire and wire[0][0] <= now:
            _, _, src, d = heapq.heappop(wire)
            eps[d.addr[0]].receive(d.data, (src, d.local_port), now, local_addr=d.addr)
            collect()
        for ep in eps.values():
            ep.handle_timer(now)
        collect()
        if wire or any(sa._pending or sa._queue for ep in eps.values() for sa in ep.sas if not sa.is_closed):
            continue
        quiet += 1
        live = {ip: [sa for sa in ep.sas if sa.state is State.ESTABLISHED] for ip, ep in eps.items()}
        assert len(live[A]) == 1 and len(live[B]) == 1, f"at {now:.1f}: {live}"
        pairs = {ip: {c.spi_in: c.spi_out for c in live[ip][0].children} for ip in (A, B)}
        assert len(pairs[A]) == 1 and pairs[A] == {o: i for i, o in pairs[B].items()}, f"at {now:.1f}: {pairs}"
        assert pairs == installed, f"at {now:.1f}: engine {pairs}, events {installed}"
    assert quiet > 40   # ~50 Child SA and ~20 IKE SA rekeys, with quiet moments between


def _lost_collision(seed: int) -> tuple[Network, IkeEndpoint, IkeEndpoint, Reordering, ChildSa] | None:
    """Both ends rekey the Child SA; A has settled the collision, and its new Child SA lost: A's
    DELETE of it is out.  None if A's won (the nonces decide)."""
    net, a, b = _pair(seed)
    old_a, old_b = a.sas[0], b.sas[0]
    old_a.rekey_child(old_a.children[0].unique_id)
    old_b.rekey_child(old_b.children[0].unique_id)
    old = old_a.children[0]
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False) and wire.deliver(B, CCSA, False)   # crossing: both see it
    assert old_a._pending is not None
    collision = getattr(old_a._pending.task, "collision", None)   # (the peer's lowest nonce, its SA)
    assert collision is not None
    assert wire.deliver(B, CCSA, True)                                     # A settles first
    assert old.rekeyed_by_us is not None
    our_min, ours = old.rekeyed_by_us
    if not redundant_is_ours(our_min, collision[0]):
        return None
    (theirs,) = [c for c in old_b.children if c.spi_out == ours.spi_in]
    old_b.rekey_child(theirs.unique_id)   # B rekeys A's redundant Child SA (queued behind its own rekey)
    return net, a, b, wire, ours


def _no_successor(net: Network, a: IkeEndpoint, b: IkeEndpoint, redundant: ChildSa) -> None:
    """One Child SA pair is left, and no Child SA rekeyed the redundant one on either side."""
    assert len(_one_child_pair(a, b)) == 1
    for ip in (A, B):
        events = net.take(ip)
        assert not only(events, NegotiationFailed), events   # a race the protocol settles, not a failure
        ups = only(events, ChildSaUp)
        spis = {(redundant.spi_in, redundant.spi_out), (redundant.spi_out, redundant.spi_in)}
        uids = {e.unique_id for e in ups if (e.spi_in, e.spi_out) in spis}
        assert not [e for e in ups if e.rekey_of in uids], ups


@pytest.mark.parametrize("delete_done", [False, True], ids=["while-deleting", "after-delete"])
def test_the_peers_rekey_of_our_redundant_child_sa_is_refused(delete_done: bool) -> None:
    """After a Child SA rekey collision A deletes its redundant new Child SA, and B, which has not
    heard that DELETE yet, rekeys it.  A refuses: TEMPORARY_FAILURE while its DELETE is out,
    CHILD_SA_NOT_FOUND once it is done (RFC 7296 §2.25.1), and B drops the rekey quietly.  It used
    to be answered, and the redundant Child SA's successor lived on next to the winner: two Child
    SAs (and in the IKE service, two lineages) for one configured child."""
    lost = 0
    for seed in range(8):
        found = _lost_collision(seed)
        if found is None:
            continue
        lost += 1
        net, a, b, wire, redundant = found
        assert wire.deliver(A, CCSA, True)        # B settles; its rekey of A's redundant SA leaves
        if delete_done:
            assert wire.deliver(A, INFO, False)   # A's DELETE of it reaches B, B's answer reaches A
            assert wire.deliver(B, INFO, True)
        assert wire.deliver(B, CCSA, False)       # B's rekey of it reaches A
        wire.run()
        _no_successor(net, a, b, redundant)
    assert lost >= 2
