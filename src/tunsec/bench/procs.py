"""Small /proc helpers: process trees, CPU time, schedstat sampled in a thread, and stopping processes by PID.

Only processes this code started (and their descendants, identified by PID
*and* start time so a recycled PID is never hit) are ever signalled.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/<pid>/stat this module needs (times in ticks)."""

    pid: int
    ppid: int
    starttime: int
    utime: int
    stime: int

    @property
    def cpu_seconds(self) -> float:
        return (self.utime + self.stime) / CLK_TCK


def read_proc(pid: int) -> ProcInfo | None:
    """Parse /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5).
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        starttime=int(fields[19]),
    )


def all_procs() -> dict[int, ProcInfo]:
    """A snapshot of every process on the host."""
    procs: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = read_proc(int(entry))
            if info is not None:
                procs[info.pid] = info
    return procs


def descendants(pid: int, procs: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """All live descendants of ``pid`` (not ``pid`` itself)."""
    procs = all_procs() if procs is None else procs
    children: dict[int, list[ProcInfo]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcInfo] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """User+system CPU seconds of the given processes and all their live
    descendants (threads are included in a process's own figures)."""
    procs = all_procs()
    seen: set[int] = set()
    total = 0.0
    for pid in pids:
        tree = [procs[pid]] if pid in procs else []
        tree += descendants(pid, procs)
        for info in tree:
            if info.pid not in seen:
                seen.add(info.pid)
                total += info.cpu_seconds
    return total


def sched_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of one process, summed over its
    threads (/proc/<pid>/task/<tid>/schedstat, ns); (0, 0) if it is gone.  Over an interval,
    what is neither was sleeping: waiting on a socket, a timer or another process."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                fields = f.read().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


@dataclass(frozen=True)
class ThreadTime:
    """One live thread's time on a CPU (/proc/<pid>/task/<tid>/schedstat, ns) and whose it is."""

    pid: int
    comm: str
    run_ns: int


def thread_times(pids: Iterable[int]) -> dict[int, ThreadTime]:
    """Every live thread of ``pids`` and of their live descendants, by tid, with its time on a CPU
    in ns: what the CPU figures of a short run are taken from (the utime and stime of
    /proc/<pid>/stat count 10 ms ticks, 0.1 ms per client at 100 clients and 0.1 s of CPU)."""
    procs = all_procs()
    out: dict[int, ThreadTime] = {}
    for pid in {p for root in pids if root in procs for p in [root, *(d.pid for d in descendants(root, procs))]}:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    run_ns = int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/comm", encoding="ascii", errors="replace") as f:
                    comm = f.read().strip()
            except (OSError, ValueError, IndexError):
                continue
            out[int(tid)] = ThreadTime(pid, comm, run_ns)
    return out


def cpu_between(before: dict[int, ThreadTime], after: dict[int, ThreadTime], *,
                pids: Iterable[int] | None = None, prefix: str = "") -> float:
    """Seconds on a CPU between two :func:`thread_times` of the threads in ``after`` (of ``pids``
    alone, and named ``prefix``..., when given). A thread that exited in between is not counted
    (its time went with it); one whose tid is new, or was reused (its count went back), counts whole."""
    only = None if pids is None else set(pids)
    total = 0
    for tid, now in after.items():
        if (only is not None and now.pid not in only) or not now.comm.startswith(prefix):
            continue
        then = before.get(tid)
        total += now.run_ns - then.run_ns if then is not None and then.run_ns <= now.run_ns else now.run_ns
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS of /proc/<pid>/status); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pids: Iterable[int]) -> int:
    """Summed resident set size of the given processes and all their live descendants
    (shared pages, such as libraries, count once per process: an upper bound)."""
    procs = all_procs()
    seen: set[int] = set()
    for pid in pids:
        seen.update([pid] if pid in procs else [])
        seen.update(info.pid for info in descendants(pid, procs))
    return sum(rss_bytes(pid) for pid in seen)


def same_process(info: ProcInfo) -> bool:
    now = read_proc(info.pid)
    return now is not None and now.starttime == info.starttime


def kill_if_same(info: ProcInfo, sig: int) -> None:
    if same_process(info):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, sig)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM ``proc`` (by PID), SIGKILL it after ``timeout``, then SIGKILL
    any of its descendants that outlived it. Returns its exit status."""
    if proc.poll() is not None:
        return proc.returncode
    kids = descendants(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    for kid in kids:
        kill_if_same(kid, signal.SIGKILL)
    return proc.poll()


@dataclass(frozen=True)
class CpuTimes:
    """Host-wide CPU time from /proc/stat, in seconds summed over all CPUs."""

    busy: float
    idle: float

    @classmethod
    def read(cls) -> CpuTimes:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
        # cpu user nice system idle iowait irq softirq steal guest guest_nice
        ticks = [int(x) for x in first[1:9]]
        idle = ticks[3] + ticks[4]
        return cls(busy=(sum(ticks) - idle) / CLK_TCK, idle=idle / CLK_TCK)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(busy=self.busy - other.busy, idle=self.idle - other.idle)


class SchedSampler:
    """The gateway's main process's schedstat (on a CPU, waiting for one) every ``interval`` seconds
    in a thread, so that its share of the burst (first IKE_SA_INIT to last IKE SA up, by the
    clients' log) can be taken afterwards: what it was neither, it slept (on a socket, a timer,
    the worker), i.e. idle time on the critical path if the gateway was behind."""

    # a sample reads every thread's schedstat: ~0.5 ms of CPU for charon's ~25 threads, so not more often
    def __init__(self, pids: Sequence[int], interval: float = 0.025) -> None:
        self.pids, self.interval = list(pids), interval
        self.samples: list[tuple[float, float, float]] = []    # (time.time(), run s, wait s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sched-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now, stats = time.time(), [sched_seconds(p) for p in self.pids]
            self.samples.append((now, sum(r for r, _ in stats), sum(w for _, w in stats)))
            if self._stop.wait(self.interval):
                return

    def shares(self, t0: float, t1: float) -> tuple[float, float] | None:
        """(on a CPU, waiting for one) as shares of [t0, t1], interpolated between the samples
        around its ends; None unless the samples cover it."""
        if t1 <= t0 or not self.samples or not self.samples[0][0] <= t0 < t1 <= self.samples[-1][0]:
            return None
        (r0, w0), (r1, w1) = self._at(t0), self._at(t1)
        return (r1 - r0) / (t1 - t0), (w1 - w0) / (t1 - t0)

    def _at(self, t: float) -> tuple[float, float]:
        i = bisect.bisect_left(self.samples, t, key=lambda s: s[0])
        if self.samples[i][0] == t:
            return self.samples[i][1], self.samples[i][2]
        (ta, ra, wa), (tb, rb, wb) = self.samples[i - 1], self.samples[i]
        f = (t - ta) / (tb - ta)
        return ra + f * (rb - ra), wa + f * (wb - wa)
