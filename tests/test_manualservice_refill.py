"""The manual service's refills of manual SAs' sequence number reservations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Direction
from tunsec.policy.ids import IdSpace
from tunsec.seqstate import MIN_BLOCK_IN, SeqState
from tunsec.services.manual import ManualService, sa_key

SPI = 0xC0020001


class _Worker:
    """Answers Reserve like the worker: the SA takes the new limit at once, and
    may reach its next refill point (and say so) before the answer is read."""

    def __init__(self) -> None:
        self.limits: list[int] = []
        self.on_reserve: Callable[[int], None] = lambda limit: None

    async def request(self, build: Callable[[int], pipe.Reserve]) -> None:
        msg = build(1)
        self.limits.append(msg.limit)
        self.on_reserve(msg.limit)
        await asyncio.sleep(0)


def _service(tmp_path: Path) -> tuple[ManualService, _Worker, SeqState]:
    worker = _Worker()
    svc = ManualService([], IdSpace(), str(tmp_path), lambda: worker)  # type: ignore[arg-type,return-value]
    key = sa_key(SPI, Direction.IN, None)
    st = SeqState.open(tmp_path, "site-b", SPI, Direction.IN, bytes(20), False)
    st.restart()
    svc.seq[key], svc._seq_locks[key] = st, asyncio.Lock()
    return svc, worker, st


def test_a_refill_point_reached_while_the_last_refill_is_answered_is_not_lost(tmp_path: Path) -> None:
    """The worker asks once per reservation.  If it passes the new notify point
    before the control side has read the answer, that request must still be
    served, or the SA drops every packet past its limit from then on."""

    async def run() -> None:
        d, worker, st = _service(tmp_path)
        asked: list[int] = []

        def busy(limit: int) -> None:
            if len(asked) < 2:     # traffic runs on: the next refill point comes at once, twice
                asked.append(limit)
                d._reserve_more(pipe.ReserveLow(spi=SPI, direction=Direction.IN))

        worker.on_reserve = busy
        d._reserve_more(pipe.ReserveLow(spi=SPI, direction=Direction.IN))
        while d._background:
            await asyncio.gather(*d._background)
        assert len(worker.limits) == 3, worker.limits
        assert worker.limits == sorted(set(worker.limits)) and worker.limits[-1] == st.limit
        assert worker.limits[0] > MIN_BLOCK_IN
        assert not d._extending and not d._again

    asyncio.run(run())
