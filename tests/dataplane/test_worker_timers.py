"""The worker's SA timers (larval expiry, soft and hard time lifetimes): one
asyncio timer over a heap, on a fake clock.  Each registered timer fires once,
in deadline order; a cancelled key's timers never fire, even when the same key
is registered again; cancelled entries do not pile up; and through the
worker's request handler, a DELETE (also of an SA already gone) takes the
SA's timers with it."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
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


def test_a_soft_and_hard_pair_is_one_entry_whose_hard_deadline_counts_from_the_add() -> None:
    """A lifetime pair takes one heap entry, the soft one; the hard one goes in when the soft one
    fired, still due when it was registered for, and goes with a cancel of its key in between."""
    loop, t, fired = timers()
    t.add(key(1), 10, TimerKind.SOFT, (25, TimerKind.HARD))
    t.add(key(2), 10, TimerKind.SOFT, (10, TimerKind.HARD))   # both at once: soft first
    t.add(key(3), 5, TimerKind.SOFT, (30, TimerKind.HARD))
    assert len(t.heap) == 3 and t.pending(key(1)) == [TimerKind.SOFT, TimerKind.HARD]
    loop.advance(12)
    assert fired == [(5, 3, TimerKind.SOFT), (10, 1, TimerKind.SOFT), (10, 2, TimerKind.SOFT),
                     (10, 2, TimerKind.HARD)]
    assert t.pending(key(1)) == [TimerKind.HARD] and t.pending(key(2)) == []
    t.cancel(key(3))
    loop.advance(100)
    assert fired[4:] == [(25, 1, TimerKind.HARD)], "key 3's hard timer went with its cancel"
    assert loop.armed() == 0 and t.heap == []


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


# --- EXPIRE's final counters (LIFETIME_CURRENT) ------------------------------------------------
def _sending_worker(out: SaSpec) -> tuple[FakeLoop, Worker, list[pipe.Message], Callable[[int], int]]:
    """A worker with the outbound SA ``out`` bound to a PROTECT policy over NETS; send(n) passes n
    packets through it (single-packet API) and returns the inner bytes that went out."""
    from test_ikeservice_peers import ipv4_udp

    from tunsec.dataplane.fastpath import Drop

    loop = FakeLoop()
    sent: list[pipe.Message] = []
    w = Worker(Dataplane(), lambda b: sent.append(pipe.decode(b)), {}, cast(asyncio.AbstractEventLoop, loop), 30.0)
    w.handle_datagram(pipe.encode(pipe.Add(1, out)))
    sel = Selector.from_networks(*NETS)
    w.handle_datagram(pipe.encode(pipe.SpdAdd(2, pipe.Policy(7, 100, pipe.Action.PROTECT, 1, sel))))

    def send(n: int) -> int:
        total = 0
        for _ in range(n):
            packet = ipv4_udp("10.1.0.5", "10.3.0.2", b"x" * 100)
            _, _, drop, _ = w.dp.outbound(packet)
            if drop is Drop.NONE:
                total += len(packet)
        return total
    return loop, w, sent, send


def test_a_hard_time_expire_carries_the_counters_the_sa_went_with() -> None:
    """The worker deletes an SA itself at its hard time lifetime: nobody can read its counters
    after, so its EXPIRE carries them (as read when it was removed); the soft one carries them too."""
    loop, w, sent, send = _sending_worker(spec(0x2000, Direction.OUT, 10, 20))
    before_soft = send(3)
    loop.advance(15)
    after_soft = send(4)
    loop.advance(10)
    soft, hard = [m for m in sent if isinstance(m, pipe.Expire)]
    assert not soft.hard and soft.current is not None and soft.current.bytes == before_soft
    assert hard.hard and hard.remote == PEER and hard.current is not None
    assert (hard.current.bytes, hard.current.packets) == (before_soft + after_soft, 7)
    assert w.dp.sas() == []


def test_a_hard_byte_expire_carries_the_final_counters_of_the_dead_sa() -> None:
    """A hard byte limit leaves the SA dead (the packet past it is dropped, not counted): the
    worker removes it as it takes the fast path's EXPIRE, which goes up with the counters it
    stopped at (test_worker_dead_sa has the rest)."""
    out = dataclasses.replace(spec(0x2000, Direction.OUT, 0, 0), hard=Lifetime(bytes=1000))
    _, w, sent, send = _sending_worker(out)
    carried = send(20)   # 128-byte packets: 7 fit under 1000
    w.drain_events()
    (hard,) = [m for m in sent if isinstance(m, pipe.Expire)]
    assert hard.hard and hard.reason is pipe.ExpireReason.BYTES and hard.current is not None
    assert (hard.current.bytes, hard.current.packets) == (carried, 7)
    assert w.dp.sas() == []


def test_dump_carries_the_worker_gauges_and_they_follow_the_sas() -> None:
    """DUMP's GAUGEs: the live C allocations (SA entries, cipher contexts) go up with an SA added
    and back down with it deleted; spd_entries with the policies."""
    gc.collect()   # the allocation gauges are process-wide: no earlier test's Dataplane may be freed midway
    _, w, _, _ = _sending_worker(spec(0x2000, Direction.OUT, 0, 0))

    def gauges() -> dict[str, int]:
        reply = pipe.join_dump_replies([cast(pipe.Reply, pipe.decode(d))
                                        for d in w.handle_datagram(pipe.encode(pipe.Dump(9)))])
        return dict(reply.gauges)
    one = gauges()
    assert one["spd_entries"] == 1
    w.handle_datagram(pipe.encode(pipe.Add(3, spec(0x2001, Direction.OUT, 0, 0))))
    two = gauges()
    assert two["live_sa_entries"] > one["live_sa_entries"] and two["live_cipher_contexts"] > one["live_cipher_contexts"]
    w.handle_datagram(pipe.encode(pipe.Delete(4, 0x2001, Direction.OUT, PEER)))
    w.handle_datagram(pipe.encode(pipe.SpdFlush(5)))
    back = gauges()
    assert (back["live_sa_entries"], back["live_cipher_contexts"]) == (one["live_sa_entries"],
                                                                         one["live_cipher_contexts"])
    assert back["spd_entries"] == 0
