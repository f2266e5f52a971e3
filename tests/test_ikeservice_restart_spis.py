"""Inbound SPIs across a dataplane worker restart (services/ike/restart.py, SpiPool.issued).

- A Child SA negotiated across the restart (our rekey or IKE_AUTH took its inbound SPI from the old
  worker, the answer came after) is rekeyed into the new worker at once: installed, traffic both
  ways, without any engine timer firing.
- No DELETE of an old worker's inbound SPI reaches the new worker, where that number may be another
  peer's new SA.
- (Not about restarts, but about inbound SAs left in the worker) rekeyed Child SAs' lingering inbound
  SAs count against max_child_sas.
Two real IkeServices with in-process workers (test_ikeservice_rekey.Pair), or a gateway and its sites
(test_ikeservice_peers.Gateway)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging

import pytest
from test_ikeservice_peers import GW, Gateway, InProcessWorker, child_claims, esp_open, esp_seal, ipv4_udp, run, site_ip
from test_ikeservice_rekey import Pair, RecordingWorker, Wire, fire_timers

from tunsec.conf.connections import Action
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.config import IkeConfig
from tunsec.ike.constants import ExchangeType
from tunsec.ike.events import ChildSaUp
from tunsec.policy.ids import IdSpace
from tunsec.services.ike import IkeService


class RestartablePair(Pair):
    """Pair whose workers can be replaced: each service asks for ``current[side]`` each time."""

    async def start(self, close_action: Action = "none") -> None:
        self.current: dict[str, RecordingWorker] = {}
        for side in ("a", "b"):
            self.workers[side] = self.current[side] = RecordingWorker(side, self)
            svc = self.svc[side] = IkeService([self.connection(side, close_action)],
                                              lambda s=side: self.current[s],  # type: ignore[misc]
                                              {4: self.ip(side)}, IdSpace())
            await svc.start()
            svc.sockets.by_key = {(4, self.ip(side), 500): Wire(side, self)}  # type: ignore[dict-item]

    async def restart(self, side: str) -> list[tuple[str, bytes, int]]:
        """``side``'s worker dies and a new one starts; what was on the wire then is taken off it
        (returned: it reaches the other side later)."""
        in_flight = list(self.wire)
        self.wire.clear()
        self.probing = False
        self.workers[side] = self.current[side] = RecordingWorker(side, self)
        await self.svc[side].worker_restarted()
        for _ in range(5):
            await asyncio.sleep(0)
        return in_flight

    def assert_installed(self, side: str) -> None:
        """``side``'s engine Child SA is installed in its current worker, with an SPI the worker issued."""
        (child,) = self.ike(side).children
        svc = self.svc[side]
        assert svc.spi_pool.issued(child.spi_in)
        assert child.spi_in in self.sa_spis(side, Direction.IN)
        (state,) = svc.children.values()
        assert (state.spi_in, state.spi_out) == (child.spi_in, child.spi_out)


async def pair_up() -> RestartablePair:
    pair = RestartablePair()
    await pair.start()
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    assert pair.traffic("a", 3) == 3 and pair.traffic("b", 3) == 3
    return pair


