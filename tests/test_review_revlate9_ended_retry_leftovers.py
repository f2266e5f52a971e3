"""Review revlate9 F2: a retry an internal error ended after part of its attempt went into the worker
leaves that part there, while the manual service holds that nothing of the tunnel is in the worker
(h/fixretry's ``ended``; services/manual.py _attempt undoes only on StartupError, manual_retry.py
Retries.stop says "left out, nothing of it is in the worker"): a reload that removes the tunnel then
deletes nothing (_uninstall(installed=False)), and its inbound SA (the key the operator removed still
accepted) and outbound SA stay in the worker until its next restart; a reload that keeps it resumes
the retry, whose GETSPI then fails on the SA left there every second.

The daemon's own watcher and reinstall with the in-process worker of test_manual_reload_restart.  The
internal error: the request client raising something that is not a WorkerError (a bug in the
request's encoding, say) for t0's first policy, after both its SAs went in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_manual_reload_restart import started as start_daemon
from test_manual_reload_restart import stopped, until
from test_manual_restart_retry import in_worker, plan_of, unblock
from test_manual_retry_reservation import left_out
from test_reload_manual import conf, tunnel

from tunsec.dataplane import pipe


def test_a_reload_removing_a_tunnel_whose_retry_ended_mid_install_removes_its_sas(tmp_path: Path) -> None:
    async def body() -> None:
        d, watcher = await start_daemon(tmp_path, tunnel("t0", 0), tunnel("t1", 1))
        try:
            t0 = plan_of(d, "t0")
            path, saved = await left_out(d, watcher, t0, tmp_path)
            w = d.manual.retries.by_name["t0"].worker
            real = w.request

            async def buggy(make: Callable[[int], Any], *args: Any, **kw: Any) -> Any:
                msg = make(1)   # a request id (0 is for events)
                if isinstance(msg, pipe.SpdAdd) and msg.policy.id == t0.policies[0].id:
                    raise RuntimeError("a bug")
                return await real(make, *args, **kw)
            w.request = buggy   # type: ignore[method-assign,assignment]
            retries = d.manual.retries
            unblock(path, saved)
            r = retries.by_name["t0"]
            assert r.task is not None
            await asyncio.wait_for(asyncio.shield(r.task), 30)   # ended on the internal error
            assert r.ended, retries.reason("t0")
            w.request = real   # type: ignore[method-assign]
            # the operator removes t0 (status said: not installed until a reload)
            (tmp_path / "tunsec.conf").write_text(conf(tmp_path, tunnel("t1", 1)))
            answer = await d._command(json.dumps({"cmd": "reload"}).encode())
            assert answer.get("ok") is True, answer
            assert await until(lambda: not any(p.tunnel.name == "t0" for p in d.manual.plans), 30)
            left = in_worker(d, t0)
            assert left == set(), (
                "t0 was removed, yet the worker still holds its "
                + ", ".join(f"{s[1].name} SA {s[0]:#010x}" if isinstance(s, tuple) else f"policy {s}"
                            for s in sorted(left, key=str)))
        finally:
            await stopped(d, watcher)
    asyncio.run(body())
