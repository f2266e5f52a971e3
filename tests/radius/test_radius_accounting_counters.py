"""RADIUS accounting's usage is monotonic and keeps what Child SAs carried: across a worker
restart (the new worker's counters start from 0), a Child SA whose DELETEs fail, a DUMP of a
dead worker answering late, a Child SA that moves to a new peer address (MOBIKE), a rekeyed
Child SA's lingering inbound SA counted up to its DELETE, and with the periodic DUMP bounding
what a worker crash can take along; a Child SA's final counters are its DELETEs' answers, so a
packet the worker took just before the DELETE is in the Stop. A fake worker (its DUMP, the Child
SAs installed now, its DELETEs' answers) and accounting servers on loopback (real UDP, ports the
kernel picks); the service's delete path (installs) with the worker's request handling and C fast
path in process."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import types
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from test_ikeservice_peers import esp_seal, ipv4_udp
from test_radius_accounting import CHILD1, CHILD2, AcctServer, Worker, child_sas, serve, settings, until
from test_radius_accounting_lifecycle import WarpLoop, run_warped
from test_radius_messages import STATION

from tunsec.conf.children import Child
from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, SaInfo, SaSpec, Selector
from tunsec.dataplane.worker import Worker as DataplaneWorker
from tunsec.ike.config import ChildConfig
from tunsec.radius import accounting as accounting_module
from tunsec.radius.accounting import SAMPLE_EVERY, Accounting
from tunsec.radius.causes import Cause
from tunsec.radius.usage import ChildRef, Usage
from tunsec.services.ike import INBOUND_LINGER, installs, radius_edge
from tunsec.services.ike.going_sas import GoingSas
from tunsec.services.ike.state import ChildState, Lineage

# the SpiPool of a service stub: every inbound SPI and lineage is the current worker's (installs._delete_sa asks)
_CURRENT_WORKER = types.SimpleNamespace(issued=lambda spi: True, generation=0)   # Lineage.worker's default


def usage(record: dict[str, int]) -> tuple[int, int, int, int]:
    return (record["Acct-Input-Octets"], record["Acct-Output-Octets"], record["Acct-Input-Packets"],
            record["Acct-Output-Packets"])


async def stopped(acct: Accounting, server: AcctServer) -> dict[str, int]:
    acct.stop("ike-1", Cause.USER_REQUEST)
    await until(lambda: server.of("Stop"))
    acct.close()
    server.transport.close()
    (stop,) = server.of("Stop")
    return stop


@pytest.mark.parametrize("again", [CHILD2, CHILD1], ids=["new-spis", "same-spis"])
def test_a_worker_restart_keeps_the_usage_last_seen_of_the_child_sas_it_took_along(again: ChildRef) -> None:
    """CHILD1 carried 1000/2000 octets by the last DUMP (a status query) and 500 more in before
    the worker died (lost: no one read them); the Child SA renegotiated in the new worker starts
    from 0. The Stop has CHILD1's 1000/2000 plus the new one's, not the new one's alone, nor (if
    the new one happens to have CHILD1's SPIs: the peer chooses one, the new worker the other)
    the higher of the two."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.observe(worker.sas)
        worker.sas = child_sas(CHILD1, 1500, 2000, 15, 20)
        worker.sas, worker.live = [], []   # the worker died with its SAs
        acct.worker_restarted()
        worker.sas, worker.live = child_sas(again, 300, 400, 3, 4), [again]   # renegotiated in the new one
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == (1300, 2400, 13, 24)


def test_interim_updates_never_go_down_across_a_worker_restart() -> None:
    """Interim-Updates every 50 ms read the DUMP themselves: after the restart the new Child SA's
    small counters add to what the old one had, each record at least the one before."""
    async def main() -> list[tuple[int, int, int, int]]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port, interval=0.05), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: len(server.of("Interim-Update")) >= 2)
        worker.sas, worker.live = [], []
        acct.worker_restarted()
        worker.sas, worker.live = child_sas(CHILD2, 5, 6, 1, 1), [CHILD2]
        seen = len(server.of("Interim-Update"))
        await until(lambda: len(server.of("Interim-Update")) >= seen + 2)
        stop = await stopped(acct, server)
        return [usage(r) for r in server.of("Interim-Update")] + [usage(stop)]

    records = asyncio.run(main())
    assert records[0] == (1000, 2000, 10, 20) and records[-1] == (1005, 2006, 11, 21), records
    assert all(a <= b for prev, cur in itertools.pairwise(records)
               for a, b in zip(prev, cur, strict=True)), records


