"""RADIUS accounting against a small accounting server on loopback (real UDP, a port the kernel
picks): the records of one session in order with one session id, usage summed over Child SAs
gone and installed (with Gigawords past 32 bits), forged answers dropped and counted, failover
to the next server, and records no server takes counted as lost without an exception reaching
the IKE side."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyrad import packet as rp
from test_radius_messages import SECRET, STATION

from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, SaInfo
from tunsec.ike.secret import Secret
from tunsec.radius.accounting import Accounting
from tunsec.radius.causes import Cause
from tunsec.radius.messages import DICTIONARY
from tunsec.radius.settings import RadiusServer, RadiusSettings
from tunsec.radius.usage import ChildRef

PEER = Endpoint(ipaddress.ip_address("198.51.100.7"), 4500)
ME = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
CHILD1, CHILD2 = ChildRef(0xC0000001, 0x0A000001, PEER), ChildRef(0xC0000002, 0x0A000002, PEER)


def sa(spi: int, direction: Direction, octets: int, packets: int) -> SaInfo:
    local, remote = (PEER, ME) if direction is Direction.IN else (ME, PEER)
    return SaInfo(spi, direction, "mature", Alg.AES128GCM16, False, 1, 64, local, remote, 0, False, False, 0,
                  {"packets": packets, "bytes": octets, "replay_drops": 0})


def child_sas(ref: ChildRef, octets_in: int, octets_out: int, packets_in: int,
              packets_out: int) -> list[SaInfo]:
    return [sa(ref.spi_in, Direction.IN, octets_in, packets_in),
            sa(ref.spi_out, Direction.OUT, octets_out, packets_out)]


@dataclass
class AcctServer(asyncio.DatagramProtocol):
    """Answers Accounting-Requests whose Request Authenticator verifies; ``mode``: ``answer``,
    ``forge`` (answers signed with another secret), ``silent``."""

    mode: str = "answer"
    records: list[dict[str, Any]] = field(default_factory=list)
    classes: list[list[bytes]] = field(default_factory=list)   # the Class attributes of each record
    transport: Any = None
    # the records once each: a retransmission is the same datagram (the client changes nothing in
    # it), and with the 50 ms retransmit timeout a loaded machine sends one now and then
    distinct: list[dict[str, Any]] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        req = rp.AcctPacket(packet=data, secret=SECRET, dict=DICTIONARY)
        assert req.VerifyAcctRequest(), "the Request Authenticator does not verify"
        self.records.append({k: req[k][0] for k in list(req.keys()) if isinstance(k, str)})
        if data not in self._seen:
            self._seen.add(data)
            self.distinct.append(self.records[-1])
        self.classes.append(list(req.get(25, [])))
        if self.mode == "silent":
            return
        if self.mode == "forge":
            req.secret = b"not the secret"
        self.transport.sendto(req.CreateReply().ReplyPacket(), addr)

    def of(self, status: str) -> list[dict[str, Any]]:
        """The records of that status, each once (retransmissions aside)."""
        return [r for r in self.distinct if r["Acct-Status-Type"] == status]


async def serve(mode: str) -> tuple[AcctServer, int]:
    server = AcctServer(mode)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                             local_addr=("127.0.0.1", 0))
    return server, transport.get_extra_info("sockname")[1]


def settings(*ports: int, interval: float = 0, timeout: float = 0.05, primary: int = 0) -> RadiusSettings:
    """``primary``: the first server's preference (over 100: it takes every record while it is
    up, however many are under way there)."""
    servers = tuple(RadiusServer(f"r{i}", ipaddress.ip_address("127.0.0.1"), Secret(SECRET), acct_port=port,
                                 preference=0 if i else primary)
                    for i, port in enumerate(ports))
    return RadiusSettings(servers, retransmit_timeout=timeout, retransmit_base=1.0, retransmit_tries=2,
                          accounting=True, accounting_interval=interval)


@dataclass
class Worker:
    """What the IKE service tells accounting: the worker's SAs, and the Child SAs installed now."""

    sas: list[SaInfo] = field(default_factory=list)
    live: list[ChildRef] = field(default_factory=list)
    fail: bool = False
    dumps: int = 0

    async def dump(self) -> Sequence[SaInfo]:
        self.dumps += 1
        if self.fail:
            raise RuntimeError("worker not running")
        return list(self.sas)

    def children(self, key: Hashable) -> list[ChildRef]:
        return list(self.live) if key == "ike-1" else []

    def delete(self, acct: Accounting, ref: ChildRef) -> None:
        """The IKE service's DELETEs of a Child SA reported gone: each SA leaves the worker, its answer
        with the SA's final counters (none if it is not there, or the worker cannot answer)."""
        for direction, spi in ((Direction.IN, ref.spi_in), (Direction.OUT, ref.spi_out)):
            mine = [s for s in self.sas if (s.direction, s.spi) == (direction, spi)]
            self.sas = [s for s in self.sas if s not in mine]
            final = None if self.fail or not mine else Lifetime(mine[0].counters["bytes"],
                                                                mine[0].counters["packets"])
            acct.deleted(ref.spi_in, direction, final)


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_start_interim_and_stop_carry_one_session_and_the_usage_of_all_child_sas() -> None:
    async def main() -> tuple[AcctServer, Accounting]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port, interval=0.05), worker.dump, worker.children, prefix=1700000000)
        acct.start("ike-1", "alice", STATION, ["10.3.0.1", "fd00::1"], [b"vpn-gold", b"cc-7"])
        await until(lambda: server.of("Interim-Update"))
        # CHILD1 is rekeyed: its last counters (its DELETEs' answers), then its successor's (past 2**32 octets in)
        worker.sas = child_sas(CHILD1, 1500, 2500, 15, 25) + child_sas(CHILD2, 2**32 + 5, 7, 3, 1)
        worker.live = [CHILD2]
        acct.child_down("ike-1", CHILD1)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await asyncio.sleep(0.1)
        assert not server.of("Stop")   # it waits for CHILD1's final counters
        worker.delete(acct, CHILD1)
        # the server records the Stop before its answer reaches us: wait for that too (a loaded machine)
        await until(lambda: server.of("Stop") and acct.stats.responses == len(server.records))
        acct.close()
        server.transport.close()
        return server, acct

    server, acct = asyncio.run(main())
    statuses = [r["Acct-Status-Type"] for r in server.records]
    assert statuses[0] == "Start" and statuses[-1] == "Stop" and set(statuses[1:-1]) == {"Interim-Update"}
    assert {r["Acct-Session-Id"] for r in server.records} == {"1700000000-1"}
    assert all(c == [b"vpn-gold", b"cc-7"] for c in server.classes), server.classes   # in every record, in order
    (start,), (interim, *_), (stop,) = server.of("Start"), server.of("Interim-Update"), server.of("Stop")
    for r in (start, stop):
        assert (r["User-Name"], r["Framed-IP-Address"], r["Framed-IPv6-Address"]) == ("alice", "10.3.0.1", "fd00::1")
        assert (r["NAS-Port-Type"], r["Called-Station-Id"], r["Calling-Station-Id"]) == \
            ("Virtual", STATION.called, STATION.calling)
    assert "Acct-Input-Octets" not in start
    assert (interim["Acct-Input-Octets"], interim["Acct-Output-Octets"], interim["Acct-Input-Packets"],
            interim["Acct-Output-Packets"]) == (1000, 2000, 10, 20)
    # 1500 + 2**32 + 5 octets in: 1505 and one Gigaword; out 2507, no Gigawords (as strongSwan: only when set)
    assert (stop["Acct-Input-Octets"], stop["Acct-Input-Gigawords"], stop["Acct-Output-Octets"]) == (1505, 1, 2507)
    assert "Acct-Output-Gigawords" not in stop
    assert (stop["Acct-Input-Packets"], stop["Acct-Output-Packets"], stop["Acct-Terminate-Cause"]) == (18, 26, 1)
    assert acct.stats.failed == 0 and acct.stats.responses == len(server.records) and acct.sessions == 0


