"""Review revworker2 F1: the EXPIREs worker_claims refuses come back as SEQ_OVERFLOW, which it believes.

h/fixworker (review revworker F2) refuses an EXPIRE for a limit the Child SA never went into the worker
with (worker_claims.installed_limit), but takes reason SEQ_OVERFLOW as true whatever the rest says:
soft or hard, inbound or outbound, ESN or not.  A healthy worker sends SEQ_OVERFLOW only one way:
hard, for an outbound SA without ESN whose 2^32 sequence numbers are used up (csrc/dp.c: kill_sa(...,
TS_EXP_SEQ) after next_seq; soft EXPIREs come only from the byte and packet limits, dp.c account, and
the worker's timers, worker.py _time_expired).  A worker taken over that writes reason 4 instead of
reason 1 is back where F2 started: every Child SA of every peer renegotiated without pause (a soft
one: no rekey_bytes needed) and any one deleted with its peer (a hard one naming the inbound SA).

A real IkeService over the in-process worker (the C fast path's SAD), a real IKE engine as the peer
(test_ikeservice_peers.connected), as tests/test_ikeservice_impossible_expire.py; the forged EXPIREs go
through IkeService.on_event as the pipe reader hands them over.  The guard (passes on main, must keep
passing) is the one SEQ_OVERFLOW a healthy worker sends: hard, outbound, no ESN.

Since review revnonce F1 (h/fixseqsoft) a healthy worker also sends a soft SEQ_OVERFLOW, 2^26 numbers
before a non-ESN SA's last, with the SA's counters; it is believed only with counters that far and an
SA old enough (tests/test_ikeservice_seq_soft.py).  The forged ones here carry no counters: refused.
"""

from __future__ import annotations

import ipaddress

from test_ikeservice_peers import connected, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint, ExpireReason
from tunsec.ike.events import ChildSaUp

ROUNDS = 10


def _peer() -> Endpoint:
    return Endpoint(ipaddress.ip_address(site_ip(0)), 4500)


def test_soft_seq_overflow_expires_rekey_nothing() -> None:
    """Fails on main: ten forged soft EXPIREs with reason SEQ_OVERFLOW (no counters: not as a worker sends one) are
    ten rekeys with the peer, the child having neither rekey_bytes nor rekey_packets."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        spec = gw.service.connections["gw"].child("net")
        assert spec.soft_limits() == (0, 0, 0)   # the worker holds no soft limit for it at all
        ups_before = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0])
        for _ in range(ROUNDS):
            newest = max(gw.children_of(0), key=lambda c: c.handle)
            gw.service.on_event(pipe.Expire(spi=newest.spi_out, direction=Direction.OUT, hard=False,
                                            reason=ExpireReason.SEQ_OVERFLOW, remote=_peer()))
            await gw.settle()
        rekeys = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0]) - ups_before
        (after,) = gw.children_of(0)
        assert rekeys == 0 and after.handle == child.handle, \
            f"{rekeys} rekeys with the peer for {ROUNDS} soft SEQ_OVERFLOW EXPIREs (refused: " \
            f"{gw.service.refused_expires})"

    run(body())


def test_a_hard_seq_overflow_of_an_inbound_sa_deletes_nothing() -> None:
    """Fails on main: a forged hard SEQ_OVERFLOW EXPIRE naming the inbound SA (whose sequence numbers
    the worker never spends: it only checks the peer's) deletes the Child SA with the peer."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        gw.service.on_event(pipe.Expire(spi=child.spi_in, direction=Direction.IN, hard=True,
                                        reason=ExpireReason.SEQ_OVERFLOW))
        await gw.settle()
        assert [c.handle for c in gw.children_of(0)] == [child.handle], \
            f"the Child SA was deleted (refused: {gw.service.refused_expires})"

    run(body())


def test_guard_a_hard_seq_overflow_of_an_outbound_sa_without_esn_is_believed() -> None:
    """Passes on main, and must after the fix: the one SEQ_OVERFLOW a healthy worker sends (hard, the
    outbound SA of a Child SA without ESN) still ends that Child SA (it can send no more)."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        assert not child.esn
        gw.service.on_event(pipe.Expire(spi=child.spi_out, direction=Direction.OUT, hard=True,
                                        reason=ExpireReason.SEQ_OVERFLOW, remote=_peer()))
        await gw.settle()
        assert child.handle not in [c.handle for c in gw.children_of(0)]
        assert gw.service.refused_expires == 0

    run(body())
