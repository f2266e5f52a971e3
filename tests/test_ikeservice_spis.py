"""Inbound SPIs through the IKE service: no negotiation fails because the pool is empty.

The engine takes inbound SPIs synchronously from a pool the service keeps
topped up with GETSPI.  When the pool is empty (the service just started, or
a burst of negotiations used it up) an IKE_AUTH or CREATE_CHILD_SA request
waits for the refill instead of being answered TEMPORARY_FAILURE, and so does
a rekey this side starts.  A real
IkeService over the in-process worker (see test_ikeservice_peers).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
import time

import pytest
from test_ikeservice_peers import SHARED_SPI, Gateway, InProcessWorker, connected, esp_open, run, site_ip

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Direction, Endpoint, Errno
from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.sa import IkeSa
from tunsec.services.ike import HELD_PER_SA, SPI_POOL, spis
from tunsec.services.ike.barrier import Barrier


def failures(gw: Gateway, i: int) -> list[NegotiationFailed]:
    return [e for e in gw.site_events[i] if isinstance(e, NegotiationFailed)]


def assert_all_up(gw: Gateway, n: int) -> None:
    """Each of the n sites has its one Child SA, and no negotiation failed."""
    assert [failures(gw, i) for i in range(n)] == [[]] * n
    assert all(len(gw.children_of(i)) == 1 for i in range(n))


def test_ike_auth_waits_for_an_spi_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        (init,) = gw.sites[0].datagrams_to_send(time.monotonic())
        gw.service.receive(init.data, (site_ip(0), 500))
        gw.service._pump()                        # answered (in gw.wire), its SPI asked for ahead
        for _ in range(5):
            await asyncio.sleep(0)
        gw.service.spi_pool.spis.clear()          # as if a burst had taken them all meanwhile
        await gw.settle()
        assert (gw.service.spi_pool.spi_waits, gw.service.spi_pool.held_total) == (1, 1)
        assert failures(gw, 0) == []
        (child,) = gw.children_of(0)
        assert child.spi_out == SHARED_SPI
        esp, _, drop = gw.send_to_site(0)
        assert drop is Drop.NONE and esp_open(gw.site_key_in(0), esp)[0] == SHARED_SPI
        assert len(gw.service.spi_pool.spis) == SPI_POOL
    run(body())


def test_create_child_sa_waits_for_an_spi_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = await connected(1)
        (old,) = gw.children_of(0)
        gw.service.spi_pool.spis.clear()
        site = gw.site_sa(0)
        site.rekey_child(site.children[0].unique_id)
        await gw.settle()
        assert failures(gw, 0) == []
        (new,) = gw.children_of(0)
        assert new.handle != old.handle and new.spi_out == SHARED_SPI + 1
        assert len([e for e in gw.site_events[0] if isinstance(e, ChildSaUp)]) == 2
    run(body())


def _hold_getspis(gw: Gateway) -> asyncio.Event:
    """GETSPIs the worker applies but does not answer until the event is set; the pool emptied: the
    next datagram of an IKE SA starts a refill and waits for it (a worker restart, a burst)."""
    answer = asyncio.Event()
    gw.worker.hold = lambda msg: answer.wait() if isinstance(msg, pipe.GetSpi) else None
    gw.service.spi_pool.spis.clear()
    return answer


def _junk(rng: random.Random) -> bytes:
    """An IKE header that checks out, random SPIs (both set), either direction: a spoofed flood's."""
    return struct.pack("!8s8sBBBBII", rng.randbytes(8), rng.randbytes(8), 46, 0x20, rng.choice((35, 36, 37)),
                       rng.choice((0x08, 0x00, 0x20, 0x28)), rng.randrange(1 << 32), 28)


def _of_sa(gw: Gateway, i: int, size: int = 28) -> bytes:
    """A datagram with the SPIs of the gateway's IKE SA with site i, as site i sends (nothing it can
    decrypt: the engine drops it once it gets it)."""
    sa = next(sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(i))
    return struct.pack("!8s8sBBBBII", sa.spi_i, sa.spi_r, 46, 0x20, 37, 0x08, 100, size) + bytes(size - 28)


