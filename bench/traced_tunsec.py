"""``python3 bench/traced_tunsec.py up -c CONF``: ``tunsec`` under tracemalloc (tunsec.memtrace).

The first SIGUSR2 starts tracing (so start-up and imports run at full speed and
are not traced) with ``$TUNSEC_TRACE_FRAMES`` frames per traceback (25 by
default); every SIGUSR2 writes a snapshot to
``$TUNSEC_TRACE_DIR/<pid>-<n>.snap`` and, next to it, ``<pid>-<n>.json``: the
traced memory, VmRSS and the live objects by type (``gc``), so growth in RSS
that tracemalloc does not see (allocator fragmentation, C allocations) shows
as a difference. Memory allocated after the first signal and still held at a
later one shows in that later snapshot, attributed to the lines that
allocated it (used by ``bench/soak.py --trace``).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from types import FrameType

from tunsec import memtrace

_dump_now = memtrace.dumper(os.environ.get(memtrace.ENV_DIR, "."))


def _dump(signum: int, frame: FrameType | None) -> None:
    _dump_now()


signal.signal(signal.SIGUSR2, _dump)
sys.argv = ["tunsec", *sys.argv[1:]]
runpy.run_module("tunsec", run_name="__main__", alter_sys=True)
