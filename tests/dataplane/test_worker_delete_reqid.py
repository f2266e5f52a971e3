"""A DELETE that names a reqid (pipe REQID, review revlate9 F1) removes the SA only if it is that
reqid's: an undo that cannot know whether its ADD went in (its answer came late) must not remove
another owner's SA holding the same (SPI, OUT, remote), nor that SA's lifetime timers.  A DELETE
without REQID (every one sent before) removes the SA whatever its reqid, as it did."""

import asyncio
from collections.abc import Iterator

import pytest
from pipe_codec_data import REMOTE4, decode_error, out_sa, plus, split

from tunsec.dataplane.fastpath import Dataplane
from tunsec.dataplane.pipe import Add, Delete, Direction, Errno, Ext, decode, encode
from tunsec.dataplane.worker import Worker

THEIRS = out_sa(reqid=0x7777)   # another owner's outbound SA (an IKE Child SA's, say)
KEY = (THEIRS.spi, Direction.OUT, REMOTE4)


@pytest.fixture
def worker() -> Iterator[Worker]:
    loop = asyncio.new_event_loop()
    w = Worker(Dataplane(), lambda data: None, {}, loop)
    assert decode(w.handle_datagram(encode(Add(1, THEIRS)))[0]).errno is Errno.OK   # type: ignore[union-attr]
    try:
        yield w
    finally:
        w.timers.cancel_all()
        w.dp.flush()
        loop.close()


def answer(w: Worker, msg: Delete) -> Errno:
    reply = decode(w.handle_datagram(encode(msg))[0])
    return reply.errno   # type: ignore[union-attr]


def test_a_delete_naming_another_reqid_leaves_the_sa_and_its_timers(worker: Worker) -> None:
    timers = worker.timers.pending(KEY)
    assert timers, "the ADD set no lifetime timers"
    assert answer(worker, Delete(2, THEIRS.spi, Direction.OUT, REMOTE4, reqid=THEIRS.reqid + 1)) is Errno.ENOENT
    assert worker.dp.reqid_of(*KEY) == THEIRS.reqid, "another reqid's DELETE removed the SA"
    assert worker.timers.pending(KEY) == timers, "another reqid's DELETE cancelled the SA's timers"
    assert answer(worker, Delete(3, THEIRS.spi, Direction.OUT, REMOTE4, reqid=THEIRS.reqid)) is Errno.OK
    assert worker.dp.reqid_of(*KEY) is None
    assert worker.timers.pending(KEY) == []


def test_a_delete_without_reqid_removes_the_sa_whatever_its_reqid(worker: Worker) -> None:
    assert answer(worker, Delete(2, THEIRS.spi, Direction.OUT, REMOTE4)) is Errno.OK
    assert worker.dp.reqid_of(*KEY) is None
    assert worker.timers.pending(KEY) == []
    assert answer(worker, Delete(3, THEIRS.spi, Direction.OUT, REMOTE4, reqid=1)) is Errno.ENOENT


def test_a_zero_reqid_is_refused() -> None:
    data = plus(Delete(1, THEIRS.spi, Direction.OUT, REMOTE4), (Ext.REQID, bytes(4)))
    assert decode_error(data).errno is Errno.EINVAL
    with pytest.raises(ValueError):
        Delete(1, THEIRS.spi, Direction.OUT, REMOTE4, reqid=0)
    assert split(encode(Delete(1, THEIRS.spi, Direction.OUT, REMOTE4, reqid=5)))[-1] == (Ext.REQID, b"\0\0\0\5")
