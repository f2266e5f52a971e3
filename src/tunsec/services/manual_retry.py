"""Manual tunnels a restarted worker could not take, tried again on their own (review revrestart F1).

At a worker restart every manual tunnel reserves a new block of sequence numbers, persisted before
the worker may use it.  One key's state file that cannot be written (a full disk, EIO, a read-only
remount), or a worker that refuses one tunnel, once took the whole daemon down: the StartupError
ended the reinstall, the IKE service and the other tunnels never reached the new worker, and tunsec
exited.  Such a tunnel is now left out of the worker, as a reload leaves one it cannot install: its
plan stays (its ids, its claim, its routes into the TUN, where no policy takes its traffic and the
worker drops it: never sent in clear), nothing of it is in the worker (no SA whose reservation is
not on disk), and it is tried again every RESERVE_RETRY seconds, as a refill that failed is, until
it goes in, a reload replaces or removes it, or the next worker restart takes it with the others.
A retry gives each SA the reservation persisted for it as long as no worker took that SA (refused,
or never sent): no block is spent and no file written per retry, and the tunnel goes in where a
plain restart would have (review revlate7 F1; manual.py _hand, SeqState.restart's ``again``).  A
retry an internal error ended stays listed (ended: status says a reload), and a reload resumes it.

An attempt under way is awaited, never cancelled, when its retry stops: cancelled in the middle of
a reservation, the write would land after the SA's state was handed on (a re-add reading the file
meanwhile, then extending it, could see its limit lowered by the late write: nonces again).  Only
the wait between attempts is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunsec.dataplane.client import WorkerClient
from tunsec.loglimit import internal_error
from tunsec.services.base import StartupError

if TYPE_CHECKING:
    from tunsec.services.manual import ManualPlan

log = logging.getLogger("tunsec")


@dataclass(eq=False)
class Retry:
    """One tunnel's retries: the plan (identity: a reload's new plan of the same name is another),
    the reason of its last failure (status shows it) and the worker it was left out of."""

    plan: ManualPlan
    reason: str
    worker: WorkerClient
    task: asyncio.Task[None] | None = None
    sleeping: bool = True   # not started yet counts: cancelled then, it never runs
    stopped: bool = False
    installed: bool = False
    ended: bool = False   # on an internal error: no longer tried, still out (review revlate7 F2)

    @property
    def name(self) -> str:
        return self.plan.tunnel.name


class Retries:
    """The tunnels left out of the current worker, each retried by a task of its own."""

    def __init__(self, attempt: Callable[[ManualPlan, WorkerClient], Awaitable[None]], interval: float,
                 worker: Callable[[], WorkerClient]) -> None:
        self.attempt = attempt     # installs the plan into that worker; if it raises (StartupError or any), undone
        self.interval = interval
        self.worker = worker
        self.by_name: dict[str, Retry] = {}

    def reason(self, name: str) -> str | None:
        r = self.by_name.get(name)
        return r.reason if r is not None else None

    def retrying(self, name: str) -> bool:
        """Whether that tunnel, left out, is still tried again (not ended by an internal error)."""
        r = self.by_name.get(name)
        return r is not None and not r.ended

    def resume(self) -> None:
        """The retries an internal error ended start again (a reload: status told the operator to
        reload); each keeps its plan, its worker and its entry."""
        for r in self.by_name.values():
            if r.ended and not r.stopped and self.worker() is r.worker:
                r.ended = False
                log.info("%s: tried again after the reload", r.name)
                r.task = asyncio.create_task(self._run(r))

    def start(self, plan: ManualPlan, err: StartupError, worker: WorkerClient) -> None:
        """plan was not installed into worker (err says why and what to do): said once, retried."""
        log.error("%s; the tunnel is not installed into the restarted worker, its traffic is dropped (never "
                  "sent in clear) and it is tried again every %g s", err, self.interval)
        r = self.by_name[plan.tunnel.name] = Retry(plan, str(err), worker)
        r.task = asyncio.create_task(self._run(r))

    async def _run(self, r: Retry) -> None:
        while True:
            r.sleeping = True
            try:
                await asyncio.sleep(self.interval)
            finally:
                r.sleeping = False
            # a new worker: its reinstall takes the tunnel (and stops this retry)
            if r.stopped or self.worker() is not r.worker:
                return
            try:
                await self.attempt(r.plan, r.worker)
            except StartupError as err:
                if r.stopped:
                    return
                if str(err) != r.reason:   # each new reason once, not a line a second
                    log.error("%s; still not installed, tried again every %g s", err, self.interval)
                r.reason = str(err)
                continue
            except Exception as err:   # a bug: said, and this tunnel stays out (status shows why) until a reload
                log.error("%s: retrying its install failed: %s", r.name, internal_error(err, True))
                r.reason = f"retrying its install failed on an internal error ({type(err).__name__})"
                r.ended = True   # its entry stays: still out, and _uninstall must know it (stop says so)
                return
            r.installed = True
            if self.by_name.get(r.name) is r:
                del self.by_name[r.name]
            log.info("%s: installed on a retry", r.name)
            return

    async def stop(self, plan: ManualPlan) -> bool:
        """plan is retired (a reload removes or replaces it): no attempt of it runs any more once
        this returns (one under way is awaited).  True: it was left out, and still is (nothing of it
        is in the worker); False: it was not, or the attempt under way put it in."""
        r = self.by_name.get(plan.tunnel.name)
        if r is None or r.plan is not plan:
            return False
        await self._stop(r)
        return not r.installed

    async def stop_all(self) -> None:
        for r in list(self.by_name.values()):
            await self._stop(r)

    async def _stop(self, r: Retry) -> None:
        r.stopped = True
        if self.by_name.get(r.name) is r:
            del self.by_name[r.name]
        if r.task is None:
            return
        if r.sleeping:
            r.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await r.task
