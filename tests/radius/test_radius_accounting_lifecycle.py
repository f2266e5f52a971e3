"""RADIUS accounting's beginning and end, its Interim-Update interval from the Access-Accept, and
failover past a dead server, against accounting servers on loopback (real UDP, ports the kernel
picks: safe in parallel): the Accounting-On before any Start, the Stops of the sessions still
open and then the Accounting-Off at shutdown (bounded with a dead server) or when a reload turns
accounting off, a server's Acct-Interim-Interval bounded below (RFC 2869 §5.16), and new records
passing a dead server by at once while the ones sent to it keep their retransmissions."""
from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from test_radius_accounting import CHILD1, AcctServer, Worker, child_sas, serve, settings, until
from test_radius_messages import STATION

from tunsec.radius import accounting
from tunsec.radius.accounting import MAX_SERVER_INTERVAL, MIN_SERVER_INTERVAL, Accounting
from tunsec.radius.causes import Cause
from tunsec.radius.health import DEAD_HOLD
from tunsec.radius.settings import RadiusSettings
from tunsec.services.ike import radius_edge

T = TypeVar("T")


class DropFirst(AcctServer):
    """Takes every request, but answers none before it has seen ``drop`` of them."""

    drop = 2

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.drop > 0:
            self.drop -= 1
            self.mode = "silent"
        else:
            self.mode = "answer"
        super().datagram_received(data, addr)


async def serve_dropping() -> tuple[AcctServer, int]:
    server = DropFirst()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                             local_addr=("127.0.0.1", 0))
    return server, transport.get_extra_info("sockname")[1]


def statuses(server: AcctServer) -> list[str]:
    return [r["Acct-Status-Type"] for r in server.records]


def test_accounting_on_goes_before_any_start_and_shutdown_stops_open_sessions_then_sends_off() -> None:
    """The On is retransmitted twice (the server drops it): the Starts still wait for its answer.
    At shutdown the session whose IKE SA is still up gets its Stop (NAS-Reboot), the one that
    ended keeps its own cause, and the Off is the last record."""
    async def main() -> tuple[AcctServer, Accounting]:
        server, port = await serve_dropping()
        worker = Worker(child_sas(CHILD1, 700, 800, 7, 8), [CHILD1])
        acct = Accounting(settings(port, timeout=0.5), worker.dump, worker.children, prefix=1700000000)
        acct.open(["192.0.2.1", "2001:db8::1"])
        acct.start("ike-1", "alice", STATION, ["10.3.0.1"])
        acct.start("ike-2", "bob", STATION, ["10.3.0.2"])
        acct.stop("ike-2", Cause.USER_REQUEST)
        await acct.shutdown(30)   # the server answers: nothing near this bound is waited for
        server.transport.close()
        return server, acct

    server, acct = asyncio.run(main())
    got = statuses(server)
    assert got[:3] == ["Accounting-On"] * 3, got   # sent, retransmitted twice, then answered
    assert got[-1] == "Accounting-Off" and got.count("Accounting-Off") == 1, got
    assert sorted(got[3:-1]) == ["Start", "Start", "Stop", "Stop"], got
    for onoff in (server.records[0], server.records[-1]):
        assert onoff["NAS-Identifier"] == RadiusSettings().nas_identifier and onoff["Acct-Session-Id"] == "1700000000-0"
        assert (onoff["NAS-IP-Address"], onoff["NAS-IPv6-Address"]) == ("192.0.2.1", "2001:db8::1")
        assert "User-Name" not in onoff and "Acct-Terminate-Cause" not in onoff
    stops = {r["User-Name"]: r for r in server.of("Stop")}
    assert stops["alice"]["Acct-Terminate-Cause"] == Cause.NAS_REBOOT
    assert (stops["alice"]["Acct-Input-Octets"], stops["alice"]["Acct-Output-Octets"]) == (700, 800)
    assert stops["bob"]["Acct-Terminate-Cause"] == Cause.USER_REQUEST
    assert acct.sessions == 0 and acct.stats.failed == 0


def test_shutdown_with_a_dead_server_ends_within_its_deadline_and_still_sends_the_off() -> None:
    """Records to a server that never answers would retransmit for 5 + 5 + 5 s: shutdown gives
    them two thirds of its 0.6 s, then sends the Off, then closes whatever is still under way."""
    async def main() -> tuple[AcctServer, Accounting]:
        server, port = await serve("silent")
        worker = Worker()
        slow = RadiusSettings(settings(port).servers, retransmit_timeout=5, retransmit_base=1.0, retransmit_tries=2,
                              accounting=True)
        acct = Accounting(slow, worker.dump, worker.children)
        acct.open()
        acct.start("ike-1", "alice", STATION, [])
        async with asyncio.timeout(12):   # well below the 15 s a record alone retransmits for
            await acct.shutdown(0.6)
        await until(lambda: server.of("Accounting-Off"))
        server.transport.close()
        return server, acct

    server, acct = asyncio.run(main())
    # the Start and the Stop were still waiting for the On: they were dropped, the Off went out
    assert statuses(server) == ["Accounting-On", "Accounting-Off"]
    assert acct.sessions == 0 and not acct._tasks


