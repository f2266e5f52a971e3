"""The order of SA/SPD changes to the worker: the lock they take (IkeService._changes), and whether a
change is queued for it, which installs' fast path must not overtake."""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class Changes(asyncio.Lock):
    """SA/SPD changes reach the worker in the order the engine reported them: each takes this lock,
    a new Child SA's install may skip it (installs._start_install) only when it is ``idle``.

    ``locked()`` alone does not say that: a change spawned in this turn has not asked for the lock
    yet (its task starts next turn), and a waiter that a release woke has not taken it yet (the lock
    is unlocked until it runs).  Either is an earlier change (a DELETE of an outbound SA the new
    Child SA's ADD re-creates with the same SPI and peer) that the fast path would overtake."""

    def __init__(self) -> None:
        super().__init__()
        self._acquiring = 0   # in acquire(): holding it next, or waiting for it
        # coroutines spawned to take the lock (queue), oldest first, until they started
        self._queued: collections.deque[Coroutine[Any, Any, Any]] = collections.deque()

    async def acquire(self) -> Literal[True]:
        self._acquiring += 1
        try:
            return await super().acquire()
        finally:
            self._acquiring -= 1

    def queue(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``coro``, about to be spawned, starts by taking the lock: it is queued from now on (its
        task starts in a later turn, in the order spawned; then acquire() counts it)."""
        self._unstarted()   # the ones before it that started go: the deque holds only what is queued
        self._queued.append(coro)
        return coro

    def idle(self) -> bool:
        """No change holds the lock, waits for it or is spawned to take it."""
        return not self.locked() and not self._acquiring and not self._unstarted()

    def _unstarted(self) -> bool:
        """Forget the queued coroutines that started (or were closed unstarted); True if one has not.
        Tasks start in the order they were spawned: the oldest not started is the first."""
        while self._queued and inspect.getcoroutinestate(self._queued[0]) != inspect.CORO_CREATED:
            del self._queued[0]
        return bool(self._queued)
