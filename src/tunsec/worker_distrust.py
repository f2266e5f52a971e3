"""What the control process makes of events and answers from a worker that may be lying.

The worker parses packets from the network and runs as another user in a sandbox (docs/privileges.md):
taken over, it can still write any event and any answer on its pipe.  What it writes must cost the
control process no more than what the services installed into it could make a healthy worker say
(review revworker F3, F5, F6):

- an event no service owns is counted and its line rate-limited per kind (UnownedEvents): a healthy
  worker names only SAs and policies the services installed (INVALID_SPI it bounds in C), so only a
  confused or taken-over one sends these by the thousand;
- a DUMP answer is held up to what the services installed plus slack (dump_cap), not up to the
  client's 64 MiB "no gateway reaches it": each answer is decoded and held until the status, scrape
  or accounting sample that asked is done;
- a DUMP answered with a reply of another kind, or parts that do not join, is the worker's error
  (EINVAL, counted malformed), as a `tunsec status` then says, not an internal one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tunsec.dataplane import pipe
from tunsec.dataplane.client import WorkerClient, WorkerError
from tunsec.dataplane.pipe import Errno
from tunsec.loglimit import LogLimiter, suffix

if TYPE_CHECKING:
    from tunsec.services.base import Service

log = logging.getLogger("tunsec")

# a DUMP answer's bytes as read, at most: a floor for the counters, gauges and drops every answer
# carries (two full parts), and per SA or policy the services installed (an SA_INFO is ~116 bytes, a
# POLICY_INFO less): four times that, for SAs the services do not count one by one (larval SPIs of
# negotiations under way, an outbound SA whose ADD was not answered)
DUMP_FLOOR_BYTES = 128 * 1024
DUMP_ENTRY_BYTES = 512


class UnownedEvents:
    """Worker events no service owns: counted (``count``, tunsec status and metrics) and logged at
    most LogLimiter's burst a period per kind, the lines held counted in the next."""

    def __init__(self) -> None:
        self.count = 0
        self._limits: dict[type[pipe.Message], LogLimiter] = {}   # per event type: a handful

    def note(self, msg: pipe.Message) -> None:
        self.count += 1
        limiter = self._limits.get(type(msg))
        if limiter is None:
            limiter = self._limits[type(msg)] = LogLimiter()
        if (held := limiter.admit()) is None:
            return
        more = suffix(held)
        match msg:
            case pipe.Expire():
                log.warning("SA %s %08x reached its %s %s limit%s", msg.direction.name.lower(), msg.spi,
                            "hard" if msg.hard else "soft", msg.reason.name.lower(), more)
            case pipe.InvalidSpi():
                log.info("ESP for unknown SPI %08x from %s port %d%s", msg.spi, msg.remote.addr,
                         msg.remote.port, more)
            case pipe.Acquire():
                log.info("traffic for policy %d has no SA (no IKE configured for it)%s", msg.policy_id, more)
            case pipe.Ike():
                log.debug("IKE message from %s ignored: no IKE connections configured%s", msg.remote.addr, more)
            case _:
                log.debug("worker event %s%s", type(msg).__name__, more)


def dump_cap(services: Iterable[Service]) -> int:
    """The bytes a DUMP answer may take: what the services installed into the worker, with slack."""
    return DUMP_FLOOR_BYTES + DUMP_ENTRY_BYTES * sum(svc.worker_entries() for svc in services)


_malformed_log = LogLimiter()


async def dump(worker: WorkerClient, cap: int) -> pipe.Reply:
    """The worker's DUMP, its parts joined; WorkerError if it refused, grew past cap (ENOSPC: the
    daemon's dump_cap, for the status, the scrapes and RADIUS accounting alike) or does not join into
    one answer (EINVAL: another kind, drop names repeated across parts, ...)."""
    replies = await worker.request(lambda r: pipe.Dump(r), max_bytes=cap)
    try:
        return pipe.join_dump_replies(replies)
    except ValueError as err:
        worker.malformed += 1
        if (held := _malformed_log.admit()) is not None:
            log.error("malformed DUMP answer from the worker: %s%s", err, suffix(held))
        raise WorkerError("malformed DUMP answer", Errno.EINVAL) from None
