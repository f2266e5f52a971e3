"""The IKE service's lookup of a gateway a REDIRECT named by FQDN (``IkeService._resolve_gateway``)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from tunsec.services import ike as service
from tunsec.services.ike import resolver


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

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
        fake = SimpleNamespace(_pump=lambda: pumped.append(True))
        await service.IkeService._resolve_gateway(fake, sa, "gw-b.example")  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert sa.answers == [("gw-b.example", [])] and pumped
    assert [r.getMessage() for r in caplog.records] == [
        "rw: cannot resolve gateway gw-b.example we were redirected to: no answer in time"]
