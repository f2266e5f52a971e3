"""The IKE service's refill of ready key pairs (services/ike/keypool.py): full at start, refilled in
small steps only once no key pair has been taken for a while, aged key pairs replaced, groups
following the configuration; and a real IkeService over the in-process worker with its pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_ikeservice_peers import Gateway, run
from test_metrics_events import scrape
from test_reload_ike import ConfiguredGateway, conf
from test_reload_ike import conn as conn_text

from tunsec.dataplane import pipe
from tunsec.ike import dh
from tunsec.ike.config import IkeConfig, LocalAuth, RemoteAuth, child_config
from tunsec.ike.constants import DhGroup
from tunsec.ike.dh_pool import STEP_COST, KeyPairPool
from tunsec.ike.events import ChildSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.proposals import parse_proposals
from tunsec.ike.secret import Secret
from tunsec.services.ike.keypool import KeyPoolRefill, pool_groups
from tunsec.status import render

X25519, ECP256, ECP384 = DhGroup.CURVE25519, DhGroup.ECP_256, DhGroup.ECP_384


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Timer:
    at: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Loop:
    """call_later on the fake clock; run() fires what is due, one timer at a time (a loop turn each)."""

    clock: Clock
    timers: list[Timer] = field(default_factory=list)
    turns: int = 0

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        t = Timer(self.clock() + delay, fn)
        self.timers.append(t)
        return t

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def run(self) -> None:
        while due := [t for t in self.pending() if t.at <= self.clock()]:
            t = min(due, key=lambda t: t.at)
            self.timers.remove(t)
            self.turns += 1
            t.fn()


def conn(name: str, ike: str, esp: str = "aes128gcm16") -> IkeConfig:
    return IkeConfig(name, LocalAuth("psk", Identity.parse("a.example")), RemoteAuth("psk"), parse_proposals(ike),
                     (child_config("net", "10.1.0.0/16", "10.2.0.0/16", esp),), psk=Secret(b"some shared secret"))


def refill_of(size: int, configs: list[IkeConfig], busy: Callable[[], bool] = lambda: False,
              ) -> tuple[KeyPoolRefill, KeyPairPool, Loop]:
    clock = Clock()
    loop = Loop(clock)
    pool = KeyPairPool(dh.generate_key_exchange, clock)
    refill = KeyPoolRefill(pool, size, loop.call_later, busy)  # type: ignore[arg-type]
    refill.start(configs)
    return refill, pool, loop


def test_pooled_groups_are_the_first_of_each_ike_proposal_list() -> None:
    """The first group of each connection's IKE proposals; not its children's PFS groups, whose key
    pairs rekeys generate on the spot (review revpeerdos R2: only IKE_SA_INIT takes from the pool)."""
    configs = [conn("a", "aes128gcm16-prfsha256-curve25519-ecp256, aes256-sha256-modp3072"),
               conn("b", "aes128gcm16-prfsha256-ecp384-curve25519", "aes128gcm16-ecp256-modp2048"),
               conn("c", "aes128gcm16-prfsha256-curve25519", "aes128gcm16, aes256gcm16-modp3072"),
               conn("d", "aes128gcm16-prfsha256-modp3072", "aes128gcm16-ecp256")]
    assert pool_groups(configs) == [X25519, ECP384, DhGroup.MODP_3072]


def test_start_fills_and_a_burst_is_not_refilled_until_calm() -> None:
    _, pool, loop = refill_of(40, [conn("a", "aes128gcm16-prfsha256-curve25519")])
    assert pool.sizes() == {X25519: 40}
    # a burst: a key pair taken every 10 ms for a second; the refill's timer fires in between
    for _ in range(30):
        assert pool.take(X25519) is not None
        loop.clock.t += 0.01
        loop.run()
    assert pool.size(X25519) == 10 and loop.turns > 0      # it woke, saw the burst and waited
    # calm: refilled in steps of STEP_COST X25519s, one loop turn each, then idle until the oldest expires
    loop.clock.t += pool.calm
    turns = loop.turns
    loop.run()
    assert pool.size(X25519) == 40
    assert loop.turns - turns == -(-30 // STEP_COST)
    (nxt,) = loop.pending()
    assert nxt.at == pool.next_expiry()
    # a take brings the next step forward to the calm after it (not the expiry minutes away)
    pool.take(X25519)
    (nxt,) = loop.pending()
    assert nxt.at == loop.clock() + pool.calm
    loop.clock.t = nxt.at
    loop.run()
    assert pool.size(X25519) == 40


def test_no_refill_while_ike_sas_are_being_set_up() -> None:
    setting_up = [True]
    _, pool, loop = refill_of(10, [conn("a", "aes128gcm16-prfsha256-curve25519")], lambda: setting_up[0])
    for _ in range(5):
        pool.take(X25519)
    for _ in range(20):   # a second without IKE_SA_INIT, but IKE_AUTHs and installs still to come
        loop.clock.t += pool.calm
        loop.run()
    assert pool.size(X25519) == 5 and loop.turns >= 20
    setting_up[0] = False
    loop.clock.t += pool.calm
    loop.run()
    assert pool.size(X25519) == 10


def test_aged_key_pairs_are_replaced() -> None:
    _, pool, loop = refill_of(4, [conn("a", "aes128gcm16-prfsha256-curve25519")])
    before = pool.next_expiry()   # nothing taken: the step waits for the oldest to expire
    assert before is not None and [t.at for t in loop.pending()] == [before]
    loop.clock.t = before
    loop.run()
    assert pool.size(X25519) == 4 and pool.stats.expired == 4
    assert pool.next_expiry() == before + pool.max_age


def test_reload_drops_unconfigured_groups_and_fills_new_ones_when_calm() -> None:
    refill, pool, loop = refill_of(8, [conn("a", "aes128gcm16-prfsha256-curve25519"),
                                       conn("b", "aes128gcm16-prfsha256-ecp256")])
    assert pool.sizes() == {X25519: 8, ECP256: 8}
    refill.reconfigure([conn("a", "aes128gcm16-prfsha256-ecp384")])
    assert pool.sizes() == {ECP384: 0}               # X25519 and ECP 256 key pairs gone at once
    assert pool.take(X25519) is None and pool.stats.unpooled == 1
    loop.clock.t += pool.calm
    loop.run()
    assert pool.sizes() == {ECP384: 8}


def test_stop_drops_every_key_pair_and_size_0_leaves_the_pool_alone() -> None:
    refill, pool, loop = refill_of(8, [conn("a", "aes128gcm16-prfsha256-curve25519")])
    refill.stop()
    assert pool.sizes() == {} and loop.pending() == [] and pool.on_take is None
    pool.configure({X25519: 2})
    off = KeyPoolRefill(pool, 0, loop.call_later)  # type: ignore[arg-type]
    off.start([conn("a", "aes128gcm16-prfsha256-ecp256")])
    off.stop()
    assert pool.sizes() == {X25519: 0} and loop.pending() == []


# ----------------------------------------------------------------- a real IkeService


def test_service_pool_serves_the_burst_and_refills_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process pool on a frozen clock: however long the burst takes on the real loop, it is not
    calm until the clock moves; then the service's loop refills it."""
    clock = Clock()
    pool = KeyPairPool(dh.generate_key_exchange, clock)
    monkeypatch.setattr(dh, "POOL", pool)

    async def body() -> None:
        gw = Gateway(3, ke_pool=12)
        await gw.start()
        assert pool.sizes() == {X25519: 12}
        for i in range(3):
            gw.connect(i)
        await gw.settle()
        assert all(any(isinstance(e, ChildSaUp) for e in gw.site_events[i]) for i in range(3))
        await asyncio.sleep(2 * pool.calm)   # the refill's timer (armed at the first take) has fired
        # the gateway's three and the sites' three (the same process): all from the pool, none refilled
        assert (pool.stats.hits, pool.stats.misses) == (6, 0) and pool.size(X25519) == 6
        status = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))["ke_pool"]
        assert status == {"hits": 6, "misses": 0, "unpooled": 0, "expired": 0, "ready": {"CURVE25519": 6}}
        assert "key pairs ready: CURVE25519 6; taken ready 6, generated when the pool was empty 0" in render(
            {"tun": {"name": "tunsec0", "mtu": 1400, "offloads": []}, "worker": {"pid": 1, "restarts": 0},
             "uptime_seconds": 1, "udp_offloads": [], "sas": [], "tunnels": [], "policies": [], "drops": {},
             **gw.service.status(
                pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))})
        got = await scrape(gw.service)
        assert got['tunsec_ke_pool_key_pairs_total{result="hit"}'] == 6
        assert got['tunsec_ke_pool_key_pairs_total{result="miss"}'] == 0
        assert got['tunsec_ke_pool_ready{group="CURVE25519"}'] == 6
        clock.t += pool.calm
        for _ in range(200):   # until the loop has run the refill's steps
            if pool.size(X25519) == 12:
                break
            await asyncio.sleep(0.01)
        assert pool.size(X25519) == 12
        gw.service.sockets.by_key = {}   # (the fake socket has no close)
        gw.service.close()   # (shutdown too, after its DELETEs)
        assert pool.sizes() == {}

    run(body())


