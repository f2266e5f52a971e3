"""Give memory back once a burst is over (control process and worker alike).

A storm of set-ups leaves the heap at its peak: the burst's buffers, in-flight requests and
datagrams are freed, but glibc keeps the freed pages of its arenas (only the top of the main
heap goes back, and only past M_TRIM_THRESHOLD), so a gateway that served a thousand clients at
once stays as big as it was then.  ``malloc_trim(0)`` hands every free page of every arena back
(madvise), which costs a walk of the free lists: worth it once a burst is over, not per request.

:class:`CalmTrim` is told of each unit of activity (an IKE datagram into the engine, a pipe
request; a DUMP, which builds the state of every SA at once, one per SA) and trims once when,
after at least ``burst`` of them, none came for ``quiet`` seconds.  Activity that stays below
``burst`` between quiet spells (a DPD, a scrape of a small gateway) never trims; a scrape of a
gateway with many SAs is a burst of its own (its DUMP's buffers).  A gateway that is never calm
for ``quiet`` seconds never trims either: its peak is its steady state.  Nothing here runs per packet.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from typing import Protocol, cast

log = logging.getLogger("tunsec.memtrim")

QUIET = 2.0   # seconds without activity that make a process calm
BURST = 64    # units of activity (~15-30 clients' set-ups) before a calm spell is worth a trim


class Clock(Protocol):
    """What CalmTrim needs of an event loop (asyncio's, or a test's fake clock)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> object: ...


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, loaded once; None where the C library has none (musl, other systems)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


def malloc_trim() -> bool:
    """Hand the C heap's free pages back to the system; False where that cannot be done."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


class CalmTrim:
    """Calls ``trim`` once each time the process becomes calm after a burst; counts the trims.

    ``note()`` is all the busy path pays: a clock read and a few compares.  One timer is armed
    when a stretch of activity reaches ``burst`` and re-armed until ``quiet`` seconds passed
    since the last note; a stretch that ends below ``burst`` arms none and is forgotten at the
    next note after a quiet spell."""

    def __init__(self, loop: Clock, trim: Callable[[], bool] = malloc_trim,
                 quiet: float = QUIET, burst: int = BURST) -> None:
        self.loop = loop
        self.trim = trim
        self.quiet = quiet
        self.burst = burst
        self.trims = 0            # trims done (`tunsec status`, metrics)
        self._busy = 0            # activity in the current stretch
        self._last = float("-inf")
        self._armed = False

    def note(self, units: int = 1) -> None:
        """Activity now: one request, or ``units`` for one that did that much (a DUMP of many SAs)."""
        now = self.loop.time()
        if now - self._last >= self.quiet:   # calm since the last note: a new stretch
            self._busy = 0
        self._last = now
        self._busy += units
        if self._busy >= self.burst and not self._armed:
            self._armed = True
            self.loop.call_at(now + self.quiet, self._check)

    def _check(self) -> None:
        calm_at = self._last + self.quiet
        if self.loop.time() < calm_at:   # activity since the timer was armed: wait for its end
            self.loop.call_at(calm_at, self._check)
            return
        busy, self._busy, self._armed = self._busy, 0, False
        if self.trim():
            self.trims += 1
            log.debug("calm after %d requests: free heap pages given back (trim %d)", busy, self.trims)
