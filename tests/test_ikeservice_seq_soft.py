"""Review revnonce F1: a Child SA without ESN is rekeyed before its sequence numbers run out.

The fast path raises one soft SEQ_OVERFLOW EXPIRE for an outbound SA without ESN SEQ_SOFT_MARGIN
numbers before its last (csrc/dp.c seq_soft; tests/dataplane/test_review_revnonce_seq_soft.py), and
the worker sends it with the SA's counters (LIFETIME_CURRENT).  The IKE service must take it as a soft
limit (installs.expired: rekey, make-before-break; RFC 4303 §3.3.3), not refuse it as a lie, as it
did before (worker_claims.seq_overflow_possible believed SEQ_OVERFLOW only hard): the Child SA was
then deleted at its last number.  It still refuses one the SA cannot have reached (review revworker2
F1; tests/test_worker_seq_overflow_expire.py): of an inbound SA, without the counters, with fewer
packets than the margin leaves, or more than the SA can have sent since it came up.

A real IkeService over the in-process worker (the C fast path's SAD), a real IKE engine as the peer
(test_ikeservice_peers.connected); the EXPIRE goes through IkeService.on_event as the pipe reader hands
it over, with the counters the worker reads for it (2^32 - 2^26 packets cannot be sent in a test).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
from test_ikeservice_peers import connected, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import SEQ_SOFT_MARGIN, Direction, Endpoint, ExpireReason, Lifetime
from tunsec.ike.events import ChildSaUp
from tunsec.services.ike import worker_claims

AT = 2**32 - SEQ_SOFT_MARGIN
HOUR = 3600.0


def _peer() -> Endpoint:
    return Endpoint(ipaddress.ip_address(site_ip(0)), 4500)


def _soft(child: Any, packets: int | None, direction: Direction = Direction.OUT) -> pipe.Expire:
    """The soft SEQ_OVERFLOW EXPIRE as the worker sends it (worker.py _with_current)."""
    current = None if packets is None else Lifetime(bytes=packets * 100, packets=packets, seconds=int(HOUR))
    spi = child.spi_out if direction is Direction.OUT else child.spi_in
    return pipe.Expire(spi=spi, direction=direction, hard=False, reason=ExpireReason.SEQ_OVERFLOW,
                       remote=_peer() if direction is Direction.OUT else None, current=current)


def test_a_soft_seq_overflow_rekeys_the_child_sa_before_its_numbers_run_out() -> None:
    """Fails before the fix: the soft SEQ_OVERFLOW is refused (counted in refused_expires), no rekey;
    the Child SA goes on to its last number and is deleted there."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        assert not child.esn and gw.service.connections["gw"].child("net").soft_limits() == (0, 0, 0)
        child.registered = time.monotonic() - HOUR   # up an hour: 2^32 - 2^26 packets are 1.2 M a second
        ups_before = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0])
        gw.service.on_event(_soft(child, AT + 1000))
        await gw.settle()
        rekeys = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0]) - ups_before
        assert gw.service.refused_expires == 0, "the soft SEQ_OVERFLOW was refused as a lie"
        (after,) = gw.children_of(0)
        assert rekeys == 1 and after.handle != child.handle and after.reqid == child.reqid
        assert after.spi_out != child.spi_out and not after.esn
        # the new outbound SA carries the traffic; the old one is gone from the worker
        outs = {(s.spi, s.remote) for s in gw.worker.dp.sas() if s.direction is Direction.OUT}
        assert (after.spi_out, after.remote) in outs and (child.spi_out, child.remote) not in outs

    run(body())


@pytest.mark.parametrize(("packets", "age", "direction"), [
    (None, HOUR, Direction.OUT),          # no counters: a worker that sends one reads them
    (AT - 1, HOUR, Direction.OUT),        # not yet at the margin
    (AT + 1000, 1.0, Direction.OUT),      # 4 G packets in a second: more than any worker sends
    (AT + 1000, HOUR, Direction.IN),      # an inbound SA spends no numbers of ours
], ids=["no-counters", "below-the-margin", "too-young", "inbound"])
def test_a_soft_seq_overflow_the_sa_cannot_have_reached_is_refused(packets: int | None, age: float,
                                                                   direction: Direction) -> None:
    """Passes before and after the fix (before it every soft SEQ_OVERFLOW was refused): a worker taken
    over gets no rekey for a claim no worker can make."""
    async def body() -> None:
        gw = await connected(1)
        (child,) = gw.children_of(0)
        child.registered = time.monotonic() - age   # up that long
        ups_before = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0])
        gw.service.on_event(_soft(child, packets, direction))
        await gw.settle()
        rekeys = sum(isinstance(e, ChildSaUp) for e in gw.site_events[0]) - ups_before
        assert rekeys == 0 and [c.handle for c in gw.children_of(0)] == [child.handle]
        assert gw.service.refused_expires == 1

    run(body())


def test_the_margin_leaves_a_rekey_time_at_ten_gigabits() -> None:
    """The margin the fast path warns at (TS_SEQ_SOFT_MARGIN, tests/dataplane/test_c_interface.py) is
    time for rekey round trips at 1.2 M packets/s (10 Gbit/s of 1000-byte packets), and an honest SA at
    the margin is believed at any age the line rate allows."""
    assert SEQ_SOFT_MARGIN / 1.2e6 > 30
    fastest = AT / worker_claims.MAX_PACKET_RATE   # seconds at the bound: below 100 GbE's 148.8 Mpps it is not
    assert fastest < AT / 148.8e6
    assert worker_claims.near_the_end(Lifetime(packets=AT), AT / 148.8e6)
