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

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Endpoint, Errno
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.sa import IkeSa


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

    asyncio.run(body())

