"""RADIUS accounting's usage is monotonic and keeps what Child SAs carried: across a worker
restart (the new worker's counters start from 0), a Child SA whose final DUMP fails, a DUMP of
a dead worker answering late, a Child SA that moves to a new peer address (MOBIKE), a rekeyed
Child SA's lingering inbound SA read again, and with the periodic DUMP bounding what a worker
crash can take along. A fake worker (its DUMP and the Child SAs installed now) and accounting
servers on loopback (real UDP, ports the kernel picks); the service's glue (radius_edge) on its own."""
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

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, SaInfo, SaSpec, Selector
from tunsec.dataplane.worker import Worker as DataplaneWorker
from tunsec.radius import accounting as accounting_module
from tunsec.radius.accounting import SAMPLE_EVERY, Accounting, Cause
from tunsec.radius.usage import ChildRef
from tunsec.services.ike import INBOUND_LINGER, installs, radius_edge
from tunsec.services.ike.radius_edge import ACCT_REREAD
from tunsec.services.ike.state import Lineage


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


def test_a_child_sa_whose_final_dump_fails_keeps_its_last_seen_usage() -> None:
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
        stop = await stopped(acct, server)
        return server.of("Interim-Update")[0], stop

    interim, stop = asyncio.run(main())
    assert usage(interim) == usage(stop) == (1000, 2000, 10, 20)


def test_a_dump_of_a_dead_worker_that_answers_after_the_restart_counts_no_more() -> None:
    """A final DUMP asked of the old worker answers only after the restart carried what was seen
    of CHILD1: counting it too would count CHILD1's traffic twice."""
    class Slow(Worker):
        answer = asyncio.Event()

        async def dump(self) -> Sequence[SaInfo]:
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
        worker.live = []
        acct.child_down("ike-1", CHILD1)
        await asyncio.sleep(0.05)   # its DUMP is asked of the old worker
        worker.sas = []
        acct.worker_restarted()
        worker.answer.set()
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == (1000, 2000, 10, 20)


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


def test_a_rekeyed_child_sa_is_read_again_for_the_packets_its_lingering_inbound_sa_takes() -> None:
    """CHILD1 is rekeyed: its final DUMP, then its outbound SA goes while its inbound SA lingers
    and takes 200 more octets in flight; the reread counts them, and the Stop waits for it."""
    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [CHILD2])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1, reread=0.2)
        await until(lambda: worker.dumps == 1)
        worker.sas = child_sas(CHILD1, 1200, 0, 12, 0)[:1]   # the inbound SA alone, 2 packets more
        return await stopped(acct, server)

    assert usage(asyncio.run(main())) == (1200, 2000, 12, 20)


@pytest.mark.parametrize(("members", "closing", "reread"), [({1: 7, 2: 7}, False, ACCT_REREAD), ({1: 7}, False, 0.0),
                                                             ({1: 7, 2: 7}, True, 0.0), ({1: 7, 2: 8}, False, 0.0)],
                         ids=["rekeyed", "deleted", "shutting-down", "client-back-in-another-ike-sa"])
def test_the_service_asks_for_a_reread_only_of_a_child_sa_whose_inbound_sa_lingers(
        members: dict[int, int], closing: bool, reread: float) -> None:
    """radius_edge: a Child SA whose lineage goes on in its IKE SA (rekeyed) lingers (installs._remove),
    and is read again before INBOUND_LINGER is over; the last of its lineage, the last of its IKE SA's
    in a lineage that goes on in another IKE SA of the client (installs._sibling), or one at shutdown,
    goes at once."""
    calls: list[tuple[object, ChildRef, float]] = []
    accounting = types.SimpleNamespace(child_down=lambda key, ref, again: calls.append((key, ref, again)))
    service = types.SimpleNamespace(accounting=accounting, closing=closing,
                                    children={h: types.SimpleNamespace(ike=ike) for h, ike in members.items()})
    service._lingers = functools.partial(installs._lingers, service)
    state = types.SimpleNamespace(handle=1, ike=7, spi_in=CHILD1.spi_in, spi_out=CHILD1.spi_out, remote=CHILD1.remote,
                                  lineage=Lineage(1, set(members)))
    radius_edge._acct_child_down(service, state)  # type: ignore[arg-type]
    assert calls == [(7, CHILD1, reread)] and 0 < ACCT_REREAD < INBOUND_LINGER


