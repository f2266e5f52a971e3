"""A trap child whose initiation failed is held down: its ACQUIREs start nothing for a while.

The worker raises an ACQUIRE per trap policy a second for as long as the LAN sends to it
(csrc/dp.c acquire).  traps.acquire ignores them while a negotiation is under way; once it had
failed (the peer refused our IKE_SA_INIT, IKE_AUTH or the child, or the IKE SA went before it was
established), the next ACQUIRE started the next one at once: a new IKE SA, with a key exchange on
both sides, or a CREATE_CHILD_SA the peer refuses again, and an ERROR line, every second for as
long as one LAN host sent, for ever (review revlan F2).  strongSwan on XFRM asks once per larval
state (xfrm_acq_expires, 165 s by charon's default).

So after an ACQUIRE's initiation of a (connection, child) that failed, the next one starts no
sooner than HOLD_FIRST seconds after it, doubled at each failure in a row up to HOLD_MAX; the
ACQUIREs in between are counted (tunsec_trap_acquires_held), not initiated.  That the initiation
failed is known as traps.acquire knows anything: the next ACQUIRE finds the child neither up nor
under way (traps._under_way asks the engine, no event can be missed).  The hold counts from the
initiation's start, so one that failed long ago (a peer that did not answer for minutes) holds
nothing back, nor does a failure followed by quiet.  A Child SA of the child that comes up (ours,
the operator's ``tunsec initiate``, the peer's) ends it; so does a reload that removes or replaces
the connection (traps._forget_traps).  The operator's ``tunsec initiate`` is never held back: it
does not come through here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

log = logging.getLogger("tunsec.ike")

HOLD_FIRST = 2.0    # seconds after the first failed initiation ...
HOLD_MAX = 165.0    # ... doubled per failure in a row, up to strongSwan's xfrm_acq_expires

Key = tuple[str, str]   # (connection, child)


def hold_for(failures: int) -> float:
    """The hold after ``failures`` failed initiations in a row (1: HOLD_FIRST)."""
    return min(HOLD_MAX, HOLD_FIRST * 2.0 ** min(failures - 1, 16))


@dataclasses.dataclass
class Attempt:
    """The last initiation an ACQUIRE started for a child, and the failures in a row before it."""
    started: float
    failures: int = 0
    judged: bool = False   # its failure was counted (by the first ACQUIRE that found it over)
    until: float = 0.0     # ACQUIREs before this start nothing


class TrapHolds:
    """The trap children whose last ACQUIRE-started initiation has not come up, by (connection, child)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock   # tests set a fake one
        self._of: dict[Key, Attempt] = {}

    def __len__(self) -> int:
        return len(self._of)

    def started(self, key: Key) -> None:
        """An ACQUIRE initiates ``key`` now."""
        last = self._of.get(key)
        self._of[key] = Attempt(self.clock(), last.failures if last is not None else 0)

    def holds(self, key: Key) -> bool:
        """Whether an ACQUIRE of ``key``, which is neither up nor under way, must wait: its last
        initiation failed less than its hold ago.  The first such ACQUIRE counts the failure."""
        last = self._of.get(key)
        if last is None:
            return False
        if not last.judged:
            last.judged = True
            last.failures += 1
            last.until = last.started + hold_for(last.failures)
            wait = last.until - self.clock()
            if wait > 0:   # one line per failure: their number is what the hold bounds
                log.warning("%s: child %s: the initiation its traffic started failed (%d in a row): its traffic "
                            "starts the next in %.0f s (ACQUIREs meanwhile counted: tunsec_trap_acquires_held)",
                            key[0], key[1], last.failures, wait)
        return self.clock() < last.until

    def up(self, key: Key) -> None:
        """A Child SA of ``key`` came up: its next failure is a first again."""
        self._of.pop(key, None)

    def forget(self, conns: set[str]) -> None:
        """A reload removed or replaced ``conns``: their children start afresh."""
        for key in [k for k in self._of if k[0] in conns]:
            del self._of[key]