def test_junk_for_no_ike_sa_is_never_held_while_the_pool_waits_for_the_worker() -> None:
    """While the pool is empty and the worker has not answered GETSPI, 2000 datagrams with random SPIs
    (spoofed sources) go into the engine at once and are counted there as unknown_spi: none is held,
    none takes the room of a client's IKE_AUTH, which waits and is answered when the SPIs come."""
    async def body() -> None:
        gw = Gateway(1)
        await gw.start()
        gw.connect(0)
        (init,) = gw.sites[0].datagrams_to_send(time.monotonic())
        gw.service.receive(init.data, (site_ip(0), 500))
        gw.service._pump()
        for _ in range(5):
            await asyncio.sleep(0)                # the SPI asked for ahead is in (then cleared)
        ((src, dst, answer),) = gw.wire
        gw.wire.clear()
        gw.sites[0].receive(answer, src, time.monotonic(), dst)
        (auth,) = gw.sites[0].datagrams_to_send(time.monotonic())
        getspi = _hold_getspis(gw)
        pool, stats = gw.service.spi_pool, gw.service.endpoint.stats
        rng = random.Random(7)
        for n in range(2000):
            gw.service.receive(_junk(rng), (f"203.0.113.{n % 250 + 1}", 500 + n))
        gw.service._pump()
        assert (stats.unknown_spi, pool.held_total, pool.held_waiting, pool.held_dropped) == (2000, 0, 0, 0)
        gw.service.receive_natt(pipe.Ike(data=auth.data, remote=Endpoint(ipaddress.ip_address(site_ip(0)), 4500)))
        assert pool.starved and (pool.held_total, pool.held_waiting, pool.spi_waits) == (1, 1, 1)
        getspi.set()
        await gw.settle()
        assert (pool.held_waiting, pool.held_dropped, stats.unknown_spi) == (0, 0, 2000)
        assert failures(gw, 0) == [] and len(gw.children_of(0)) == 1
    run(body())


def test_held_datagrams_are_bounded_per_ike_sa_and_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """One IKE SA's datagrams wait at most HELD_PER_SA (and HELD_BYTES_PER_SA) at a time, so one peer
    cannot fill the room the others' need; all together at most HELD_MAX.  The rest are dropped
    (counted; the peers retransmit) and the IKE SAs carry on."""
    monkeypatch.setattr(spis, "HELD_MAX", HELD_PER_SA + 4)
    # (below MAX_IKE_MESSAGE: a longer datagram is dropped before it could wait, test below)
    monkeypatch.setattr(spis, "HELD_BYTES_PER_SA", 9000)
    async def body() -> None:
        gw = await connected(3)
        getspi = _hold_getspis(gw)
        pool = gw.service.spi_pool
        for _ in range(HELD_PER_SA + 5):
            gw.service.receive(_of_sa(gw, 0), (site_ip(0), 4500))
        assert (pool.held_waiting, pool.held_dropped) == (HELD_PER_SA, 5)
        gw.service.receive(_of_sa(gw, 1, spis.HELD_BYTES_PER_SA - 10), (site_ip(1), 4500))
        gw.service.receive(_of_sa(gw, 1), (site_ip(1), 4500))   # its bytes are full
        assert (pool.held_waiting, pool.held_dropped) == (HELD_PER_SA + 1, 6)
        for _ in range(5):
            gw.service.receive(_of_sa(gw, 2), (site_ip(2), 4500))
        assert (pool.held_waiting, pool.held_dropped) == (HELD_PER_SA + 4, 8)   # HELD_MAX in all
        getspi.set()
        await gw.settle()
        assert (pool.held_waiting, pool._held_by_sa, pool.held_total) == (0, {}, HELD_PER_SA + 4)
        assert_all_up(gw, 3)
        assert len(gw.service.spi_pool.spis) == SPI_POOL
    run(body())


