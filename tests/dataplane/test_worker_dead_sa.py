"""SAs the fast path killed at a hard byte/packet limit, through the worker's own code (Worker
with a real Dataplane, requests as pipe datagrams, events drained as its event-fd reader does):
nobody sends a DELETE, yet the worker removes them itself (as the kernel removes an SA at its
hard lifetime), so the live C allocations (DUMP's gauges) go back to where they were; the hard
EXPIRE carries the final counters; packets for a dead or removed inbound SA are dropped and
counted; a DELETE after that is ENOENT with nothing logged; a stale EXPIRE never removes a newer
SA that took the same SPI."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import cast

import pytest
from esp_ref import A_OUTER, B_OUTER, NET_A4, NET_B4, esp_seal, ipv4_udp, new_key, spec
from test_worker_timers import FakeLoop

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Dataplane, Drop
from tunsec.dataplane.pipe import Action, Direction, Errno, ExpireReason, Lifetime, Policy, Selector
from tunsec.dataplane.worker import Worker

IN_SPI, OUT_SPI = 0x1000, 0x2000
# 128 bytes inside (7 fit under 1000), in esp_ref's selectors, which its specs give both SAs
PACKET = ipv4_udp("10.1.0.1", "10.2.0.1", b"x" * 100)


class Harness:
    def __init__(self) -> None:
        self.sent: list[pipe.Message] = []
        self.w = Worker(Dataplane(), lambda b: self.sent.append(pipe.decode(b)), {},
                        cast(asyncio.AbstractEventLoop, FakeLoop()), 30.0)
        self._ids = iter(range(1, 1000))

    def ask(self, build: type[pipe.Message] | object, *args: object) -> list[pipe.Reply]:
        msg = build(next(self._ids), *args)  # type: ignore[operator]
        return [cast(pipe.Reply, pipe.decode(d)) for d in self.w.handle_datagram(pipe.encode(msg))]

    def errno(self, build: object, *args: object) -> Errno:
        return self.ask(build, *args)[-1].errno

    def gauges(self) -> dict[str, int]:
        return dict(pipe.join_dump_replies(self.ask(pipe.Dump)).gauges)

    def expires(self) -> list[pipe.Expire]:
        return [m for m in self.sent if isinstance(m, pipe.Expire)]


@pytest.fixture
def h() -> Harness:
    gc.collect()   # the allocation gauges are process-wide: no earlier test's Dataplane may be freed midway
    return Harness()


def test_sas_dead_at_a_hard_byte_limit_are_removed_without_a_delete(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    base = h.gauges()
    key_in, key_out = new_key(), new_key()
    hard = Lifetime(bytes=1000)
    assert h.errno(pipe.GetSpi, IN_SPI, IN_SPI) is Errno.OK
    assert h.errno(pipe.Update, spec(IN_SPI, Direction.IN, key_in, hard=hard)) is Errno.OK
    assert h.errno(pipe.Add, spec(OUT_SPI, Direction.OUT, key_out, hard=hard)) is Errno.OK
    policy = Policy(id=7, priority=100, action=Action.PROTECT, reqid=1,
                    selector=Selector.from_networks(NET_A4, NET_B4))
    assert h.errno(pipe.SpdAdd, policy) is Errno.OK
    up = h.gauges()
    assert up["live_sa_entries"] == base["live_sa_entries"] + 2
    assert up["live_cipher_contexts"] > base["live_cipher_contexts"]

    # outbound: 7 packets go, the 8th is past the limit and kills the SA
    drops = [h.w.dp.outbound(PACKET)[2] for _ in range(10)]
    assert drops == [Drop.NONE] * 7 + [Drop.LIFETIME] * 3
    # inbound: the peer's 8th packet is past the limit, dropped and counted, and so is the next
    got = [h.w.dp.inbound(esp_seal(key_in, IN_SPI, seq, PACKET, 4), A_OUTER)[1] for seq in range(1, 10)]
    assert got == [Drop.NONE] * 7 + [Drop.LIFETIME] * 2
    assert h.w.dp.drops()["lifetime"] == 5
    assert {sa.state for sa in h.w.dp.sas()} == {"dead"}

    h.w.drain_events()   # what the worker's event-fd reader does: no DELETE from anyone
    by_dir = {e.direction: e for e in h.expires() if e.hard}
    assert set(by_dir) == {Direction.IN, Direction.OUT}
    for e in by_dir.values():
        assert e.reason is ExpireReason.BYTES and e.current is not None
        assert (e.current.bytes, e.current.packets) == (7 * len(PACKET), 7)
    assert by_dir[Direction.OUT].remote == B_OUTER and by_dir[Direction.IN].remote is None
    assert h.w.dp.sas() == []
    after = h.gauges()
    assert (after["live_sa_entries"], after["live_cipher_contexts"]) == (base["live_sa_entries"],
                                                                         base["live_cipher_contexts"])
    # the removed inbound SA's packets: an unknown SPI now, dropped and counted; nothing sealed outbound
    assert h.w.dp.inbound(esp_seal(key_in, IN_SPI, 10, PACKET, 4), A_OUTER)[1] is Drop.NO_SA
    assert h.w.dp.outbound(PACKET)[2] is Drop.NO_SA

    # the control process's DELETEs, late: ENOENT, nothing changes, nothing is logged above DEBUG
    caplog.clear()
    assert h.errno(pipe.Delete, OUT_SPI, Direction.OUT, B_OUTER) is Errno.ENOENT
    assert h.errno(pipe.Delete, IN_SPI, Direction.IN, None) is Errno.ENOENT
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert h.gauges()["live_sa_entries"] == base["live_sa_entries"]
    assert not h.w.timers.epoch


def test_a_stale_hard_expire_leaves_a_newer_sa_with_the_same_spi(h: Harness) -> None:
    """The SA dies, its EXPIRE waits in the event queue while a DELETE and a new GETSPI/UPDATE of
    the same SPI come first: the EXPIRE names the SA deleted, so the new one stays (and nothing is
    reported: it would make the control side delete the new Child SA)."""
    key_old, key_new = new_key(), new_key()
    assert h.errno(pipe.GetSpi, IN_SPI, IN_SPI) is Errno.OK
    assert h.errno(pipe.Update, spec(IN_SPI, Direction.IN, key_old, hard=Lifetime(packets=1))) is Errno.OK
    got = [h.w.dp.inbound(esp_seal(key_old, IN_SPI, seq, PACKET, 4), A_OUTER)[1] for seq in (1, 2)]
    assert got == [Drop.NONE, Drop.LIFETIME]
    assert h.errno(pipe.Delete, IN_SPI, Direction.IN, None) is Errno.OK
    assert h.errno(pipe.GetSpi, IN_SPI, IN_SPI) is Errno.OK
    assert h.errno(pipe.Update, spec(IN_SPI, Direction.IN, key_new)) is Errno.OK
    h.w.drain_events()
    assert h.expires() == []
    assert h.w.dp.get(IN_SPI, Direction.IN).state == "mature"
    assert h.w.dp.inbound(esp_seal(key_new, IN_SPI, 1, PACKET, 4), A_OUTER)[1] is Drop.NONE
