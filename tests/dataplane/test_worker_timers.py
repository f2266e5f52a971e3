"""The worker's SA timers (larval expiry, soft and hard time lifetimes): one
asyncio timer over a heap, on a fake clock.  Each registered timer fires once,
in deadline order; a cancelled key's timers never fire, even when the same key
is registered again; cancelled entries do not pile up; and through the
worker's request handler, a DELETE (also of an SA already gone) takes the
SA's timers with it."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Alg, Direction, Endpoint, Lifetime, SaSpec, Selector
from tunsec.dataplane.worker import SaKey, TimerKind, Timers, Worker


@dataclass
class Handle:
    when: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """time() and call_at(), driven by advance()."""

    now: float = 0.0
    handles: list[Handle] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Handle:
        h = Handle(when, lambda: fn(*args))
        self.handles.append(h)
        return h

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Handle:
        return self.call_at(self.now + delay, fn, *args)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= end]
            if not due:
                break
            h = min(due, key=lambda h: h.when)
            self.handles.remove(h)
            self.now = max(self.now, h.when)
            h.fn()
        self.now = end

    def armed(self) -> int:
        return sum(not h.cancelled for h in self.handles)


def key(spi: int) -> SaKey:
    return (spi, Direction.IN, None)


def timers() -> tuple[FakeLoop, Timers, list[tuple[float, int, TimerKind]]]:
    loop = FakeLoop()
    fired: list[tuple[float, int, TimerKind]] = []
    t = Timers(cast(asyncio.AbstractEventLoop, loop), lambda k, kind: fired.append((loop.now, k[0], kind)))
    return loop, t, fired


def test_each_timer_fires_once_in_deadline_order() -> None:
    loop, t, fired = timers()
    t.add(key(1), 30, TimerKind.HARD)
    t.add(key(1), 10, TimerKind.SOFT)
    t.add(key(2), 20, TimerKind.LARVAL)
    t.add(key(3), 10, TimerKind.SOFT)
    assert loop.armed() == 1, "one asyncio timer for all of them"
    loop.advance(100)
    assert fired == [(10, 1, TimerKind.SOFT), (10, 3, TimerKind.SOFT), (20, 2, TimerKind.LARVAL),
                     (30, 1, TimerKind.HARD)]
    assert loop.armed() == 0 and t.heap == []


def test_a_cancelled_key_never_fires_even_when_registered_again() -> None:
    loop, t, fired = timers()
    t.add(key(1), 10, TimerKind.SOFT)
    t.add(key(1), 20, TimerKind.HARD)
    t.add(key(2), 15, TimerKind.HARD)
    loop.advance(5)
    t.cancel(key(1))
    t.add(key(1), 30, TimerKind.HARD)   # the same SA key for a new SA (an SPI used again)
    assert t.pending(key(1)) == [TimerKind.HARD]
    loop.advance(100)
    assert fired == [(15, 2, TimerKind.HARD), (35, 1, TimerKind.HARD)]


def test_a_later_add_of_an_earlier_deadline_rearms() -> None:
    loop, t, fired = timers()
    t.add(key(1), 100, TimerKind.HARD)
    t.add(key(2), 1, TimerKind.SOFT)
    loop.advance(2)
    assert fired == [(1, 2, TimerKind.SOFT)]
    assert loop.armed() == 1
    loop.advance(200)
    assert fired[-1] == (100, 1, TimerKind.HARD)


def test_cancelled_entries_do_not_pile_up() -> None:
    """A gateway rekeying every client: each rekey cancels two timers an hour away."""
    loop, t, fired = timers()
    t.add(key(0), 5000, TimerKind.HARD)
    for spi in range(1, 20001):
        t.add(key(spi), 3600, TimerKind.SOFT)
        t.add(key(spi), 3960, TimerKind.HARD)
        t.cancel(key(spi))
    assert len(t.heap) <= 4 * len(t.epoch) + 64 + 2
    t.cancel_all()
    assert loop.armed() == 0 and not t.heap and not t.epoch
    t.add(key(7), 1, TimerKind.HARD)
    loop.advance(10_000)
    assert fired == [(1, 7, TimerKind.HARD)]


LOCAL = Endpoint(ipaddress.ip_address("192.0.2.1"), 4500)
PEER = Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)
NETS = ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("10.3.0.2/32")


def spec(spi: int, direction: Direction, soft: int, hard: int) -> SaSpec:
    return SaSpec(spi=spi, direction=direction, alg=Alg.AES128GCM16, key=os.urandom(20), esn=False,
                  replay_window=64 if direction is Direction.IN else 0, reqid=1, local=LOCAL, remote=PEER,
                  soft=Lifetime(seconds=soft), hard=Lifetime(seconds=hard),
                  selectors=(Selector.from_networks(*NETS),))


def test_worker_expires_by_time_and_delete_takes_the_timers() -> None:
    loop = FakeLoop()
    sent: list[pipe.Message] = []
    w = Worker(Dataplane(), lambda b: sent.append(pipe.decode(b)), {}, cast(asyncio.AbstractEventLoop, loop), 30.0)
    ids = iter(range(1, 100))

    def ask(msg: pipe.Message) -> pipe.Errno:
        reply = pipe.decode(w.handle_datagram(pipe.encode(msg))[-1])
        assert isinstance(reply, pipe.Reply)
        return reply.errno

    assert ask(pipe.GetSpi(next(ids), 0x1000, 0x1000)) is pipe.Errno.OK
    assert ask(pipe.Update(next(ids), spec(0x1000, Direction.IN, 10, 20))) is pipe.Errno.OK
    assert ask(pipe.Add(next(ids), spec(0x2000, Direction.OUT, 10, 20))) is pipe.Errno.OK
    out_key: SaKey = (0x2000, Direction.OUT, PEER)
    assert w.timers.pending(key(0x1000)) == [TimerKind.SOFT, TimerKind.HARD], "UPDATE replaced the larval timer"
    assert ask(pipe.Delete(next(ids), 0x2000, Direction.OUT, PEER)) is pipe.Errno.OK
    assert w.timers.pending(out_key) == []
    loop.advance(40)   # past the larval timeout too: it was cancelled
    assert [(m.spi, m.hard, m.reason) for m in sent if isinstance(m, pipe.Expire)] == [
        (0x1000, False, pipe.ExpireReason.TIME), (0x1000, True, pipe.ExpireReason.TIME)]
    assert w.dp.sas() == []
    # an SA that is gone already: DELETE says so, and leaves no timer behind
    assert ask(pipe.Add(next(ids), spec(0x3000, Direction.OUT, 10, 20))) is pipe.Errno.OK
    w.dp.delete(0x3000, Direction.OUT, PEER)
    assert ask(pipe.Delete(next(ids), 0x3000, Direction.OUT, PEER)) is pipe.Errno.ENOENT
    assert w.timers.pending((0x3000, Direction.OUT, PEER)) == [] and not w.timers.epoch
