"""Review revworker F4: requests the control process waits for for ever (IKE_SPI_KEY, IKE_SPI_ADD/DELETE).

Every other request to the worker is given up REQUEST_TIMEOUT after it was sent (WorkerClient.request's
timer, ``answered``'s wait, the SPI pool's GiveUp, the SEND_IKE sweep), which forgets it in the client.
services/ike/trusted.py sends IKE_SPI_KEY (two every 120 s, the tag key's rotation), IKE_SPI_ADD (each
IKE SA up) and IKE_SPI_DELETE (each one gone) with request_soon and nothing that gives up: a worker that
never answers them (taken over, or hung in that request) leaves each in the client's pending requests
for as long as it runs.  They are never freed, and ``WorkerClient.in_flight`` never comes back to 0 --
which is what IkeService._setting_up asks before the ready key pairs (ke_pool) are refilled: the pool
is never refilled again, and every IKE_SA_INIT and PFS rekey generates its key pair on the spot.

A real WorkerClient over a real SOCK_SEQPACKET pair; the worker's end reads the requests and answers
none; a DELETE sent with ``answered`` alongside shows the timeout has passed (it is given up).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from pipe_batches import messages

from tunsec.dataplane import client as client_mod
from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError, answered, send_soon
from tunsec.dataplane.pipe import Direction
from tunsec.ike.spi_tag import IkeSpiTag
from tunsec.services.ike.trusted import TrustedSpis

TIMEOUT = 0.2   # client.REQUEST_TIMEOUT in this test


def test_ike_spi_requests_the_worker_never_answers_are_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on main: after the timeout has ended a DELETE sent after them, the IKE_SPI_KEYs and
    IKE_SPI_ADDs are still pending (in_flight 8, for ever)."""
    monkeypatch.setattr(client_mod, "REQUEST_TIMEOUT", TIMEOUT)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        wc = WorkerClient(lambda msg: None)
        wc._sock = ours
        loop.add_reader(ours.fileno(), wc._readable)
        read: list[pipe.Message] = []
        loop.add_reader(theirs.fileno(),   # answers none
                        lambda: read.extend(pipe.decode(m) for m in messages(theirs.recv(65536))))

        trusted = TrustedSpis(lambda: wc, IkeSpiTag.new())
        trusted.start()                                 # the tag key (IKE_SPI_KEY)
        for i in range(1, 6):                           # five IKE SAs come up (IKE_SPI_ADD)
            trusted.add(i.to_bytes(8, "big"), peer=i)
        trusted.rotate()                                # a rotation: the two keys again
        sent_ike = wc.in_flight
        reference = await answered([send_soon(wc, "Delete", lambda r: pipe.Delete(r, 0x1234, Direction.IN))])
        assert isinstance(reference[0], WorkerError)    # given up: REQUEST_TIMEOUT has passed
        for _ in range(int(3 * TIMEOUT / 0.05) + 20):   # the sweep's second, if a fix sweeps once a second
            if not wc.in_flight:
                break
            await asyncio.sleep(0.05)
        kinds, left = sorted({type(m).__name__ for m in read}), wc.in_flight
        trusted.close()
        loop.remove_reader(theirs.fileno())
        loop.remove_reader(ours.fileno())
        wc._closed()
        theirs.close()
        assert sent_ike == 8 and kinds == ["Delete", "IkeSpiAdd", "IkeSpiKey"]
        assert left == 0, f"{left} requests waited for for ever (never given up)"

    asyncio.run(body())
