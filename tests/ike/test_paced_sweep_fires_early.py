"""Review revsweep4 F1: the paced sweep of an address a MOBIKE SA left (mobility._paced_sweep, h/fixsweep3) is
lost when its timer fires a little before ``move_clock`` says MOVE_INTERVAL is over, which the control
process's event loop (uvloop, cli.py) does routinely on a busy gateway.

_paced_sweep arms one timer (IkeService._later: the loop's clock, in whole milliseconds under uvloop) for
``wait = last + MOVE_INTERVAL - move_clock()`` (time.monotonic).  When it fires it calls _paced_sweep again,
which computes ``wait`` anew: if the loop ran the timer a fraction of a millisecond early (uvloop rounds
the delay to milliseconds and runs a due timer whenever its millisecond clock reaches it, e.g. woken by
another peer's datagram), ``wait`` is still > 0, and ``pace.timer`` is the handle that is running now
(fired, not cancelled), so no timer is armed and the sweep is not run: the exclude route of the address
left stays until the next MOBIKE sweep, another IKE SA's end or a reload (days on a quiet gateway), and
the host's traffic to that address leaves by the uplink in clear (revsweep2 F3's harm, back).

The real IkeService (test_ikeservice_peers.Gateway) and ExcludeGate, run by uvloop as the daemon runs it,
with a task that wakes the loop often (other peers' datagrams); move_clock the service's default
(time.monotonic).  Two sweeps asked for within a MOVE_INTERVAL: the first runs, the second waits for the
timer.  Invariant checked once that timer fired: the sweep ran, or a timer is armed for it (no timing
threshold: whatever the timing, a sweep asked for is never dropped).  Several rounds, as the early firing
depends on where in a millisecond the timer was armed."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address

import uvloop
from test_ikeservice_peers import connected, site_ip
from test_mobike_exclude_checked import HALVES, Routes

from tunsec.services.ike import mobility
from tunsec.services.ike.exclude_gate import ExcludeGate
from tunsec.services.ike.exclude_trust import authenticated_peer

ROUNDS = 12
LEFT = "203.0.113.77"   # an address a MOBIKE SA left, its exclude route held


def test_a_paced_sweep_whose_timer_fires_early_is_not_dropped() -> None:
    async def body() -> None:
        gw = await connected(1, mobike=True)
        svc = gw.service
        routes = Routes()
        svc.sockets.gate = ExcludeGate(routes, lambda: HALVES, svc.sockets.send, lambda: [], svc._spawn,  # type: ignore[arg-type]
                                       lambda ip, data: authenticated_peer(svc.endpoint, svc.ike_up, ip, data))
        routes.held[ip_address(site_ip(0))] = routes.paths[socket.AF_INET][0]
        sweeps = 0
        sweep = svc.sweep_excludes

        def counted(reset: bool = False) -> None:
            nonlocal sweeps
            sweeps += 1
            sweep(reset)
        svc.sweep_excludes = counted   # type: ignore[method-assign]
        stop = False

        async def traffic() -> None:   # other peers' datagrams: the loop wakes every 0.2 ms
            while not stop:
                await asyncio.sleep(0.0002)
        waker = asyncio.ensure_future(traffic())
        lost = 0
        try:
            for _ in range(ROUNDS):
                routes.held[ip_address(LEFT)] = routes.paths[socket.AF_INET][0]
                mobility._sweep_left(svc, [LEFT])   # runs now, or arms the timer
                routes.held[ip_address(LEFT)] = routes.paths[socket.AF_INET][0]   # (the route of a second move)
                before = sweeps
                mobility._sweep_left(svc, [LEFT])   # within the interval: waits for the timer
                timer = svc._left_sweep.timer
                assert timer is not None and sweeps == before, "(the premise: the second sweep waits)"
                while timer in svc._timers:   # until the loop ran it
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
                pending = svc._left_sweep.timer
                if sweeps == before and (pending is None or pending not in svc._timers):
                    lost += 1
                    svc._left_sweep.last = float("-inf")   # (next round starts afresh)
                elif sweeps == before:   # re-armed: let it run
                    while pending in svc._timers:
                        await asyncio.sleep(0.001)
        finally:
            stop = True
            await waker
        assert lost == 0, (
            f"{lost} of {ROUNDS} paced sweeps were dropped: their timer fired before move_clock said "
            f"MOVE_INTERVAL was over, _paced_sweep found wait > 0 and its own (fired, not cancelled) handle in "
            f"pace.timer, and neither swept nor armed a timer; the address left keeps its exclude route until "
            f"some other sweep")

    uvloop.run(body())
