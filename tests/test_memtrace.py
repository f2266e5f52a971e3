"""tunsec.memtrace: the opt-in snapshots bench/soak.py --trace takes of both processes."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from tunsec import memtrace


def test_off_unless_the_directory_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV_DIR, raising=False)
    assert memtrace.trace_dir() is None
    monkeypatch.setenv(memtrace.ENV_DIR, "")
    assert memtrace.trace_dir() is None


def test_first_call_starts_tracing_and_later_snapshots_hold_what_grew(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracemalloc.is_tracing()
    monkeypatch.setenv(memtrace.ENV_FRAMES, "1")   # one frame: the allocating line is enough here
    dump = memtrace.dumper(str(tmp_path))
    try:
        first = Path(dump())
        kept = [bytearray(1000) for _ in range(50)]   # allocated between the two snapshots and still held
        second = Path(dump())
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert (first.name, second.name) == (f"{first.name.split('-')[0]}-1", f"{first.name.split('-')[0]}-2")
    side = json.loads(second.with_suffix(".json").read_text())
    assert side["rss_kib"] > 0 and side["objects"] > 0 and side["tracemalloc_self"] > 0
    assert side["free_lists"]["tuple[1]"] >= 0
    grew = tracemalloc.Snapshot.load(str(second) + ".snap").compare_to(
        tracemalloc.Snapshot.load(str(first) + ".snap"), "lineno")
    here = [s for s in grew if s.traceback[0].filename == __file__]
    assert sum(s.size_diff for s in here) >= 50 * 1000
    assert len(kept) == 50


def test_malloc_figures_leave_no_garbage() -> None:
    """The snapshot's malloc figures made a ctypes Structure class per call: cyclic garbage that, under
    gctune's thresholds, stayed in the measured process until a collection an hour or more later (the
    top line of the soak's own growth list)."""
    assert memtrace._mallinfo().get("uordblks", 1) > 0   # {} off glibc
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(20):
            memtrace._mallinfo()
        made = gc.get_count()[0] - before   # container objects allocated and not freed since
    finally:
        gc.enable()
    assert made < 20, f"20 calls left {made} container objects for the collector"


def test_free_lists_show_a_generator_made_tuple_kept_per_call() -> None:
    """What the soak's control process was found to grow by: each tuple(<generator>) of length 1 (a
    transform of one type, one proposal, one traffic selector per rekey) is made as a 10-tuple and
    shrunk, and when it dies it stays in the free list of 1-tuples (up to 2000) - memory no object
    holds, which the snapshot's free_lists names."""
    src = (1, 2, 3)
    before = memtrace.free_lists()   # CPython has the report
    kept = before["tuple[1]"]
    for _ in range(300):
        made = tuple(x for x in src if x == 2)
        del made
    # (a few 1-tuples the measurement itself holds are out of the list: a margin, and the cap of 2000)
    assert memtrace.free_lists()["tuple[1]"] >= min(kept + 250, 1900)
    assert {"dict", "list", "float", "tuple[2]"} <= before.keys()


def test_a_snapshot_leaves_no_cyclic_garbage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot must not grow the process it measures: under gctune's thresholds cyclic garbage waits
    an hour or more for a collection (json.dump's encoder closures, a ctypes class per call were)."""
    monkeypatch.setenv(memtrace.ENV_FRAMES, "1")
    dump = memtrace.dumper(str(tmp_path))
    try:
        dump()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            dump()
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    finally:
        tracemalloc.stop()
    assert not left, f"a snapshot left cyclic garbage: {left}"