def test_reload_follows_the_new_proposals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = KeyPairPool(dh.generate_key_exchange, Clock())
    monkeypatch.setattr(dh, "POOL", pool)

    async def body() -> None:
        gw = ConfiguredGateway(1)
        gw.path = tmp_path / "tunsec.conf"
        gw.path.write_text(conf(conn_text("a", 0, extra="proposals = aes128gcm16-prfsha256-curve25519")))
        await gw.start()
        gw.service.ke_refill = KeyPoolRefill(pool, 8, busy=gw.service._setting_up)   # as ke_pool = 8 builds it
        gw.service.ke_refill.start(c.ike for c in gw.service.connections.values())
        assert pool.sizes() == {X25519: 8}
        answer = await gw.reload(conf(conn_text("a", 0, extra="proposals = aes128gcm16-prfsha256-ecp256")))
        assert answer["ok"], answer
        assert pool.size(X25519) == 0 and X25519 not in pool.sizes()   # dropped at once
        pool._clock.t += pool.calm   # type: ignore[attr-defined]
        for _ in range(200):   # until the loop has run the refill's step
            if pool.size(ECP256) == 8:
                break
            await asyncio.sleep(0.01)
        assert pool.sizes() == {ECP256: 8}
        # the size itself is a tunsec { } setting: a restart
        answer = await gw.reload(conf(conn_text("a", 0, extra="proposals = aes128gcm16-prfsha256-ecp256"),
                                      tunsec="ke_pool = 0"))
        assert answer["ok"] is False and "needs a restart: ke_pool" in answer["error"]
        gw.service.ke_refill.stop()

    run(body())
