"""A MIGRATE that fails does not lose the move: the Child SAs follow their moved IKE SA anyway.

When a peer moves (NAT rebinding, MOBIKE's UPDATE_SA_ADDRESSES) the IKE SA moves at once and its
Child SAs follow with MIGRATEs to the worker.  If the worker refuses one (or does not answer), the
service tries again with a doubling pause, a bounded number of times, then rekeys the Child SA (its
successor is installed where the IKE SA is); a peer that keeps moving meanwhile gets one mover per
Child SA, not one per message.

The gateway is a real IkeService with the worker's request handling and C fast path in process
(test_ikeservice_peers.Gateway); the fault is injected into the fast path's migrate.  The pause is
made long and the pending retry fired by hand: what is tested does not depend on timing."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest
from test_ikeservice_move_budget import _site_with_children
from test_ikeservice_peers import Gateway, connected, esp_open, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import DataplaneError, Drop, lib
from tunsec.dataplane.pipe import Direction, Endpoint
from tunsec.ike.events import ChildSaUp
from tunsec.services.ike import IkeService, mobility


def refuse_migrates(gw: Gateway, how_many: int, only: Direction | None = None) -> list[Direction]:
    """The worker's fast path refuses the next ``how_many`` MIGRATEs (of direction ``only``, if
    given); the list has the direction of each MIGRATE it got."""
    migrate = gw.worker.dp.migrate
    seen: list[Direction] = []
    refused = 0

    def refusing(spi: int, direction: Direction, *args: Any, **kw: Any) -> None:
        nonlocal refused
        seen.append(direction)
        if refused < how_many and only in (None, direction):
            refused += 1
            raise DataplaneError("MIGRATE", lib.TS_ENOSPC)
        migrate(spi, direction, *args, **kw)

    gw.worker.dp.migrate = refusing  # type: ignore[method-assign]
    return seen


def fire_retry(svc: IkeService) -> None:
    """Run the one pending retry now (its pause is long: MIGRATE_BACKOFF is patched)."""
    [(handle, fn)] = list(svc._timers.items())   # one retry, however often the peer moved
    svc._unlater(handle)
    fn()


async def rebind(gw: Gateway, site: int, port: int) -> None:
    """Site ``site``'s NAT maps it to a new port; its next request (DPD) moves its IKE SA there."""
    gw.nat[site] = (site_ip(site), port)
    gw.site_sa(site).send_liveness()
    await gw.settle()


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "moving CHILD_SA" in r.getMessage() and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(("mobike", "refused"), [(False, None), (True, None), (False, Direction.OUT)])
def test_a_refused_migrate_is_tried_again_and_the_child_sa_follows(
        mobike: bool, refused: Direction | None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``refused``: the first MIGRATE (None: the inbound SA's, which comes first) or the outbound SA's
    (the inbound one moved already: it goes back, so the retry finds both where they were)."""
    monkeypatch.setattr(mobility, "MIGRATE_BACKOFF", 1e6)

    async def body() -> None:
        gw = await connected(1, mobike=mobike)
        (child,) = gw.children_of(0)
        was = child.remote
        tries = refuse_migrates(gw, 1, refused)
        gw.nat[0] = ("198.51.100.201", 40000)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            if mobike:
                assert gw.site_sa(0).update_addresses()
            else:
                gw.site_sa(0).send_liveness()
            await gw.settle()
            moved = Endpoint(ipaddress.ip_address("198.51.100.201"), 40000)
            assert gw.service._ike_peers[child.ike][0] == ("198.51.100.201", 40000)   # the IKE SA moved
            assert child.remote == was   # the Child SA did not: the worker refused
            IN, OUT = Direction.IN, Direction.OUT
            assert tries == ([IN] if refused is None else [IN, OUT, IN])   # (the inbound SA went back)
            assert {(s.spi, s.direction) for s in gw.worker.dp.sas() if s.remote == was} == {
                (child.spi_in, IN), (child.spi_out, OUT)}   # both still where the service books them
            fire_retry(gw.service)
            await gw.settle()
        assert tries[-2:] == [IN, OUT] and len(tries) == (3 if refused is None else 5)   # the retry
        assert gw.service.children[child.handle].remote == moved and child.moving_to is None
        esp, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == moved
        spi, _ = esp_open(gw.site_key_in(0), esp)
        assert spi == child.spi_out   # the same SA, moved
        assert {(s.spi, s.direction) for s in gw.worker.dp.sas() if s.remote == moved} == {
            (child.spi_in, IN), (child.spi_out, OUT)}
        assert len(failure_logs(caplog)) == 1   # logged once
        assert gw.service.events.migrate_failures[("gw", "net")] == 1   # counted
        assert gw.service._timers == {}   # nothing more to retry

    run(body())


def test_a_peer_moving_often_while_migrates_fail_gets_one_mover_then_a_rekey(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Twenty NAT rebindings (each an authenticated request from a new mapping) while the worker
    refuses every MIGRATE: one MIGRATE per try and one retry pending, not one per message; each retry
    goes to the newest mapping; after MIGRATE_TRIES the Child SA is rekeyed and its successor is
    installed at the peer's newest mapping."""
    monkeypatch.setattr(mobility, "MIGRATE_BACKOFF", 1e6)

    async def body() -> None:
        gw = await connected(1, mobike=False)
        (child,) = gw.children_of(0)
        tries = refuse_migrates(gw, 10**6)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            for port in range(40000, 40020):
                gw.nat[0] = ("198.51.100.201", port)
                gw.site_sa(0).send_liveness()
                await gw.settle()
            assert len(tries) == 1 and len(gw.service._tasks) == 0
            newest = Endpoint(ipaddress.ip_address("198.51.100.201"), 40019)
            move = gw.service._moves[child.ike]
            assert move.busy and move.path[0] == ("198.51.100.201", 40019)   # the retry takes the newest
            for n in range(2, mobility.MIGRATE_TRIES + 1):
                fire_retry(gw.service)
                await gw.settle()
                assert len(tries) == n   # one (refused) inbound MIGRATE per try
            # given up: rekeyed; the new Child SA is installed where the IKE SA is
            await gw.settle()
        assert gw.service.events.migrate_failures[("gw", "net")] == mobility.MIGRATE_TRIES
        logs = failure_logs(caplog)
        assert len(logs) == 2 and "trying again" in logs[0] and "rekeying" in logs[1], logs
        (new,) = gw.service.children.values()   # the old one deleted by the rekey
        assert new.handle != child.handle and new.remote == newest
        ups = [e for e in gw.site_events[0] if isinstance(e, ChildSaUp)]
        assert len(ups) == 2 and ups[-1].rekey_of is not None
        esp, dst, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and dst == newest
        spi, _ = esp_open(gw.site_key_in(0), esp)
        assert spi == new.spi_out
        assert not any(isinstance(m, pipe.Migrate) and m.spi == new.spi_out for m in gw.worker.log)

    run(body())


def test_failed_migrates_of_many_child_sas_pass_the_move_log_limit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An authenticated peer with 16 Child SAs moves while the worker refuses every MIGRATE: a line per
    Child SA would be 16 at the first failure and 16 more when they are given up (rekeyed), per move,
    as often as the peer moves.  They pass the service's move limit (the batch lines' own: 10 per 10 s
    on its clock, here a fake one), the rest counted in the next line that passes."""
    monkeypatch.setattr(mobility, "MIGRATE_BACKOFF", 1e6)
    children = 16

    async def body() -> None:
        gw, clock = await _site_with_children(children)
        burst = gw.service._move_log.burst
        refuse_migrates(gw, 10**6)
        with caplog.at_level(logging.INFO, logger="tunsec.ike"):
            await rebind(gw, 0, 40000)
            assert gw.service.events.migrate_failures[("gw", "net")] == children   # each counted
            assert len(failure_logs(caplog)) == burst   # the rest held
            for _ in range(2, mobility.MIGRATE_TRIES + 1):   # the retries: a debug line each, no more
                clock.now += gw.service._move_log.period
                fire_retry(gw.service)
                await gw.settle()
        assert gw.service.events.migrate_failures[("gw", "net")] == children * mobility.MIGRATE_TRIES
        logs = failure_logs(caplog)
        assert len(logs) == 2 * burst, logs   # the give-ups (rekeys): a window's burst of them again
        assert all("trying again" in x for x in logs[:burst]) and all("rekeying" in x for x in logs[burst:])
        assert logs[burst].endswith(f"({children - burst} more like it suppressed)")
        assert len(gw.service.children) == children   # all rekeyed, whatever was logged

    run(body())
