"""Review revupdown F1: at shutdown, a down-client still queued or running when the IKE service's
2 s wait for its tasks ends is cancelled (the daemon then returns, and asyncio.run cancels what is
left): strongSwan's promise, every up-client gets its down-client (its updown plugin runs the
downs of a flush synchronously), is broken, and a script running at that moment is abandoned,
neither awaited nor killed.

Real scripts (/bin/sh) and a real IkeService with the fast path in process (test_ikeservice_peers's
Gateway).  The down script takes 3 s, a tenth of the UPDOWN_TIMEOUT tunsec gives each run (a
`conntrack -D`, an `iptables-restore` of a large table, a RADIUS-like accounting call).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import stat
from pathlib import Path

from test_ikeservice_peers import Gateway, run
from test_ikeservice_updown import lines, with_updown

from tunsec.updown import UPDOWN_TIMEOUT


def slow_down_script(tmp_path: Path) -> tuple[tuple[str, ...], Path, Path]:
    """(argv, log, pids): appends "VERB PEER_ID start" and, 3 s later for a down, "VERB PEER_ID done"."""
    log, pids = tmp_path / "updown.log", tmp_path / "pids"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho $$ >> {pids}\necho "$PLUTO_VERB $PLUTO_PEER_ID start" >> {log}\n'
                    f'case "$PLUTO_VERB" in down*) sleep 3;; esac\n'
                    f'echo "$PLUTO_VERB $PLUTO_PEER_ID done" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return (str(path),), log, pids


def _kill_left(pids: Path) -> None:
    for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_shutdown_runs_every_down_client_a_script_has_time_for(tmp_path: Path) -> None:
    """Two sites up, their up-clients ran.  tunsec stops: each site's Child SA goes down (its
    IKE SA's DELETE), each down-client takes 3 s.  When the service's shutdown has returned and
    what is left of its tasks is cancelled (as asyncio.run does when the daemon returns), both
    down-clients must have ended.  On main neither did: they are cancelled after the 2 s wait."""
    assert UPDOWN_TIMEOUT > 3
    argv, log, pids = slow_down_script(tmp_path)

    async def body() -> None:
        gw = Gateway(2, mobike=False)
        await gw.start()
        with_updown(gw, argv)
        gw.connect(0)
        gw.connect(1)
        await gw.settle()
        assert sorted(lines(log)) == ["up-client site0.example done", "up-client site0.example start",
                                      "up-client site1.example done", "up-client site1.example start"]
        stop = asyncio.ensure_future(gw.service.shutdown())
        while not stop.done():   # the sites answer the DELETEs meanwhile
            await gw.settle(wait_tasks=False)
            await asyncio.sleep(0.05)
        await stop
        left = [t for t in gw.service._tasks if not t.done()]
        for t in left:   # what the daemon's return does to them (asyncio.run cancels every task left)
            t.cancel()
        if left:
            await asyncio.wait(left)
        downs.extend(line for line in lines(log) if line.startswith("down-client"))
        _kill_left(pids)   # what main left running: ended while the loop still runs (its transports close)
        for _ in range(50):
            await asyncio.sleep(0.01)
        gc.collect()   # the abandoned runs' transports close now, not after the loop (an unraisable error)
        await asyncio.sleep(0.01)

    downs: list[str] = []
    try:
        run(body())
    finally:
        _kill_left(pids)
    assert sorted(downs) == ["down-client site0.example done", "down-client site0.example start",
                             "down-client site1.example done", "down-client site1.example start"], downs
