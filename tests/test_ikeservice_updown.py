"""How the IKE service runs updown scripts (tunsec.updown.Scripts): each IKE SA's in order, IKE
SAs side by side, so that one client's hanging script holds up no other client's; an up waits for
a queued down of its addresses; each IKE SA's queue is bounded; a worker restart gives every
up-client its down-client.

Real scripts (/bin/sh) and a real IkeService with the fast path in process (test_ikeservice_peers's
Gateway, test_ikeservice_reconnect's PoolGateway). A script that is to hang waits for a file the
test creates; nothing here waits for a time to pass: the loops below wait for what a script wrote,
bounded only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_ikeservice_peers import GW, SHARED_SPI, Gateway, InProcessWorker, _now, psk_ike, run, site_ip
from test_ikeservice_reconnect import VIP, A, established, pool_gateway

from tunsec.dataplane import pipe
from tunsec.ike.config import RemoteAuth, child_config
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.identity import Identity
from tunsec.metrics import event_families
from tunsec.policy.selector import Ts
from tunsec.updown import ChildEvent, Scripts

GUARD = 20.0   # seconds before a wait gives up: a failure, not a threshold (UPDOWN_TIMEOUT is 30)


def script(tmp_path: Path, hang_if: str = "") -> tuple[tuple[str, ...], Path, Path]:
    """(argv, log, gate): a script that appends "VERB PEER_ID REQID PEER_CLIENT" to log; when the
    shell condition ``hang_if`` holds it first waits for ``gate`` to exist."""
    log, gate = tmp_path / "updown.log", tmp_path / "gate"
    path = tmp_path / "updown.sh"
    hang = f'if {hang_if}; then while [ ! -e {gate} ]; do sleep 0.01; done; fi\n' if hang_if else ""
    path.write_text(f'#!/bin/sh\n{hang}echo "$PLUTO_VERB $PLUTO_PEER_ID $PLUTO_REQID $PLUTO_PEER_CLIENT" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return (str(path),), log, gate


def with_updown(gw: Gateway, argv: tuple[str, ...]) -> None:
    """The gateway's connection "gw" runs ``argv`` as its first child's updown script."""
    conn = gw.service.connections["gw"]
    gw.service.connections["gw"] = dataclasses.replace(
        conn, children=(dataclasses.replace(conn.children[0], updown=argv),))


@pytest.fixture(autouse=True)
def _no_script_left(tmp_path: Path) -> Iterator[None]:
    yield
    (tmp_path / "gate").touch()   # a hanging script of a failed test ends


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def until(what: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD):
        while not what():
            await asyncio.sleep(0.01)


def test_a_clients_hanging_script_holds_up_no_other_clients_up(tmp_path: Path) -> None:
    """Site 0's script hangs (until the gate opens); site 1's up-client runs meanwhile.  With one
    service-wide lock it waited behind site 0's for as long as that one took."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_PEER_ID" = site0.example ]')

    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        gw.connect(0)
        await gw.settle(wait_tasks=False)
        gw.connect(1)
        await gw.settle(wait_tasks=False)
        await until(lambda: any("site1.example" in line for line in lines(log)))
        assert [line.split()[:2] for line in lines(log)] == [["up-client", "site1.example"]]
        gate.touch()
        await until(lambda: len(lines(log)) == 2)
        assert lines(log)[1].split()[:2] == ["up-client", "site0.example"]
        await gw.settle()

    run(body())


def event(reqid: int, vip: str, up: bool = True) -> ChildEvent:
    return ChildEvent(up, "rw", "tunsec0", reqid, reqid, "192.0.2.1", "198.51.100.9", 4500, "gw", f"c{reqid}",
                      (Ts.parse("0.0.0.0/0"),), (Ts.parse(vip),))


