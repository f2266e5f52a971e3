"""The window where a returning peer is inside what a widening took back and the full tunnel is not
narrowed around it yet (services/ike/widen.py; review revwiden2 F1, F2): later narrowings are paced
by the doubled hold-off, and a rekey of the widened Child SA, either side's, is not refused there.

The hub of test_ikeservice_widen: spoke 0, a site that chose 10.8.0.0/16 of its 10.0.0.0/8 (or, for
the pacing, one of two /24s of it), spoke 1 a full tunnel whose Child SA we proposed without it,
widened once the site went.  A real IkeService, the worker's request handling and the C fast path in
process; the spokes' IKE engines in memory.  No timing threshold: the pacing's clock is moved by hand."""

from __future__ import annotations

import pytest
from test_ikeservice_initiator_claims import reaches
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
from test_ikeservice_widen_bounds import WHOLE, _widened_by_the_sites_delete

from tunsec.ike.ts import Ts
from tunsec.services.ike import widen


@pytest.fixture(autouse=True)
def _short_hold_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF)


def test_a_narrowing_soon_after_another_waits_the_doubled_hold_off_then_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The site takes back 10.8.0.0/24 (the full tunnel narrowed around it at once), then swaps it for
    10.8.1.0/24 within the hold-off: that narrowing waits (the wide one's policies, older, carry
    10.8.1.0/24 meanwhile), and once the doubled hold-off is over (the clock moved by hand) it comes."""
    async def body() -> None:
        h = await _widened_by_the_sites_delete()
        key = (h.children_of(FULL)[0].ike, "net")
        asked = count_initiations(monkeypatch, "spoke1")
        monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF * 1000)   # (no widening check due during the swaps)
        h.site_sa(SITE).initiate("a")
        await h.settle()
        assert len(asked) == 1 and reaches(h, "10.8.0.5") == SITE   # the first: at once
        (a,) = h.site_sa(SITE).children
        h.site_sa(SITE).delete_child(a.unique_id)
        h.site_sa(SITE).initiate("b")
        await h.settle()
        (b,) = h.children_of(SITE)
        assert b.remote_ts == (Ts.parse("10.8.1.0/24"),)
        assert len(asked) == 1, "the second narrowing started at once, not after the doubled hold-off"
        assert b.handle in h.service.widening._again   # not lost: due after the doubled hold-off
        h.service.widening._pace[key].last -= HOLD_OFF * 1000 * 2   # the doubled hold-off is over
        h.service.widening._again_due(b.handle)
        await h.settle()
        assert len(asked) == 2 and len(h.children_of(FULL)) == 1
        assert [reaches(h, d) for d in ("10.8.1.5", "10.8.0.5", "10.9.0.5")] == [SITE, FULL, FULL]
    run(body())


def test_the_pace_forgets_after_a_quiet_period() -> None:
    """One narrowing, then none for twice the wait: the next is immediate again (the documented SPD
    window stays one round trip for a site that returns now and then)."""
    pace = widen._Pace(count=1, last=100.0)
    assert pace.wait(0) == widen.HOLD_OFF * 2 and pace.wait(1) == widen.HOLD_OFF * 4
    pace.decayed(100.0 + widen.HOLD_OFF * 2)
    assert pace.count == 1   # (the doubled hold-off's narrowing counts on)
    pace.decayed(100.0 + widen.HOLD_OFF * 4)
    assert pace.count == 0 and pace.wait(0) == 0.0


def test_a_rekey_of_the_widened_child_sa_while_the_site_is_back_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The site is back inside what was taken back and the full tunnel is not narrowed yet (a
    replacement of its child out, for the test): spoke 1 rekeys the widened Child SA, then the hub
    does.  Both keep 0.0.0.0/0 and are installed: the site's claim meets it only where it yields
    (What remains had "a rekey of the widened Child SA in that window is refused")."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        h.service.terminate("spoke0")
        await h.settle()
        await _after_hold_off(h)
        assert _full_tunnel(h) == WHOLE
        key = (h.children_of(FULL)[0].ike, "net")
        h.service.widening._attempts[key] = widen._Attempt("spoke1", trying=True)   # (one out, for the test)
        h.service.initiate("spoke0", "net")
        await h.settle()
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/16"),)]
        (wide,) = h.children_of(FULL)
        (theirs,) = h.site_sa(FULL).children
        h.site_sa(FULL).rekey_child(theirs.unique_id)   # the full tunnel's peer rekeys it
        await h.settle()
        (by_peer,) = h.children_of(FULL)
        assert by_peer.spi_in != wide.spi_in and [by_peer.remote_ts] == WHOLE, "the peer's rekey was refused"
        (ours,) = h.hub_sa(FULL).children
        h.service.spi_pool.with_spi(lambda: h.hub_sa(FULL).rekey_child(ours.unique_id))   # the hub rekeys it
        h.service._pump()
        await h.settle()
        (by_hub,) = h.children_of(FULL)
        assert by_hub.spi_in not in (wide.spi_in, by_peer.spi_in) and [by_hub.remote_ts] == WHOLE, \
            "our rekey was refused"
        assert h.refused(FULL) == 0 and reaches(h, "10.9.0.5") == FULL
        del h.service.widening._attempts[key]   # it ended: the full tunnel is narrowed around the site
        await _after_hold_off(h)
        await _after_hold_off(h)
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5")] == [SITE, FULL]
    run(body())