def test_our_rekey_in_flight_across_a_worker_restart_is_installed_in_the_new_worker(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")

    async def body() -> None:
        pair = await pair_up()
        pair.rekey("a")   # its CREATE_CHILD_SA (an old worker's inbound SPI) is on the wire
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight = await pair.restart("a")
        assert in_flight
        pair.wire.extend(in_flight)   # B answers after A's new worker is up
        await pair.settle()
        assert pair.traffic("b", 5) == 5 and pair.traffic("a", 5) == 5
        pair.assert_installed("a")
        assert not any("failed" in r.getMessage() for r in caplog.records)
        assert any("negotiated across a worker restart" in r.getMessage() for r in caplog.records)
    run(body())


def test_a_second_restart_within_a_round_trip_of_the_first_leaves_no_child_sa_dead() -> None:
    async def body() -> None:
        pair = await pair_up()
        first = await pair.restart("a")    # the first restart's rekey of the Child SA goes out...
        first += await pair.restart("a")   # ...and the worker dies again before the answer is back
        pair.wire.extend(first)
        await pair.settle()
        assert pair.traffic("b", 5) == 5 and pair.traffic("a", 5) == 5
        pair.assert_installed("a")
    run(body())


def test_our_ike_auth_across_a_worker_restart_is_installed_in_the_new_worker() -> None:
    async def body() -> None:
        pair = RestartablePair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        while not any(side == "a" and _is_request(data, ExchangeType.IKE_AUTH) for side, data, _ in pair.wire):
            assert pair.wire
            pair.deliver(*pair.wire.pop(0))
            for _ in range(5):
                await asyncio.sleep(0)
        in_flight = await pair.restart("a")   # A's IKE_AUTH took its inbound SPI from the old worker
        pair.wire.extend(in_flight)
        await pair.settle()
        assert pair.traffic("b", 5) == 5 and pair.traffic("a", 5) == 5
        pair.assert_installed("a")
    run(body())


def test_a_child_sa_whose_larval_sa_the_worker_lost_is_rekeyed(caplog: pytest.LogCaptureFixture) -> None:
    """Our rekey's UPDATE finds no larval SA for its inbound SPI (ENOENT; here removed from the worker
    while the rekey was on the wire): the engine holds the Child SA as up, so it is rekeyed again."""
    caplog.set_level(logging.WARNING, logger="tunsec")

    async def body() -> None:
        pair = await pair_up()
        a = pair.svc["a"]
        taken = a.spi_pool.spis[0]   # the next SPI the engine takes
        pair.rekey("a")
        assert taken not in a.spi_pool.spis
        pair.workers["a"].dp.delete(taken, Direction.IN)
        await pair.settle()
        assert pair.traffic("b", 5) == 5 and pair.traffic("a", 5) == 5
        pair.assert_installed("a")
        assert pair.ike("a").children[0].spi_in != taken
        assert any("has no inbound SA in the worker: rekeying it" in r.getMessage() for r in caplog.records)
        assert a._held_claims == {} and child_claims(a) == 1
    run(body())


def _is_request(data: bytes, exchange: ExchangeType) -> bool:
    return len(data) >= 20 and data[18] == exchange and not data[19] & 0x20


@pytest.mark.parametrize("coincidence", [False, True])
def test_no_delete_of_an_old_workers_spi_reaches_the_new_worker(coincidence: bool,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """With ``coincidence`` the new worker answers a GETSPI with site 0's old inbound SPI (outside the
    range asked for, which a worker keeps to: SpiPool.issued): not used, and site 1's SA stays."""
    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        for i in range(2):
            gw.connect(i)
            await gw.settle()
        old_in = {c.spi_in for c in gw.service.children.values()}
        assert len(old_in) == 2
        new = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)
        if coincidence:
            real, calls = new.dp.getspi, iter(range(1000))
            forced = min(old_in)
            new.dp.getspi = lambda lo=256, hi=0xFFFFFFFF: (  # type: ignore[method-assign]
                real(forced, forced) if next(calls) == 1 else real(lo, hi))
        gw.worker = new
        await gw.service.worker_restarted()
        await gw.settle()
        assert [m.spi for m in new.log if isinstance(m, pipe.Delete) and m.spi in old_in] == []
        for i in range(2):
            (child,) = gw.children_of(i)
            assert child.spi_in not in old_in
            assert _site_sends(gw, i) is Drop.NONE
            esp, to, drop = gw.send_to_site(i)
            assert drop is Drop.NONE and to == Endpoint(ipaddress.ip_address(site_ip(i)), 4500)
            esp_open(gw.site_key_in(i), esp)
        assert coincidence == any("outside the range asked for" in r.getMessage() for r in caplog.records)
    run(body())


def _site_sends(gw: Gateway, i: int) -> Drop:
    """What the gateway's worker does with ESP site i seals on its newest Child SA."""
    up = [e for e in gw.site_events[i] if isinstance(e, ChildSaUp)][-1]
    esp = esp_seal(up.spi_out, 1, up.key_out.reveal(), ipv4_udp(f"10.2.{i + 1}.5", "10.1.0.5"))
    _, drop = gw.worker.dp.inbound(esp, Endpoint(ipaddress.ip_address(site_ip(i)), 4500),
                                   Endpoint(ipaddress.ip_address(GW), 4500))
    return drop


class CappedPair(Pair):
    """Pair whose connections allow ``MAX_CHILD_SAS`` Child SAs per IKE SA."""

    def ike_config(self, side: str) -> IkeConfig:
        return dataclasses.replace(super().ike_config(side), max_child_sas=MAX_CHILD_SAS)


MAX_CHILD_SAS = 3


def test_lingering_inbound_sas_of_a_rekey_loop_count_against_max_child_sas() -> None:
    """A peer that rekeys and deletes the old Child SA again and again: the gateway's worker keeps at
    most max_child_sas of its rekeyed inbound SAs lingering, the newest; the oldest go at once."""
    async def body() -> None:
        pair = CappedPair()
        await pair.start()
        pair.svc["a"].initiate("tun", "net")
        await pair.settle()
        rekeyed = []
        for _ in range(10):
            rekeyed.append(pair.child("a").spi_in)
            pair.rekey("b")   # B rekeys, and deletes the old Child SA itself
            await pair.settle()
        assert pair.sa_spis("a", Direction.IN) == {pair.child("a").spi_in, *rekeyed[-MAX_CHILD_SAS:]}
        assert sum(map(len, pair.svc["a"]._lingering.values())) == MAX_CHILD_SAS
        assert pair.traffic("b", 3) == 3 and pair.traffic("a", 3) == 3
        fire_timers(pair.svc["a"])   # their INBOUND_LINGER ends: every one goes, the index with them
        await pair.settle()
        assert pair.sa_spis("a", Direction.IN) == {pair.child("a").spi_in}
        assert pair.svc["a"]._lingering == {}
    run(body())