def test_an_up_for_an_address_whose_down_is_queued_runs_after_that_down(tmp_path: Path) -> None:
    """Client 1's script hangs on its up; its down for 10.3.0.7 is queued behind it; the address is
    leased to client 2, whose up must not run before client 1's down (which would remove the
    rules client 2's up made).  Client 3 (another address) runs meanwhile."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_REQID" = 1 ]')

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)))
        assert scripts.submit(1, argv, event(1, "10.3.0.7"))
        assert scripts.submit(1, argv, event(1, "10.3.0.7", up=False))
        assert scripts.submit(2, argv, event(2, "10.3.0.7"))
        assert scripts.submit(3, argv, event(3, "10.3.0.8"))
        await until(lambda: len(lines(log)) == 1)
        assert lines(log) == ["up-client c3 3 10.3.0.8/32"]   # the queue moved, client 2 still waits
        gate.touch()
        await asyncio.wait(tasks)
        assert lines(log)[1:] == ["up-client c1 1 10.3.0.7/32", "down-client c1 1 10.3.0.7/32",
                                  "up-client c2 2 10.3.0.7/32"]

    run(body())


def test_an_ike_sas_queue_is_bounded_and_skips_ups_not_downs(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    argv, log, gate = script(tmp_path, hang_if="true")

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)), limit=2)
        assert scripts.submit(1, argv, event(1, "10.3.0.7"))
        assert scripts.submit(1, argv, event(1, "10.3.0.8"))
        assert not scripts.submit(1, argv, event(1, "10.3.0.9"))   # a third up waiting: skipped
        assert scripts.submit(1, argv, event(1, "10.3.0.7", up=False))   # a down always goes
        assert scripts.submit(2, argv, event(2, "10.3.0.10"))   # another IKE SA's queue is its own
        gate.touch()
        await asyncio.wait(tasks)
        assert sorted(line.split()[0] for line in lines(log)) == ["down-client"] + ["up-client"] * 3
        assert "10.3.0.9/32" not in log.read_text() and scripts.skipped == 1

    with caplog.at_level(logging.ERROR, "tunsec.updown"):
        run(body())
    assert "up-client for rw: not run, 2 of the IKE SA's events wait already" in caplog.text


def test_a_worker_restart_gives_each_up_client_its_down_client_before_the_next_up(tmp_path: Path) -> None:
    """The worker dies with the Child SA in it: the script hears down-client for it (its SAs are
    gone), then up-client for the Child SA renegotiated, then down-client when the client leaves.
    Before, the first up-client never got its down-client."""
    argv, log, _ = script(tmp_path)

    async def body() -> None:
        gw = await pool_gateway(1)
        with_updown(gw, argv)
        gw.connect(A)
        await gw.settle()
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)   # the worker died; a new one
        await gw.service.worker_restarted()
        await gw.settle()
        established(gw.sites[A]).delete(_now())   # the client leaves
        await gw.settle()

    run(body())
    calls = [line.split() for line in lines(log)]
    assert [(verb, client) for verb, _, _, client in calls] == \
        [("up-client", f"{VIP}/32"), ("down-client", f"{VIP}/32")] * 2
    first, second = calls[0][2], calls[2][2]   # the reqids: each down names its up's
    assert [reqid for _, _, reqid, _ in calls] == [first, first, second, second]


def test_an_up_skipped_over_the_bound_is_counted_and_gets_no_down(tmp_path: Path) -> None:
    """(A bound of 0, so that the first up is over it.)  Counted by child in status and metrics."""
    argv, log, _ = script(tmp_path)

    async def body() -> None:
        gw = await pool_gateway(1)
        gw.service.scripts = Scripts(gw.service._spawn, limit=0)
        with_updown(gw, argv)
        gw.connect(A)
        await gw.settle()
        assert gw.service.events.updown_skipped == {("gw", "net"): 1}
        doc = gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK))
        assert doc["updown_skipped"] == [{"connection": "gw", "child": "net", "count": 1}]
        (metric,) = [f for f in event_families(gw.service.events, 0) if f.name == "tunsec_updown_skipped"]
        assert [(s.labels, s.value) for s in metric.samples if s.name.endswith("_total")] == \
            [({"connection": "gw", "child": "net"}, 1.0)]
        established(gw.sites[A]).delete(_now())
        await gw.settle()

    run(body())
    assert not log.exists()   # neither its up nor a down for it


SITE_CHILDREN = 40   # over the old bound of 32 ups waiting, under max_child_sas (64)


def test_a_worker_restart_of_a_site_with_40_child_sas_runs_every_up_and_down(tmp_path: Path) -> None:
    """Site 0 has 40 Child SAs (one per subnet pair).  The worker dies: 40 down-clients queue (the
    script hangs on them until the gate opens), then the 40 renegotiated Child SAs' up-clients
    come.  Before, ups past the 32nd were skipped for good: live Child SAs without their rules."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_VERB" = down-client ]')

    async def body() -> None:
        gw = Gateway(1, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        names = [f"n{k}" for k in range(SITE_CHILDREN)]
        cfg = dataclasses.replace(
            psk_ike("site0", "site0.example", RemoteAuth("psk", Identity.parse("gw.example")), site_ip(0), GW,
                    "10.2.1.0/24", "10.1.0.0/16"),
            mobike=False, force_encap=True,
            children=tuple(child_config(n, f"10.2.1.{k}/32", f"10.1.{k}.0/24", "aes128gcm16")
                           for k, n in enumerate(names)))
        gw.sites[0] = IkeEndpoint([cfg], spi_allocator=functools.partial(next, itertools.count(SHARED_SPI)))
        gw.sites[0].initiate("site0", names[0], _now())
        await gw.settle()
        for name in names[1:]:
            gw.site_sa(0).initiate(name)
            await gw.settle()
        assert len(gw.children_of(0)) == SITE_CHILDREN
        await until(lambda: len(lines(log)) == SITE_CHILDREN)
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)   # the worker died; a new one
        await gw.service.worker_restarted()
        await gw.settle(wait_tasks=False)   # the downs hang: every Child SA is renegotiated meanwhile
        assert len(gw.children_of(0)) == SITE_CHILDREN
        assert gw.service.events.updown_skipped == {}
        assert len(lines(log)) == SITE_CHILDREN   # the first down still waits for the gate
        gate.touch()
        await until(lambda: len(lines(log)) == 3 * SITE_CHILDREN)
        await gw.settle()

    run(body())
    verbs = [line.split()[0] for line in lines(log)]
    assert verbs == ["up-client"] * SITE_CHILDREN + ["down-client"] * SITE_CHILDREN + ["up-client"] * SITE_CHILDREN
    nets = [line.split()[3] for line in lines(log)]
    every = sorted(f"10.2.1.{k}/32" for k in range(SITE_CHILDREN))   # the site's side of each
    assert sorted(nets[:SITE_CHILDREN]) == sorted(nets[SITE_CHILDREN:2 * SITE_CHILDREN]) == \
        sorted(nets[2 * SITE_CHILDREN:]) == every


