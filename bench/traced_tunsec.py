"""``python3 bench/traced_tunsec.py up -c CONF``: ``tunsec`` under tracemalloc.

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

import collections
import gc
import itertools
import json
import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

_out = os.environ.get("TUNSEC_TRACE_DIR", ".")
_n = itertools.count(1)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _dump(signum: int, frame: FrameType | None) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get("TUNSEC_TRACE_FRAMES", "25")))
    n = next(_n)
    base = os.path.join(_out, f"{os.getpid()}-{n}")
    gc.collect()
    types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    traced, peak = tracemalloc.get_traced_memory()
    with open(base + ".json", "w") as f:
        json.dump({"traced": traced, "peak": peak, "rss_kib": _rss_kib(), "objects": sum(types.values()),
                   "types": dict(types.most_common(200))}, f)
    tracemalloc.take_snapshot().dump(base + ".snap.tmp")
    os.rename(base + ".snap.tmp", base + ".snap")   # complete when it appears


signal.signal(signal.SIGUSR2, _dump)
sys.argv = ["tunsec", *sys.argv[1:]]
runpy.run_module("tunsec", run_name="__main__", alter_sys=True)