def test_forged_answers_are_dropped_the_next_server_takes_over_and_lost_records_are_counted() -> None:
    async def main() -> tuple[AcctServer, Accounting, Accounting]:
        forger, forger_port = await serve("forge")
        good, good_port = await serve("answer")
        worker = Worker()
        # exact counts of retransmissions below: a retransmit timeout a loaded machine's answer
        # on loopback never misses (at 50 ms one late answer added a retransmission)
        acct = Accounting(settings(forger_port, good_port, timeout=0.5), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, ["10.3.0.1"])
        await until(lambda: acct.stats.responses == 1)   # its answer taken, not only the Start received
        health = {name: h["state"] for name, h in acct.health().items()}
        assert health == {"r0": "down", "r1": "up"}   # the forger's answers do not count as answers
        # nobody answers, and the worker cannot be asked for counters: the Stop is lost, and counted
        silent, silent_port = await serve("silent")
        worker.fail, worker.live = True, [CHILD1]
        lost = Accounting(settings(silent_port), worker.dump, worker.children)
        lost.start("ike-1", "bob", STATION, [])
        lost.child_down("ike-1", CHILD1)
        worker.delete(lost, CHILD1)
        lost.stop("ike-1", Cause.LOST_SERVICE)   # returns at once: nothing waits for RADIUS
        await until(lambda: lost.stats.failed == 2)
        for s in (forger, good, silent):
            s.transport.close()
        acct.close()
        lost.close()
        assert [r["User-Name"] for r in good.records] == ["alice"]
        return forger, acct, lost

    forger, acct, lost = asyncio.run(main())
    # the forger got the request and its 2 retransmissions, its 3 answers did not verify
    assert len(forger.records) == 3 and acct.stats.bad == 3 and acct.stats.timeouts == 1
    assert (acct.stats.responses, acct.stats.failed, acct.stats.retransmissions) == (1, 0, 2)
    assert lost.stats.as_dict() == {
        "requests": 2, "retransmissions": 4, "timeouts": 2, "responses": 0, "failed": 2, "bad": 0, "late": 0,
        "unmatched": 0, "waits": 0, "busy": 0, "rcvbuf_drops": 0}
    assert lost.sessions == 0