@pytest.mark.parametrize(("when", "expected"), [
    # its final DUMP still under way: the highest of the two, 2500 out (not 2000 + 2500)
    ("during", (1000, 2500, 10, 25)),
    # after its final DUMP was carried (2000 out): only the 500 it did not see are added
    ("after", (1000, 2500, 10, 25)),
    # after GOING_KEEP: nobody knows the SA by its SPI any more (the worker deleted it long since)
    ("long-after", (1000, 2000, 10, 20)),
], ids=["during-final-dump", "after-final-dump", "after-going-keep"])
def test_an_expire_of_a_child_sa_that_went_down_meanwhile_reaches_its_session_once(
        when: str, expected: tuple[int, int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """CHILD1 is down (the service no longer has it) when its outbound SA's EXPIRE comes with
    2500 octets out: while its final DUMP (which saw 2000) is under way, or just after it: the
    session has 2500 out either way, never 4500."""
    monkeypatch.setattr(accounting_module, "GOING_KEEP", 0.05)

    async def main() -> dict[str, int]:
        server, port = await serve("answer")
        worker = Worker(child_sas(CHILD1, 1000, 2000, 10, 20), [])
        acct = Accounting(settings(port), worker.dump, worker.children)
        acct.start("ike-1", "alice", STATION, [])
        acct.child_down("ike-1", CHILD1)

        def expire() -> None:
            acct.expired(Direction.OUT, CHILD1.spi_out, CHILD1.remote, 2500, 25)
        if when == "during":
            expire()
        await until(lambda: worker.dumps == 1)
        await asyncio.sleep(0.01)
        if when == "long-after":
            await asyncio.sleep(0.1)
        if when != "during":
            expire()
        expire()   # a repeat changes nothing
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


def test_a_lingering_inbound_sa_deleted_as_its_lineage_ends_is_read_before_it_goes() -> None:
    """A Child SA is rekeyed: its final DUMP reads 3 packets; its inbound SA lingers and takes 2
    more in flight; then the client's IKE SA closes, well within INBOUND_LINGER: installs.
    _drop_lingering deletes the SA at once (it must), but only after accounting read it one last
    time (Accounting.read_last cuts the reread's wait short, its DUMP goes ahead of the DELETE in
    the pipe): the Stop counts all 5 packets, and the SA was gone from the worker before it was sent."""
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
        acct.child_down("ike-1", ChildRef(spi, 0x0A000001, client), reread=ACCT_REREAD)   # rekeyed: it lingers
        await until(lambda: w.log == ["Dump"])
        arrive(2)   # in flight, after its final DUMP
        timer = asyncio.get_running_loop().call_later(INBOUND_LINGER, lambda: None)
        lineage = Lineage(1, set())
        lineage.lingering = {spi: (7, timer)}
        service = types.SimpleNamespace(accounting=acct, _unlater=lambda t: t.cancel(), worker=lambda: w)
        service._delete_sa = functools.partial(installs._delete_sa, service)
        acct.stop("ike-1", Cause.USER_REQUEST)   # the IKE SA is gone; then its last Child SA's removal
        await installs._drop_lingering(service, lineage, None)  # type: ignore[arg-type]
        assert lineage.lingering is None and timer.cancelled() and not any(s.spi == spi for s in w.dp.sas())
        await until(lambda: server.of("Stop"))
        acct.close()
        transport.close()
        return server.of("Stop")[0], w.log

    stop, log = asyncio.run(main())
    assert (stop["Acct-Input-Packets"], stop["Acct-Input-Octets"]) == (5, 5 * len(inner))
    assert log[:3] == ["Dump", "Dump", "Delete"] and gone_at_stop[-1]
