"""The yielding's bounds (review revwiden2 F1-F4 on h/fixwiden's yielding; proofs that failed before h/fixwiden2):
the narrowing paced, no narrowing around a claim that shares, what was taken back kept once, and
a worker restart in the window keeping both peers' Child SAs.

The hub of test_ikeservice_widen: spoke 0, a site whose connection lets it choose from 10.0.0.0/8
(it answered 10.8.0.0/16), spoke 1 a full tunnel the hub initiated after it, cut around 10.8.0.0/16.
The site lets its Child SA go (its IKE SA stays), the full tunnel is widened: 10.8.0.0/16 yields.
A real IkeService, the worker's request handling and the C fast path in process; the spokes' IKE
engines in memory."""

from __future__ import annotations

import asyncio

import pytest
from test_ikeservice_initiator_claims import Hub, Net, Spoke, hub, reaches
from test_ikeservice_peers import InProcessWorker, run
from test_ikeservice_widen import FULL, HOLD_OFF, SITE, _after_hold_off, _full_tunnel, count_initiations

from tunsec.ike.ts import Ts
from tunsec.services.ike import widen

WHOLE = [(Ts.parse("0.0.0.0/0"),)]
# the site's children: the hub starts "net" (the spoke's responder takes its first fitting child, the
# last of these); the spoke itself asks for "a" and "b", two /24s of what the widening took back
SITE_NETS = (Net("b", "10.0.0.0/8", "10.8.1.0/24"), Net("a", "10.0.0.0/8", "10.8.0.0/24"),
             Net("net", "10.0.0.0/8", "10.8.0.0/16"))


@pytest.fixture(autouse=True)
def _short_hold_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF)


async def _widened_by_the_sites_delete() -> Hub:
    h = await hub(Spoke("site.example", SITE_NETS, start="net"),
                  Spoke("full.example", (Net("net", "0.0.0.0/0", "0.0.0.0/0"),)))
    assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/16"),)]
    assert _full_tunnel(h) == [(Ts.parse("0.0.0.0-10.7.255.255"), Ts.parse("10.9.0.0-255.255.255.255"))]
    (child,) = h.site_sa(SITE).children
    h.site_sa(SITE).delete_child(child.unique_id)   # the site lets its network go; its IKE SA stays
    await h.settle()
    await _after_hold_off(h)
    assert _full_tunnel(h) == WHOLE
    return h


async def _site_swaps(h: Hub, child: str) -> None:
    """The site deletes the Child SA it has (if any) and asks for ``child``: two exchanges of its own."""
    for c in list(h.site_sa(SITE).children):
        h.site_sa(SITE).delete_child(c.unique_id)
    h.site_sa(SITE).initiate(child)
    await h.settle()


def test_f1_a_peer_swapping_its_own_child_sas_does_not_churn_the_full_tunnel_faster_than_the_hold_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review revwiden2 F1.
    widen.py's bound ("a CREATE_CHILD_SA per doubled hold-off at most") holds for the widening only:
    the narrowing of a widened Child SA around a returning peer starts at that peer's install, with no
    hold-off, and a success forgets the failures.  The site, swapping its own Child SA between two
    /24s of what was taken back (each install meets our Child SA narrowed around the other), makes the
    hub create the full tunnel's Child SA again (a CREATE_CHILD_SA and a DELETE in spoke 1's IKE SA, a
    new reqid, updown) once per swap, as fast as its own exchanges go.  Before h/makebb the site's
    Child SAs touched nobody else's."""
    async def body() -> None:
        h = await _widened_by_the_sites_delete()
        asked = count_initiations(monkeypatch, "spoke1")
        monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF * 1000)   # the swaps all happen within one hold-off
        for child in ("a", "b") * 4:
            await _site_swaps(h, child)
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.1.0/24"),)]
        assert len(h.children_of(FULL)) == 1
        assert len(asked) <= 2, f"{len(asked)} Child SAs of the full tunnel created within one hold-off " \
                                "by the site's 8 swaps of its own Child SA"
    run(body())


