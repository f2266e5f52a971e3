"""``python3 bench/traced_tunsec.py up -c CONF``: ``tunsec`` under tracemalloc.

The first SIGUSR2 starts tracing (so start-up and imports run at full speed and
are not traced); every SIGUSR2 writes a snapshot to
``$TUNSEC_TRACE_DIR/<pid>-<n>.snap``. Memory allocated after the first signal
and still held at a later one shows in that later snapshot, attributed to the
lines that allocated it (used by ``bench/soak.py --trace``).
"""

from __future__ import annotations

import itertools
import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

_out = os.environ.get("TUNSEC_TRACE_DIR", ".")
_n = itertools.count(1)


def _dump(signum: int, frame: FrameType | None) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get("TUNSEC_TRACE_FRAMES", "6")))
    tracemalloc.take_snapshot().dump(os.path.join(_out, f"{os.getpid()}-{next(_n)}.snap"))


signal.signal(signal.SIGUSR2, _dump)
sys.argv = ["tunsec", *sys.argv[1:]]
runpy.run_module("tunsec", run_name="__main__", alter_sys=True)
