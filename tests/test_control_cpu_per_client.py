"""Less control-process CPU per road-warrior client (issue 9 item 6, fifteenth session): the work a
client's set-up no longer repeats, each checked where it is done.

- the service's IKE timer is not re-armed when the engine's earliest deadline moves later (each
  IKE_AUTH of a burst moves it: the oldest half-open SA is authenticated): the armed, earlier one
  fires early and re-arms then; it is re-armed when the deadline moves earlier, cancelled when none
  is left, and a deadline that moved later is still met;
- the index of established IKE SAs by address parses a peer's address once for all of its SAs
  (a burst's clients come from a few addresses: one NAT)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from tunsec.ike.by_address import EstablishedByAddress
from tunsec.ike.sa import State
from tunsec.services.ike.service import IkeService


class _Engine:
    """The endpoint as _arm and _on_timer see it: the earliest deadline, and what handle_timer did."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.handled: list[float] = []

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.handled.append(now)


def _service(engine: _Engine) -> SimpleNamespace:
    svc = SimpleNamespace(endpoint=engine, _timer=None, _timer_at=None,
                          spi_pool=SimpleNamespace(starved=False))
    svc._arm = lambda at_least=0.0: IkeService._arm(svc, at_least)     # type: ignore[arg-type]
    svc._on_timer = lambda: IkeService._on_timer(svc)                  # type: ignore[arg-type]
    svc._pump = lambda: svc._arm()
    return svc


def test_the_timer_is_kept_when_the_earliest_deadline_moves_later() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        engine = _Engine()
        svc = _service(engine)
        engine.deadline = loop.time() + 30
        svc._arm()
        first = svc._timer
        assert first is not None and svc._timer_at == engine.deadline
        engine.deadline += 5      # the oldest half-open SA was authenticated: the next one's is later
        svc._arm()
        assert svc._timer is first and not first.cancelled()
        engine.deadline -= 10     # earlier than armed: re-armed, the old one cancelled
        svc._arm()
        assert svc._timer is not first and first.cancelled() and svc._timer_at == engine.deadline
        engine.deadline = None    # nothing left to wait for
        svc._arm()
        assert svc._timer is None

        # a deadline that moved later is met all the same, after an early wake-up
        engine.deadline = loop.time() + 0.01
        svc._arm()
        engine.deadline = loop.time() + 0.05   # moved later: the armed timer fires early
        svc._arm()
        while not engine.handled or svc._timer_at != engine.deadline:
            await asyncio.sleep(0.005)
        # woken early: re-armed for the deadline as it is now
        assert svc._timer is not None and svc._timer_at == engine.deadline
        due = engine.deadline
        while len(engine.handled) < 2:
            await asyncio.sleep(0.005)
        assert engine.handled[-1] >= due - 0.001   # (time.monotonic: the loop's clock)

    asyncio.run(run())


def _sa(spi: bytes, addr: str) -> SimpleNamespace:
    return SimpleNamespace(local_spi=spi, state=State.ESTABLISHED, remote_addr=(addr, 4500))


def test_an_address_is_parsed_once_for_all_its_ike_sas() -> None:
    index = EstablishedByAddress()
    a, b = _sa(b"a" * 8, "198.51.100.7"), _sa(b"b" * 8, "198.51.100.7")
    index.follow(a)   # type: ignore[arg-type]
    index.follow(b)   # type: ignore[arg-type]
    # one parsed address: the same object under both SAs (and one key for both in the index)
    assert index._at[b"a" * 8][1] is index._at[b"b" * 8][1]
    assert index._at[b"a" * 8][0] == "198.51.100.7" and len(index._by_ip) == 1
    index.follow(_sa(b"c" * 8, "not an address"))   # type: ignore[arg-type]
    assert len(index) == 2
