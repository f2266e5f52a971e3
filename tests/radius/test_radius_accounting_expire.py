"""A Child SA the worker ends by itself at its hard lifetime (after a failed rekey) is accounted in
full: its EXPIRE carries the SA's final counters, and the IKE service folds them into the session
as the Child SA's final DUMP would (the highest seen: no double counting with a DUMP before or after).

Two real IkeServices, each with the worker's request handling and the C fast path in-process,
wired in memory (test_ikeservice_rekey.Pair); accounting on side A sends its records to a small
accounting server on loopback (real UDP, a port the kernel picks).  Packets go through the real
dataplanes; a status DUMP reads the counters midway, and more traffic follows it: that part is what
only the EXPIRE still knows when the worker removes the SA at its hard time lifetime."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_ikeservice_rekey import Pair
from test_radius_accounting import AcctServer, serve, settings, until
from test_radius_messages import STATION

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.dataplane.worker import TimerKind
from tunsec.ike.constants import ExchangeType
from tunsec.ike.message import decode_header
from tunsec.radius.accounting import Accounting
from tunsec.radius.causes import Cause

LIFE_BYTES = 4000


@dataclasses.dataclass
class AcctPair(Pair):
    """Pair whose workers' EXPIREs reach the services, as the daemon hands them on."""

    def worker_event(self, side: str, data: bytes) -> None:
        super().worker_event(side, data)
        msg = pipe.decode(data)
        if isinstance(msg, pipe.Expire):
            self.svc[side].on_event(msg)


def octets(record: dict[str, int]) -> tuple[int, int]:
    return record["Acct-Input-Octets"], record["Acct-Output-Octets"]


async def accounted(life_bytes: int) -> tuple[AcctPair, Accounting, AcctServer, int]:
    """A's Child SA up, a session accounting it, traffic both ways read by a status DUMP, then more."""
    pair = AcctPair(life_bytes=life_bytes)
    await pair.start()
    pair.svc["a"].initiate("tun", "net")
    await pair.settle()
    svc = pair.svc["a"]
    server, port = await serve("answer")
    acct = svc.accounting = Accounting(settings(port), svc._acct_dump, svc._acct_children)
    handle = svc._ike_handle(pair.ike("a"))
    acct.start(handle, "alice", STATION, [])
    assert pair.traffic("a", 3) == 3 and pair.traffic("b", 2) == 2
    acct.observe(await svc._acct_dump())   # a `tunsec status`
    return pair, acct, server, handle


async def stop(pair: AcctPair, acct: Accounting, server: AcctServer, handle: int) -> dict[str, int]:
    """The Stop of A's session, once its Child SA went down; tunsec status's usage of the IKE SA
    before it is the Stop's."""
    await pair.settle()   # the DELETE exchange: the Child SA goes down, its final DUMP is read
    assert not pair.svc["a"].children
    (ike,) = pair.svc["a"].ike_sas()
    text = await pair.status_text("a")
    acct.stop(handle, Cause.USER_REQUEST)
    await until(lambda: server.of("Stop"))
    acct.close()
    server.transport.close()
    (record,) = server.of("Stop")
    used = ike["usage"]
    assert (used["octets_in"], used["octets_out"]) == octets(record)
    assert f"accounted: in {used['octets_in']} bytes ({used['packets_in']} packets), out {used['octets_out']}" in text
    return record


def test_a_hard_time_expiry_keeps_the_traffic_after_the_last_read() -> None:
    """The worker's hard time lifetime removes both SAs of A's Child SA itself; the traffic since the
    status DUMP (4 packets out, 3 in) is in the Stop, once (the DUMP's reading is not added to it).
    The two EXPIREs make one DELETE exchange."""
    deletes = 0

    async def main() -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        nonlocal deletes
        pair, acct, server, handle = await accounted(0)
        mark = len(pair.timeline)
        seen = pair.workers["a"].dp.get(pair.child("a").spi_in, Direction.IN).counters["bytes"]
        assert pair.traffic("a", 4) == 4 and pair.traffic("b", 3) == 3
        state, worker = pair.child("a"), pair.workers["a"]
        final = (worker.dp.get(state.spi_in, Direction.IN).counters["bytes"],
                 worker.dp.get(state.spi_out, Direction.OUT, state.remote).counters["bytes"])
        for key in ((state.spi_in, Direction.IN, None), (state.spi_out, Direction.OUT, state.remote)):
            worker.worker._timer_fired(key, TimerKind.HARD)   # its hard time lifetime, now
        assert worker.dp.sas() == [] or all(s.state == "larval" for s in worker.dp.sas())
        record = await stop(pair, acct, server, handle)
        deletes = sum(1 for kind, side, data in pair.timeline[mark:] if kind == "send" and side == "a"
                      and decode_header(data).exchange == ExchangeType.INFORMATIONAL
                      and not decode_header(data).is_response)
        return octets(record), final, (seen, 0)

    stop_octets, final, (seen_in, _) = asyncio.run(main())
    assert stop_octets == final and final[0] > seen_in
    assert deletes == 1


def test_a_hard_byte_limit_counts_up_to_the_last_packet_it_let_through() -> None:
    """A's outbound SA reaches its hard byte limit: dead, it lets nothing more through; the worker
    removes it as its EXPIRE goes up, so the Child SA's final DUMP no longer finds it: the
    session's output is what the EXPIRE said it carried up to the limit."""
    async def main() -> tuple[tuple[int, int], tuple[int, int]]:
        pair, acct, server, handle = await accounted(LIFE_BYTES)
        state, worker = pair.child("a"), pair.workers["a"]
        assert pair.traffic("a", 40) < 40   # 228-byte packets: the limit stops them
        out_key = (state.spi_out, Direction.OUT, state.remote)
        assert worker.dp.get(*out_key).state == "dead"   # its counters move no more
        final = (worker.dp.get(state.spi_in, Direction.IN).counters["bytes"], worker.dp.get(*out_key).counters["bytes"])
        worker.worker.drain_events()   # the fast path's EXPIRE goes up (the daemon's event fd)
        assert out_key not in {(sa.spi, sa.direction, sa.remote) for sa in worker.dp.sas()}
        return octets(await stop(pair, acct, server, handle)), final

    stop_octets, final = asyncio.run(main())
    assert stop_octets == final and LIFE_BYTES - 228 < final[1] <= LIFE_BYTES


@pytest.mark.parametrize("order", ["expire-first", "dump-first"])
def test_an_expire_and_a_dump_that_raced_it_count_once(order: str) -> None:
    """The EXPIRE's counters and a DUMP that read the SA just before it are the same traffic: the
    session counts them once, whichever the service sees first."""
    async def main() -> tuple[tuple[int, int], int]:
        pair, acct, server, handle = await accounted(0)
        state, worker = pair.child("a"), pair.workers["a"]
        assert pair.traffic("a", 5) == 5
        dump = await pair.svc["a"]._acct_dump()
        out_key = (state.spi_out, Direction.OUT, state.remote)
        final = worker.dp.get(*out_key).counters["bytes"]
        if order == "dump-first":
            acct.observe(dump)
        worker.worker._timer_fired(out_key, TimerKind.HARD)
        if order == "expire-first":
            acct.observe(dump)
        return octets(await stop(pair, acct, server, handle)), final

    (_, out), final = asyncio.run(main())
    assert out == final
