"""Rekeys are counted where the IKE service sees them (the counters `tunsec_*_rekeys_total` read);
IKE fragments and datagrams held for SPIs or installs are in `tunsec status` and scraped from it.

Two real IkeServices with in-process workers, wired in memory (tests/test_ikeservice_rekey.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
from typing import Any

import pytest
import test_ikeservice_rekey
from test_ikeservice_peers import psk_ike
from test_ikeservice_rekey import established
from test_metrics_endpoint import SCRAPE, http, samples, serving

from tunsec import metrics
from tunsec.dataplane import pipe
from tunsec.ike.config import IkeConfig
from tunsec.loglimit import PeerLogLimiter
from tunsec.services.ike import HELD_PER_SA, IkeService


def test_child_and_ike_rekeys_are_counted_on_both_sides() -> None:
    async def body() -> None:
        pair = await established()
        for side in "ab":
            assert pair.svc[side].events.child_rekeys == {} and pair.svc[side].events.ike_rekeys == {}
        pair.rekey("a")          # a Child SA rekey started by A
        await pair.settle()
        pair.rekey("b")          # and one started by B
        await pair.settle()
        pair.ike("b").rekey()    # an IKE SA rekey
        pair.svc["b"]._pump()
        await pair.settle()
        for side in "ab":
            events = pair.svc[side].events
            assert events.child_rekeys == {("tun", "net"): 2}, side
            assert events.ike_rekeys == {"tun": 1}, side
            assert events.dpd_failures == {}

    asyncio.run(body())


async def scrape(svc: IkeService) -> dict[str, float]:
    """What Prometheus reads from a metrics endpoint whose document is this IKE service's status."""
    empty = pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def dump() -> pipe.Reply:
        return empty

    async def document(reply: pipe.Reply) -> dict[str, Any]:
        return {"sas": [], "tunnels": [], "policies": [], "drops": {}, **svc.status(reply)}

    source = metrics.Source(dump=dump, document=document, events=lambda: svc.events, worker_restarts=lambda: 0,
                            worker_pid=lambda: None)

    async with serving(source) as port:
        return samples(await http(port, SCRAPE))


def test_ike_fragments_are_counted_in_status_and_scraped(monkeypatch: pytest.MonkeyPatch) -> None:
    """IKE_AUTH in fragments (RFC 7383, a small fragment_size): the sender counts what it split, the
    receiver what it put together, in `tunsec status` and as metrics."""
    def small(*args: Any) -> IkeConfig:
        return dataclasses.replace(psk_ike(*args), fragment_size=200)

    monkeypatch.setattr(test_ikeservice_rekey, "psk_ike", small)

    async def body() -> dict[str, dict[str, float]]:
        pair = await established()
        return {side: await scrape(pair.svc[side]) for side in "ab"} | \
            {f"{side}-status": pair.svc[side].status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["ike_fragments"]
             for side in "ab"}

    got = asyncio.run(body())
    # A sends IKE_AUTH in fragments, B answers in fragments: each side splits one message and joins one
    for side in "ab":
        status = got[f"{side}-status"]
        assert status["messages_fragmented"] == status["messages_reassembled"] == 1, (side, status)
        assert status["fragments_sent"] >= 2 and status["fragments_received"] >= 2
        for name, n in status.items():
            assert got[side][f"tunsec_ike_{name}_total"] == n, (side, name)
        assert got[side]["tunsec_ike_fragments_dropped_total"] == 0


def test_datagrams_held_for_an_spi_and_install_waits_are_scraped() -> None:
    """Incoming IKE that waits for an inbound SPI (the pool empty), what is dropped past HELD_PER_SA,
    and outgoing IKE held behind Child SA installs (a rekey) are in `tunsec status` and scraped."""
    async def body() -> None:
        pair = await established()
        svc = pair.svc["b"]
        waits = svc.barrier.install_waits
        assert waits >= 1, "B's IKE_AUTH response waited for its Child SA's install"
        svc.spi_pool.spis.clear()   # as if the refill had not come back yet
        # datagrams with the SPIs of B's IKE SA (only those may need an SPI): a flood, more than it may hold
        (sa,) = svc.endpoint.sas
        junk = struct.pack("!8s8sBBBBII", sa.spi_i, sa.spi_r, 35, 0x20, 37, 0x00 if sa.is_initiator else 0x08, 1, 28)
        for _ in range(HELD_PER_SA + 3):
            svc.receive(junk, ("192.0.2.9", 500))
        # before anything awaits: the refill has not come back
        held = svc.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["ike_held"]
        assert {k: held[k] for k in ("waiting", "held", "held_dropped", "install_waits")} == \
            {"waiting": HELD_PER_SA, "held": HELD_PER_SA, "held_dropped": 3, "install_waits": waits + 1}
        assert held["install_holds"] >= 1 and held["install_hold_max"] >= 0   # B's IKE_AUTH answer's
        got = await scrape(svc)
        assert got["tunsec_ike_datagrams_held_total"] == HELD_PER_SA
        assert got["tunsec_ike_datagrams_held_dropped_total"] == 3
        # the junk is INFORMATIONAL by its header: held, but not an IKE_AUTH that waited
        assert held["spi_waits"] == got["tunsec_ike_auth_spi_waits_total"] == 0
        await pair.settle()   # the refill lets them in (the engine drops them: nothing it can decrypt)
        got = await scrape(svc)
        assert got["tunsec_ike_datagrams_waiting"] == 0 and got["tunsec_ike_datagrams_held_total"] == HELD_PER_SA
        pair.rekey("a")       # B answers the rekey only once its new inbound SA is installed
        await pair.settle()
        assert (await scrape(svc))["tunsec_ike_install_waits_total"] > waits + 1

    asyncio.run(body())


def test_child_sas_over_max_child_sas_are_counted_scraped_and_logged_rate_limited(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A peer that asks for more Child SAs than max_child_sas: each refusal counted (status, metric),
    the first few logged naming the peer, the rest summed up in the next line that passes."""
    def one_child(*args: Any) -> IkeConfig:
        return dataclasses.replace(psk_ike(*args), max_child_sas=1)

    monkeypatch.setattr(test_ikeservice_rekey, "psk_ike", one_child)

    async def body() -> dict[str, float]:
        pair = await established()
        svc = pair.svc["b"]
        svc.refusals.child_limit = PeerLogLimiter(burst=2, clock=lambda: 0.0)   # one window for the whole test
        for _ in range(3):
            pair.ike("a").initiate("net")
            pair.svc["a"]._pump()
            await pair.settle()
        assert len(pair.ike("b").children) == 1
        assert svc.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["child_sa_limit"] == {"tun": 3}
        return await scrape(svc)

    with caplog.at_level(logging.WARNING, logger="tunsec"):
        got = asyncio.run(body())
    assert got['tunsec_child_sa_limit_refusals_total{connection="tun"}'] == 3
    lines = [r.getMessage() for r in caplog.records if "max_child_sas" in r.getMessage()]
    assert len(lines) == 2 and all("NO_ADDITIONAL_SAS" in line and "at 192.0.2." in line for line in lines)
