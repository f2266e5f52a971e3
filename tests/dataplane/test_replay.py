"""Anti-replay (RFC 4303 3.4.3, ESN inference of A2.2) and sequence overflow.

Real ESP packets, sealed by the test's own encryptor with the SA's key, go
through Dataplane.inbound; a reference model (a set of accepted numbers and
the highest one, window W) predicts every verdict.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

import pytest
from esp_ref import B_OUTER, SEL4, esp_open, esp_seal, inner, new_key, receiver, sender, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunsec.dataplane.fastpath import Dataplane, Drop, EventType
from tunsec.dataplane.pipe import Action, Direction, ExpireReason, Policy

M32 = 0xFFFF_FFFF
PKT = inner(4, b"replay")


@dataclass
class Model:
    """RFC 4303 3.4.3 in the plainest form: every accepted number in a set."""

    window: int
    esn: bool
    top: int = 0
    seen: set[int] = field(default_factory=set)

    def infer(self, lo: int) -> int | None:
        """The full sequence number a receiver assumes for a low half (RFC 4303 A2.2)."""
        if not self.esn:
            return lo
        w = self.window or 2**31  # no window: half the space decides the epoch
        tl, th = self.top & M32, self.top >> 32
        if tl >= w - 1:
            return (th << 32 | lo) if lo >= tl - w + 1 else ((th + 1) << 32 | lo)
        if lo >= (tl - w + 1) & M32:
            return None if th == 0 else ((th - 1) << 32 | lo)  # epoch -1 does not exist
        return th << 32 | lo

    def fresh(self, seq: int) -> bool:
        if seq == 0:
            return False  # never sent (RFC 4303 3.3.3)
        if self.window == 0:
            return True
        if seq > self.top:
            return True
        return self.top - seq < self.window and seq not in self.seen

    def receive(self, seq: int, genuine: bool = True) -> Drop:
        """Verdict for a packet sealed with full number `seq` (or forged: bad ICV)."""
        guess = self.infer(seq & M32)
        if guess is None or not self.fresh(guess):
            return Drop.REPLAY  # checked before the ICV
        if guess != seq or not genuine:
            return Drop.AUTH  # wrong high half in the AAD, or a forgery
        self.seen.add(seq)  # updated only after the ICV verified
        self.top = max(self.top, seq)
        return Drop.NONE


def send(dp: Dataplane, key: bytes, spi: int, seq: int, esn: bool, genuine: bool = True) -> Drop:
    esp = esp_seal(key, spi, seq, PKT, 4, esn=esn)
    if not genuine:
        esp = esp[:-1] + bytes([esp[-1] ^ 0x40])
    out, drop = dp.inbound(esp)
    assert (out == PKT) == (drop is Drop.NONE)
    return drop


# Operations, resolved against the model's state when they run:
#   ("ahead", d): top + d      ("back", d): top - d      ("old", i): an earlier number again
#   ("forge", d): top + d with a bad ICV                   ("at", s): absolute number
def _ops(window: int, esn: bool) -> st.SearchStrategy[list[tuple[str, int]]]:
    w = window or 64
    edges = [w - 1, w, w + 1, 2 * w, 63, 64, 65]
    jumps = [2**31 - 1, 2**31, 2**32 - w - 1, 2**32 - w, 2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1]
    ahead = st.one_of(st.integers(1, 3 * w), st.sampled_from(edges), st.sampled_from(jumps if esn else edges))
    back = st.one_of(st.integers(0, w + 8), st.sampled_from(edges))
    ats = [0, 1, 2**32 - 1] + ([2**32, 2**32 + 1, 2**33 - 1, 2**33] if esn else [])
    op = st.one_of(
        st.tuples(st.just("ahead"), ahead),
        st.tuples(st.just("back"), back),
        st.tuples(st.just("old"), st.integers(0, 1000)),
        st.tuples(st.just("forge"), st.one_of(ahead, st.integers(-w - 2, 0))),
        st.tuples(st.just("at"), st.sampled_from(ats)),
    )
    return st.lists(op, min_size=1, max_size=60)


def _run(window: int, esn: bool, ops: list[tuple[str, int]]) -> None:
    key = new_key()
    dp, spi = receiver(key, esn=esn, window=window)
    model = Model(window, esn)
    sent: list[int] = []
    limit = 2**64 - 1 if esn else M32
    counts = {Drop.NONE: 0, Drop.REPLAY: 0, Drop.AUTH: 0}
    for kind, v in ops:
        genuine = True
        if kind == "ahead":
            seq = model.top + v
        elif kind == "back":
            seq = model.top - v
        elif kind == "old":
            if not sent:
                continue
            seq = sent[v % len(sent)]
        elif kind == "forge":
            seq, genuine = model.top + v, False
        else:
            seq = v
        seq = min(max(seq, 0), limit)
        sent.append(seq)
        want = model.receive(seq, genuine)
        got = send(dp, key, spi, seq, esn, genuine)
        assert got is want, f"{kind} seq={seq:#x} top={model.top:#x}: got {got.name}, model {want.name}"
        counts[want] += 1
    info = dp.get(spi, Direction.IN)
    assert info.seq == model.top
    assert info.counters["packets"] == counts[Drop.NONE]
    assert info.counters["replay_drops"] == counts[Drop.REPLAY]
    assert info.counters["auth_drops"] == counts[Drop.AUTH]
    drops = dp.drops()
    assert drops["replay"] == counts[Drop.REPLAY] and drops["auth"] == counts[Drop.AUTH]
    assert sum(drops.values()) == counts[Drop.REPLAY] + counts[Drop.AUTH]


WINDOWS = [32, 64, 100, 1000, 4096, 65536]   # 100, 1000: not multiples of the 64-bit word


@pytest.mark.parametrize("window", WINDOWS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_window_matches_model_seq32(window: int, data: st.DataObject) -> None:
    _run(window, False, data.draw(_ops(window, False)))


@pytest.mark.parametrize("window", WINDOWS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_window_matches_model_esn(window: int, data: st.DataObject) -> None:
    _run(window, True, data.draw(_ops(window, True)))


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_window_off_matches_model(esn: bool, data: st.DataObject) -> None:
    _run(0, esn, data.draw(_ops(0, esn)))


def test_model_sanity() -> None:
    """The model itself: if it were wrong in the C path's favour, the property tests would prove nothing."""
    m = Model(64, False)
    assert [m.receive(s) for s in (1, 1, 100, 36, 37, 37, 0)] == [
        Drop.NONE,
        Drop.REPLAY,
        Drop.NONE,
        Drop.REPLAY,
        Drop.NONE,
        Drop.REPLAY,
        Drop.REPLAY,
    ]
    e = Model(64, True, top=2**32 + 5)
    assert e.infer((2**32 - 58) & M32) == 2**32 - 58
    assert e.infer((2**32 - 59) & M32) == 2**33 - 59
    assert Model(64, True).infer(M32) is None


