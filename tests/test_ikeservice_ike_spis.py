"""The IKE service tells the worker its established IKE SAs' SPIs (IKE_SPI_ADD / IKE_SPI_DELETE,
services/ike/trusted.py) so their IKE datagrams get the worker's reserve against spoofed floods:
two real IkeServices wired in memory, each with the worker's real request handling and C fast path
behind the pipe codec (test_ikeservice_rekey's Pair).  Established, IKE SA rekeyed (the new SPI in,
the old out), deleted (out), and sent again to a new worker; a DPD on the wire is flagged known by
the receiving worker exactly while its SPI is held."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

import pytest
from test_ikeservice_rekey import Pair, established

from tunsec import metrics
from tunsec.conf.config import Config
from tunsec.dataplane import pipe, siphash
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.events import DownReason
from tunsec.ike.sa import IkeSa
from tunsec.ike.spi_tag import IkeSpiTag


def spi_requests(pair: Pair, side: str, since: int = 0) -> list[tuple[str, bytes]]:
    return [(type(m).__name__, m.spi) for m in pair.workers[side].log[since:]
            if isinstance(m, pipe.IkeSpiAdd | pipe.IkeSpiDelete)]


def held(pair: Pair, side: str) -> int:
    return pair.workers[side].dp.gauges()["ike_spis"]


def known_on_arrival(pair: Pair, side: str, datagram: bytes) -> bool:
    """Whether ``side``'s fast path flags this IKE datagram from the other side as its established SA's."""
    dp = pair.workers[side].dp
    dp.inbound(NON_ESP_MARKER + datagram, Endpoint(ipaddress.ip_address(pair.ip("b" if side == "a" else "a")), 4500))
    events = [e for e in dp.events() if e.data == datagram]
    assert len(events) == 1
    return events[0].known


def dpd(pair: Pair, side: str, sa: IkeSa | None = None) -> bytes:
    """``side``'s liveness check (an empty INFORMATIONAL) as it leaves (left on the wire: settle delivers it)."""
    before = len(pair.wire)
    (sa or pair.ike(side)).send_liveness()
    pair.svc[side]._pump()
    ((sender, data, _),) = pair.wire[before:]
    assert sender == side
    return data


def test_established_rekeyed_deleted_and_restarted_ike_sas_reach_the_worker() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        first = {s: pair.ike(s).local_spi for s in "ab"}
        for side in "ab":
            assert spi_requests(pair, side) == [("IkeSpiAdd", first[side])] and held(pair, side) == 1
        # each side's peer is the other's identity: the id the worker shares the reserve by
        peers = {s: pair.svc[s].trusted.spis[first[s]] for s in "ab"}
        assert peers["a"] != peers["b"] and 0 not in peers.values()
        assert [m.peer for m in pair.workers["a"].log if isinstance(m, pipe.IkeSpiAdd)] == [peers["a"]]
        # the other side's DPD names our SPI: flagged at the worker, so it has the reserve
        assert known_on_arrival(pair, "b", dpd(pair, "a")) and known_on_arrival(pair, "a", dpd(pair, "b"))
        await pair.settle()

        marks = {s: len(pair.workers[s].log) for s in "ab"}
        olds = {s: pair.ike(s) for s in "ab"}
        olds["a"].rekey()
        pair.svc["a"]._pump()
        await pair.settle()
        heirs = {s: olds[s].heir for s in "ab"}
        assert all(heirs.values()), [(s, sa.state) for s in "ab" for sa in pair.svc[s].endpoint.sas]
        new = {s: heir.local_spi for s, heir in heirs.items() if heir is not None}
        assert new["a"] != first["a"] and new["b"] != first["b"]
        for side in "ab":
            got = spi_requests(pair, side, marks[side])
            assert sorted(got) == [("IkeSpiAdd", new[side]), ("IkeSpiDelete", first[side])]
            assert held(pair, side) == 1
            # the rekeyed SA is the same peer's: the same share
            assert pair.svc[side].trusted.spis == {new[side]: peers[side]} and set(pair.svc[side].ike_up) == {new[side]}
        assert known_on_arrival(pair, "b", dpd(pair, "a", heirs["a"]))
        await pair.settle()

        # a new worker holds none: the service sends its set again
        pair.workers["a"].dp.ike_spi_delete(new["a"])
        mark = len(pair.workers["a"].log)
        await pair.svc["a"].worker_restarted()
        assert ("IkeSpiAdd", new["a"]) in spi_requests(pair, "a", mark) and held(pair, "a") == 1
        await pair.settle()

        marks = {s: len(pair.workers[s].log) for s in "ab"}
        heirs["b"].delete(time.monotonic())
        pair.svc["b"]._pump()
        await pair.settle()
        for side in "ab":
            assert spi_requests(pair, side, marks[side]) == [("IkeSpiDelete", new[side])]
            assert held(pair, side) == 0 and not pair.svc[side].trusted.spis

    asyncio.run(body())


