"""A reload the stop did not wait for (review revlate11 F1).

The stop waits up to daemon.RELOAD_STOP_WAIT for a `tunsec reload` under way, so that it applies in full
before the services shut down.  One still running then (a worker that does not answer) is cut short: each
control-socket reload runs as a task of its own, which the stop cancels with SIGHUP's, and each cancelled
one takes out what it had put in and not finished (ManualService._forget, _attempt's undo).  The stop gives
them RELOAD_CUT_WAIT to do so, then goes on: the services it shuts down refuse what a reload still running
would install from then on.  The client's answer is "reload cut short by the stop" whenever the reload did
not end by itself, given before the services shut down: never lost at the loop's end, never "added" for
what is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from tunsec.services.base import STOP_CUT

log = logging.getLogger("tunsec")

# seconds the stop gives the reloads it cancelled to take out what they put in (each an undo request
# per SA or policy that went in); past it the services shut down refuse what they would still install
RELOAD_CUT_WAIT = 2.0
CUT_ANSWER = f"{STOP_CUT}: maybe half applied (tunsec is stopping)"

Outcome = tuple[bool, list[str]]


@dataclass
class ReloadCut:
    """The control socket's reloads under way, and whether the stop cut them short."""

    tasks: set[asyncio.Task[Outcome]] = field(default_factory=set)
    # the stop waited RELOAD_STOP_WAIT in vain: a reload running from now on applies nothing further
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    # the reloads cut short ended, or the stop waited RELOAD_CUT_WAIT for them: their clients are answered
    over: asyncio.Event = field(default_factory=asyncio.Event)
    answering: set[asyncio.Future[None]] = field(default_factory=set)   # run()s not returned yet

    async def run(self, reload: Coroutine[Any, Any, Outcome]) -> Outcome:
        """reload's outcome; as a task the stop may cancel (cut_short), whose client then gets CUT_ANSWER."""
        if self.over.is_set():   # asked after the stop's cut: Daemon.reload refuses it at once
            return await reload
        task = asyncio.create_task(reload)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        over = asyncio.create_task(self.over.wait())
        answered = asyncio.get_running_loop().create_future()
        self.answering.add(answered)
        try:
            await asyncio.wait([task, over], return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
            # the caller writes the answer in this same step, before the stop (cut_short) goes on
            answered.set_result(None)
            self.answering.discard(answered)
        if task.done() and not task.cancelled():
            return task.result()
        return False, [CUT_ANSWER]

    async def cut_short(self, sighup: Iterable[asyncio.Task[None]]) -> None:
        """The stop's: every reload still under way (these and SIGHUP's) cancelled, and awaited for up to
        RELOAD_CUT_WAIT while it takes out what it put in."""
        self.cut.set()
        tasks: list[asyncio.Task[Any]] = [*self.tasks, *sighup]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=RELOAD_CUT_WAIT)
            if pending:
                log.warning("at shutdown: %d reload(s) cut short still undoing after %g s; the services "
                            "refuse what they would install from now on", len(pending), RELOAD_CUT_WAIT)
        self.over.set()
        if self.answering:   # their clients answered before the services shut down and the loop ends
            await asyncio.wait(list(self.answering))
