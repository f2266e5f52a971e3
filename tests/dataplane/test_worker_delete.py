"""The worker's answer to DELETE carries the deleted SA's final counters (LIFETIME_CURRENT, as an
XFRM delete notification carries the SA's current lifetime), through its own request handling and
the real C fast path in process (Worker with a Dataplane, requests as pipe datagrams): packets the
SA took in or sent after the last DUMP, just before the DELETE, are in them."""

from __future__ import annotations

import gc

import pytest
from esp_ref import A_OUTER, B_OUTER, NET_A4, NET_B4, esp_seal, new_key, spec
from test_worker_dead_sa import IN_SPI, OUT_SPI, PACKET, Harness

from tunsec.dataplane import pipe
from tunsec.dataplane.fastpath import Drop
from tunsec.dataplane.pipe import Action, Direction, Errno, Lifetime, Policy, Selector


@pytest.fixture
def h() -> Harness:
    gc.collect()
    return Harness()


def counters(h: Harness, direction: Direction) -> tuple[int, int]:
    (sa,) = [s for s in pipe.join_dump_replies(h.ask(pipe.Dump)).sas if s.direction is direction]
    return sa.counters["bytes"], sa.counters["packets"]


def test_a_deletes_answer_carries_the_packets_after_the_last_dump(h: Harness) -> None:
    key_in, key_out = new_key(), new_key()
    assert h.errno(pipe.GetSpi, IN_SPI, IN_SPI) is Errno.OK
    assert h.errno(pipe.Update, spec(IN_SPI, Direction.IN, key_in)) is Errno.OK
    assert h.errno(pipe.Add, spec(OUT_SPI, Direction.OUT, key_out)) is Errno.OK
    policy = Policy(id=7, priority=100, action=Action.PROTECT, reqid=1,
                    selector=Selector.from_networks(NET_A4, NET_B4))
    assert h.errno(pipe.SpdAdd, policy) is Errno.OK
    seq = iter(range(1, 100))

    def traffic(n: int) -> None:
        for _ in range(n):
            assert h.w.dp.inbound(esp_seal(key_in, IN_SPI, next(seq), PACKET, 4), A_OUTER)[1] is Drop.NONE
            assert h.w.dp.outbound(PACKET)[2] is Drop.NONE

    traffic(3)
    assert counters(h, Direction.IN) == counters(h, Direction.OUT) == (3 * len(PACKET), 3)   # the last DUMP
    traffic(2)   # after it, just before the DELETEs

    (out,) = h.ask(pipe.Delete, OUT_SPI, Direction.OUT, B_OUTER)
    (inb,) = h.ask(pipe.Delete, IN_SPI, Direction.IN, None)
    for reply in (out, inb):
        assert reply.errno is Errno.OK and reply.current is not None
        assert (reply.current.bytes, reply.current.packets) == (5 * len(PACKET), 5)
        assert reply.current.seconds < 60   # its age, as DUMP's
    assert h.w.dp.sas() == []
    # gone: a second DELETE finds nothing and carries nothing
    (again,) = h.ask(pipe.Delete, IN_SPI, Direction.IN, None)
    assert again.errno is Errno.ENOENT and again.current is None


def test_a_larval_sa_deleted_answers_zero_counters(h: Harness) -> None:
    """A GETSPI the negotiation never used: its DELETE answers counters too, all 0."""
    assert h.errno(pipe.GetSpi, IN_SPI, IN_SPI) is Errno.OK
    (reply,) = h.ask(pipe.Delete, IN_SPI, Direction.IN, None)
    assert reply.errno is Errno.OK and reply.current == Lifetime(0, 0, reply.current.seconds)