def test_f3_a_peer_sharing_by_name_does_not_make_every_rekey_of_its_child_sa_replace_the_full_tunnels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review revwiden2 F3.
    Spoke 2's connection names it and gives it 10.8.0.0/16 as written; spoke 1's gives it 0.0.0.0/0
    as written: two such peers share (TsClaims.overlaps ``named``), whatever yields.  Once the full
    tunnel is widened (0.0.0.0/0 as written: its claim is named), spoke 2's Child SA is admitted by
    that sharing, yet its install meets what was taken back and starts the "narrowing": our proposal
    leaves nothing out (spoke 2's claim is shared), the new Child SA is 0.0.0.0/0 again, the widened
    one deleted, the new one booked as widened.  So every install of spoke 2's (each rekey, either
    side's) replaces spoke 1's Child SA: a CREATE_CHILD_SA and a DELETE in another peer's IKE SA,
    for nothing, with no hold-off, for the life of both IKE SAs."""
    async def body() -> None:
        h = await hub(Spoke("site.example", SITE_NETS, start="net"),
                      Spoke("full.example", (Net("net", "0.0.0.0/0", "0.0.0.0/0"),)),
                      Spoke("backup.example", (Net("net", "10.8.0.0/16", "10.8.0.0/16"),)))
        assert h.children_of(2) == []   # (refused at first: the site held it)
        (child,) = h.site_sa(SITE).children
        h.site_sa(SITE).delete_child(child.unique_id)
        await h.settle()
        await _after_hold_off(h)
        assert _full_tunnel(h) == WHOLE
        h.service.initiate("spoke2", "net")   # the named backup comes: it shares with the full tunnel
        await h.settle()
        await _after_hold_off(h)
        assert [c.remote_ts for c in h.children_of(2)] == [(Ts.parse("10.8.0.0/16"),)]
        assert _full_tunnel(h) == WHOLE   # (nothing to narrow around: shared)
        asked = count_initiations(monkeypatch, "spoke1")
        for _ in range(4):   # spoke 2 rekeys its Child SA: nothing of spoke 1's is touched
            (backup,) = h.site_sa(2).children
            h.site_sa(2).rekey_child(backup.unique_id)
            await h.settle()
            await _after_hold_off(h)
        assert len(h.children_of(2)) == 1 and _full_tunnel(h) == WHOLE
        assert asked == [], f"spoke 1's Child SA created again {len(asked)} times by spoke 2's 4 rekeys"
    run(body())


def test_f4_what_was_taken_back_is_kept_once_not_once_per_round() -> None:
    """Review revwiden2 F4.
    Widening._taken_pieces gets the cut of every widened replacement appended (tuple(dict.fromkeys(
    old + new))): pieces already within what was taken back are kept again, unmerged, for the life of
    the IKE SA, and each widening builds a Held over all of them.  A peer that takes back a piece of
    its own choosing (a /24 here; a /32, or a port range, of up to max_child_sas Child SAs at once) and
    lets it go once per hold-off grows it without bound.  Merged, it is 10.8.0.0/16 all along."""
    nets = tuple(Net(f"c{k}", "10.0.0.0/8", f"10.8.{k}.0/24") for k in range(4))

    async def body() -> None:
        h = await hub(Spoke("site.example", (*nets, Net("net", "10.0.0.0/8", "10.8.0.0/16")), start="net"),
                      Spoke("full.example", (Net("net", "0.0.0.0/0", "0.0.0.0/0"),)))
        (child,) = h.site_sa(SITE).children
        h.site_sa(SITE).delete_child(child.unique_id)
        await h.settle()
        await _after_hold_off(h)
        assert _full_tunnel(h) == WHOLE
        key = (h.children_of(FULL)[0].ike, "net")
        for k in range(4):   # the site takes back a /24, lets it go; the full tunnel narrows, widens
            await _site_swaps(h, f"c{k}")
            assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse(f"10.8.{k}.0/24"),)]
            for c in list(h.site_sa(SITE).children):
                h.site_sa(SITE).delete_child(c.unique_id)
            await h.settle()
            await _after_hold_off(h)
            assert _full_tunnel(h) == WHOLE
        pieces = h.service.widening._taken_pieces[key]
        assert len(pieces) == 1, f"{len(pieces)} pieces kept for what was taken back: {list(map(str, pieces))}"
    run(body())


def test_f2_a_worker_restart_does_not_take_the_returning_sites_child_sa_away() -> None:
    """Review revwiden2 F2.
    The site is back in what was taken back (admitted: that yields) while the full tunnel is not
    narrowed around it yet (a replacement of the full tunnel's child out: its narrowing waits; or
    spoke 1 refused the narrowing, which keeps the widened one; or simply the round trip of the
    narrowing).  The worker restarts: restart.py holds every Child SA's claims under handles no
    ChildState has, so Widening.yields finds nothing for the full tunnel's held 0.0.0.0/0, and the
    restart's rekey of the site's own Child SA into the new worker is refused by our answer check
    (TS_UNACCEPTABLE, "overlaps 10.8.0.0/24 of peer full.example"), its re-creation too: the site,
    admitted and installed before the restart, loses its Child SA at both ends, and its network goes
    back into the full tunnel.  (What remains says the held claims do not yield meanwhile; not that
    they take an established Child SA of the returning peer away.)"""
    async def body() -> None:
        h = await _widened_by_the_sites_delete()
        key = (h.children_of(FULL)[0].ike, "net")
        h.service.widening._attempts[key] = widen._Attempt("spoke1", trying=True)   # (one out, for the test)
        await _site_swaps(h, "a")
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/24"),)]
        h.worker = InProcessWorker(asyncio.get_running_loop(), h._natt_out)   # the daemon's new worker
        await h.service.worker_restarted()
        await h.settle()
        await _after_hold_off(h)
        assert [c.remote_ts for c in h.children_of(SITE)] == [(Ts.parse("10.8.0.0/24"),)], \
            "the site's Child SA was taken away by the worker restart"
        assert [c.local_ts for c in h.site_sa(SITE).children] == [(Ts.parse("10.8.0.0/24"),)]
        del h.service.widening._attempts[key]   # it ended: the full tunnel is narrowed around the site
        await _after_hold_off(h)
        await _after_hold_off(h)
        assert reaches(h, "10.8.0.5") == SITE
    run(body())


def test_f2b_a_worker_restart_does_not_take_the_full_tunnels_child_sa_away_either() -> None:
    """Review revwiden2 F2 (b).
    The same restart, the full tunnel's side: its rekey into the new worker is refused too (the
    site's held claim, 10.8.0.0/24, overlaps its 0.0.0.0/0 and is the site's own: it yields nothing),
    and its re-creation meets the site's re-creation: the hub is left without a Child SA of spoke 1
    (by hand: still none 40 s later; all of the full tunnel's traffic dropped).  What remains lists
    "a rekey of the widened Child SA in that window is refused"; a worker restart rekeys every Child
    SA at once, so any restart in that window (the narrowing's round trip, a hold-off while a
    replacement is out or the IKE SA rekeys, for good once spoke 1 refused the narrowing) takes both
    away.  (Fails with the site's half of F2 fixed too: held claims yielding is not enough.)"""
    async def body() -> None:
        h = await _widened_by_the_sites_delete()
        key = (h.children_of(FULL)[0].ike, "net")
        h.service.widening._attempts[key] = widen._Attempt("spoke1", trying=True)   # (one out, for the test)
        await _site_swaps(h, "a")
        h.worker = InProcessWorker(asyncio.get_running_loop(), h._natt_out)   # the daemon's new worker
        await h.service.worker_restarted()
        await h.settle()
        await _after_hold_off(h)
        assert reaches(h, "10.9.0.5") == FULL, "the full tunnel's Child SA was taken away by the worker restart"
    run(body())
