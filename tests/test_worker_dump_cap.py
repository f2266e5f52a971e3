"""Review revworker F5: a DUMP answer is taken up to 64 MiB whatever the control process installed.

WorkerClient holds a DUMP's parts up to DUMP_MAX_BYTES (64 MiB as read, ~570,000 SA_INFOs: review F's F2
bounded what used to be endless) and decodes every one as it is read: ~7 ms of the event loop here
(client.py says ~25 ms) and ~560 KB of resident memory per 64 KiB part (564 SA_INFOs), so a full answer
is ~7-25 s of CPU and ~560 MB held until the status, scrape or accounting sample that asked is done.
Those three ask on their own (daemon.dump for `tunsec status` and each Prometheus scrape, radius
accounting's sample): a worker taken over answers each with the cap, which on a small appliance is the
OOM killer's reason to pick the control process, and at a 15 s scrape interval keeps its loop busy for
good. The cap is "a size no gateway's DUMP reaches" (client._room_for_part), not what this control
process can be answered: the SAs it installed (every one it asked for: manual tunnels, Child SAs, the
GETSPI pool) and the policies it added. Here a gateway holding 2 SAs takes a DUMP of 27,072 (48 full
parts, 1/21 of the cap).

A real Daemon (one manual tunnel, test_reload_manual.Harness) whose WorkerClient reads a real
SOCK_SEQPACKET pipe; the worker's end answers the DUMP with full parts from a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipe_codec_data import sa_info
from test_reload_manual import Harness, conf, tunnel
from worker_pipe import attach

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerError

PARTS = 48        # full parts (564 SA_INFOs each): ~3 MiB, 1/21 of the cap
PER_PART = 1200   # SA_INFOs encoded, of which the first part takes what fits


def test_a_dump_answer_is_bounded_by_what_the_control_process_installed(tmp_path: Path) -> None:
    """Fails on main: daemon.dump() (what `tunsec status` and a scrape call) takes 27,072 SAs from a
    worker into which it installed 2."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        installed = len(h.worker.dp.sas())
        assert installed == 2
        wp = attach(h.daemon)
        theirs, loop = wp.theirs, asyncio.get_running_loop()

        def answer() -> None:
            req = pipe.decode(theirs.recv(65536))
            assert isinstance(req, pipe.Dump)
            full = pipe.encode_dump_replies(req.req_id, [sa_info(i) for i in range(PER_PART)], [], [], [])[0]
            for _ in range(PARTS):
                theirs.send(full)
            theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.DUMP, pipe.Errno.OK)))

        answering = loop.run_in_executor(None, answer)
        try:
            merged = await h.daemon.dump()
            taken = len(merged.sas)
        except WorkerError:
            taken = 0
        await answering
        wp.close()
        h.stop()
        assert taken <= 1000 * installed, f"a DUMP of {taken} SAs taken from a worker holding {installed}"

    asyncio.run(body())
