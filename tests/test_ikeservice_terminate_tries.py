"""An operator's ``tunsec terminate`` and ``initiate`` against the tries the service scheduled itself
(services/ike/tries.py, recreate.py).

A connection is initiated again by keyingtries, a refused virtual IP (vip_refused), close_action or
dpd_action = start and an expired IKE SA, each after a delay; each initiation then may wait for an
inbound SPI from the worker (SpiPool.with_spi), as an ACQUIRE's and an operator's do.  Before,
terminate deleted the connection's IKE SAs only: a try past its delay and waiting for an SPI started
a new IKE SA right after it (keyingtries = 0: for ever), and one still scheduled did so later.  And
an operator's initiate of a child whose re-creation had its CREATE_CHILD_SA out added a second one:
two Child SAs of the child, each with its own keys.

Two real IkeServices with in-process workers wired in memory (test_ikeservice_rekey.Pair); the
worker's GETSPI answers are held back by the test (InProcessWorker.hold), the re-creation's timers
fired by hand (fire_timers), keyingtries' delay is 0."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest
from test_ikeservice_install_failed import TwoChildPair, ike_up, our_rekey_fails
from test_ikeservice_peers import run
from test_ikeservice_recreate_once import assert_one_net
from test_ikeservice_rekey import Pair, fire_timers
from test_ikeservice_terminate import CONF
from test_ikeservice_vip_refused import LEASE, VipPair
from test_vips import RecordingTun

from tunsec.conf.config import parse_config
from tunsec.conf.connections import Action, Connection
from tunsec.daemon import Daemon
from tunsec.dataplane import pipe
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header
from tunsec.ike.sa import State
from tunsec.services.ike import ikesas, vip_refused


@dataclasses.dataclass
class RetryPair(Pair):
    """A's connection is tried again for ever (keyingtries = 0)."""

    def connection(self, side: str, close_action: Action) -> Connection:
        conn = super().connection(side, close_action)
        return dataclasses.replace(conn, keyingtries=0) if side == "a" else conn


def ike_sa_inits(pair: Pair) -> int:
    """IKE_SA_INIT requests A sent."""
    heads = [decode_header(data) for kind, side, data in pair.timeline if kind == "send" and side == "a"]
    return sum(1 for h in heads if h.exchange == ExchangeType.IKE_SA_INIT and not h.is_response)


def hold_getspis(pair: Pair) -> asyncio.Future[None]:
    """A's worker answers no GETSPI until the returned future is done; A's pool is empty."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pair.workers["a"].hold = lambda msg: gate if isinstance(msg, pipe.GetSpi) else None
    pair.svc["a"].spi_pool.spis.clear()
    return gate


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def terminated_while_waiting_for_an_spi(pair: Pair, schedule: str) -> str:
    """A try of A's "tun" is past its delay and waits for an SPI when the operator terminates "tun";
    then the SPIs come.  The terminate's message."""
    a = pair.svc["a"]
    gate = hold_getspis(pair)
    if schedule == "keyingtries":
        a._retry("tun", ("net",))   # a keying try failed: the next is due (RETRY_DELAY = 0)
    else:
        a.initiate("tun", "net")    # an operator's, or its own (vip_refused's timer ran)
    await turns()
    assert a.spi_pool.starved and not [sa for sa in a.endpoint.sas if not sa.is_closed]
    done = a.terminate("tun")
    gate.set_result(None)
    await pair.settle()
    return done.message() if hasattr(done, "message") else str(done)