def test_a_soft_expire_rekeys_when_the_pool_is_empty() -> None:
    async def body() -> None:
        gw = await connected(1)
        (old,) = gw.children_of(0)
        gw.service.spi_pool.spis.clear()
        assert gw.service.expired(old.spi_in, Direction.IN, hard=False)
        await gw.settle()
        assert failures(gw, 0) == []
        (new,) = gw.children_of(0)
        assert new.handle != old.handle and new.lineage is old.lineage
    run(body())


def test_after_a_worker_restart_more_children_than_the_pool_holds_all_come_back() -> None:
    async def body() -> None:
        n = SPI_POOL + 2
        gw = await connected(n)
        gw.worker = InProcessWorker(asyncio.get_running_loop(), gw._natt_out)   # a new, empty worker
        await gw.service.worker_restarted()
        await gw.settle()
        assert_all_up(gw, n)
        outs = {str(s.remote.addr) for s in gw.worker.dp.sas() if s.direction is Direction.OUT and s.remote}
        assert outs == {site_ip(i) for i in range(n)}
    run(body())


def _refuse_getspi(gw: Gateway) -> None:
    """The worker refuses every GETSPI from now on (its SAD is full): answered ENOSPC, as the real
    worker answers."""
    worker = gw.worker.worker
    real = worker.handle_datagram

    def handle_datagram(data: bytes) -> list[bytes]:
        msg = pipe.decode(data)
        if isinstance(msg, pipe.GetSpi):
            return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.ENOSPC))]
        return list(real(data))
    worker.handle_datagram = handle_datagram  # type: ignore[method-assign]


def _due_now(gw: Gateway, sa: IkeSa) -> None:
    """The gateway's rekey timer of ``sa``'s Child SA fires now (through the service's real timer)."""
    (child,) = sa.children
    child.rekey_at = time.monotonic() - 1.0
    gw.service.endpoint._touch(sa)   # its timer moved: reschedule it (as any input to the SA does)
    gw.service._pump()


def _gw_sa(gw: Gateway, i: int) -> IkeSa:
    return next(sa for sa in gw.service.endpoint.sas if sa.remote_addr[0] == site_ip(i) and not sa.is_closed)


async def starved() -> tuple[Gateway, IkeSa]:
    """A gateway with one site up, whose worker refuses every GETSPI from now on and whose SPI pool
    is empty; and its IKE SA."""
    gw = await connected(1)
    _refuse_getspi(gw)
    gw.service.spi_pool.spis.clear()
    return gw, _gw_sa(gw, 0)


def test_a_timer_rekey_with_no_spi_and_no_refill_fails_cleanly_and_timers_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """The worker refused GETSPI: the gateway's timer-driven rekey finds no SPI. It is reported and
    re-armed; the timer stays armed (an SpiUnavailable used to escape it and stall the engine)."""
    async def body() -> None:
        gw, sa = await starved()
        _due_now(gw, sa)
        for _ in range(20):
            await asyncio.sleep(0)   # the timer fires; the refill it starts is refused
        (child,) = sa.children
        assert child.installed and child.rekey_at is not None
        assert time.monotonic() + 1.0 < child.rekey_at < float("inf")   # tried again 2-10 s later
        assert gw.service._timer is not None and not sa.is_closed
        failed = [r.getMessage() for r in caplog.records if "no inbound SPI" in r.getMessage()]
        assert len(failed) == 1 and "TEMPORARY_FAILURE" in failed[0] and "trying again soon" in failed[0]
        assert not [r for r in caplog.records if r.exc_info]
    with caplog.at_level(logging.INFO, logger="tunsec"):
        run(body())


def test_a_rekey_that_keeps_finding_no_spi_is_logged_at_a_limited_rate(caplog: pytest.LogCaptureFixture) -> None:
    """The worker keeps refusing GETSPI: each try of the rekey fails again (and backs off, see
    tests/ike/test_child_no_spi.py); a burst of lines is logged, not one per try."""
    async def body() -> None:
        gw, sa = await starved()
        for _ in range(20):
            _due_now(gw, sa)             # the next try is due (whatever its backoff)
            for _ in range(20):
                await asyncio.sleep(0)
        (child,) = sa.children
        assert child.installed and child.rekey_failures == 20     # each try was made, and failed
        failed = [r.getMessage() for r in caplog.records if "no inbound SPI" in r.getMessage()]
        assert len(failed) == gw.service.refusals.busy.burst
        assert not sa.is_closed
    with caplog.at_level(logging.INFO, logger="tunsec"):
        run(body())


