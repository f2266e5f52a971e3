"""What a widening took back yields to the peer that held it (services/ike/widen.py, TsClaims.yielding;
review revwiden F1: a site away longer than the hold-off was refused its network for the life of the
full tunnel's IKE SA, as the widening had booked it as ours).

The hub of test_ikeservice_widen: spoke 0, a site that chose 10.8.0.0/16 of its 10.0.0.0/8, spoke 1
a full tunnel whose Child SA we proposed without it.  The site goes, the full tunnel is widened;
the site comes back: its Child SA is admitted, and ours is created again around it (make-before-
break, reversed).  A real IkeService, the worker's request handling and the C fast path in process;
the spokes' IKE engines in memory."""

from __future__ import annotations

import logging

import pytest
from test_ikeservice_initiator_claims import Hub, Net, Spoke, hub, reaches
from test_ikeservice_peers import run
from test_ikeservice_widen import (
    FULL,
    HOLD_OFF,
    SITE,
    _after_hold_off,
    _full_tunnel,
    _site_and_full_tunnel,
    count_initiations,
)

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.ike.ts import Ts
from tunsec.services.ike import widen

WHOLE = [(Ts.parse("0.0.0.0/0"),)]
AROUND = [(Ts.parse("0.0.0.0-10.7.255.255"), Ts.parse("10.9.0.0-255.255.255.255"))]


@pytest.fixture(autouse=True)
def _short_hold_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF)


async def _widened(h: Hub) -> None:
    h.service.terminate("spoke0")
    await h.settle()
    await _after_hold_off(h)
    assert _full_tunnel(h) == WHOLE


def test_a_site_back_after_the_widening_narrows_the_full_tunnel_around_it_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _widened(h)
        (wide,) = h.children_of(FULL)
        h.service.initiate("spoke0", "net")   # the site is back: admitted, 10.8.0.0/16 only yielded
        await h.settle()
        await _after_hold_off(h)
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/16"),)]
        # ours created again around it, the widened one deleted: one Child SA of the child, at both ends
        assert _full_tunnel(h) == AROUND
        assert [c.local_ts for c in h.site_sa(FULL).children] == AROUND
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5", "192.0.2.1")] == [SITE, FULL, FULL]
        # make-before-break: the widened SAs left the worker after the narrowed one's were in
        (narrowed,) = h.children_of(FULL)
        log = h.worker.log
        added = max(i for i, m in enumerate(log) if isinstance(m, pipe.Add) and m.sa.spi == narrowed.spi_out)
        removed = min(i for i, m in enumerate(log) if isinstance(m, pipe.Delete)
                      and (m.spi, m.direction) in {(wide.spi_in, Direction.IN), (wide.spi_out, Direction.OUT)})
        assert added < removed
        # and round again: the site goes for longer than the hold-off, its network comes back to us
        await _widened(h)
        assert reaches(h, "10.8.0.5") == FULL
    run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert any("10.8.0.0/16 of spoke0, taken back for it while nobody held it, is that peer's again" in line
               for line in lines), lines
    assert any("carries the child: the widened one (reqid" in line for line in lines), lines