@pytest.mark.parametrize("schedule", ["keyingtries", "initiate"])
def test_terminate_stops_a_try_waiting_for_an_spi(monkeypatch: pytest.MonkeyPatch, schedule: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """No IKE SA is started after the terminate (before: one, up with its Child SA), the answer and
    the log say what was stopped, and the operator's next initiate brings "tun" up."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair = RetryPair()
        await pair.start()
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            message = await terminated_while_waiting_for_an_spi(pair, schedule)
        a = pair.svc["a"]
        assert ike_sa_inits(pair) == 0 and a.endpoint.sas == [] and a.children == {}
        why = "keyingtries" if schedule == "keyingtries" else "initiate"
        assert "stopped 1 try not sent yet" in message and why in message, message
        assert f"tun: terminate stopped 1 try not sent yet: {why}" in caplog.text
        await turns(20)   # nothing else scheduled comes later
        assert ike_sa_inits(pair) == 0
        a.initiate("tun", "net")
        await pair.settle()
        assert ike_sa_inits(pair) == 1 and len(a.children) == 1 == len(pair.svc["b"].children)
    run(body())


def test_terminate_stops_a_scheduled_keying_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keying try still in its delay when the operator terminates: it never runs (before: it started
    an IKE SA when its delay ended, and with keyingtries = 0 the connection never stayed down)."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair = RetryPair()
        await pair.start()
        a = pair.svc["a"]
        a._retry("tun", ("net",))   # its delay ends in the next loop turn
        done = a.terminate("tun")
        await pair.settle()
        await turns(20)
        assert ike_sa_inits(pair) == 0 and a.endpoint.sas == []
        assert "keyingtries of child net (scheduled)" in done.message(), done.message()
    run(body())


def test_terminate_stops_a_refused_virtual_ips_try_waiting_for_an_spi() -> None:
    """vip_refused's try (keyingtries = 0) past its delay, waiting for an SPI: terminate stops it."""
    pair = VipPair(keyingtries=0)

    async def body() -> None:
        await pair.start()
        a = pair.svc["a"]
        a.tun = RecordingTun(elsewhere={LEASE: "eth0"})
        gates: list[asyncio.Future[None]] = []

        def delay(failed: int) -> float:   # the first try is due at once, and its SPI is held back
            if gates:
                return 1000.0
            gates.append(hold_getspis(pair))
            return 0.0
        old, vip_refused.delay = vip_refused.delay, delay  # type: ignore[assignment]
        try:
            a.initiate("tun", "net")
            for _ in range(1000):   # (not settle: a task of A's waits for the held GETSPIs)
                if gates:
                    break
                if pair.wire:
                    pair.deliver(*pair.wire.pop(0))
                await asyncio.sleep(0)
            await turns()   # refused; its try's timer ran: it waits for an SPI
            before = ike_sa_inits(pair)
            assert a.spi_pool.starved and before == 1 and a.vip_refusals.failed.get("tun") == 1
            a.terminate("tun")
            gates[0].set_result(None)
            await pair.settle()
            await turns(20)
        finally:
            vip_refused.delay = old   # type: ignore[assignment]
        assert ike_sa_inits(pair) == before
        assert pair.up("a") == 0 and not vip_refused.holding(a, "tun")
    run(body())


def test_an_initiate_during_a_recreation_try_joins_it() -> None:
    """The re-creation's first try has its CREATE_CHILD_SA out when the operator initiates "net": no
    second request (before: a second CREATE_CHILD_SA, both came up, two "net" on each side), one
    "net" comes up and ends the re-creation."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        fire_timers(a)   # the first try: its CREATE_CHILD_SA on the wire, unanswered
        assert pending.trying and ike_up(pair, "a").creating("net")
        a.initiate("tun", "net")
        await pair.settle()
        await assert_one_net(pair)
        assert a.events.child_recreate == {("tun", "net"): 1} and a._recreating == {}
    run(body())


def test_an_initiate_while_a_recreations_child_sa_installs_adds_nothing() -> None:
    """The re-creation's Child SA is up and its install under way when the operator initiates "net":
    the initiate joins it (before: a second "net")."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        (pending,) = a._recreating.values()
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pair.workers["a"].hold = lambda msg: gate if isinstance(msg, pipe.Add) else None
        fire_timers(a)
        await pair.settle()
        assert pending.joined is not None
        a.initiate("tun", "net")
        gate.set_result(None)
        await pair.settle()
        await assert_one_net(pair)
        assert a._recreating == {}
    run(body())


def test_terminate_ends_a_recreation_and_says_so() -> None:
    """A re-creation waiting for its try when the operator terminates the connection: it ends with
    the IKE SA (its held policies go), and the answer says it was stopped."""
    async def body() -> None:
        pair = TwoChildPair()
        await our_rekey_fails(pair)
        a = pair.svc["a"]
        assert a._recreating
        done = a.terminate("tun")
        assert a._recreating == {}
        assert "re-creation of CHILD_SA net" in done.message(), done.message()
        fire_timers(a)
        await pair.settle()
        assert [sa for sa in a.endpoint.sas if sa.state is State.ESTABLISHED] == []
        assert not [p for p in pair.workers["a"].dp.policies() if p.action is pipe.Action.PROTECT]
    run(body())


def test_the_control_commands_answer_names_the_stopped_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the daemon's control command: a terminate that found no IKE SA but stopped a try is
    answered ok, with what it stopped (before: "no IKE SA of connection", and the try went on)."""
    monkeypatch.setattr(ikesas, "RETRY_DELAY", 0.0)

    async def body() -> None:
        pair = RetryPair()
        await pair.start()
        daemon = Daemon(parse_config(CONF, "swanctl.conf"))
        daemon.ike = pair.svc["a"]
        pair.svc["a"]._retry("tun", ("net",))
        answer = await daemon._command(json.dumps({"cmd": "terminate", "ike": "tun"}).encode())
        assert answer == {"ok": True, "message": "stopped 1 try not sent yet: keyingtries of child net (scheduled)"}
        answer = await daemon._command(json.dumps({"cmd": "terminate", "ike": "tun"}).encode())
        assert answer == {"ok": False, "error": "no IKE SA of connection 'tun'"}
        await pair.settle()
        assert ike_sa_inits(pair) == 0
    run(body())