def test_children_going_down_need_no_dump_their_deletes_answers_carry_their_counters() -> None:
    async def main() -> Worker:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1, 1, 1, 1) + child_sas(CHILD2, 2, 2, 2, 2))
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)
        acct.child_down("ike-1", CHILD2)
        acct.stop("ike-1", Cause.ADMIN_RESET)
        worker.delete(acct, CHILD2)
        worker.delete(acct, CHILD1)
        await until(lambda: server.of("Stop"))
        (stop,) = server.of("Stop")
        assert (stop["Acct-Input-Octets"], stop["Acct-Terminate-Cause"]) == (3, 6)
        server.transport.close()
        acct.close()
        return worker

    assert asyncio.run(main()).dumps == 0


def test_one_start_per_ike_sa() -> None:
    async def main() -> AcctServer:
        server, port = await serve("answer")
        worker = Worker()
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.start("ike-1", "alice", STATION, [])
        acct.start("ike-2", "bob", STATION, [])
        await until(lambda: len(server.of("Start")) == 2)
        await asyncio.sleep(0.1)
        server.transport.close()
        acct.close()
        return server

    server = asyncio.run(main())
    assert [r["User-Name"] for r in server.of("Start")] == ["alice", "bob"]
    assert len({r["Acct-Session-Id"] for r in server.records}) == 2


