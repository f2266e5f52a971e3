"""Review revrekey2 F1 and R2, the fix: we answered the peer's rekey of Child SA C with C' and then
deleted C' (its install failed here: informational.delete_ours).  The peer may have our answer and its
rekey done; its DELETE of C then ends a rekey, not the child: reported REKEYED as before h/fixrekey1
(ChildSa.successor_deleted), not DELETED_BY_PEER, which ran close_action = start on both sides and
brought the child up twice (test_ikeservice_close_action_failed_install.py).  C is no longer rekeyed
(the peer may have missed the answer and keep it), so our rekey timer runs for it again: a few seconds
on, not a whole rekey_time, which ended after C's hard lifetime (R2).

Two engines on the fake clock (test_rekey_collision._pair)."""

from __future__ import annotations

import dataclasses
import random

from test_engine_more import A, B, cfg, only
from test_rekey_collision import CCSA, INFO, Reordering

from tunsec.ike.config import IkeConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaDown, ChildSaUp, DownReason
from tunsec.ike.state import ChildSa
from tunsec.ike.testing import EPOCH, Network

REKEY_TIME = 3600.0


def _hourly(initiator: bool) -> IkeConfig:
    base = cfg(initiator)
    return dataclasses.replace(base, children=(dataclasses.replace(base.children[0], rekey_time=REKEY_TIME),))


def _pair() -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([_hourly(True)], random.Random(0).randbytes, wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([_hourly(False)], random.Random(1).randbytes, wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run(until=1.0)
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a, b


def _answered_then_deleted() -> tuple[Network, Reordering, ChildSa]:
    """A rekeys the Child SA; B answers and deletes the new one at once (its install failed).  The
    wire with B's answer and DELETE in flight, and B's old Child SA."""
    net, a, b = _pair()
    sa_a, sa_b = a.sas[0], b.sas[0]
    old_b = sa_b.children[0]
    sa_a.rekey_child(sa_a.children[0].unique_id)
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)               # B answers: the new Child SA is up at B ...
    new_b = next(c for c in sa_b.children if c is not old_b)
    sa_b.delete_child(new_b.unique_id, DownReason.DELETED)   # ... its install fails there: deleted
    wire.flight += net.collect()
    return net, wire, old_b


def test_the_peers_delete_of_the_child_sa_whose_successor_we_deleted_ends_a_rekey() -> None:
    net, wire, old_b = _answered_then_deleted()
    net.take(B)
    assert wire.deliver(B, CCSA, True)                # A installs the new one and DELETEs the old one
    assert wire.deliver(A, INFO, False)               # before B's DELETE of the new one reaches it
    downs = [(e.spi_in, e.reason) for e in net.take(B) if isinstance(e, ChildSaDown)]
    assert downs == [(old_b.spi_in, DownReason.REKEYED)]


def test_our_rekey_timer_runs_for_it_again_in_seconds() -> None:
    net, _, old_b = _answered_then_deleted()
    assert old_b.rekey_at is not None and old_b.rekey_at <= net.now + 10 < REKEY_TIME / 2