def test_an_ike_sa_whose_timer_raises_does_not_stop_the_others(caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        gw = await connected(2)
        broken, fine = _gw_sa(gw, 0), _gw_sa(gw, 1)
        (old,) = gw.children_of(1)

        real = IkeSa.handle_timer
        secret = "bug " + "5ecret"

        def handle_timer(sa: IkeSa, now: float) -> None:
            if sa is broken:
                raise RuntimeError(secret)   # the traceback shows this line's source, not the value
            real(sa, now)
        monkeypatch.setattr(IkeSa, "handle_timer", handle_timer)
        _due_now(gw, broken)
        _due_now(gw, fine)
        for _ in range(20):
            await asyncio.sleep(0)
        await gw.settle()
        (new,) = gw.children_of(1)             # the other IKE SA's rekey went ahead
        assert new.handle != old.handle
        assert gw.service._timer is not None   # and the broken one's timer is held back, not lost
        assert gw.service.endpoint.get_timer() is not None
        for _ in range(3):                     # it fires again (a second later), and is not logged again
            _due_now(gw, broken)
            await asyncio.sleep(0)
        errors = [r for r in caplog.records if "internal error in the IKE SA's timer" in r.getMessage()]
        # its type and where (the traceback's frames), never the exception's text (it may quote a secret)
        assert len(errors) == 1 and "its timers go on: RuntimeError\n" in errors[0].getMessage()
        assert "in handle_timer" in errors[0].getMessage() and "5ecret" not in errors[0].getMessage()
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        run(body())


def test_a_burst_of_ike_auths_finds_its_spis_asked_for_ahead() -> None:
    """More clients at once than the pool holds: each IKE_SA_INIT answered asks for the SPI its
    IKE_AUTH will take, so none of the IKE_AUTHs waits for a refill (68 of 100 did in
    bench/ike_burst.py when the refill started only as an IKE_AUTH took the pool's SPIs)."""
    async def body() -> None:
        n = SPI_POOL + 8
        gw = await connected(n)
        assert_all_up(gw, n)
        pool = gw.service.spi_pool
        assert (pool.spi_waits, pool.held_total) == (0, 0)
        assert gw.service.status(pipe.Reply(1, pipe.MsgType.DUMP, Errno.OK))["ike_held"]["spi_waits"] == 0
        assert len(pool.spis) == SPI_POOL and pool.returned == 0   # none asked for in vain
    run(body())


def test_a_flood_of_ike_sa_inits_reserves_a_bounded_number_of_spis_and_returns_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """IKE_SA_INITs that never continue (spoofed): each asks for an SPI ahead, but no more than
    SPI_POOL_BURST beyond the pool; when the half-open SAs time out the worker gets them back."""
    monkeypatch.setattr(spis, "SPI_POOL_BURST", 8)
    async def body() -> None:
        n = 20
        gw = Gateway(n)
        await gw.start()
        for i in range(n):
            gw.connect(i)
            (init,) = gw.sites[i].datagrams_to_send(time.monotonic())
            gw.service.receive(init.data, (site_ip(i), 500))
            gw.service._pump()
        gw.wire.clear()                     # the answers go nowhere: no IKE_AUTH follows
        for _ in range(10):
            await asyncio.sleep(0)
        pool = gw.service.spi_pool
        assert gw.service.endpoint.half_open == n
        getspis = [m for m in gw.worker.log if isinstance(m, pipe.GetSpi)]
        assert len(pool.spis) == len(getspis) == SPI_POOL + 8      # asked ahead, and bounded
        # the half-open SAs time out (the engine's clock moved on; the service's timer fires)
        gw.service.endpoint.handle_timer(time.monotonic() + 3600)
        gw.service._pump()
        await gw.settle()
        assert gw.service.endpoint.half_open == 0
        assert len(pool.spis) == SPI_POOL and pool.returned == 8
        deleted = {m.spi for m in gw.worker.log if isinstance(m, pipe.Delete)}
        assert len(deleted) == 8 and not deleted & set(pool.spis)
        larval = {s.spi for s in gw.worker.dp.sas() if s.direction is Direction.IN}
        assert not deleted & larval and set(pool.spis) <= larval   # the worker holds only the pool's now
        gw.connect(0)           # and the pool still serves
        await gw.settle()
        assert failures(gw, 0) == [] and len(gw.children_of(0)) == 1
    run(body())


def _pool_on_a_silent_worker() -> tuple[spis.SpiPool, WorkerClient, socket.socket]:
    """An SpiPool whose WorkerClient's pipe leads to a worker that reads nothing and answers nothing."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    client = WorkerClient(lambda msg: None)
    client._sock = ours
    asyncio.get_running_loop().add_reader(ours.fileno(), client._readable)
    barrier = Barrier(lambda now: [], lambda d: None, asyncio.ensure_future, lambda: None)
    return spis.SpiPool(lambda: client, asyncio.ensure_future, barrier, lambda *a: None, lambda: None,
                      owner=lambda data: None), client, theirs


def test_getspis_no_answer_comes_to_are_given_up_after_the_timeout(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A hung worker: the GETSPIs in flight are cancelled (forgotten: a late answer is dropped) after
    REQUEST_TIMEOUT, no longer counted as asked for, and the failure is logged; the barrier they
    raised (an empty pool waiting for them) goes down."""
    monkeypatch.setattr(spis, "REQUEST_TIMEOUT", 0.05)
    async def body() -> None:
        pool, client, theirs = _pool_on_a_silent_worker()
        refill = asyncio.ensure_future(pool.refill())
        await asyncio.sleep(0)
        assert pool._asking == SPI_POOL and pool.starved and pool.barrier.up and len(client._pending) == SPI_POOL
        await asyncio.wait_for(refill, 5)
        assert (pool._asking, pool.starved, pool.barrier.up, len(client._pending)) == (0, False, False, 0)
        assert pool._refused and not pool._batches
        theirs.close()
    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        run(body())
    assert [r.getMessage() for r in caplog.records] == ["GETSPI failed: GetSpi (no answer within 10 s): EIO"]


def test_getspis_in_flight_when_the_worker_goes_end_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """The worker goes with GETSPIs in flight: they failed (logged once), at once, not at their timeout."""
    async def body() -> None:
        pool, client, theirs = _pool_on_a_silent_worker()
        refill = asyncio.ensure_future(pool.refill())
        await asyncio.sleep(0)
        assert pool._asking == SPI_POOL
        await asyncio.sleep(0)   # sent (held until the end of the refill's turn): in flight
        theirs.close()
        await asyncio.wait_for(refill, 1)      # REQUEST_TIMEOUT is 10 s
        assert (pool._asking, pool.starved, pool._refused, client._sock) == (0, False, True, None)
    with caplog.at_level(logging.WARNING, logger="tunsec.ike"):
        run(body())
    assert [r.getMessage() for r in caplog.records] == ["GETSPI failed: worker: EIO"]


def test_a_datagram_longer_than_the_maximum_is_never_held() -> None:
    """While the pool waits for the worker, a 64 KiB datagram with the SPIs of a real IKE SA (anyone
    who saw them can send it) is dropped and counted too_big at once: it neither waits for an SPI nor
    takes the room of that SA's own datagrams, which are still held."""
    async def body() -> None:
        gw = await connected(1)
        getspi = _hold_getspis(gw)
        pool, stats = gw.service.spi_pool, gw.service.endpoint.stats
        gw.service.receive(_of_sa(gw, 0, 65_000), (site_ip(0), 4500))
        assert (stats.too_big, pool.held_total, pool.held_waiting) == (1, 0, 0)
        gw.service.receive(_of_sa(gw, 0), (site_ip(0), 4500))
        assert (stats.too_big, pool.held_total, pool.held_waiting) == (1, 1, 1)
        getspi.set()
        await gw.settle()
        assert pool.held_waiting == 0
        assert_all_up(gw, 1)
    run(body())
