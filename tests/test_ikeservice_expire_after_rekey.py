"""Review revrekey6 F2 (unit half; the end-to-end proof is tests/e2e/test_review_revrekey6_rekeyed_expire_unowned.py):
an honest worker's EXPIRE of an SA of a Child SA just rekeyed is the IKE service's (going_sas.py), not an
unowned event, until GRACE seconds after the SA's DELETE was answered; an SPI never ours stays unowned.

A real IkeService over the in-process worker (the C fast path's SAD), a real IKE engine as the peer
(test_ikeservice_peers.connected); the site rekeys, and the EXPIREs go through IkeService.on_event as
the pipe reader hands them over.  Timers are fired by hand (fire_timers) and the registry's clock
moved, not waited for.
"""

from __future__ import annotations

import ipaddress

from test_ikeservice_peers import Gateway, connected, run, site_ip
from test_ikeservice_rekey import fire_timers

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, Endpoint, ExpireReason
from tunsec.ike.config import DEFAULT_MAX_CHILD_SAS
from tunsec.services.ike.going_sas import GRACE


def _expire(spi: int, direction: Direction, hard: bool = False) -> pipe.Expire:
    remote = Endpoint(ipaddress.ip_address(site_ip(0)), 4500) if direction is Direction.OUT else None
    return pipe.Expire(spi=spi, direction=direction, hard=hard, reason=ExpireReason.PACKETS, remote=remote)


async def _rekeyed(gw: Gateway) -> tuple[int, int]:
    """The site rekeys its Child SA; the old one's (inbound, outbound) SPIs."""
    (old,) = gw.children_of(0)
    site = gw.site_sa(0)
    site.rekey_child(site.children[0].unique_id)
    await gw.settle()
    (new,) = gw.children_of(0)
    assert new.handle != old.handle
    return old.spi_in, old.spi_out


def test_expires_of_a_rekeyed_child_sas_sas_are_claimed_quietly_and_rekey_nothing() -> None:
    """Fails on main: on_event gives False for both (the daemon counts them unowned, with a WARNING)."""
    async def body() -> None:
        gw = await connected(1)
        svc = gw.service
        spi_in, spi_out = await _rekeyed(gw)
        (new,) = gw.children_of(0)
        assert svc._lingering, "the old inbound SA lingers"
        assert svc.on_event(_expire(spi_out, Direction.OUT)) is True
        assert svc.on_event(_expire(spi_in, Direction.IN, hard=True)) is True
        await gw.settle()
        assert svc.expires_after_rekey == 2 and svc.refused_expires == 0
        assert [c.handle for c in gw.children_of(0)] == [new.handle], "an EXPIRE of a let-go SA rekeyed or deleted"
        # the worker removed the lingering inbound SA at its hard limit: it lingers no more
        assert not svc._lingering and all(s.spi != spi_in for s in gw.worker.dp.sas())
        # an SPI the service never installed is still not its own (the daemon's unowned_events)
        assert svc.on_event(_expire(0x0BADBEEF, Direction.IN)) is False
        assert svc.on_event(_expire(0x0BADBEEF, Direction.OUT)) is False

    run(body())


def test_a_let_go_sa_is_not_ours_after_its_grace() -> None:
    """GRACE after the DELETEs were answered (the linger's timer fired by hand, the registry's clock
    moved on), an EXPIRE naming them is unowned; before, it is still ours."""
    async def body() -> None:
        gw = await connected(1)
        svc = gw.service
        spi_in, spi_out = await _rekeyed(gw)
        assert len(svc.going) == 2
        fire_timers(svc)   # the inbound SA's linger ends: its DELETE goes, and is answered
        await gw.settle()
        assert svc.on_event(_expire(spi_in, Direction.IN)) is True   # within the grace after its DELETE
        now = svc.going.now()
        svc.going.clock = lambda: now + GRACE
        assert svc.going.owner(spi_in, Direction.IN, None) is None and len(svc.going) == 0
        assert svc.on_event(_expire(spi_out, Direction.OUT)) is False
        assert svc.on_event(_expire(spi_in, Direction.IN)) is False
        assert svc.expires_after_rekey == 1

    run(body())


def test_let_go_sas_are_bounded_by_max_child_sas_per_ike_sa() -> None:
    """Rekeys faster than the grace ends keep at most 2 x max_child_sas SA names per IKE SA; a worker
    restart forgets them all."""
    async def body() -> None:
        gw = await connected(1)
        svc = gw.service
        first_in, _ = await _rekeyed(gw)
        for _ in range(DEFAULT_MAX_CHILD_SAS + 5):
            await _rekeyed(gw)
        assert len(svc.going) == 2 * DEFAULT_MAX_CHILD_SAS
        assert svc.on_event(_expire(first_in, Direction.IN)) is False   # the oldest went first
        await svc.worker_restarted()
        assert len(svc.going) == 0

    run(body())
