"""Review revwiden (second round of h/makebb, services/ike/widen.py): proofs F1, F2, F4.

The hub of test_ikeservice_widen: spoke 0, a site that chose 10.8.0.0/16 of its 10.0.0.0/8, and
spoke 1, a full tunnel whose Child SA we proposed without 10.8.0.0/16.  A real IkeService with the
worker's request handling and the C fast path in process; the spokes are IKE engines in memory."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from test_ikeservice_initiator_claims import Hub, reaches
from test_ikeservice_peers import InProcessWorker, run
from test_ikeservice_widen import (
    FULL,
    HOLD_OFF,
    SITE,
    _after_hold_off,
    _full_tunnel,
    _site_and_full_tunnel,
    count_initiations,
)

from tunsec.ike.config import child_config
from tunsec.ike.ts import Ts
from tunsec.services.ike import widen

WHOLE = [(Ts.parse("0.0.0.0/0"),)]


@pytest.fixture(autouse=True)
def _short_hold_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF)
    monkeypatch.setattr(widen, "try_deadline", lambda sa: HOLD_OFF * 4)   # (the replacement's backstop)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The new Child SAs the hub starts in spoke 1's established IKE SA (the widening's replacements)."""
    return count_initiations(monkeypatch, "spoke1")


async def _release_site(h: Hub) -> None:
    """The site's IKE SA goes; the hold-off ends, the replacement's request is out, unanswered."""
    h.service.terminate("spoke0")
    await h.settle()
    await asyncio.sleep(HOLD_OFF * 2)
    assert h.hub_sa(FULL).creating("net")


async def _quiet(h: Hub) -> None:
    for _ in range(8):   # hold-offs, deadlines and whatever they start, over
        await _after_hold_off(h)


def test_f1_a_site_back_after_the_hold_off_gets_its_network_again() -> None:
    """F1: the site's IKE SA was down longer than the hold-off (a reboot, DPD): the full tunnel's
    replacement took 10.8.0.0/16, and the site, back, is refused for the life of spoke 1's IKE SA."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        h.service.terminate("spoke0")
        await h.settle()
        await _after_hold_off(h)
        assert _full_tunnel(h) == WHOLE   # widened: the full tunnel holds 10.8.0.0/16 now
        h.service.initiate("spoke0", "net")   # the site is back
        await h.settle()
        await _after_hold_off(h)
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/16"),)], \
            "the site's own network is refused: the full tunnel's widening holds it"
        assert reaches(h, "10.8.0.5") == SITE
    run(body())


def test_f2a_a_worker_restart_during_the_replacement_leaves_both_child_sas(asked: list[str | None]) -> None:
    """F2a: the worker restarts while the replacement's CREATE_CHILD_SA is out.  The replacement comes
    up (restart.py rekeys it into the new worker), but as a rekey (ChildSaUp.rekey_of set) it is no
    replacement to widen.py: the narrowed one is never deleted, the try is logged as failed, and the
    two Child SAs of the child overlap for the life of the IKE SA."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _release_site(h)
        h.worker = InProcessWorker(asyncio.get_running_loop(), h._natt_out)   # the daemon's new worker
        await h.service.worker_restarted()
        await h.settle()
        await _quiet(h)
        assert asked == ["net"]
        assert _full_tunnel(h) == WHOLE, "the narrowed Child SA stays beside the wide one"
        assert [c.local_ts for c in h.site_sa(FULL).children] == WHOLE
    run(body())


def test_f2b_our_rekey_of_the_narrowed_one_beside_the_replacement_leaves_two_wide_child_sas(
        asked: list[str | None]) -> None:
    """F2b: our rekey of the narrowed Child SA (its rekey_time) is queued while the replacement is out.
    The replacement deletes the narrowed one, but the rekey's successor comes up narrowed after it,
    is booked as a new narrowed Child SA, regained, and replaced again: a second CREATE_CHILD_SA, and
    two wide Child SAs of the child for the life of the IKE SA, at both ends."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        (narrowed,) = h.children_of(FULL)
        await _release_site(h)
        h.hub_sa(FULL).rekey_child(narrowed.unique_id)
        h.service._pump()
        await h.settle()
        await _quiet(h)
        assert _full_tunnel(h) == WHOLE, "two wide Child SAs of one child"
        assert [c.local_ts for c in h.site_sa(FULL).children] == WHOLE
        assert asked == ["net"], "a second replacement"
    run(body())


def test_f4_nothing_of_a_failed_replacement_is_kept_after_its_ike_sa_is_gone() -> None:
    """F4: a replacement that failed (the spoke answers with fewer selectors) keeps its _Attempt (the
    doubled hold-off), and the narrowed Child SA stays booked; when the IKE SA goes, nothing removes
    them: one entry per (IKE SA, child) that ever failed, for the daemon's life."""
    async def body() -> None:
        h = await _site_and_full_tunnel()
        st = h.site_sa(FULL)._st
        st.config = dataclasses.replace(st.config, children=(
            child_config("net", "10.9.0.0/16", "10.1.0.0/16", "aes128gcm16"),))
        h.service.terminate("spoke0")
        await h.settle()
        await _after_hold_off(h)
        assert h.service.widening._attempts   # the failure, for the next try's doubled hold-off
        h.service.terminate("spoke1")
        await h.settle()
        await _quiet(h)
        assert h.children_of(FULL) == [] and h.service.children == {}
        assert h.service.widening._attempts == {}, "kept after the IKE SA went"
        assert h.service.widening._narrowed == {}, "kept after the Child SA went"
    run(body())


def test_f4_a_replacement_that_came_up_after_the_peer_deleted_the_narrowed_one_is_no_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    """F4: the spoke deletes the narrowed Child SA while our replacement is out; the replacement comes
    up with 0.0.0.0/0, but _supersede finds nothing to delete and leaves the try ``trying``: its
    deadline then logs it as refused or not installed ("the narrowed one stays": there is none),
    counts a failure (the next try in this IKE SA waits a doubled hold-off) and keeps it all."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await _site_and_full_tunnel()
        await _release_site(h)
        site = h.site_sa(FULL)
        site.delete_child(site.children[0].unique_id)
        await h.settle()
        await _quiet(h)
        assert _full_tunnel(h) == WHOLE   # the replacement carries the child
        assert h.service.widening._attempts == {}, "a failure counted for a replacement that is up"
    run(body())
    assert not [r for r in caplog.records if "not created again" in r.getMessage()]
