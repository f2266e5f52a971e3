"""TrustedSpis (services/ike/trusted.py) keeps the worker's set of established IKE SAs' SPIs in step
with the service's when the worker client refuses a request with the worker alive (SEND_QUEUE_MAX
requests already waiting for the pipe): the refused DELETE or ADD is sent again, before later ones,
and not at all once moot; every new worker gets the key of our IKE SPIs' tags before any SPI.  A fake
worker client that applies what it is sent, as the worker does."""

from __future__ import annotations

import asyncio

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.ike.spi_tag import IkeSpiTag
from tunsec.services.ike import trusted
from tunsec.services.ike.trusted import TrustedSpis


class Worker:
    """request_soon as the client's: WorkerError while full, else the message applied at once."""

    def __init__(self) -> None:
        self.full = False
        self.held: dict[bytes, int] = {}
        self.sent: list[tuple[str, bytes]] = []
        self.keys: list[bytes] = []   # IKE_SPI_KEYs, in order
        self.first_key_at: int | None = None   # how many SPI requests came before the first key

    def request_soon(self, build, then, failed=None, late=None):  # type: ignore[no-untyped-def]
        if self.full:
            raise WorkerError("IkeSpiDelete (65536 requests already wait for room in the pipe)", Errno.EIO)
        msg = build(1)
        done = asyncio.get_running_loop().create_future()
        done.set_result([])
        if isinstance(msg, pipe.IkeSpiKey):
            self.keys.append(msg.key)
            if self.first_key_at is None:
                self.first_key_at = len(self.sent)
            return done
        self.sent.append((type(msg).__name__, msg.spi))
        if isinstance(msg, pipe.IkeSpiAdd):
            self.held[msg.spi] = msg.peer
        else:
            self.held.pop(msg.spi, None)
        return done


SPI = bytes.fromhex("1122334455667788")
TAG = IkeSpiTag(bytes(range(16)))


def test_a_refused_delete_is_sent_once_the_pipe_has_room() -> None:
    async def body() -> None:
        w = Worker()
        t = TrustedSpis(lambda: w, TAG)   # type: ignore[arg-type, return-value]
        t.add(SPI, 5)
        w.full = True
        t.remove(SPI)                # the SA dies while the pipe is backed up
        assert SPI in w.held and t.unsent == {SPI: False}
        w.full = False
        for other in range(3):       # later traffic: the DELETE goes first
            spi = bytes([other + 1]) * 8
            t.add(spi, 6)
            t.remove(spi)
        assert w.sent[1] == ("IkeSpiDelete", SPI)
        assert w.held == {} and t.spis == {} and t.unsent == {}
        t.close()

    asyncio.run(body())


def test_a_refused_request_is_retried_by_itself(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With nothing else to send, the timer tries again; an ADD and DELETE both refused cancel out."""
    monkeypatch.setattr(trusted, "RETRY", 0.0)

    async def body() -> None:
        w = Worker()
        t = TrustedSpis(lambda: w, TAG)   # type: ignore[arg-type, return-value]
        w.full = True
        t.add(SPI, 5)
        other = b"\x09" * 8
        t.add(other, 5)
        t.remove(other)              # never reached the worker: nothing to delete
        assert t.unsent == {SPI: True}
        await asyncio.sleep(0.01)    # refused again: still due
        assert t.unsent == {SPI: True} and w.held == {}
        w.full = False
        for _ in range(50):
            await asyncio.sleep(0.01)
            if not t.unsent:
                break
        assert w.held == {SPI: 5} and w.sent == [("IkeSpiAdd", SPI)]
        t.close()

    asyncio.run(body())


def test_a_new_worker_gets_the_whole_set_and_no_deletes() -> None:
    async def body() -> None:
        w = Worker()
        t = TrustedSpis(lambda: w, TAG)   # type: ignore[arg-type, return-value]
        t.add(SPI, 5)
        gone = b"\x02" * 8
        t.add(gone, 6)
        w.full = True
        t.remove(gone)               # refused: the worker dies meanwhile
        w.full, w.held = False, {}
        t.resend()
        assert w.held == {SPI: 5} and t.unsent == {} and w.sent[-1] == ("IkeSpiAdd", SPI)
        t.close()

    asyncio.run(body())


def test_every_worker_gets_the_key_before_any_spi() -> None:
    """A worker without the key takes every IKE_AUTH for a spoofed datagram's: the first add waits
    for the key, a refused key is retried before anything else, and a new worker is sent it again."""
    async def body() -> None:
        w = Worker()
        t = TrustedSpis(lambda: w, TAG)   # type: ignore[arg-type, return-value]
        w.full = True
        t.add(SPI, 5)                # the pipe is backed up: neither goes
        assert w.keys == [] and t.key_due and t.unsent == {SPI: True}
        w.full = False
        t.add(b"\x03" * 8, 5)
        assert w.keys == [TAG.key] and w.first_key_at == 0 and not t.key_due
        assert w.held == {SPI: 5, b"\x03" * 8: 5}
        w.held, w.sent = {}, []      # a new worker
        t.resend()
        assert w.keys == [TAG.key, TAG.key] and len(w.held) == 2
        t.close()

    asyncio.run(body())


def test_a_rotation_sends_the_key_before_and_the_new_one_and_so_does_a_new_worker() -> None:
    """Tags must not be good for ever (one address could gather them and flood): a new key every
    ROTATE seconds, and the worker holds the last two: each sending gives it the one before, then the
    current one, so it ends holding those two in that order however many sends it saw."""
    async def body() -> None:
        w = Worker()
        tag = IkeSpiTag(bytes(range(16)))
        t = TrustedSpis(lambda: w, tag)   # type: ignore[arg-type, return-value]
        t.resend()
        first = tag.key
        assert w.keys == [first]
        t.rotate()
        assert tag.key != first and tag.previous == first and w.keys[-2:] == [first, tag.key]
        w.keys = []
        t.resend()                   # a new worker
        assert w.keys == [first, tag.key]
        t.close()

    asyncio.run(body())