def test_the_service_tags_its_spis_with_the_compiled_siphash_as_the_worker_checks_them() -> None:
    async def body() -> None:
        pair = await established()
        pair.probing = False
        svc = pair.svc["b"]
        # the compiled SipHash (the pure-Python one cost ~120k instructions per IKE SA), not the reference
        assert svc.spi_tag.siphash is siphash.compiled
        spi, peer = pair.ike("b").local_spi, pair.ip("a")
        # the same tag the reference makes, and the one b's worker takes as proof of a's address
        assert IkeSpiTag(svc.spi_tag.key).carries(spi, peer)
        dp = pair.workers["b"].dp
        assert spi[4:] == dp.ike_spi_tag(svc.spi_tag.key, int.from_bytes(spi[:4], "big"),
                                         Endpoint(ipaddress.ip_address(peer), 4500)).to_bytes(4, "big")
        await pair.settle()

    asyncio.run(body())


def test_the_service_takes_eexist_as_done_and_counts_enospc(caplog: pytest.LogCaptureFixture) -> None:
    """EEXIST/ENOENT mean the service's set and the worker's already agree (a resend raced an add or a
    delete): nothing said; ENOSPC (the worker holds TS_IKE_SPI_MAX) is counted and said, rate-limited."""
    async def body() -> None:
        pair = Pair()
        await pair.start()
        svc, worker = pair.svc["a"], pair.workers["a"]
        spi = bytes.fromhex("0102030405060708")
        worker.dp.ike_spi_add(spi)
        with caplog.at_level(logging.WARNING, "tunsec.ike"):
            svc.trusted.add(spi)
            for _ in range(3):
                await asyncio.sleep(0)
            assert [m.spi for m in worker.log if isinstance(m, pipe.IkeSpiAdd)] == [spi]   # answered EEXIST
            assert worker.dp.gauges()["ike_spis"] == 1 and svc.trusted.refused == 0 and caplog.records == []
            for n in range(2):
                svc.trusted._answered([pipe.Reply(5 + n, pipe.MsgType.IKE_SPI_ADD, Errno.ENOSPC)])
        assert svc.trusted.refused == 2 and set(svc.trusted.spis) == {spi}
        assert len(caplog.records) == 1 and "no reserve" in caplog.records[0].getMessage()
        # ours, not a peer's: shown as itself, not among the peers' drops or refusals
        doc = svc.status(pipe.Reply(1, pipe.MsgType.DUMP, Errno.OK))
        assert doc["ike_reserve_refused"] == 2
        assert "ike_reserve_refused" not in {*doc["ike_drops"], *doc["ike_refused"]}
        assert "IKE SAs the worker had no room for (their IKE has no reserve against floods): 2" \
            in (await pair.status_text("a")).splitlines()
        assert "no room" not in await pair.status_text("b")   # none refused: no line
        families = {f.name: f for f in metrics.state_families(doc, True)}
        assert families["tunsec_ike_reserve_refused"].samples[0].value == 2

    asyncio.run(body())



async def step(pair: Pair) -> tuple[str, bytes, int]:
    """One datagram off the wire into the other side, its tasks done: the datagram."""
    item = pair.wire.pop(0)
    pair.deliver(*item)
    for _ in range(5):
        await asyncio.sleep(0)
    tasks = [t for s in pair.svc.values() for t in (*s._tasks, *s.sockets.natt_sends)]
    if tasks:
        await asyncio.wait(tasks)
    return item


def live(pair: Pair, side: str) -> set[bytes]:
    """Our SPIs of ``side``'s IKE SAs past authentication that the engine still has."""
    return {sa.local_spi for sa in pair.svc[side].endpoint.sas if sa.state.value in ("established", "rekeyed")}


