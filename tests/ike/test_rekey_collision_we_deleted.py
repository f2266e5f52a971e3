"""Review revrekey5 F3: the collision variant of review revrekey4 F3 that h/fixrekey5 fixed for the
peer's DELETE (Task.peer_withdrew), through our own DELETE instead.  Both sides rekey one Child SA; we
answer the peer's rekey (n1) while ours is out, then delete n1 ourselves (IkeSa.delete_child: its
install failed in the worker after the answer left, or the claims backstop).  informational.delete_ours
-> unrekey resets the old Child SA but does not tell our request that is out (no peer_withdrew), so
when its answer comes, ours -- the lowest nonce's -- is deleted as redundant to the n1 we deleted
ourselves, the peer (whose rekey won) deletes the old one, and the child is gone on both sides,
where ours, up at both, would carry it on.  unrekey also re-armed the old one's rekey timer while our
rekey of it was out (a second rekey of it was queued), which the withdrawal's re-arm did not do: both
follow one rule now (sa_timers.rearm, h/fixrekeytail)."""

from __future__ import annotations

import dataclasses
import random

from test_engine_more import A, B, cfg, only
from test_nonce_reflection import _next_nonce_is
from test_rekey_collision import CCSA, Reordering, _pair

from tunsec.ike.config import IkeConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import ChildSa
from tunsec.ike.testing import EPOCH, Network


def _crossed_then_deleted(net: Network, a: IkeEndpoint, b: IkeEndpoint
                          ) -> tuple[IkeSa, IkeSa, ChildSa, ChildSa, Reordering]:
    """B rekeys its Child SA, A's rekey of it crosses B's, B answers A's (n1) and deletes n1: A's and
    B's IKE SA, B's old Child SA, n1, and the wire with the rest in flight."""
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    net.take(A), net.take(B)
    _next_nonce_is(ours, bytes(NONCE_LEN))         # our Ni: the lowest nonce (ours is the redundant one)
    ours.rekey_child(old.unique_id)                # B's rekey ...
    peer.rekey_child(peer.children[0].unique_id)   # ... and A's, crossing it
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)            # A's rekey reaches B: answered (n1), a collision noted
    n1 = next(c for c in ours.children if c.peer_rekey_of == old.unique_id)
    ours.delete_child(n1.unique_id)                # n1's install failed here after the answer left
    return peer, ours, old, n1, wire


def test_our_rekey_that_crossed_a_peer_rekey_we_then_deleted_carries_the_child_on() -> None:
    net, a, b = _pair(5)
    peer, ours, _, _, wire = _crossed_then_deleted(net, a, b)
    wire.run()
    assert ours.children and peer.children, "no Child SA left on either side"
    assert [c.spi_out for c in peer.children] == [c.spi_in for c in ours.children]


REKEY_TIME = 3600.0   # both sides' own timers: far beyond what the test below runs


def _hourly_pair(seed: int) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    def hourly(initiator: bool) -> IkeConfig:
        base = cfg(initiator)
        return dataclasses.replace(base, children=tuple(dataclasses.replace(c, rekey_time=REKEY_TIME)
                                                        for c in base.children))
    net = Network()
    a = net.add(A, IkeEndpoint([hourly(True)], random.Random(seed).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([hourly(False)], random.Random(seed + 1000).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run(until=1.0)
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, b


def _rekeys_of(sa: IkeSa, child: ChildSa) -> int:
    """How many of ``sa``'s requests, out or queued, rekey ``child``."""
    tasks = [*([sa._pending.task] if sa._pending is not None else []), *sa._queue]
    return sum(t.rekeying is child for t in tasks)


def test_our_delete_of_the_crossing_rekeys_child_sa_queues_no_second_rekey_of_the_old_one() -> None:
    """unrekey re-armed the old Child SA's rekey timer (2-10 s) while our rekey of it was out; with
    that rekey's answer late the timer fired and queued a second rekey of the old one.  The timer
    stays at "under way" (inf) as sa_timers.rearm has it; our rekey alone replaces the old one."""
    net, a, b = _hourly_pair(5)
    peer, ours, old, n1, wire = _crossed_then_deleted(net, a, b)
    assert old.rekey_at == float("inf")            # our rekey of it is out: not re-armed
    start = net.now
    net.drop = lambda sent: sent.time < start + 15.0   # the rest is lost for 15 s: our rekey stays out
    wire.flight.clear()
    net.run(until=start + 15.0)
    assert _rekeys_of(ours, old) == 1, "a second rekey of the old Child SA was queued"
    net.drop = None
    net.run(until=start + 120.0)                   # retransmissions get through
    live = [c for c in ours.children if c.installed]
    assert len(live) == 1 and live[0] is not old and live[0] is not n1
    assert [c.spi_out for c in peer.children] == [c.spi_in for c in ours.children]
