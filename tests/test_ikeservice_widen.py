"""A network cut out of our proposal for another peer's claim comes back once that peer has gone
(services/ike/widen.py; review revclaims3 F3).

The hub initiates spoke 0, a site that chose 10.8.0.0/16 of its 10.0.0.0/8, then spoke 1, a full
tunnel (remote_ts 0.0.0.0/0): spoke 1's Child SA is proposed, and comes up, without 10.8.0.0/16
(exchanges/child.py outside_others_claims).  When spoke 0's IKE SA goes, its claim is released;
before widen.py nothing brought 10.8.0.0/16 back into spoke 1's tunnel for the life of its IKE SA
(a rekey keeps the selectors), and its traffic met no policy.  Now, after a hold-off, a new Child SA
of spoke 1's child is created with the configured selectors, and once the worker has installed it
the narrowed one is deleted (make-before-break: the narrowed SA's policies carry the kept networks
until then).  A claim that comes back within the hold-off starts nothing, nor does one still held.

The hub is a real IkeService with the worker's request handling and the C fast path in process;
the spokes are IKE engines wired to it in memory (test_ikeservice_initiator_claims)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from test_ikeservice_initiator_claims import Hub, Net, Spoke, hub, reaches
from test_ikeservice_peers import run

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.ike.config import child_config
from tunsec.ike.sa import IkeSa, State
from tunsec.ike.ts import Ts
from tunsec.policy.claims import Claim, Peer
from tunsec.services.ike import widen

SITE, FULL = 0, 1
HOLD_OFF = 0.05   # seconds (widen.HOLD_OFF is 10)


@pytest.fixture(autouse=True)
def _short_hold_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(widen, "HOLD_OFF", HOLD_OFF)


async def _site_and_full_tunnel() -> Hub:
    h = await hub(Spoke("site.example", (Net("net", "10.0.0.0/8", "10.8.0.0/16"),)),
                  Spoke("full.example", (Net("net", "0.0.0.0/0", "0.0.0.0/0"),)))
    (narrowed,) = h.children_of(FULL)
    assert narrowed.remote_ts == (Ts.parse("0.0.0.0-10.7.255.255"), Ts.parse("10.9.0.0-255.255.255.255"))
    assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5", "192.0.2.1")] == [SITE, FULL, FULL]
    return h


async def _after_hold_off(h: Hub) -> None:
    await asyncio.sleep(HOLD_OFF * 4)
    await h.settle()


def _full_tunnel(h: Hub) -> list[tuple[Ts, ...]]:
    return [c.remote_ts for c in h.children_of(FULL)]


def test_the_cut_network_comes_back_in_a_new_child_sa_and_the_narrowed_one_goes_after_it(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await _site_and_full_tunnel()
        (narrowed,) = h.children_of(FULL)
        h.service.terminate("spoke0")   # the site's IKE SA goes: 10.8.0.0/16 is nobody's
        await h.settle()
        assert h.children_of(SITE) == []
        assert reaches(h, "10.8.0.5") is None   # (no policy holds it: dropped in the TUN)
        await _after_hold_off(h)
        assert _full_tunnel(h) == [(Ts.parse("0.0.0.0/0"),)]   # the narrowed one deleted
        (wide,) = h.children_of(FULL)
        assert wide.reqid != narrowed.reqid
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5", "192.0.2.1")] == [FULL, FULL, FULL]
        # the spoke, too, holds the wide one only (our DELETE of the narrowed one reached it)
        assert [c.local_ts for c in h.site_sa(FULL).children] == [(Ts.parse("0.0.0.0/0"),)]
        # make-before-break: the narrowed SAs left the worker after the new one's were in
        log = h.worker.log
        added = max(i for i, m in enumerate(log) if isinstance(m, pipe.Add) and m.sa.spi == wide.spi_out)
        removed = min(i for i, m in enumerate(log) if isinstance(m, pipe.Delete)
                      and (m.spi, m.direction) in {(narrowed.spi_in, Direction.IN), (narrowed.spi_out, Direction.OUT)})
        assert added < removed
    run(body())
    lines = [r.getMessage() for r in caplog.records if "narrowed one" in r.getMessage()]
    assert any("spoke1: CHILD_SA net: some of 10.8.0.0/16" in line for line in lines), lines
    assert any("carries 0.0.0.0/0: the narrowed one" in line for line in lines), lines


def test_a_claim_that_comes_back_within_the_hold_off_starts_nothing() -> None:
    async def body() -> None:
        h = await _site_and_full_tunnel()
        claims = h.service.ts_claims
        (site,) = h.children_of(SITE)
        peer = Peer(h.hub_sa(SITE).peer_id, h.hub_sa(SITE).config.lease_proof)
        for _ in range(20):   # released and held again, over and over: one check, after the hold-off
            claims.remove(site.handle)
            claims.add(site.handle, "spoke0", peer, site.remote_ts, site.local_ts, by_name=True)
        sent = len(h.worker.log)
        await _after_hold_off(h)
        assert not [m for m in h.worker.log[sent:] if isinstance(m, (pipe.Update, pipe.Add, pipe.Delete))]
        assert len(h.children_of(FULL)) == 1 and reaches(h, "10.8.0.5") == SITE
        assert not h.hub_sa(FULL).creating("net")
    run(body())


def test_one_replacement_at_a_time_whatever_the_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str | None] = []
    initiate = IkeSa.initiate

    def counted(sa: IkeSa, child: str | None = None) -> None:
        if sa.name == "spoke1" and sa.state is State.ESTABLISHED:
            asked.append(child)
        initiate(sa, child)
    monkeypatch.setattr(IkeSa, "initiate", counted)

    async def body() -> None:
        h = await _site_and_full_tunnel()
        sa = h.hub_sa(FULL)
        h.service.terminate("spoke0")
        await h.settle()
        await asyncio.sleep(HOLD_OFF * 2)   # the check was due: the replacement's request is out, unanswered
        assert asked == ["net"] and sa.creating("net")
        other = Claim(10**6, "elsewhere", Peer("x", "psk elsewhere"), Ts.parse("10.8.1.0/24"))
        for _ in range(20):   # more releases meanwhile, and hold-offs ending: nothing more
            h.service.widening.released([other])
            await asyncio.sleep(HOLD_OFF / 2)
        await h.settle()
        await _after_hold_off(h)
        assert asked == ["net"]
        assert _full_tunnel(h) == [(Ts.parse("0.0.0.0/0"),)]
    run(body())


def test_a_replacement_answered_with_fewer_selectors_is_deleted_and_the_narrowed_one_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    """The spoke, asked again, answers with 10.9.0.0/16 only (its configuration changed): that Child SA
    holds less than the narrowed one, so it goes and the narrowed one stays; the next try waits for
    a doubled hold-off and another release (or rekey)."""
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        h = await _site_and_full_tunnel()
        (narrowed,) = h.children_of(FULL)
        st = h.site_sa(FULL)._st
        st.config = dataclasses.replace(st.config, children=(
            child_config("net", "10.9.0.0/16", "10.1.0.0/16", "aes128gcm16"),))
        h.service.terminate("spoke0")
        await h.settle()
        await _after_hold_off(h)
        assert h.children_of(FULL) == [narrowed]
        assert [c.local_ts for c in h.site_sa(FULL).children] == [narrowed.remote_ts]   # the new one deleted there
        assert [reaches(h, d) for d in ("10.8.0.5", "10.9.0.5")] == [None, FULL]
        await _after_hold_off(h)
        assert h.children_of(FULL) == [narrowed]   # no release since: no new try
    run(body())
    assert any("came up with 10.9.0.0/16, not all of the narrowed one's: deleted" in r.getMessage()
               for r in caplog.records)
