"""Our SPIs of the established IKE SAs, as the worker holds them (IKE_SPI_ADD / IKE_SPI_DELETE): the
IKE datagrams on port 4500 that name one as ours have a reserve in the worker's queues that a
flood of spoofed IKE cannot take (docs/pipe.md, "When the control process does not keep up"), so
an established peer's DPD, rekeys, DELETEs and MOBIKE updates still reach the engine.

An SPI is added when its IKE SA is established (IkeSaUp) or is the successor of a rekey, and
deleted when the engine forgets the SA (IkeEndpoint.on_forget), whichever way it went: deleted by
either side, expired, a dead peer, replaced (INITIAL_CONTACT, unique), dropped by a reload; a
rekeyed SA keeps its SPI until its DELETE exchange is through or it gives up lingering, so that
exchange has the reserve too.  The set is IkeService.ike_up's keys and the rekeyed SAs still
lingering (at most sa_successor.MAX_UNDELETED per IKE SA).  Half-open SAs are never added:
whoever sent the IKE_SA_INIT knows our SPI of those.  A new worker starts empty: the set is sent
again (worker_restarted).  Requests go without a task each (request_soon: a burst of clients
brings one per IKE SA) and nothing waits for them; a worker that holds as many as it may (ENOSPC)
leaves that SA without a reserve, which is said and counted (``ike_reserve_refused`` in ``tunsec
status``, tunsec_ike_reserve_refused_total)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.ike")


class TrustedSpis:
    def __init__(self, worker: Callable[[], WorkerClient]) -> None:
        self.worker = worker
        self.spis: set[bytes] = set()   # what the worker was asked to hold
        self.refused = 0                # IKE_SPI_ADDs the worker had no room for (ENOSPC)
        self._log = LogLimiter(burst=1, period=60.0)

    def add(self, spi: bytes) -> None:
        if spi in self.spis:
            return
        self.spis.add(spi)
        self._send(pipe.IkeSpiAdd, spi)

    def remove(self, spi: bytes) -> None:
        if spi not in self.spis:
            return
        self.spis.discard(spi)
        self._send(pipe.IkeSpiDelete, spi)

    def resend(self) -> None:
        """A new worker holds none: all of them again."""
        for spi in self.spis:
            self._send(pipe.IkeSpiAdd, spi)

    def _send(self, kind: type[pipe.IkeSpiAdd] | type[pipe.IkeSpiDelete], spi: bytes) -> None:
        try:
            sent = self.worker().request_soon(lambda req_id: kind(req_id, spi), self._answered)
        except WorkerError:
            return   # no worker: the next one is sent the whole set (resend)
        sent.add_done_callback(_quiet)

    def _answered(self, replies: list[pipe.Reply]) -> None:
        # EEXIST/ENOENT: the worker's set is already as asked (a resend raced an add or delete)
        for reply in replies:
            if reply.errno is Errno.ENOSPC:
                self.refused += 1
                if (held := self._log.admit()) is not None:
                    log.warning("the worker holds as many established IKE SAs' SPIs as it may: this one's IKE "
                                "has no reserve against floods%s", suffix(held))
            elif reply.errno not in (Errno.OK, Errno.EEXIST, Errno.ENOENT):
                log.warning("%s refused by the worker: %s", reply.type.name, reply.errno.name)


def _quiet(sent: asyncio.Future[list[pipe.Reply]]) -> None:
    """A request the worker never answered (it went, or the client gave up): nothing waits for it, and
    its error is not one to log (the worker's end is handled where it is seen)."""
    if not sent.cancelled():
        sent.exception()
