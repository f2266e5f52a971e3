"""The stop's down-clients and the Child SA removals they follow (h/fixdown; the clean-clone CI run
of main 7311ee18 failed once on tests/e2e/test_review_revupdown_stop.py under load).

A Child SA's down-client is queued once its SAs and policies are out of the worker
(installs._child_down, under ``_changes``: a few pipe round trips).  At the stop the drain waited
for the down-clients queued when it began; the removals still in flight then queued theirs after
it had returned, and the daemon's exit cancelled them (the script's group killed): a loaded worker
answering after the peer acknowledged the DELETE was enough.  And the stop did not collect the
events of its own deletes (IkeSa.delete leaves them in the SA until the next pump): with a peer
silent for the stop's SHUTDOWN_WAIT, no Child SA went down in the service at all, and its
down-client never ran.

Real scripts (/bin/sh) and a real IkeService with the fast path in process (test_ikeservice_peers's
Gateway); what is held is held until the stop reaches a point, never for a time.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from test_ikeservice_peers import Gateway, run
from test_ikeservice_updown import lines, with_updown
from test_updown_stop import _event

from tunsec.dataplane import pipe
from tunsec.updown import Scripts


def _script(tmp_path: Path) -> tuple[tuple[str, ...], Path, Path]:
    """(argv, log, gate): appends "VERB start" and "VERB done"; a down-client waits for the gate
    (a file) in between."""
    log, gate = tmp_path / "updown.log", tmp_path / "gate"
    path = tmp_path / "updown.sh"
    path.write_text(f'#!/bin/sh\necho "$PLUTO_VERB start" >> {log}\n'
                    f'case "$PLUTO_VERB" in down*) while [ ! -e {gate} ]; do sleep 0.01; done;; esac\n'
                    f'echo "$PLUTO_VERB done" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return (str(path),), log, gate


def _ran(body: Coroutine[Any, Any, list[str]], gate: Path) -> list[str]:
    try:
        return run(body)   # type: ignore[no-any-return]
    finally:
        gate.touch()   # a script main left running ends


async def _connected(argv: tuple[str, ...], log: Path) -> Gateway:
    """A gateway with one site up, its up-client run."""
    gw = Gateway(1, mobike=False)
    await gw.start()
    with_updown(gw, argv)
    gw.connect(0)
    await gw.settle()
    assert lines(log) == ["up-client start", "up-client done"]
    return gw


async def _stopped(gw: Gateway, log: Path, gate: Path) -> None:
    """Run the service's stop to its end (the site answering what it gets through; the gate opened
    once the down-client runs), then cancel what is left of its tasks, as the daemon's return
    from asyncio.run does."""
    stop = asyncio.ensure_future(gw.service.shutdown())
    while not stop.done():
        await gw.settle(wait_tasks=False)
        if "down-client start" in lines(log):
            gate.touch()
        await asyncio.wait({stop}, timeout=0.01)
    await stop
    left = [t for t in gw.service._tasks if not t.done()]
    for t in left:
        t.cancel()
    if left:
        await asyncio.wait(left)


def test_a_down_client_queued_after_the_drain_began_still_runs_before_the_stop_ends(tmp_path: Path) -> None:
    """The worker answers the removal of the Child SA's SAs only once the stop's drain has begun
    (a loaded worker, slower than the peer's answer to the DELETE).  The down-client, queued when
    the removal ends, must run to its end before the stop returns.  On main the drain found
    nothing queued and returned; the down-client started after it and was cancelled at the end."""
    argv, log, gate = _script(tmp_path)

    async def body() -> list[str]:
        gw = await _connected(argv, log)
        draining = asyncio.Event()
        drain = gw.service.scripts.drain

        async def spied(deadline: float) -> int:
            draining.set()
            return await drain(deadline)
        gw.service.scripts.drain = spied   # type: ignore[method-assign]
        gw.worker.hold = lambda msg: draining.wait() if isinstance(msg, pipe.Delete) else None
        await _stopped(gw, log, gate)
        assert draining.is_set()
        return lines(log)

    ran = _ran(body(), gate)
    assert ran[2:] == ["down-client start", "down-client done"], ran


def test_a_peer_silent_at_the_stop_still_gets_its_down_client(tmp_path: Path) -> None:
    """The site's answers to the stop's DELETE are lost.  The Child SA went down with the delete
    (sa_teardown): its removal and down-client must run in the stop, not wait for an input that
    never comes.  On main its ChildSaDown stayed in the IKE SA uncollected: no down-client ran."""
    argv, log, gate = _script(tmp_path)

    async def body() -> list[str]:
        gw = await _connected(argv, log)
        gw.drop = lambda site, data: True   # the site goes silent
        await _stopped(gw, log, gate)
        removed = [m for m in gw.worker.log if isinstance(m, pipe.Delete)]
        assert removed, "the Child SA's SAs were not taken out of the worker at the stop"
        return lines(log)

    ran = _ran(body(), gate)
    assert ran[2:] == ["down-client start", "down-client done"], ran


def test_a_down_queued_after_the_drains_deadline_is_logged_not_started(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Child SA's removal still unanswered when the drain's deadline comes (a hung worker) queues
    its down-client after the drain returned: it is said in the log and not run, rather than
    started for the daemon's exit to kill unseen a moment later."""
    mark = tmp_path / "ran"

    async def body() -> tuple[int, bool]:
        scripts = Scripts(asyncio.ensure_future)
        removal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        scripts.expect(removal)
        drained = await scripts.drain(asyncio.get_running_loop().time())   # its deadline is now
        removal.set_result(None)
        queued = scripts.submit(3, ("/usr/bin/touch", str(mark)), _event(up=False))
        for _ in range(5):
            await asyncio.sleep(0)
        return drained, queued

    with caplog.at_level("ERROR", "tunsec.updown"):
        assert asyncio.run(body()) == (0, True)
    assert not mark.exists()
    assert "down-client for net: not run, tunsec is stopping and its 35 s for the down-clients are over" \
        in caplog.text