def test_child_sas_created_and_deleted_while_the_script_hangs_queue_nothing(tmp_path: Path) -> None:
    """Client 1's first up hangs (until the gate opens).  Behind it, 200 Child SAs come and go
    before their turn: each down drops its up, nothing waits; one that stays (reqid 3, queued before
    them) still runs after the hanging one.  Before, each left two events queued (and ups
    past 32 skipped)."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_PEER_ID" = c1 ]')

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)))
        accepted = [scripts.submit(1, argv, dataclasses.replace(event(1, "10.3.0.1"), peer_id="c1")),
                    scripts.submit(1, argv, event(3, "10.3.0.3"))]
        for k in range(200):
            churn = event(100 + k, "10.3.1.0/24")
            accepted += [scripts.submit(1, argv, churn), scripts.submit(1, argv, dataclasses.replace(churn, up=False))]
        for _ in range(5):
            await asyncio.sleep(0)
        waiting = [t for t in tasks if not t.done()]
        logged = lines(log)
        gate.touch()   # before asserting: a failure must not leave the loop waiting for the script
        await asyncio.wait(tasks)
        assert all(accepted) and scripts.skipped == 0
        assert len(waiting) == 2 and not logged   # the hanging up and reqid 3's
        assert [line.split()[:3] for line in lines(log)] == [["up-client", "c1", "1"], ["up-client", "c3", "3"]]

    run(body())


def test_a_dropped_up_between_two_keeps_the_ike_sas_order(tmp_path: Path) -> None:
    """Ups 1 (hanging), 2, 3 queued; 2's down drops 2: 3 still waits for 1, then runs."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_REQID" = 1 ]')

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()
        scripts = Scripts(lambda coro: tasks.add(asyncio.ensure_future(coro)))
        for reqid in (1, 2, 3):
            assert scripts.submit(1, argv, event(reqid, f"10.3.0.{reqid}"))
        assert scripts.submit(1, argv, event(2, "10.3.0.2", up=False))
        for _ in range(5):
            await asyncio.sleep(0)
        logged = lines(log)
        gate.touch()
        await asyncio.wait(tasks)
        assert not logged   # 3 did not jump the queue when 2 left it
        assert [line.split()[2] for line in lines(log)] == ["1", "3"]

    run(body())


def test_an_event_cancelled_while_waiting_for_its_turn_lets_the_next_one_run(tmp_path: Path) -> None:
    """(Shutdown cancels the service's tasks.)  Up 2 waits behind the hanging up 1 and is cancelled:
    up 3, submitted after, still runs once up 1 ends.  Before, the cancel skipped up 2's
    bookkeeping and up 3 waited for it forever."""
    argv, log, gate = script(tmp_path, hang_if='[ "$PLUTO_REQID" = 1 ]')

    async def body() -> None:
        tasks: list[asyncio.Task[None]] = []
        scripts = Scripts(lambda coro: tasks.append(asyncio.ensure_future(coro)))
        assert scripts.submit(1, argv, event(1, "10.3.0.1")) and scripts.submit(1, argv, event(2, "10.3.0.2"))
        await asyncio.sleep(0)
        tasks[1].cancel()
        await asyncio.wait([tasks[1]])
        assert scripts.submit(1, argv, event(3, "10.3.0.3"))
        gate.touch()
        await until(lambda: len(lines(log)) == 2)
        await asyncio.wait(tasks)
        assert [line.split()[2] for line in lines(log)] == ["1", "3"]

    run(body())
