"""A NAT'd peer that changes its source port on every request (its own ports: nothing spoofed; every
tunsec and strongSwan encap=yes peer looks NAT'd) must not make unbounded MIGRATE work under the
service's one change lock, nor unbounded log lines: its IKE SA's Child SAs move as one batch, once
per mobility.MOVE_INTERVAL in the long run (MOVE_BURST at once), to the latest target; moves asked for
meanwhile are counted (``events.moves_deferred``) and coalesce; one log line per batch, rate-limited.

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway), its move budget on a fake clock; the budget's timer is fired by
hand after the clock is advanced, so nothing here depends on timing."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import logging

import pytest
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, psk_ike, run, site_ip, site_net

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Endpoint
from tunsec.ike.config import RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.metrics import event_families
from tunsec.services.ike import IkeService, mobility

CHILDREN, REQUESTS = 16, 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _site_with_children(n: int, others: int = 0) -> tuple[Gateway, FakeClock]:
    """A gateway and one NAT'd site (it forces encapsulation) with ``n`` Child SAs in one IKE SA;
    ``others`` more sites with one each."""
    gw = Gateway(1 + others, mobike=False)
    await gw.start()
    clock = FakeClock()
    gw.service.move_clock = clock
    cfg = dataclasses.replace(
        psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                site_net(0), "10.1.0.0/16"),
        mobike=False,
        children=tuple(child_config(f"c{k}", site_net(0), f"10.1.{k}.0/24", "aes128gcm16") for k in range(n)))
    gw.sites[0] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI)))
    gw.sites[0].initiate("site0", "c0", 0.0)
    await gw.settle()
    for k in range(1, n):
        gw.site_sa(0).initiate(f"c{k}")
        await gw.settle()
    for i in range(1, 1 + others):
        gw.connect(i)
        await gw.settle()
    assert len(gw.service.children) == n + others
    return gw, clock


def _migrates(gw: Gateway) -> int:
    return len([m for m in gw.worker.log if isinstance(m, pipe.Migrate)])


def _move_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "follow their peer" in r.getMessage()]


def _fire_budget(svc: IkeService) -> None:
    """Run the one pending timer (the IKE SA's move budget) now."""
    [(handle, fn)] = list(svc._timers.items())
    svc._unlater(handle)
    fn()


def _at(gw: Gateway, mapping: tuple[str, int]) -> bool:
    where = Endpoint(ipaddress.ip_address(mapping[0]), mapping[1])
    return all(c.remote == where for c in gw.service.children.values())


def test_a_peer_flapping_its_source_port_moves_its_child_sas_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    """flap.py: 16 Child SAs, 20 DPD requests from two source ports in turn, then one from a third.
    Before: 640 MIGRATEs and 320 log lines.  Now: MOVE_BURST batches (2 MIGRATEs per Child SA each)
    and as many lines; the later moves wait and coalesce; when the budget allows, one more batch goes
    to the latest mapping."""
    burst = mobility.MOVE_BURST
    last = (site_ip(0), 40005)

    async def body() -> None:
        gw, clock = await _site_with_children(CHILDREN)
        before = _migrates(gw)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            for r in range(REQUESTS + 1):
                gw.nat[0] = (site_ip(0), 40000 + r % 2) if r < REQUESTS else last
                gw.site_sa(0).send_liveness()
                await gw.settle()
            assert _migrates(gw) - before == burst * 2 * CHILDREN
            assert len(_move_lines(caplog)) == burst
            assert gw.service.events.moves_deferred["gw"] == REQUESTS + 1 - burst
            (metric,) = [f for f in event_families(gw.service.events, 0) if f.name == "tunsec_ike_sa_moves_deferred"]
            assert [(s.labels, s.value) for s in metric.samples] == [({"connection": "gw"}, REQUESTS + 1 - burst)]
            assert _at(gw, (site_ip(0), 40000 + (burst - 1) % 2))   # the last batch's target
            clock.now += mobility.MOVE_INTERVAL
            _fire_budget(gw.service)
            await gw.settle()
            assert _migrates(gw) - before == (burst + 1) * 2 * CHILDREN
            lines = _move_lines(caplog)
        assert len(lines) == burst + 1 and f"{CHILDREN} CHILD_SA(s)" in lines[-1] and ":40005" in lines[-1]
        assert _at(gw, last)   # the latest mapping
        _, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == Endpoint(ipaddress.ip_address(last[0]), last[1])
        move = gw.service._moves[next(iter(gw.service.children.values())).ike]
        assert not move.busy and gw.service._timers == {}

    run(body())


def test_a_move_asked_for_while_a_batch_runs_is_not_lost() -> None:
    """The peer moves again while its Child SAs' batch waits for the worker's answers: the batch
    finishes where it was going, then (the budget allowing) the next one takes the latest mapping."""
    async def body() -> None:
        gw, clock = await _site_with_children(3)
        answers: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gw.worker.hold = lambda msg: answers if isinstance(msg, pipe.Migrate) else None
        gw.nat[0] = (site_ip(0), 40000)
        gw.site_sa(0).send_liveness()
        await gw.settle(wait_tasks=False)
        assert _migrates(gw) == 1   # the batch waits for the first answer
        gw.nat[0] = (site_ip(0), 40001)
        gw.site_sa(0).send_liveness()
        await gw.settle(wait_tasks=False)
        assert gw.service.events.moves_deferred["gw"] == 1
        gw.worker.hold = None
        clock.now += mobility.MOVE_INTERVAL
        answers.set_result(None)
        await gw.settle()
        assert _migrates(gw) == 2 * 3 * 2   # two batches of three Child SAs
        assert _at(gw, (site_ip(0), 40001))
        assert gw.service._timers == {}

    run(body())


def test_moves_within_the_budget_wait_for_its_timer_and_take_the_latest_mapping() -> None:
    """A move past the budget's burst waits for it (one timer, however many moves come); a move
    back to where the Child SAs are before it fires costs nothing."""
    burst = mobility.MOVE_BURST

    async def body() -> None:
        gw, clock = await _site_with_children(2)
        for port in range(40000, 40000 + burst + 2):
            gw.nat[0] = (site_ip(0), port)
            gw.site_sa(0).send_liveness()
            await gw.settle()
        there = (site_ip(0), 40000 + burst - 1)
        assert _migrates(gw) == burst * 4 and _at(gw, there) and len(gw.service._timers) == 1
        gw.nat[0] = there   # back where they are
        gw.site_sa(0).send_liveness()
        await gw.settle()
        clock.now += mobility.MOVE_INTERVAL
        _fire_budget(gw.service)
        await gw.settle()
        assert _migrates(gw) == burst * 4 and _at(gw, there) and gw.service._timers == {}

    run(body())