def test_interim_updates_reuse_a_dump_younger_than_a_second() -> None:
    async def main() -> tuple[AcctServer, Worker]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1, 1, 1, 1), [CHILD1])
        now = [0.0]   # a fake clock: every DUMP stays recent until it moves
        acct = Accounting(settings(port, interval=0.02), worker.dump, worker.children, clock=lambda: now[0])
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: len(server.of("Interim-Update")) >= 4)
        assert worker.dumps == 1
        now[0] = 1.5   # older than SAMPLE_REUSE: the next one asks the worker again
        worker.sas = child_sas(CHILD1, 9, 9, 9, 9)
        await until(lambda: server.of("Interim-Update")[-1]["Acct-Input-Octets"] == 9)
        server.transport.close()
        acct.close()
        return server, worker

    _, worker = asyncio.run(main())
    assert worker.dumps == 2


def test_no_interim_update_queues_behind_a_record_no_server_has_answered_yet() -> None:
    """A dead or slow server and an interval shorter than a record's retransmissions: the session
    keeps one record under way, not one more queued per interval (memory without bound); once the
    server answers, Interim-Updates go out again."""
    class Counting(Accounting):
        fired = 0

        def _interim(self, key: Hashable, s: Any) -> None:
            self.fired += 1
            super()._interim(key, s)

    async def main() -> tuple[AcctServer, int, int]:
        server, port = await serve("silent")
        worker = Worker()
        slow = RadiusSettings(settings(port).servers, retransmit_timeout=0.3, retransmit_base=1.0, retransmit_tries=5,
                              accounting=True, accounting_interval=0.01)
        acct = Counting(slow, worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: acct.fired >= 5)
        under_way = len(acct._tasks)     # the Start's, unanswered
        server.mode = "answer"           # the Start's next retransmission is answered
        await until(lambda: server.of("Interim-Update"))
        acct.close()
        server.transport.close()
        return server, under_way, acct.fired

    server, under_way, fired = asyncio.run(main())
    assert under_way == 1
    assert server.of("Start") and fired >= 5


def test_records_beyond_256_under_way_wait_their_turn_instead_of_being_lost() -> None:
    """A gateway's sessions send together (a burst of clients, a mass disconnect): more records
    than the 256 RADIUS identifiers of a server are queued, none is lost as Busy."""
    async def main() -> tuple[AcctServer, Accounting]:
        server, port = await serve("answer")
        patient = RadiusSettings(settings(port).servers, retransmit_timeout=0.5, accounting=True)
        acct = Accounting(patient, Worker().dump, Worker().children)
        for i in range(300):
            acct.start(f"ike-{i}", f"user{i}", STATION, [])
        await acct.drain(30)
        acct.close()
        server.transport.close()
        return server, acct

    server, acct = asyncio.run(main())
    assert (acct.stats.busy, acct.stats.failed) == (0, 0)
    # every session's Start arrived (a retransmission under load may bring one twice)
    assert len({r["Acct-Session-Id"] for r in server.of("Start")}) == 300 and acct.stats.responses == 300


def test_a_dead_server_does_not_flood_the_log_the_counters_keep_every_lost_record(
        caplog: pytest.LogCaptureFixture) -> None:
    """30 sessions against a server that never answers: every Start is lost and counted, but
    the failover warnings and lost-record errors are rate limited (a gateway has thousands)."""
    sessions = 30

    async def main() -> Accounting:
        silent, port = await serve("silent")
        worker = Worker()
        acct = Accounting(settings(port), worker.dump, worker.children)
        for k in range(sessions):
            acct.start(f"ike-{k}", f"user{k}", STATION, [])
        await until(lambda: acct.stats.failed == sessions)
        silent.transport.close()
        acct.close()
        return acct

    with caplog.at_level(logging.WARNING, logger="tunsec.radius"):
        acct = asyncio.run(main())
    assert acct.stats.failed == sessions
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    failover = [r for r in caplog.records if r.levelno == logging.WARNING and "RADIUS accounting" in r.getMessage()]
    assert 1 <= len(lost) <= 10 and 1 <= len(failover) <= 10, (len(lost), len(failover))