# ----------------------------------------------------------------- fixed cases


@pytest.mark.parametrize("window", [32, 33, 64, 100, 128, 1024, 4095, 4096])
def test_window_edges(window: int) -> None:
    key = new_key()
    dp, spi = receiver(key, window=window)
    top = window + 1000
    assert send(dp, key, spi, top, False) is Drop.NONE
    assert send(dp, key, spi, top - window, False) is Drop.REPLAY  # just left of the window
    assert send(dp, key, spi, top - window + 1, False) is Drop.NONE  # the oldest slot
    assert send(dp, key, spi, top - window + 1, False) is Drop.REPLAY
    assert send(dp, key, spi, top, False) is Drop.REPLAY
    assert send(dp, key, spi, top + window, False) is Drop.NONE  # slides a whole window
    assert send(dp, key, spi, top + 1, False) is Drop.NONE  # still inside
    assert send(dp, key, spi, top, False) is Drop.REPLAY  # now left of it
    assert send(dp, key, spi, 0, False) is Drop.REPLAY


def test_forged_high_seq_does_not_move_the_window() -> None:
    key = new_key()
    dp, spi = receiver(key, window=64)
    assert send(dp, key, spi, 100, False) is Drop.NONE
    # a forgery far ahead: if it slid the window, 40 would be left of it
    assert send(dp, key, spi, 10_000, False, genuine=False) is Drop.AUTH
    assert dp.get(spi, Direction.IN).seq == 100
    assert send(dp, key, spi, 40, False) is Drop.NONE
    # a forgery inside the window does not mark its number as seen
    assert send(dp, key, spi, 50, False, genuine=False) is Drop.AUTH
    assert send(dp, key, spi, 50, False) is Drop.NONE
    # and the genuine far-ahead packet is still welcome afterwards
    assert send(dp, key, spi, 10_000, False) is Drop.NONE


