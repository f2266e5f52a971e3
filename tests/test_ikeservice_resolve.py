"""The IKE service's lookup of a gateway a REDIRECT named by FQDN (``IkeService._resolve_gateway``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from tunsec.services import ike as service
from tunsec.services.ike import resolver
from tunsec.services.ike.resolver import MAX_THREADS, Resolver


class FakeSa:
    name, remote_addr = "rw", ("192.0.2.2", 500)

    def __init__(self) -> None:
        self.answers: list[tuple[str, list[str]]] = []

    def gateway_resolved(self, gateway: str, addresses: list[str], now: float) -> None:
        self.answers.append((gateway, addresses))


def test_a_lookup_that_never_answers_is_logged_as_such(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(resolver, "RESOLVE_WAIT", 0.01)
    sa, pumped = FakeSa(), []

    async def main() -> None:
        async def hang(*args: Any, **kw: Any) -> list[Any]:
            await asyncio.sleep(60)
            return []

        lookups = Resolver()
        lookups.lookup = hang  # type: ignore[method-assign]
        fake = SimpleNamespace(_pump=lambda: pumped.append(True), resolver=lookups)
        await service.IkeService._resolve_gateway(fake, sa, "gw-b.example")  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert sa.answers == [("gw-b.example", [])] and pumped
    assert [r.getMessage() for r in caplog.records] == [
        "rw: cannot resolve gateway gw-b.example we were redirected to: no answer in time"]


def test_slow_lookups_hold_threads_of_their_own_and_leave_the_default_executor_free() -> None:
    """Lookups stuck in a DNS server that does not answer hold at most MAX_THREADS threads of the
    resolver's own; the loop's default executor (TUN and route setup) still runs its work."""
    release = threading.Event()
    entered: list[str] = []
    both_in = threading.Event()
    lock = threading.Lock()

    def stuck(host: str, port: Any, **kw: Any) -> list[Any]:
        with lock:
            entered.append(threading.current_thread().name)
            if len(entered) == MAX_THREADS:
                both_in.set()
        release.wait()
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.9", 0))]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # a default executor of one thread: a lookup on it would leave no room for anything else
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        resolver = Resolver(getaddrinfo=stuck)
        lookups = [asyncio.ensure_future(resolver.lookup(f"gw{i}.example")) for i in range(MAX_THREADS + 1)]
        try:
            # the default executor's work runs (a hang guard, not a time limit: it would never return) ...
            await asyncio.wait_for(loop.run_in_executor(None, both_in.wait), 60)
            assert not any(t.done() for t in lookups)                  # ... while every lookup is stuck,
            assert await loop.run_in_executor(None, lambda: "tun up") == "tun up"
            assert len(entered) == MAX_THREADS                         # the one beyond the pool waits its turn
            assert all(name.startswith("tunsec-resolve") for name in entered)
        finally:
            release.set()
        answers = await asyncio.gather(*lookups)
        assert [a[0][4][0] for a in answers] == ["192.0.2.9"] * (MAX_THREADS + 1)
        resolver.close()

    asyncio.run(main())
