"""The worker's refusals of IKE_SPI requests with an errno other than ENOSPC, EEXIST or ENOENT are said
at most once a minute, the rest counted in the next line (review revpipe R4): the worker decides how
many there are, and a line each was tunsec's own voice at its pace (bounded by IKE SA set-ups and the
key rotation, but not limited as the ENOSPC and unanswered lines are).  TrustedSpis with a worker client
fake that answers every request at once with EINVAL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Errno
from tunsec.ike.spi_tag import IkeSpiTag
from tunsec.services.ike.trusted import TrustedSpis

REQUESTS = 50


class Refusing:
    """request_soon as the client's, every answer an EINVAL of the request's type, handed to ``then``."""

    def __init__(self) -> None:
        self.next_id = 0

    def request_soon(self, build: Callable[[int], pipe.Message], then: Callable[[list[pipe.Reply]], None],
                     failed: object = None, late: object = None) -> asyncio.Future[list[pipe.Reply]]:
        self.next_id += 1
        msg = build(self.next_id)
        answer = [pipe.Reply(self.next_id, msg.TYPE, Errno.EINVAL)]   # type: ignore[attr-defined]
        done = asyncio.get_running_loop().create_future()
        done.set_result(answer)
        then(answer)
        return done


def test_refused_ike_spi_requests_are_said_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Fails before the fix: a WARNING per refused request (51: the key and 50 ADDs)."""
    async def body() -> None:
        w = Refusing()
        t = TrustedSpis(lambda: w, IkeSpiTag(bytes(range(16))))   # type: ignore[arg-type, return-value]
        with caplog.at_level(logging.WARNING, logger="tunsec"):
            for i in range(REQUESTS):
                t.add((i + 1).to_bytes(8, "big"), i)
        t.close()

    asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records if "refused by the worker" in r.getMessage()]
    assert len(lines) == 1, f"{len(lines)} lines for {REQUESTS} refusals"
    assert lines[0] in ("IKE_SPI_KEY refused by the worker: EINVAL", "IKE_SPI_ADD refused by the worker: EINVAL")
