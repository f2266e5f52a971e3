"""Review revpipe F1: the bound on a DUMP answer (review revworker F5) holds for `tunsec status` and
the scrapes only.

revworker F5 bounded what a worker taken over can make the control process hold for one DUMP: daemon.dump
(worker_distrust.dump) asks with ``max_bytes`` = dump_cap(services), 128 KiB plus 512 bytes per SA and
policy the services installed, instead of the client's 64 MiB ("a size no gateway's DUMP reaches", ~560 MB
once decoded). The client applies a cap only to the request that carries one, and takes parts (flag MORE)
for whatever request id they name:

- RADIUS accounting reads its counters with a DUMP of its own (services/ike/radius_edge._acct_dump:
  ``worker().request(Dump)``, no max_bytes), every SAMPLE_EVERY seconds while sessions are up and at
  each Start, Interim-Update and Stop batch: held up to 64 MiB as before F5;
- any other request (a SEND_IKE, of which up to NATT_SENDS_MAX wait at once; a GETSPI; a RESERVE; an
  IKE_SPI_KEY) may be answered with DUMP-kind parts: the decoder allows MORE on a DUMP reply, and
  WorkerClient._received never compares the reply's kind with the request's. Each such request holds
  up to 64 MiB of parts until its answer ends or its waiter gives up (10 s), and the request then
  succeeds (a RESERVE answered by 49 DUMP replies is a RESERVE done).

A real Daemon (test_reload_manual.Harness: one manual tunnel, 2 SAs installed; plus a PSK connection and
RADIUS accounting for the first test) whose WorkerClient reads a real SOCK_SEQPACKET pipe; the worker's
end is written from a thread, as test_worker_dump_cap.py does for F5. Both answers are 48 full parts
(27,072 SA_INFOs, ~3 MiB as read): the status DUMP refuses them (ENOSPC), these take them.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from pipe_codec_data import sa_info
from test_reload_manual import Harness, conf, tunnel
from worker_pipe import attach

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError
from tunsec.dataplane.pipe import Direction

PARTS = 48        # full parts (564 SA_INFOs each), as test_worker_dump_cap.py
PER_PART = 1200   # SA_INFOs encoded, of which the first part takes what fits

IKE_WITH_ACCOUNTING = """connections {
  gw { remote_addrs = 192.0.2.77
    local { auth = psk
            id = sun.example }
    remote { auth = psk
             id = moon.example }
    children { net { local_ts = 10.5.0.0/16
                     remote_ts = 10.6.0.0/16 } } }
}
secrets { ike { secret = "a shared secret of some length" } }
radius { servers { r0 { address = 127.0.0.1
                        secret = "radius shared secret" } }
         accounting = yes }
"""


def _parts(theirs: socket.socket, req_id: int, final: bool = True) -> None:
    """The worker's end answers req_id with PARTS full DUMP parts (flag MORE), then the last one."""
    full = pipe.encode_dump_replies(req_id, [sa_info(i) for i in range(PER_PART)], [], [], [])[0]
    for _ in range(PARTS):
        theirs.send(full)
    if final:
        theirs.send(pipe.encode(pipe.Reply(req_id, pipe.MsgType.DUMP, pipe.Errno.OK)))


def _answer_next(theirs: socket.socket) -> None:
    req = pipe.decode(theirs.recv(65536))
    assert isinstance(req, pipe.Dump), req
    _parts(theirs, req.req_id)


def test_the_accounting_dump_is_bounded_as_the_status_dump_is(tmp_path: Path) -> None:
    """Fails on main: the status DUMP refuses the 48 parts (ENOSPC past dump_cap), accounting's
    DUMP of the same worker takes all 27,072 SAs from a worker holding 2."""
    async def body() -> tuple[int, str, int]:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)) + IKE_WITH_ACCOUNTING)
        await h.start()
        installed = len(h.worker.dp.sas())
        assert h.daemon.ike is not None and h.daemon.ike.accounting is not None
        wp = attach(h.daemon)
        loop = asyncio.get_running_loop()
        answering = loop.run_in_executor(None, _answer_next, wp.theirs)
        try:
            status = f"took {len((await h.daemon.dump()).sas)} SAs"
        except WorkerError as err:
            status = str(err)
        await answering
        answering = loop.run_in_executor(None, _answer_next, wp.theirs)
        try:
            taken = len(await h.daemon.ike.accounting._dump())   # what Accounting samples (_read_counters)
        except WorkerError:
            taken = 0
        await answering
        wp.close()
        h.daemon.ike.accounting.close()
        h.stop()
        return installed, status, taken

    installed, status, taken = asyncio.run(body())
    assert installed == 2 and "ENOSPC" in status, status   # F5's bound, for the status
    assert taken <= 1000 * installed, f"accounting's DUMP took {taken} SAs from a worker holding {installed}"


def test_a_request_other_than_dump_holds_no_dump_parts(tmp_path: Path) -> None:
    """Fails on main: the RESERVE the manual service sends for a RESERVE_LOW is answered with 48 DUMP
    parts, which the client decodes and holds for it (27,072 SA_INFOs, over 20 times the status DUMP's
    cap for this gateway), and the RESERVE then counts as done."""
    async def body() -> tuple[int, int, bool]:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        installed = len(h.worker.dp.sas())
        (out_key,) = [k for k in h.daemon.manual.seq if k[1] is Direction.OUT]
        wp = attach(h.daemon)
        theirs, loop = wp.theirs, asyncio.get_running_loop()
        marker = pipe.encode(pipe.FirstUse(spi=0x7777))   # no service owns it: unowned_events counts it

        def worker_end() -> int:
            theirs.send(pipe.encode(pipe.ReserveLow(spi=out_key[0], direction=Direction.OUT, remote=out_key[2])))
            req = pipe.decode(theirs.recv(65536))
            assert isinstance(req, pipe.Reserve), req
            _parts(theirs, req.req_id, final=False)
            theirs.send(marker)   # read after the parts: once it is counted, they were all taken in
            return req.req_id

        before = h.daemon.unowned.count
        req_id = await loop.run_in_executor(None, worker_end)
        for _ in range(600):   # the pipe's datagrams are read in order: the parts before the marker
            if h.daemon.unowned.count > before:
                break
            await asyncio.sleep(0.05)
        parts = wp.client._parts.get(req_id)   # what the client holds of this request's answer so far
        held = sum(len(r.sas) for r in parts.replies) if parts is not None else 0
        pending = req_id in wp.client._pending
        wp.theirs.send(pipe.encode(pipe.Reply(req_id, pipe.MsgType.DUMP, pipe.Errno.OK)))   # its last part
        await asyncio.sleep(0.2)
        wp.close()
        h.stop()
        return installed, held, pending

    installed, held, pending = asyncio.run(body())
    assert installed == 2
    assert held <= 1000 * installed, (f"a RESERVE's answer held {held} SA_INFOs from DUMP parts "
                                      f"(request still waiting for more: {pending})")
