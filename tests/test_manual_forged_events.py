"""Events a worker taken over forges about manual SAs (review of 2026-12-03, F5), through the daemon's
manual service and an in-process worker (the real C fast path): a hard EXPIRE the worker cannot have
meant (larval timeout, sequence overflow before the reservation's end, a limit not configured) is
refused, counted and not persisted; RESERVE_LOWs asking for the whole sequence space reserve a bounded
step.  After a restart both SAs are installed again, with sequence numbers left."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_reload_manual import Harness, conf, sa_pair, tunnel

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction, ExpireReason
from tunsec.seqstate import SEQ_BURST, SEQ_MAX_32
from tunsec.services.manual import sa_key

OUT_SPI, IN_SPI = 0xC0020001, 0xC0010001


def test_forged_expiries_and_reservations_leave_the_keys_usable_after_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        svc = h.daemon.manual
        remote = svc.plans[0].outbound.remote
        forged = [pipe.Expire(spi=OUT_SPI, direction=Direction.OUT, hard=True, reason=ExpireReason.SEQ_OVERFLOW,
                              remote=remote),
                  pipe.Expire(spi=IN_SPI, direction=Direction.IN, hard=True, reason=ExpireReason.LARVAL_TIMEOUT),
                  pipe.Expire(spi=OUT_SPI, direction=Direction.OUT, hard=True, reason=ExpireReason.BYTES,
                              remote=remote)] * 10
        with caplog.at_level(logging.ERROR):
            for msg in forged:
                assert svc.on_event(msg)
        assert svc.refused_expires == 30 and not svc.expired
        assert 3 <= len([r for r in caplog.records if "which it cannot have" in r.getMessage()]) <= 10
        before = {k: st.limit for k, st in svc.seq.items()}
        svc.on_event(pipe.ReserveLow(spi=OUT_SPI, direction=Direction.OUT, remote=remote, needed=SEQ_MAX_32))
        svc.on_event(pipe.ReserveLow(spi=IN_SPI, direction=Direction.IN, needed=SEQ_MAX_32))
        while svc._background:
            await asyncio.gather(*svc._background)
        for key, st in svc.seq.items():
            assert before[key] < st.limit <= before[key] + SEQ_BURST
        assert h.sas() == sa_pair(1)
        h.stop()

        again = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))   # tunsec restarted
        await again.start()
        assert again.sas() == sa_pair(1) and not again.daemon.manual.expired
        for spi in (IN_SPI, OUT_SPI):
            [installed] = again.requests_for(spi)
            assert installed.sa.seq_start < installed.sa.seq_limit < SEQ_MAX_32
        again.stop()

    asyncio.run(body())


def test_a_sequence_overflow_at_the_end_of_the_reservation_is_kept(tmp_path: Path) -> None:
    """The genuine case (a guard): an SA whose reservation reached the last number may overflow; that
    hard limit is persisted, and a restart leaves the SA out."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        svc = h.daemon.manual
        remote = svc.plans[0].outbound.remote
        key = sa_key(OUT_SPI, Direction.OUT, remote)
        svc.seq[key].limit = SEQ_MAX_32   # as a last refill would leave it
        svc.on_event(pipe.Expire(spi=OUT_SPI, direction=Direction.OUT, hard=True,
                                 reason=ExpireReason.SEQ_OVERFLOW, remote=remote))
        assert svc.refused_expires == 0 and svc.expired == {key: "seq_overflow"}
        await svc.shutdown()   # as the daemon's exit: the expiry's write (a task) is done
        h.stop()
        again = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await again.start()
        assert again.sas() == {(IN_SPI, Direction.IN)}
        again.stop()

    asyncio.run(body())


def test_a_soft_sequence_overflow_of_a_manual_sa_is_a_warning_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review revnonce F1: the fast path warns (soft SEQ_OVERFLOW) SEQ_SOFT_MARGIN numbers before a
    non-ESN SA's last; manual keys cannot be rekeyed, so the line says what to do, and the SA stays
    (its hard stop comes at the last number).  Fails before the fix: the line said nothing of it."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        svc = h.daemon.manual
        remote = svc.plans[0].outbound.remote
        with caplog.at_level(logging.WARNING):
            assert svc.on_event(pipe.Expire(spi=OUT_SPI, direction=Direction.OUT, hard=False,
                                            reason=ExpireReason.SEQ_OVERFLOW, remote=remote))
        assert svc.refused_expires == 0 and not svc.expired
        [line] = [r.getMessage() for r in caplog.records if f"{OUT_SPI:08x}" in r.getMessage()]
        assert "soft seq_overflow" in line and "sequence numbers left" in line and "replace them" in line
        assert h.sas() == sa_pair(1)
        h.stop()

    asyncio.run(body())