def test_a_rekeyed_ike_sa_keeps_its_reserve_until_its_delete_is_through() -> None:
    """The old IKE SA's closing DELETE exchange gets the reserve too: its SPI leaves the worker's set
    when the SA is gone, not at the rekey."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        olds = {s: pair.ike(s) for s in "ab"}
        first = {s: olds[s].local_spi for s in "ab"}
        olds["a"].rekey()
        pair.svc["a"]._pump()
        await step(pair)              # A's rekey request: B rekeyed (its old SA lingers for the DELETE)
        await step(pair)              # B's answer: A rekeyed, its DELETE of the old SA leaves
        ((sender, delete, _),) = pair.wire
        assert sender == "a" and olds["a"].heir is not None and olds["b"].heir is not None
        new = {s: h.local_spi for s in "ab" if (h := olds[s].heir) is not None}
        for side in "ab":
            assert set(pair.svc[side].trusted.spis) == {first[side], new[side]} == live(pair, side)
            assert held(pair, side) == 2
        assert known_on_arrival(pair, "b", delete)   # A's DELETE names B's old SPI: it has the reserve
        await step(pair)              # B deletes its old SA and answers
        ((sender, answer, _),) = pair.wire
        assert sender == "b" and olds["b"].is_closed
        assert set(pair.svc["b"].trusted.spis) == {new["b"]} and held(pair, "b") == 1
        assert known_on_arrival(pair, "a", answer)   # and B's answer names A's old SPI
        await step(pair)
        assert olds["a"].is_closed
        for side in "ab":
            assert set(pair.svc[side].trusted.spis) == {new[side]} == set(pair.svc[side].ike_up) == live(pair, side)
            assert held(pair, side) == 1

    asyncio.run(body())


def test_a_rekeyed_ike_sa_the_peer_never_deletes_gives_its_spi_up_when_it_stops_lingering() -> None:
    """B rekeys, its DELETE never arrives: A keeps its old SA for REKEYED_LINGER and holds its SPI as
    long; then both go.  B gives up its unanswered DELETE and its old SPI goes as well.  A worker restart
    meanwhile is sent the lingering SPI with the rest."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        olds = {s: pair.ike(s) for s in "ab"}
        olds["b"].rekey()
        pair.svc["b"]._pump()
        await step(pair)
        await step(pair)
        ((sender, _, _),) = pair.wire
        assert sender == "b"
        pair.wire.clear()             # B's DELETE of the old IKE SA is lost, and each retransmission
        for side in "ab":
            assert len(pair.svc[side].trusted.spis) == 2 and held(pair, side) == 2
        pair.workers["a"].dp.ike_spi_delete(olds["a"].local_spi)
        pair.workers["a"].dp.ike_spi_delete(pair.ike("a").local_spi)
        await pair.svc["a"].worker_restarted()
        await pair.settle()
        assert held(pair, "a") == 2
        pair.wire.clear()
        at = time.monotonic()
        while not (olds["a"].is_closed and olds["b"].is_closed):
            at += 30.0
            for side in "ab":
                pair.svc[side].endpoint.handle_timer(at)
                pair.svc[side]._pump()
            pair.wire.clear()
            assert at < time.monotonic() + 3600, [o.state for o in olds.values()]
        await pair.settle()
        for side in "ab":
            assert pair.ike(side).local_spi not in (olds[side].local_spi,)
            assert set(pair.svc[side].trusted.spis) == live(pair, side) == {pair.ike(side).local_spi}
            assert held(pair, side) == 1

    asyncio.run(body())


async def lingering(pair: Pair) -> IkeSa:
    """A rekeys its IKE SA and its DELETE of the old one is lost: B's old SA lingers.  B's old SA."""
    old = pair.ike("b")
    pair.ike("a").rekey()
    pair.svc["a"]._pump()
    await step(pair)
    await step(pair)
    pair.wire.clear()
    assert old.state.value == "rekeyed" and len(pair.svc["b"].trusted.spis) == 2 and held(pair, "b") == 2
    return old


async def dead_peer(pair: Pair) -> None:
    """A stops answering: B's DPD gives up, the IKE SA goes with its lingering predecessor."""
    svc = pair.svc["b"]
    pair.ike("b").send_liveness()
    svc._pump()
    at = time.monotonic()
    while any(sa.state.value == "established" for sa in svc.endpoint.sas):
        pair.wire.clear()
        at += 30.0
        svc.endpoint.handle_timer(at)
        svc._pump()
        assert at < time.monotonic() + 3600
    assert svc.events.dpd_failures["tun"] == 1


async def initial_contact(pair: Pair) -> None:
    """A rebooted (forgot its IKE SAs) and comes back: its INITIAL_CONTACT replaces B's old ones."""
    for sa in pair.svc["a"].endpoint.sas:
        sa.drop(DownReason.DELETED_BY_PEER)
    pair.svc["a"]._pump()
    await pair.settle()
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()


def closed(sa: IkeSa) -> set[bytes]:
    return {sa.local_spi} if sa.is_closed else set()


async def linger_out(pair: Pair, old: IkeSa) -> None:
    """B's clock past REKEYED_LINGER, A hearing nothing more."""
    svc, at = pair.svc["b"], time.monotonic()
    while not old.is_closed:
        at += 30.0
        svc.endpoint.handle_timer(at)
        svc._pump()
        pair.wire.clear()
        assert at < time.monotonic() + 3600
    await pair.settle()


@pytest.mark.parametrize("how", ["terminate", "dead peer", "initial contact", "reload"])
def test_no_way_an_ike_sa_goes_leaves_its_spi_held(how: str) -> None:
    """Whichever path closes an IKE SA with its rekeyed predecessor still lingering, the service's set
    and the worker's hold the SPIs of the IKE SAs B still has, nothing more."""
    async def body() -> None:
        pair = await established()
        pair.probing = False
        svc = pair.svc["b"]
        old = await lingering(pair)
        if how == "terminate":
            assert svc.terminate("tun").deleted >= 1
        elif how == "dead peer":
            await dead_peer(pair)
        elif how == "initial contact":
            await initial_contact(pair)
        else:
            await svc.reload(Config(path="empty.conf"))
        await pair.settle()
        assert set(svc.trusted.spis) == live(pair, "b") == set(svc.ike_up) | ({old.local_spi} - closed(old))
        assert held(pair, "b") == len(svc.trusted.spis)
        await linger_out(pair, old)   # the old SA goes at the latest when it stops lingering
        assert set(svc.trusted.spis) == live(pair, "b") == set(svc.ike_up)
        assert held(pair, "b") == len(svc.trusted.spis) == (1 if how == "initial contact" else 0)

    asyncio.run(body())