def test_replayed_forgery_is_replay_not_auth() -> None:
    """The window is checked before the ICV: a replay costs no decryption."""
    key = new_key()
    dp, spi = receiver(key, window=64)
    assert send(dp, key, spi, 7, False) is Drop.NONE
    assert send(dp, key, spi, 7, False, genuine=False) is Drop.REPLAY
    info = dp.get(spi, Direction.IN)
    assert info.counters["replay_drops"] == 1 and info.counters["auth_drops"] == 0


def test_esn_left_of_window_across_the_epoch() -> None:
    key = new_key()
    dp, spi = receiver(key, esn=True, window=64)
    for seq in (2**32 - 1000, 2**32 + 5):
        assert send(dp, key, spi, seq, True) is Drop.NONE
    # 2^32-58 is the oldest number inside the window, in the previous epoch
    assert send(dp, key, spi, 2**32 - 58, True) is Drop.NONE
    assert send(dp, key, spi, 2**32 - 58, True) is Drop.REPLAY
    # one further left is taken for the next epoch (A2.2), so its ICV fails
    assert send(dp, key, spi, 2**32 - 59, True) is Drop.AUTH
    assert dp.get(spi, Direction.IN).seq == 2**32 + 5
    # the same in case A (top's low half past the window)
    assert send(dp, key, spi, 2**32 + 200, True) is Drop.NONE
    assert send(dp, key, spi, 2**32 + 137, True) is Drop.NONE
    assert send(dp, key, spi, 2**32 + 137, True) is Drop.REPLAY
    # with ESN, left of the window means "the next epoch": the ICV decides
    assert send(dp, key, spi, 2**32 + 136, True) is Drop.AUTH
    assert send(dp, key, spi, 2**32 - 1, True) is Drop.AUTH
    assert dp.get(spi, Direction.IN).seq == 2**32 + 200


def test_esn_initial_state_refuses_previous_epoch() -> None:
    key = new_key()
    dp, spi = receiver(key, esn=True, window=64)
    assert send(dp, key, spi, M32, True) is Drop.REPLAY  # would be epoch -1
    assert send(dp, key, spi, 5, True) is Drop.NONE


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_window_zero_accepts_duplicates(esn: bool) -> None:
    key = new_key()
    dp, spi = receiver(key, esn=esn, window=0)
    for seq in (5, 5, 5, 3, 1000, 1):
        assert send(dp, key, spi, seq, esn) is Drop.NONE
    assert send(dp, key, spi, 0, esn) is Drop.REPLAY  # 0 is never a valid number
    assert send(dp, key, spi, 9, esn, genuine=False) is Drop.AUTH
    info = dp.get(spi, Direction.IN)
    assert info.counters["packets"] == 6 and info.seq == 1000


# ------------------------------------------------------------- sequence overflow


def _events(dp: Dataplane) -> list[tuple[EventType, int, Direction, bool, int]]:
    return [(e.type, e.spi, e.direction, e.hard, e.reason) for e in dp.events()]


def test_overflow_without_esn_stops_the_sa() -> None:
    key = new_key()
    dp = sender(key, 0x2001, esn=False, seq_start=2**32 - 2)
    esp, _, drop, _ = dp.outbound(PKT)
    assert drop is Drop.NONE
    assert esp_open(key, esp).seq_lo == M32
    # installed past the soft margin (TS_SEQ_SOFT_MARGIN): the soft EXPIRE with its first packet
    assert _events(dp) == [(EventType.EXPIRE, 0x2001, Direction.OUT, False, ExpireReason.SEQ_OVERFLOW)]
    esp, peer, drop, _ = dp.outbound(PKT)
    assert (esp, peer, drop) == (b"", None, Drop.SEQ_OVERFLOW)
    assert _events(dp) == [(EventType.EXPIRE, 0x2001, Direction.OUT, True, ExpireReason.SEQ_OVERFLOW)]
    info = dp.get(0x2001, Direction.OUT, B_OUTER)
    assert info.state == "dead" and info.hard_fired
    assert (info.seq, info.counters["packets"]) == (M32, 1), "the last number sent, not the one refused"
    # nothing more goes out on it (counted as what it is), and the EXPIRE is not repeated
    for _ in range(3):
        assert dp.outbound(PKT)[:3] == (b"", None, Drop.SEQ_OVERFLOW)
    assert _events(dp) == []
    assert dp.drops()["seq_overflow"] == 4 and dp.drops()["lifetime"] == 0
    assert dp.get(0x2001, Direction.OUT, B_OUTER).seq == M32


