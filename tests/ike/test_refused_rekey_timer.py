"""Review revresp R1: after the answer to the peer's rekey is refused (TEMPORARY_FAILURE: our install of
its new Child SA failed, child_refusal.py) our rekey timer for the old Child SA was re-armed at 2-10 s
(retry_at), while the initiator retries its own rekey 2-10 s later too (strongSwan 6-15 s): both sides
likely rekeyed one Child SA at once, a collision, and ours started while our worker had just refused an
install.  RFC 7296 §2.25 leaves the retry to the initiator: our own timer is restored (rekey_time from
the Child SA's creation, as first armed), and if that moment has passed, a jittered delay clearly after
the initiator's retry, before the hard lifetime (sa_timers.own_rekey_at).  Two engines on the fake
clock; the refusal is made as the service's barrier makes it (test_engine_refuse_child.py)."""

from __future__ import annotations

import dataclasses
import random

from test_child_retry import Pool, _requests
from test_engine_more import A, B, cfg, only
from test_engine_refuse_child import _refused_in_flight

from tunsec.ike.config import IkeConfig
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import ChildSaUp
from tunsec.ike.sa import IkeSa
from tunsec.ike.sa_timers import REFUSED_REKEY_DELAY
from tunsec.ike.testing import EPOCH, Network

REKEY_TIME = 3600.0


def _rekeying(initiator: bool, rekey_time: float, **child: float | None) -> IkeConfig:
    base = cfg(initiator)
    return dataclasses.replace(base, children=tuple(dataclasses.replace(c, rekey_time=rekey_time, **child)
                                                    for c in base.children))


def _pair(seed: int, b_cfg: IkeConfig, pool: Pool | None = None) -> tuple[Network, IkeSa, IkeSa]:
    net = Network()
    a = net.add(A, IkeEndpoint([_rekeying(True, REKEY_TIME)], random.Random(seed).randbytes,
                               wall_clock=lambda: EPOCH))
    b = net.add(B, IkeEndpoint([b_cfg], random.Random(seed + 1000).randbytes, spi_allocator=pool,
                               wall_clock=lambda: EPOCH))
    a.initiate("conn", "net", net.now)
    net.run(until=1.0)
    assert only(net.take(A), ChildSaUp) and only(net.take(B), ChildSaUp)
    return net, a.sas[0], b.sas[0]


def _peer_rekey_refused(net: Network, sa_a: IkeSa, sa_b: IkeSa) -> None:
    """A rekeys its Child SA; B answers and refuses the answer (its install failed); A gets the refusal."""
    sa_a.rekey_child(sa_a.children[0].unique_id)
    (request,) = net.collect()
    net.deliver(request)
    new_b = next(c for c in sa_b.children if c.peer_rekey_of is not None)
    for sent in _refused_in_flight(net, sa_b, new_b.unique_id):
        net.deliver(sent)


def test_our_own_rekey_timer_is_restored_and_the_retry_left_to_the_initiator() -> None:
    for seed in range(6):
        net, sa_a, sa_b = _pair(seed, _rekeying(False, REKEY_TIME))
        old_b = sa_b.children[0]
        due = old_b.rekey_at                           # our own timer, armed when it came up
        assert due is not None and REKEY_TIME * 0.9 <= due <= REKEY_TIME + 1.0
        net.run(until=100.0)
        mark, start = len(net.log), net.now
        _peer_rekey_refused(net, sa_a, sa_b)
        assert sa_b.children == [old_b] and old_b.rekey_at == due, seed   # not in 2-10 s
        net.take(B)                                    # (the refused one, up and down)
        net.run(until=start + 2 * REFUSED_REKEY_DELAY)
        assert not _requests(net, mark, B), seed       # no rekey of ours crossed the peer's retry
        ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
        assert [(e.rekey_of, e.initiator) for e in ups] == [(old_b.unique_id, False)], seed
        assert [c.spi_out for c in sa_a.children] == [c.spi_in for c in sa_b.children]


def test_when_our_own_timer_has_passed_the_rekey_waits_past_the_initiators_retry_and_the_hard_lifetime() -> None:
    """Our own rekey of the Child SA failed (no inbound SPI: backing off) when the peer's rekey came; our
    answer to it is refused.  Our timer's moment has passed: the rekey waits REFUSED_REKEY_DELAY (up to
    twice that), not 2-10 s; with a hard lifetime close, half the time left to it."""
    for life_time, latest in ((None, 2 * REFUSED_REKEY_DELAY), (130.0, (130.0 - 101.0) / 2)):
        pool = Pool(7)
        net, sa_a, sa_b = _pair(3, _rekeying(False, 100.0, rand_time=0.0, life_time=life_time), pool)
        old_b = sa_b.children[0]
        pool.empty = 1                                 # our rekey at 100 s finds no inbound SPI
        net.run(until=101.0)
        assert old_b.rekey_at is not None and 101.0 < old_b.rekey_at < float("inf")   # backing off
        sa_a.children[0].rekey_at = None               # (the peer's own timer plays no part)
        _peer_rekey_refused(net, sa_a, sa_b)
        at = old_b.rekey_at
        assert at is not None, life_time
        if life_time is None:
            assert net.now + REFUSED_REKEY_DELAY <= at <= net.now + latest, (at, net.now)
        else:
            assert at == net.now + latest, (at, net.now)   # before the worker's hard EXPIRE
