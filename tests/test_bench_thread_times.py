"""The scale benchmark's CPU figures: each live thread's time on a CPU (schedstat, ns), not 10 ms ticks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from tunsec.bench.procs import ThreadTime, cpu_between, thread_times


def t(pid: int, comm: str, run_ns: int) -> ThreadTime:
    return ThreadTime(pid, comm, run_ns)


def test_the_time_between_two_snapshots_is_each_threads_difference_in_ns() -> None:
    before = {10: t(10, "python3", 1_000_000), 11: t(10, "tunsec-q0", 5_000)}
    after = {10: t(10, "python3", 1_250_001), 11: t(10, "tunsec-q0", 7_000)}
    assert cpu_between(before, after) == (250_001 + 2_000) / 1e9   # below a tick, to the ns


def test_a_thread_born_in_between_counts_whole_and_one_gone_not_at_all() -> None:
    before = {10: t(10, "python3", 100), 12: t(10, "gone", 10**9)}
    after = {10: t(10, "python3", 300), 13: t(10, "new", 50)}
    assert cpu_between(before, after) == 250 / 1e9


def test_a_reused_tid_whose_count_went_back_counts_as_a_new_thread() -> None:
    before = {10: t(10, "old", 10**6)}
    after = {10: t(20, "new", 400)}
    assert cpu_between(before, after) == 400 / 1e9


def test_the_main_process_and_the_named_threads_are_taken_apart() -> None:
    before = {10: t(10, "python3", 0), 20: t(20, "python3", 0), 21: t(20, "tunsec-q0", 0), 22: t(20, "tunsec-q1", 0)}
    after = {10: t(10, "python3", 1000), 20: t(20, "python3", 200), 21: t(20, "tunsec-q0", 30),
             22: t(20, "tunsec-q1", 4)}
    assert cpu_between(before, after, pids=[10]) == 1000 / 1e9
    assert cpu_between(before, after, prefix="tunsec-q") == 34 / 1e9
    assert cpu_between(before, after) == 1234 / 1e9


def test_the_snapshot_holds_this_process_its_threads_and_its_childrens() -> None:
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, name="helper")
    helper.start()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        snap = thread_times([os.getpid()])
        assert snap[threading.get_native_id()].pid == os.getpid()
        assert helper.native_id is not None and snap[helper.native_id].pid == os.getpid()
        assert snap[child.pid].pid == child.pid          # a descendant's main thread, under its own pid
        before = snap[threading.get_native_id()].run_ns
        sum(range(200_000))                              # this thread runs: its count goes up
        assert thread_times([os.getpid()])[threading.get_native_id()].run_ns > before
    finally:
        stop.set()
        helper.join()
        child.communicate(b"")