def test_only_what_the_widening_took_yields() -> None:
    """Another peer's selectors that meet the widened claim beyond what was taken back are refused as
    before: the full tunnel's 10.9.0.0/16, which it always held, is not the site's to take."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _widened(h)
        claims = h.service.ts_claims
        peer = object()
        lan = h.children_of(FULL)[0].local_ts
        assert claims.overlaps(peer, (Ts.parse("10.8.1.0/24"),), lan) == []
        assert [common for _, common in claims.overlaps(peer, (Ts.parse("10.8.0.0/15"),), lan)] == \
            [Ts.parse("10.8.0.0/15")]
        assert [common for _, common in claims.overlaps(peer, (Ts.parse("10.9.1.0/24"),), lan)] == \
            [Ts.parse("10.9.1.0/24")]
    run(body())


def test_what_is_still_anothers_is_not_taken_and_its_holder_narrows_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sites (10.8.0.0/16, 10.9.0.0/16) and a full tunnel cut around both: the first site goes, the
    full tunnel is widened with 10.8.0.0/16 only (10.9.0.0/16 is still the second's, and not what it
    took back); the second site's rekeys start nothing; the first site, back, narrows it again."""
    asked = count_initiations(monkeypatch, "spoke2")

    def full(h: Hub) -> list[tuple[Ts, ...]]:
        return [c.remote_ts for c in h.children_of(2)]

    async def body() -> None:
        h = await hub(Spoke("site.example", (Net("net", "10.0.0.0/8", "10.8.0.0/16"),)),
                      Spoke("other.example", (Net("net", "10.0.0.0/8", "10.9.0.0/16"),)),
                      Spoke("full.example", (Net("net", "0.0.0.0/0", "0.0.0.0/0"),)))
        around = (Ts.parse("0.0.0.0-10.7.255.255"), Ts.parse("10.10.0.0-255.255.255.255"))
        assert full(h) == [around]
        h.service.terminate("spoke0")
        await h.settle()
        await _after_hold_off(h)
        assert full(h) == [(Ts.parse("0.0.0.0-10.8.255.255"), Ts.parse("10.10.0.0-255.255.255.255"))]
        assert asked == ["net"]
        for _ in range(3):   # the other site's Child SA rekeyed: its claim released and booked again
            (other,) = h.children_of(1)
            h.hub_sa(1).rekey_child(other.unique_id)
            h.service._pump()
            await h.settle()
            await _after_hold_off(h)
        assert asked == ["net"]
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5", "192.0.2.1")] == [2, 1, 2]
        h.service.initiate("spoke0", "net")   # the first site is back
        await h.settle()
        await _after_hold_off(h)
        assert asked == ["net", "net"]
        assert full(h) == [around]
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5", "192.0.2.1")] == [0, 1, 2]
    run(body())


def test_the_widened_child_sa_rekeyed_and_its_ike_sa_rekeyed_still_give_way() -> None:
    """What was taken back yields for the child in that IKE SA, whatever rekeyed since: the widened Child
    SA (its rekey is the widened one now) and the IKE SA (its handle is kept); the site back is
    admitted, and the rekeyed widened Child SA is the one deleted after the narrowed one is in."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _widened(h)
        (wide,) = h.hub_sa(FULL).children
        h.service.spi_pool.with_spi(lambda: h.hub_sa(FULL).rekey_child(wide.unique_id))
        h.service._pump()
        await h.settle()
        old = h.hub_sa(FULL)
        old.rekey()
        h.service._pump()
        await h.settle()
        assert h.hub_sa(FULL) is not old
        (rekeyed,) = h.children_of(FULL)
        assert rekeyed.spi_in != wide.spi_in and [rekeyed.remote_ts] == WHOLE
        h.service.initiate("spoke0", "net")
        await h.settle()
        await _after_hold_off(h)
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/16"),)]
        assert _full_tunnel(h) == AROUND
        assert [c.local_ts for c in h.site_sa(FULL).children] == AROUND
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5")] == [SITE, FULL]
    run(body())


def test_a_site_back_while_a_replacement_is_out_narrows_the_full_tunnel_once_that_ended() -> None:
    """The site comes back while a replacement of the full tunnel's child is out (its answer, refused
    now, ends it): the narrowing is not lost, it starts a hold-off later."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _widened(h)
        key = (h.children_of(FULL)[0].ike, "net")
        h.service.widening._attempts[key] = widen._Attempt("spoke1", trying=True)   # (one out, for the test)
        h.service.initiate("spoke0", "net")
        await h.settle()
        await _after_hold_off(h)
        assert _full_tunnel(h) == WHOLE and reaches(h, "10.8.0.5") == FULL   # (the wide one's policies, older)
        del h.service.widening._attempts[key]   # it ended
        await _after_hold_off(h)
        assert _full_tunnel(h) == AROUND
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5")] == [SITE, FULL]
    run(body())