def test_a_child_sa_whose_deletes_fail_keeps_its_last_seen_usage() -> None:
    """CHILD1 is deleted while the worker cannot answer: its final counters are the last ones
    an Interim-Update read, not 0; the Stop is not below that Interim-Update."""
    async def main() -> tuple[dict[str, int], dict[str, int]]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port, interval=0.05), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: server.of("Interim-Update"))
        worker.fail, worker.live = True, []
        acct.child_down("ike-1", CHILD1)
        worker.delete(acct, CHILD1)
        stop = await stopped(acct, server)
        return server.of("Interim-Update")[0], stop

    interim, stop = asyncio.run(main())
    assert usage(interim) == usage(stop) == (1000, 2000, 10, 20)


def test_a_dump_of_a_dead_worker_that_answers_after_the_restart_counts_no_more() -> None:
    """The Stop's DUMP asked of the old worker answers only after the restart carried what was seen
    of CHILD1: counting it too would count CHILD1's traffic twice."""
    class Slow(Worker):
        answer = asyncio.Event()

        async def dump(self) -> Sequence[SaInfo]:
            self.dumps += 1
            sas = list(self.sas)
            await self.answer.wait()
            return sas

    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Slow(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        worker.answer = asyncio.Event()
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.observe(worker.sas)
        worker.sas = child_sas(CHILD1, 1200, 2200, 12, 22)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await until(lambda: worker.dumps == 1)   # its DUMP is asked of the old worker
        worker.sas, worker.live = [], []
        acct.worker_restarted()
        worker.answer.set()
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        return server.of("Stop")[0]

    assert usage(asyncio.run(main())) == (1000, 2000, 10, 20)


def test_a_child_sa_being_deleted_as_the_worker_dies_keeps_what_was_seen_of_it() -> None:
    """CHILD2's DELETEs went to the worker that died (their answers never come): the restart carries
    what was last seen of it, and the Stop waiting for it goes."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD2, 1, 2, 1, 2), [CHILD2])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.observe(worker.sas)
        worker.live = []
        acct.child_down("ike-1", CHILD2)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await asyncio.sleep(0.05)
        assert not server.of("Stop")
        worker.sas = []
        acct.worker_restarted()
        acct.deleted(CHILD2.spi_in, Direction.IN, Lifetime(10**6, 10**3))   # the new worker's SA of that SPI
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        return server.of("Stop")[0]

    assert usage(asyncio.run(main())) == (1, 2, 1, 2)


def test_a_child_sa_that_moves_to_a_new_peer_address_is_counted_once() -> None:
    """MOBIKE migrates CHILD1's SAs (counters and all) to the client's new address: the Child SA
    is named with the new peer from then on, and is still one Child SA."""
    moved = ChildRef(CHILD1.spi_in, CHILD1.spi_out, Endpoint(ipaddress.ip_address("198.51.100.99"), 4500))

    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.observe(worker.sas)
        inbound, outbound = child_sas(moved, 1100, 2100, 11, 21)
        worker.sas, worker.live = [inbound, dataclasses.replace(outbound, remote=moved.remote)], [moved]
        acct.observe(worker.sas)
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == (1100, 2100, 11, 21)


def test_every_sample_every_seconds_a_dump_refreshes_all_sessions() -> None:
    """No Interim-Updates, no status queries: the periodic DUMP alone saw CHILD1's 1000/2000
    before the worker died, so the Stop has them (the loop's clock jumps past SAMPLE_EVERY)."""
    async def main(loop: WarpLoop) -> tuple[dict[str, int], int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD1])
        acct = Accounting(settings(port, timeout=0.5), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        await until(lambda: server.of("Start"))
        assert worker.dumps == 0
        loop.ahead = SAMPLE_EVERY + 1
        await until(lambda: worker.dumps == 1)
        await asyncio.sleep(0.01)
        worker.sas, worker.live = [], []
        acct.worker_restarted()
        return await stopped(acct, server), worker.dumps

    stop, dumps = run_warped(main)
    assert usage(stop) == (1000, 2000, 10, 20) and dumps == 1


def test_a_rekeyed_child_sas_lingering_inbound_sa_counts_up_to_its_delete() -> None:
    """CHILD1 is rekeyed: its outbound SA goes at once (2000 out), its inbound SA lingers for the
    packets in flight; a DUMP meanwhile (a status query) reads it still there (1100 in), and its
    DELETE's answer, INBOUND_LINGER later, has 200 octets more: the Stop waits for that, and counts it."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD2])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)
        outbound = worker.sas[1]
        worker.sas = child_sas(CHILD1, 1100, 0, 11, 0)[:1]
        acct.deleted(CHILD1.spi_in, Direction.OUT, Lifetime(outbound.counters["bytes"], outbound.counters["packets"]))
        # a DUMP shows the lingering inbound SA, and an outbound SA by the deleted one's name (another's,
        # added since): only the first counts
        acct.observe([*worker.sas, dataclasses.replace(outbound, counters={**outbound.counters, "bytes": 9999})])
        assert acct.usage("ike-1") == Usage(1100, 2000, 11, 20)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await asyncio.sleep(0.1)
        assert not server.of("Stop")
        worker.sas = child_sas(CHILD1, 1200, 0, 12, 0)[:1]   # the inbound SA alone, 1 packet more
        worker.delete(acct, CHILD1)
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        return server.of("Stop")[0]

    assert usage(asyncio.run(main())) == (1200, 2000, 12, 20)


def test_when_accounting_ends_with_the_ike_sa_up_its_stop_reads_a_lingering_sa_without_waiting() -> None:
    """A reload turns accounting off (retire) while a rekeyed Child SA's inbound SA lingers: the Stop
    (Admin-Reset) goes within the retire deadline, with what its DUMP reads of the SA still there."""
    async def main() -> tuple[dict[str, int], float]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD2])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)
        worker.delete(acct, ChildRef(0xDEAD0001, CHILD1.spi_out, CHILD1.remote))   # another Child SA's: no match
        acct.deleted(CHILD1.spi_in, Direction.OUT, Lifetime(2000, 20))
        worker.sas = child_sas(CHILD1, 1300, 0, 13, 0)[:1]
        loop = asyncio.get_running_loop()
        began = loop.time()
        await acct.retire(Cause.ADMIN_RESET, 1.0)
        took = loop.time() - began
        server.transport.close()
        return server.of("Stop")[0], took

    stop, took = asyncio.run(main())
    assert usage(stop) == (1300, 2000, 13, 20) and stop["Acct-Terminate-Cause"] == int(Cause.ADMIN_RESET)
    assert took < INBOUND_LINGER


@pytest.mark.parametrize(("when", "expected"), [
    # before its DELETE is answered (ENOENT: the EXPIRE's SA is gone): the highest, 2500 out (not 4500)
    ("before-delete", (1000, 2500, 10, 25)),
    # after its DELETEs were answered it cannot come with counters (the worker sends it before the
    # answer); were it to, nobody knows the SA any more: nothing counts twice
    ("after-delete", (1000, 2000, 10, 20)),
])
def test_an_expire_of_a_child_sa_that_went_down_meanwhile_reaches_its_session_once(
        when: str, expected: tuple[int, int, int, int]) -> None:
    """CHILD1 is down (the service no longer has it) when its outbound SA's EXPIRE comes with
    2500 octets out (its hard lifetime removed it: its DELETE finds nothing)."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)

        def expire() -> None:
            acct.expired(Direction.OUT, CHILD1.spi_out, CHILD1.remote, 2500, 25)
        if when == "before-delete":
            expire()
            worker.sas = worker.sas[:1]   # removed at its hard lifetime
        worker.delete(acct, CHILD1)
        expire()   # a repeat (or a late one) changes nothing
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == expected


def test_an_expire_of_an_sa_no_session_knows_changes_nothing() -> None:
    """Another peer's SA (same SPI, another address), or an unknown one: no session's usage moves."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)
        other = Endpoint(ipaddress.ip_address("198.51.100.99"), 4500)
        acct.expired(Direction.OUT, CHILD1.spi_out, other, 10**9, 10**6)
        acct.expired(Direction.IN, 0xDEAD0000, None, 10**9, 10**6)
        acct.expired(Direction.OUT, CHILD1.spi_out, CHILD1.remote, 10**9, 10**6, owner=("ike-9", CHILD1))
        worker.delete(acct, CHILD1)
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == (1000, 2000, 10, 20)



class PipeWorker:
    """The worker's request handling and C fast path (dataplane.worker.Worker, Dataplane) in process:
    a request is applied when it is sent, as the pipe delivers requests in the order they were
    sent, and its answer is read in a later event-loop turn (as test_ikeservice_peers.InProcessWorker)."""

    def __init__(self) -> None:
        self.dp = Dataplane()
        self.worker = DataplaneWorker(self.dp, lambda data: None, {}, asyncio.get_running_loop())
        self.ids = itertools.count(1)
        self.log: list[str] = []

    async def request(self, build: Callable[[int], pipe.Message]) -> list[pipe.Reply]:
        msg = build(next(self.ids))
        self.log.append(type(msg).__name__)
        replies = [pipe.decode(b) for b in self.worker.handle_datagram(pipe.encode(msg))]  # type: ignore[misc]
        await asyncio.sleep(0)
        return replies  # type: ignore[return-value]

    async def dump(self) -> Sequence[SaInfo]:   # as radius_edge._acct_dump
        return pipe.join_dump_replies(await self.request(lambda r: pipe.Dump(r))).sas


def test_a_lingering_inbound_sa_deleted_as_its_lineage_ends_counts_to_its_last_packet() -> None:
    """A Child SA is rekeyed: its inbound SA took 3 packets and lingers, taking 2 more in flight; then
    the client's IKE SA closes, well within INBOUND_LINGER: installs._drop_lingering deletes the SA at
    once (it must), and its DELETE's answer carries all 5 packets to the Stop, which waited for it;
    the SA was gone from the worker before the Stop was sent. No DUMP was needed."""
    key = bytes(range(20))
    inner = ipv4_udp("10.3.0.1", "10.1.0.5", b"in flight")
    client, me = Endpoint(ipaddress.ip_address("198.51.100.7"), 4500), Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
    gone_at_stop: list[bool] = []

    async def main() -> tuple[dict[str, int], list[str]]:
        w = PipeWorker()
        spi = w.dp.getspi()
        sel = Selector.from_networks(ipaddress.ip_network("10.3.0.1/32"), ipaddress.ip_network("10.1.0.0/24"))
        w.dp.update(SaSpec(spi, Direction.IN, Alg.AES128GCM16, key, False, 64, 1, me, client, Lifetime(),
                           Lifetime(), (sel,)))
        seq = itertools.count(1)

        def arrive(n: int) -> None:
            for _ in range(n):
                assert w.dp.inbound(esp_seal(spi, next(seq), key, inner), client) == (inner, Drop.NONE)

        class Server(AcctServer):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                super().datagram_received(data, addr)
                gone_at_stop.append(not any(s.spi == spi for s in w.dp.sas()))

        server = Server("answer")
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                                 local_addr=("127.0.0.1", 0))
        acct = Accounting(settings(transport.get_extra_info("sockname")[1]), w.dump, lambda key: [])
        acct.start("ike-1", "alice", STATION, [])
        arrive(3)
        acct.child_down("ike-1", ChildRef(spi, 0x0A000001, client))   # rekeyed: its inbound SA lingers
        acct.deleted(spi, Direction.OUT, None)   # (its outbound SA was never ADDed: none to count)
        arrive(2)   # in flight
        timer = asyncio.get_running_loop().call_later(INBOUND_LINGER, lambda: None)
        lineage = Lineage(1, members=set())
        lineage.lingering = {spi: (7, timer)}
        service = types.SimpleNamespace(accounting=acct, _unlater=lambda t: t.cancel(), worker=lambda: w,
                                        spi_pool=_CURRENT_WORKER, _lingering={}, going=GoingSas())
        service._delete_sa = functools.partial(installs._delete_sa, service)
        service._acct_deleted = functools.partial(radius_edge._acct_deleted, service)
        acct.stop("ike-1", Cause.USER_REQUEST)   # the IKE SA is gone; then its last Child SA's removal
        await asyncio.sleep(0.05)
        assert not server.of("Stop")   # it waits for the lingering SA's DELETE
        await installs._drop_lingering(service, lineage, None)  # type: ignore[arg-type]
        assert lineage.lingering is None and timer.cancelled() and not any(s.spi == spi for s in w.dp.sas())
        await until(lambda: server.of("Stop"))
        acct.close()
        transport.close()
        return server.of("Stop")[0], w.log

    stop, log = asyncio.run(main())
    assert (stop["Acct-Input-Packets"], stop["Acct-Input-Octets"]) == (5, 5 * len(inner))
    assert log == ["Delete"] and gone_at_stop[-1]


def test_a_child_sa_whose_outbound_sa_was_never_added_is_carried_when_its_inbound_sa_goes() -> None:
    """A rekey we answered whose outbound SA still waited on standby (standby.add_standby) when it
    went: installs._remove has no outbound SA to DELETE, tells accounting so, and the Stop goes once
    the inbound SA's DELETE answered its 2 packets."""
    key = bytes(range(20))
    inner = ipv4_udp("10.3.0.1", "10.1.0.5", b"standby")
    client, me = Endpoint(ipaddress.ip_address("198.51.100.7"), 4500), Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)

    async def main() -> tuple[dict[str, int], list[str]]:
        w = PipeWorker()
        spi = w.dp.getspi()
        sel = Selector.from_networks(ipaddress.ip_network("10.3.0.1/32"), ipaddress.ip_network("10.1.0.0/24"))
        w.dp.update(SaSpec(spi, Direction.IN, Alg.AES128GCM16, key, False, 64, 1, me, client, Lifetime(),
                           Lifetime(), (sel,)))
        for seq in (1, 2):
            assert w.dp.inbound(esp_seal(spi, seq, key, inner), client) == (inner, Drop.NONE)
        server, port = await serve("answer")
        acct = Accounting(settings(port), w.dump, lambda key: [])
        acct.start("ike-1", "alice", STATION, [])
        state = ChildState(1, 7, "gw", "net", 1, spi, 0x0A000001, client, me, "aes128gcm16", False, (), (),
                           Lineage(1, members={1}), Child("net", ChildConfig("net")))
        assert not state.out_installed
        acct.child_down("ike-1", ChildRef(state.spi_in, state.spi_out, state.remote))
        acct.stop("ike-1", Cause.USER_REQUEST)
        service = types.SimpleNamespace(accounting=acct, closing=False, worker=lambda: w, children={},
                                        _unlater=lambda t: None, _release=lambda lineage: None,
                                        spi_pool=_CURRENT_WORKER, _lingering={}, going=GoingSas())
        for name in ("_install_answered", "_delete_sa"):
            setattr(service, name, functools.partial(getattr(installs, name), service))
        service._acct_deleted = functools.partial(radius_edge._acct_deleted, service)
        await installs._remove(service, state, lineage_ended=True)  # type: ignore[arg-type]
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        return server.of("Stop")[0], w.log

    stop, log = asyncio.run(main())
    assert usage(stop) == (2 * len(inner), 0, 2, 0) and log == ["Delete"]


def test_a_stop_whose_child_sas_deletes_never_answer_goes_after_final_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service never reports CHILD1's DELETEs (a bug, a hung queue): the Stop is not held for
    ever; after FINAL_WAIT it goes, its DUMP reading CHILD1's SAs still in the worker."""
    monkeypatch.setattr(accounting_module, "FINAL_WAIT", 0.2)

    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)
        worker.sas = child_sas(CHILD1, 1100, 2100, 11, 21)
        acct.stop("ike-1", Cause.USER_REQUEST)
        await asyncio.sleep(0.1)
        assert not server.of("Stop")
        await until(lambda: server.of("Stop"))
        acct.close()
        server.transport.close()
        return server.of("Stop")[0]

    assert usage(asyncio.run(main())) == (1100, 2100, 11, 21)
