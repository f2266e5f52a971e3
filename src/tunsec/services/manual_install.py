"""What a manual tunnel's install leaves in the worker (services/manual.py): the requests that went in
(or may have: unanswered, cut by the worker's death, cancelled) and their undo, and whether an install
failed because the worker died rather than for the tunnel's own reasons."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.services.base import StartupError

log = logging.getLogger("tunsec")


async def unless_refused(worker: WorkerClient, make: Callable[[int], pipe.Message],
                          went_in: Callable[[], object]) -> None:
    """worker.request(make); went_in() unless the worker refused it (answered an errno): a request
    unanswered, cut by the worker's death or cancelled may have been done all the same."""
    refused = False
    try:
        await worker.request(make)
    except WorkerError as err:
        refused = err.refused
        raise
    finally:
        if not refused:
            went_in()


async def undone(worker: WorkerClient, done: list[Callable[[int], Any]]) -> None:
    """The undo requests of what went in, last first.  Each error of one is logged, not raised (the
    attempt's own error is what its caller sees), and the rest are still sent; a cancellation
    arriving meanwhile is raised once they are (an attempt cancelled mid-undo leaves nothing)."""
    cancelled = False
    for undo in reversed(done):
        try:
            await asyncio.shield(worker.request(undo))
        except asyncio.CancelledError:
            cancelled = True
        except WorkerError as err:   # gone already, or another owner's (a DELETE by reqid): nothing to undo
            log.debug("an install's undo: %s", err)
        except Exception as err:   # a bug: said, and the undo goes on with the next
            log.error("an install's undo failed: %s: %s", type(err).__name__, err)
    if cancelled:
        raise asyncio.CancelledError


def died(err: StartupError, worker: WorkerClient) -> bool:
    """The install failed because worker is gone (not a refusal, nor our state file)."""
    return worker.gone or (isinstance(err.__cause__, WorkerError) and err.__cause__.gone)


def cut_by_death(err: StartupError, worker: WorkerClient) -> bool:
    """A reload's install failed because worker died under it (a request it left unanswered), not because
    the worker refused the tunnel nor because of its state file (died, narrower: a reload's failure
    of the tunnel's own drops it; this one the worker's restart installs, its plan kept)."""
    cause = err.__cause__
    return isinstance(cause, WorkerError) and not cause.refused and (cause.gone or worker.gone)