def test_seq_start_at_the_end_overflows_at_once() -> None:
    key = new_key()
    dp = sender(key, 0x2001, esn=False, seq_start=M32)
    assert dp.outbound(PKT)[2] is Drop.SEQ_OVERFLOW
    assert dp.get(0x2001, Direction.OUT, B_OUTER).state == "dead"


def test_esn_continues_past_2_32() -> None:
    key = new_key()
    dp = sender(key, 0x2001, esn=True, seq_start=2**32 - 2)
    for seq in (2**32 - 1, 2**32, 2**32 + 1, 2**32 + 2):
        esp, _, drop, _ = dp.outbound(PKT)
        assert drop is Drop.NONE
        o = esp_open(key, esp, esn=True, seq_hi=seq >> 32)  # AAD carries the high bits
        assert o.iv == struct.pack("!Q", seq)  # and so does the IV
        assert o.seq_lo == seq & M32
    assert _events(dp) == []
    info = dp.get(0x2001, Direction.OUT, B_OUTER)
    assert info.state == "mature" and info.seq == 2**32 + 2


def test_esn_c_to_c_across_2_32() -> None:
    key = new_key()
    rx, spi = receiver(key, esn=True, window=64)
    tx = sender(key, spi, esn=True, seq_start=2**32 - 3)
    # the receiver has seen traffic before (its top is in epoch 0 near the end)
    assert send(rx, key, spi, 2**32 - 1000, True) is Drop.NONE
    for _ in range(6):
        esp, _, drop, _ = tx.outbound(PKT)
        assert drop is Drop.NONE
        assert rx.inbound(esp) == (PKT, Drop.NONE)
    assert rx.get(spi, Direction.IN).seq == 2**32 + 3


def test_esn_overflow_at_2_64() -> None:
    key = new_key()
    dp = sender(key, 0x2001, esn=True, seq_start=2**64 - 2)
    esp, _, drop, _ = dp.outbound(PKT)
    assert drop is Drop.NONE
    assert esp_open(key, esp, esn=True, seq_hi=M32).iv == b"\xff" * 8
    assert dp.outbound(PKT)[2] is Drop.SEQ_OVERFLOW
    assert _events(dp) == [(EventType.EXPIRE, 0x2001, Direction.OUT, True, ExpireReason.SEQ_OVERFLOW)]
    assert dp.outbound(PKT)[2] is Drop.SEQ_OVERFLOW
    assert dp.get(0x2001, Direction.OUT, B_OUTER).seq == 2**64 - 1


def test_a_reserved_esn_sa_at_2_64_never_moves_its_counter_past_the_end() -> None:
    """A manual SA whose reservation reaches 2^64 - 1 (its persisted limit may be that): the overflow
    leaves the counter on the last number sent, never wrapped to 0 where the next packet would
    take sequence number 1 (an IV used before under the key) again."""
    key = new_key()
    dp = Dataplane()
    sa = dataclasses.replace(spec(0x2001, Direction.OUT, key, esn=True, window=0, seq_start=2**64 - 3),
                             seq_limit=2**64 - 1, seq_notify=0)
    dp.add(sa)
    dp.spd_add(Policy(id=1, priority=10, action=Action.PROTECT, reqid=1, selector=SEL4))
    ivs = [esp_open(key, dp.outbound(PKT)[0], esn=True, seq_hi=M32).iv for _ in range(2)]
    assert ivs == [struct.pack("!Q", 2**64 - 2), b"\xff" * 8]
    for _ in range(3):
        assert dp.outbound(PKT)[:3] == (b"", None, Drop.SEQ_OVERFLOW)
        assert dp.get(0x2001, Direction.OUT, B_OUTER).seq == 2**64 - 1
    assert _events(dp)[-1] == (EventType.EXPIRE, 0x2001, Direction.OUT, True, ExpireReason.SEQ_OVERFLOW)
