"""Answers still wanted after their waiter gave up: what a request changed in the worker that only
its answer names.

A request whose answer does not come within REQUEST_TIMEOUT is given up (cancelled, forgotten: see
WorkerClient.request_soon) and a late answer is counted and dropped.  For most requests that is the
end of it, but the worker still did what was asked: a GETSPI answered late made a larval SA whose
SPI only that answer names, and the SPI pool asks without a larval timeout, so nothing would ever
delete it (review revworker2 F3: up to 288 SAs a slow episode, until the DUMP outgrew its cap).  A
request made with a ``late`` handler gets its late answer there (one message: GETSPI's kind), while
at most KEPT given-up requests are remembered (the oldest forgotten first: a hung worker never
answers them, and a new worker's client starts empty).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from tunsec.dataplane import pipe

KEPT = 4096   # SPI_POOL + SPI_POOL_BURST (288) a slow episode: a dozen episodes' answers

Late = Callable[[list[pipe.Reply]], None]


class LateAnswers:
    """The ``late`` handlers of requests waiting for their answer, then of those given up on."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._waiting: dict[int, Late] = {}   # request id -> handler, while the request is pending
        self._given_up: collections.OrderedDict[int, Late] = collections.OrderedDict()   # oldest first
        self.forgotten = 0   # given-up requests dropped from the table unanswered (past ``kept``)

    def want(self, req_id: int, late: Late) -> None:
        self._waiting[req_id] = late

    def ended(self, req_id: int, given_up: bool) -> None:
        """Request ``req_id`` is no longer pending: answered or failed (its handler is dropped), or
        given up on (its handler kept for a late answer)."""
        if not self._waiting:   # most requests have no handler: one check on the hot path
            return
        late = self._waiting.pop(req_id, None)
        if late is None or not given_up:
            return
        self._given_up[req_id] = late
        while len(self._given_up) > self.kept:
            self._given_up.popitem(last=False)
            self.forgotten += 1

    def holds(self, req_id: int) -> bool:
        """Whether a late answer to ``req_id`` is still wanted (its id is not reused meanwhile)."""
        return bool(self._given_up) and req_id in self._given_up

    def take(self, req_id: int) -> Late | None:
        """The handler for ``req_id``'s late answer, once (None: nobody wants it)."""
        if not self._given_up and not self._waiting:
            return None
        late = self._given_up.pop(req_id, None)
        waiting = self._waiting.pop(req_id, None)   # given up in this turn, its forget not run yet
        return late or waiting

    def clear(self) -> None:
        """The worker went: nothing more comes from it."""
        self._waiting.clear()
        self._given_up.clear()
