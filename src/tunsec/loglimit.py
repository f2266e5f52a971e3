"""Rate limits for log lines an unauthenticated peer can cause.

Anyone can send an IKE_SA_INIT with proposals we refuse, or an IKE_AUTH that
fails: each would write an error line, so a flood of them would flood the log
(and the disk behind it).  Lines of such a kind pass in bursts; the rest are
counted and the count is reported with the next line that passes.
"""

from __future__ import annotations

import errno
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from tunsec.safefs import write_fix


@dataclass
class LogLimiter:
    """At most ``burst`` lines every ``period`` seconds."""

    burst: int = 10
    period: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _window: float = field(default=-math.inf, init=False)
    _passed: int = field(default=0, init=False)
    _held: int = field(default=0, init=False)

    def admit(self) -> int | None:
        """None: drop this line.  Else how many lines were dropped since the last one that passed."""
        now = self.clock()
        if now - self._window >= self.period:
            self._window, self._passed = now, 0
        if self._passed >= self.burst:
            self._held += 1
            return None
        self._passed += 1
        held, self._held = self._held, 0
        return held


def suffix(held: int) -> str:
    return f" ({held} more like it suppressed)" if held else ""


def internal_error(err: BaseException, first: bool) -> str:
    """What a log line says of an internal error that a peer's input or timer ran into: the
    exception's type, and the first time where (the traceback's frames), never its text, which may
    quote the peer's data or a secret (a password character in a UnicodeEncodeError, say)."""
    where = "".join(traceback.format_tb(err.__traceback__)) if first else ""
    return type(err).__name__ + (f"\n{where}" if where else "")


def os_failure(what: str, err: OSError) -> str:
    """A line for an OSError the host caused (a full disk, a permission), not a bug: what failed, on
    which file, why and what to do; no traceback (nothing in it would help the operator)."""
    line = f"{what} failed:{f' {err.filename}:' if err.filename else ''} {err.strerror or type(err).__name__}"
    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return line
    return f"{line}; {write_fix(err, os.path.dirname(err.filename) if err.filename else 'its directory')}"