def test_a_reload_that_turns_accounting_off_stops_the_open_sessions_with_admin_reset_then_sends_off() -> None:
    """Through the IKE service's glue (radius_edge): the sessions still up get a Stop with their
    usage so far and Admin-Reset, then the Off; the service has no accounting any more."""
    async def main() -> tuple[AcctServer, Any]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1234, 5678, 12, 56), [CHILD1])
        acct = Accounting(settings(port), worker.dump, worker.children)
        tasks: list[asyncio.Task[Any]] = []

        def spawn(coro: Any) -> asyncio.Task[Any]:
            tasks.append(asyncio.ensure_future(coro))
            return tasks[-1]
        service = types.SimpleNamespace(accounting=acct, acct_retiring=set(), local_addrs={4: "192.0.2.1"},
                                        _spawn=spawn, _ike_handles={}, ike_up={})
        radius_edge._acct_open(service)   # type: ignore[arg-type]
        acct.start("ike-1", "alice", STATION, [])
        acct.start("ike-2", "bob", STATION, [])
        await until(lambda: len(server.of("Start")) == 2)
        radius_edge._acct_configure(service, None)   # type: ignore[arg-type]
        await asyncio.wait(tasks)
        server.transport.close()
        return server, service

    server, service = asyncio.run(main())
    assert service.accounting is None and not service.acct_retiring   # done: nothing left for close()
    got = statuses(server)
    assert got[0] == "Accounting-On" and got[-1] == "Accounting-Off" and got.count("Stop") == 2, got
    assert server.records[0]["NAS-IP-Address"] == "192.0.2.1"
    stops = {r["User-Name"]: r for r in server.of("Stop")}
    assert [s["Acct-Terminate-Cause"] for s in stops.values()] == [Cause.ADMIN_RESET] * 2
    assert (stops["alice"]["Acct-Input-Octets"], stops["alice"]["Acct-Output-Packets"]) == (1234, 56)


class WarpLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock can be moved forward: timers minutes ahead fire at once."""

    ahead = 0.0

    def time(self) -> float:
        return super().time() + self.ahead


def run_warped(main: Callable[[WarpLoop], Awaitable[T]]) -> T:
    loop = WarpLoop()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(main(loop))


def test_the_servers_interim_interval_is_bounded_below_and_above() -> None:
    """Three sessions: the configured interval (30 s), a server's 1 s (taken as 60 s) and a
    server's 2**32 - 1 s (taken as 7 days). The loop's clock jumps; each session's first
    Interim-Update comes when its bounded interval says, not before.

    The clock jumps only once every record is answered and its answer taken (``settled``), not
    as soon as the server got it: a jump while one is in flight fires its retransmission timer
    at once (the server counts the record twice), or finds the session's last record still
    under way, which skips its Interim-Update to the next interval (both flaked under load)."""
    async def main(loop: WarpLoop) -> AcctServer:
        server, port = await serve("answer")
        worker = Worker()
        acct = Accounting(settings(port, interval=30, timeout=0.5), worker.dump, worker.children)
        acct.start("cfg", "configured", STATION, [])
        acct.start("one", "server-1s", STATION, [], interim_interval=1)
        acct.start("huge", "server-huge", STATION, [], interim_interval=2**32 - 1)

        def interims(user: str) -> int:
            return sum(1 for r in server.of("Interim-Update") if r["User-Name"] == user)

        async def settled(check: Callable[[], bool]) -> None:
            await until(lambda: check() and not acct._tasks)
        await settled(lambda: len(server.of("Start")) == 3)
        loop.ahead = 31
        await settled(lambda: interims("configured") == 1)
        # the 1 s session's timer, had it been armed for 1 s, ran before the 30 s one's (the
        # loop runs due timers in order): its Interim-Update would have been sent first
        assert interims("server-1s") == 0
        loop.ahead = MIN_SERVER_INTERVAL + 1
        await settled(lambda: interims("server-1s") == 1)
        assert interims("server-huge") == 0
        loop.ahead = MAX_SERVER_INTERVAL - 100
        await settled(lambda: interims("configured") == 3)   # its timer was armed again at 31 and 61
        assert interims("server-huge") == 0
        loop.ahead = MAX_SERVER_INTERVAL + 1
        await until(lambda: interims("server-huge") == 1)
        acct.close()
        server.transport.close()
        return server

    server = run_warped(main)
    assert {r["Acct-Session-Id"] for r in server.of("Interim-Update")} == \
        {r["Acct-Session-Id"] for r in server.of("Start")}


def test_new_records_pass_a_dead_server_by_and_one_record_tries_it_again_after_the_hold() -> None:
    """Five Starts go to the first server (a primary: preference 200) before anyone knows it is dead: each waits out its
    retransmissions there, then the second server takes it. The ten after them go straight to
    the second server. Once DEAD_HOLD has passed (a fake clock) one record tries the first again
    while the others still pass it by; once it answers again, it is the first server again."""
    async def main() -> tuple[AcctServer, AcctServer, Accounting, list[int]]:
        dead, dead_port = await serve("silent")
        good, good_port = await serve("answer")
        now = [0.0]
        worker = Worker()
        acct = Accounting(settings(dead_port, good_port, timeout=0.2, primary=200), worker.dump, worker.children,
                          clock=lambda: now[0])
        seen = []
        for k in range(5):
            acct.start(f"ike-{k}", f"user{k}", STATION, [])
        await until(lambda: len(good.of("Start")) == 5)
        seen.append(len(dead.records))
        assert [h["passed_by"] for h in acct.health().values()] == [True, False]
        for k in range(5, 15):
            acct.start(f"ike-{k}", f"user{k}", STATION, [])
        await until(lambda: len(good.of("Start")) == 15)
        seen.append(len(dead.records))
        now[0] = DEAD_HOLD + 1
        acct.start("ike-15", "probe", STATION, [])
        acct.start("ike-16", "passes-by", STATION, [])
        await until(lambda: len(good.of("Start")) == 17)
        seen.append(len(dead.records))
        dead.mode = "answer"
        now[0] = 2 * DEAD_HOLD + 2
        acct.start("ike-17", "probe-answered", STATION, [])
        await until(lambda: acct.stats.responses == 18)   # answered by the first server
        acct.start("ike-18", "back-to-first", STATION, [])
        await until(lambda: acct.stats.responses == 19)
        assert [h["passed_by"] for h in acct.health().values()] == [False, False]
        acct.close()
        dead.transport.close()
        good.transport.close()
        return dead, good, acct, seen

    dead, good, acct, seen = asyncio.run(main())
    tries = 3   # settings(): the request and 2 retransmissions
    assert seen == [5 * tries, 5 * tries, 6 * tries], seen
    # (a retransmission on a loaded machine may bring one twice)
    assert {r["User-Name"] for r in dead.records[seen[-1]:]} == {"probe-answered", "back-to-first"}
    assert {"probe-answered", "back-to-first"}.isdisjoint(r["User-Name"] for r in good.records)
    assert acct.stats.timeouts == 6 and acct.stats.failed == 0


def test_the_service_closes_an_accounting_a_reload_turned_off_that_is_still_sending() -> None:
    """A reload turns accounting off while its server is silent: the retiring accounting keeps
    retransmitting its records (until its deadline, ACCT_RETIRE_WAIT). The IKE service closing (the
    process stops before it is done) closes its sockets too; it sends nothing more."""
    from tunsec.services.ike.service import IkeService

    async def main() -> None:
        silent, port = await serve("silent")
        slow = RadiusSettings(settings(port).servers, retransmit_timeout=5, retransmit_base=1.0, retransmit_tries=2,
                              accounting=True)
        svc = IkeService([], lambda: None, {4: "192.0.2.1"}, radius=slow)  # type: ignore[arg-type,return-value]
        svc._acct_open()
        acct = svc.accounting
        assert acct is not None
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: silent.records)   # the Accounting-On, unanswered
        svc._reload_radius(None)
        assert svc.accounting is None and svc.acct_retiring == {acct}
        (link,) = acct._links.values()
        (sock,) = link.sockets
        transport = sock.transport
        assert transport is not None and not transport.is_closing()   # still waiting for the On's answer
        svc.close()
        assert transport.is_closing() and not svc.acct_retiring
        async with asyncio.timeout(5):   # the retire task ends: it sends no Off once closed
            while svc._tasks:
                await asyncio.wait(list(svc._tasks))
        assert not acct._links and not acct._tasks
        assert statuses(silent) == ["Accounting-On"]
        silent.transport.close()

    asyncio.run(main())


def test_records_that_waited_for_a_slot_pass_by_a_server_found_dead_meanwhile(monkeypatch: Any) -> None:
    """A burst of records beyond a server's IDS slots waits for one: those that get a slot after
    the records before them found the server dead go to the next server at once, as records that
    came later do; they do not each wait out a retransmission round there first (one slot here
    instead of 256: a mass disconnect's Stops with a dead primary)."""
    monkeypatch.setattr(accounting, "IDS", 1)

    async def main() -> tuple[AcctServer, Accounting]:
        dead, dead_port = await serve("silent")
        good, good_port = await serve("answer")
        worker = Worker()
        acct = Accounting(settings(dead_port, good_port), worker.dump, worker.children, clock=lambda: 0.0)
        for k in range(3):
            acct.start(f"ike-{k}", f"user{k}", STATION, [])
        await until(lambda: len(good.of("Start")) == 3)
        acct.close()
        dead.transport.close()
        good.transport.close()
        return dead, acct

    dead, acct = asyncio.run(main())
    # the first record's request and its 2 retransmissions, nothing of the two that waited for its slot
    assert {r["User-Name"] for r in dead.records} == {"user0"}, dead.records
    assert acct.stats.timeouts == 1 and acct.stats.failed == 0


def test_a_new_accounting_run_within_the_same_second_repeats_no_session_id(monkeypatch: Any) -> None:
    """A reload turns accounting off and on again within one second: the new run's Acct-Session-Ids
    (``<start time>-<n>``, n from 1) must not repeat the old run's (another user's session, the
    old run's Accounting-On/-Off id)."""
    monkeypatch.setattr(accounting.time, "time", lambda: 1700000000.5)

    async def main() -> list[str | None]:
        ids = []
        for _ in range(2):
            acct = Accounting(settings(), Worker().dump, Worker().children)
            acct.start("ike-1", "alice", STATION, [])
            ids.append(started[0] if (started := acct.started("ike-1")) else None)
            acct.close()
        return ids

    first, second = asyncio.run(main())
    assert first is not None and second is not None and first != second, (first, second)


def test_the_off_reaches_every_live_server_when_a_silent_one_spent_the_deadline_on_its_stops() -> None:
    """The primary took the Start, then fell silent (not known dead yet): shutdown's Stop spends
    its two thirds there. The Off goes to every server at once, so the live one gets it; one
    after the other, the Off waited out the silent one's first retransmission and never got
    there. Each server got the On too (each may get sessions: the load is shared)."""
    async def main() -> tuple[AcctServer, AcctServer]:
        (primary, p_port), (backup, b_port) = await serve("answer"), await serve("answer")
        worker = Worker()
        slow = RadiusSettings(settings(p_port, b_port, primary=200).servers, retransmit_timeout=0.5,
                              retransmit_base=1.0, retransmit_tries=2, accounting=True)
        acct = Accounting(slow, worker.dump, worker.children)
        acct.open()
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: acct.stats.responses == 3)   # the On to each, the Start
        primary.mode = "silent"
        async with asyncio.timeout(10):   # a hang guard: the deadline is 0.6 s
            await acct.shutdown(0.6)
        await until(lambda: backup.of("Accounting-Off") and not acct._tasks)   # (cancelled ones end next turn)
        primary.transport.close()
        backup.transport.close()
        return primary, backup

    primary, backup = asyncio.run(main())
    assert statuses(backup) == ["Accounting-On", "Accounting-Off"]
    assert statuses(primary)[:3] == ["Accounting-On", "Start", "Stop"]
    assert statuses(primary)[-1] == "Accounting-Off"


def test_a_silent_backup_gets_its_on_without_holding_the_primarys_start() -> None:
    """The Accounting-On goes to every server; a session's record to a server waits for that
    server's On only: a silent backup (5 s retransmissions) holds no Start to the primary."""
    async def main() -> tuple[AcctServer, AcctServer, Accounting]:
        (primary, p_port), (backup, b_port) = await serve("answer"), await serve("silent")
        worker = Worker()
        slow = RadiusSettings(settings(p_port, b_port).servers, retransmit_timeout=5, retransmit_base=1.0,
                              retransmit_tries=2, accounting=True)
        acct = Accounting(slow, worker.dump, worker.children)
        acct.open()
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: primary.of("Start") and backup.of("Accounting-On"))
        acct.close()
        primary.transport.close()
        backup.transport.close()
        return primary, backup, acct

    primary, backup, acct = asyncio.run(main())
    assert statuses(primary) == ["Accounting-On", "Start"]
    assert statuses(backup) == ["Accounting-On"]
    assert acct.stats.failed == 0
