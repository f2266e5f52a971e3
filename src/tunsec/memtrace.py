"""Opt-in memory snapshots for hunting slow growth (bench/soak.py --trace).

Off unless ``$TUNSEC_TRACE_DIR`` names a directory: then SIGUSR2 first starts
tracemalloc (so start-up runs untraced and at full speed) with
``$TUNSEC_TRACE_FRAMES`` frames per traceback (25 by default), and every
SIGUSR2 writes ``<dir>/<pid>-<n>.snap`` (a tracemalloc snapshot, renamed into
place once complete) and next to it ``<pid>-<n>.json``: traced memory, what
tracemalloc itself holds (its interned tracebacks grow while it runs: not a
leak of the process), VmRSS, glibc's malloc figures, CPython's free lists and the objects the
collector tracks by type (cyclic garbage not yet collected included), so growth that
tracemalloc does not see (C allocations, allocator fragmentation) shows as a
difference.  Memory allocated after the first signal and still held at a later
one shows in that later snapshot, attributed to the lines that allocated it.

Used by the dataplane worker (installed on its event loop) and by
bench/traced_tunsec.py (the control process).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import gc
import itertools
import json
import os
import re
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ENV_DIR = "TUNSEC_TRACE_DIR"
ENV_FRAMES = "TUNSEC_TRACE_FRAMES"


def trace_dir() -> str | None:
    """The snapshot directory, or None when the diagnostic is off (the default)."""
    return os.environ.get(ENV_DIR) or None


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                    "keepcost")


@functools.cache
def _mallinfo2() -> Callable[[], Any] | None:
    """glibc's mallinfo2, loaded once.  A ctypes Structure class made per call (as this was) is ~25
    objects and a few KiB of cyclic garbage, which waits for a collection of an older generation:
    under gctune's thresholds that is an hour or more in a soak, so each snapshot grew the process it
    measured and came out at the top of its own growth list."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in _MALLINFO_FIELDS]

    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return cast(Callable[[], Any], fn)


def _mallinfo() -> dict[str, int]:
    """glibc's mallinfo2 (main arena + others): in use, free in the heap, mmapped; {} elsewhere."""
    fn = _mallinfo2()
    if fn is None:
        return {}
    m = fn()
    return {n: int(getattr(m, n)) for n in _MALLINFO_FIELDS}


_FREE_LIST = re.compile(r"^\s*(\d+) free (?:(\d+)-sized )?Py(\w+?)Objects? ", re.M)


def free_lists() -> dict[str, int]:
    """How many objects CPython's free lists hold, by type (``tuple[N]``: tuples of length N): freed
    objects kept for reuse, which tracemalloc still counts where they were allocated and
    gc.get_objects() does not show.  A ``tuple(<generator>)`` of length N is made as a longer tuple
    and shrunk, so when it dies it lands in the free list of length N while no allocation of that
    length took one out: one such per rekey fills that list (2000 at most) over minutes, which a
    soak sees as slow growth.  From ``sys._debugmallocstats()``, which writes to file descriptor 2
    (redirected to a memory file meanwhile: the sandboxed worker may create no file outside its
    trace directory); {} when the interpreter has no such report."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    with open(os.memfd_create("debugmallocstats", os.MFD_CLOEXEC), "w+b") as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    return {(f"{kind.lower()}[{size}]" if size else kind.lower()): int(n)
            for n, size, kind in _FREE_LIST.findall(text)}


def dumper(directory: str) -> Callable[[], str]:
    """A function that starts tracing on its first call and writes one snapshot per call; its base path."""
    counter = itertools.count(1)

    def dump() -> str:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get(ENV_FRAMES, "25")))
        base = os.path.join(directory, f"{os.getpid()}-{next(counter)}")
        # no gc.collect() first: a full collection empties CPython's free lists, and a tuple in a
        # free list is memory tracemalloc still shows where it was allocated - the growth seen in
        # the soak's worker was exactly that (tests/dataplane/test_worker_memory.py)
        types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        traced, peak = tracemalloc.get_traced_memory()
        # json.dumps, not json.dump: dump encodes with nested closures that are cyclic garbage after
        # each call (~30 objects), which gctune's thresholds leave in the measured process for long
        doc = json.dumps({"traced": traced, "peak": peak, "tracemalloc_self": tracemalloc.get_tracemalloc_memory(),
                          "rss_kib": _rss_kib(), "objects": sum(types.values()), "malloc": _mallinfo(),
                          "free_lists": free_lists(), "types": dict(types.most_common(200))})
        with open(base + ".json", "w") as f:
            f.write(doc)
        tracemalloc.take_snapshot().dump(base + ".snap.tmp")
        os.rename(base + ".snap.tmp", base + ".snap")   # complete when it appears
        return base

    return dump
