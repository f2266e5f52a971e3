"""Review revworker F6: an answer of another kind to a DUMP is an internal error, not the worker's fault.

WorkerClient matches an answer to its request by the request id alone, never by the type the
request had (docs/pipe.md: "A reply ... has the type of the request it answers").  Every caller but
one copes (GETSPI checks its SPI, the others read only the errno); daemon.dump() hands the answers
to pipe.join_dump_replies, which raises ValueError for a reply of another type -- or for parts whose
drop names repeat, or whose SAs name other counters -- and _status catches only WorkerError.  So
`tunsec status` of a worker taken over (or of a buggy one) is "closed the connection without an
answer" on the command line and "control socket: request from pid N failed: ValueError" in the log,
where the status should say the worker answered nonsense.

A real Daemon (one manual tunnel, test_reload_manual.Harness) whose WorkerClient reads a real
SOCK_SEQPACKET pipe; the worker's end answers the DUMP with a GETSPI reply of the same request id.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_reload_manual import Harness, conf, tunnel
from worker_pipe import attach

from tunsec.dataplane import pipe


@pytest.mark.parametrize("answer", ["another kind", "a repeated drop name"])
def test_a_malformed_dump_answer_is_a_status_error(tmp_path: Path, answer: str) -> None:
    """Fails on main: _command raises ValueError (the control socket then closes without an answer)."""
    async def body() -> None:
        h = Harness(tmp_path, conf(tmp_path, tunnel("site", 1)))
        await h.start()
        wp = attach(h.daemon)
        theirs, loop = wp.theirs, asyncio.get_running_loop()

        def reply() -> None:
            req = pipe.decode(theirs.recv(65536))
            if answer == "another kind":
                theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.GETSPI, pipe.Errno.OK, spi=0x1000)))
            else:   # two parts each valid, the same drop name in both
                part = pipe.Reply(req.req_id, pipe.MsgType.DUMP, pipe.Errno.OK, more=True, drops=(("no_sa", 1),))
                theirs.send(pipe.encode(part))
                theirs.send(pipe.encode(pipe.Reply(req.req_id, pipe.MsgType.DUMP, pipe.Errno.OK,
                                                   drops=(("no_sa", 2),))))

        replying = loop.run_in_executor(None, reply)
        try:
            result: object = await h.daemon._command(json.dumps({"cmd": "status"}).encode())
        except Exception as err:   # what the control socket's catch-all then logs
            result = err
        await replying
        wp.close()
        h.stop()
        assert isinstance(result, dict) and result.get("ok") is False and "worker" in str(result.get("error")), \
            f"status answered {result!r}"

    asyncio.run(body())
