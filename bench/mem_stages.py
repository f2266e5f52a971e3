#!/usr/bin/env python3
"""Where a tunsec gateway's RSS goes as road warriors arrive, stage by stage (root, netns, ~20 s).

    python3 bench/mem_stages.py [--stages 1 10 100] [--mappings 6] [--trace DIR [--top 15]]

bench/scale.py's gateway and clients, brought up in stages (the clients of each stage start at
once, as in scale.py's burst; the next stage starts when they are all up and pinged): at each
stage, per process (control, worker), RSS and its anonymous part (/proc/PID/smaps_rollup), the
growth since the stage before per client of that stage, and the mappings (/proc/PID/smaps) that
grew the most.  ``--trace DIR``: both processes also run under tunsec.memtrace (its SIGUSR2 at
each stage: the first starts tracemalloc, so the idle sample is taken before any tracing), and
the report adds glibc's heap in use and free (mallinfo2), pymalloc's and tracemalloc's figures
and the lines whose traced memory grew the most between stages; tracing costs memory of its own,
so RSS figures of a traced run are not the ones to quote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firstclient import Mappings, bring_up, cpu_ns, rollup

from tunsec import memtrace
from tunsec.bench import scale
from tunsec.bench.netns import TwoHosts
from tunsec.bench.procs import descendants
from tunsec.bench.scale_clients import RoadWarriors
from tunsec.bench.scale_gateways import TunsecGateway

# the control process under memtrace's SIGUSR2 (the worker installs it itself when the variable is set)
_WRAPPER = """import os, runpy, signal, sys
from tunsec import memtrace
dump = memtrace.dumper(os.environ[memtrace.ENV_DIR])
signal.signal(signal.SIGUSR2, lambda s, f: dump())
sys.argv = sys.argv[2:]
runpy.run_module("tunsec", run_name="__main__", alter_sys=True)
"""


def mappings(pid: int) -> Mappings:
    """Rss and Anonymous KiB per mapping: files by path, anonymous ones one by one by their start
    address (a pymalloc arena, a thread's malloc arena or stack, a big malloc block; a malloc arena
    grows at its end)."""
    sums: dict[str, list[int]] = {}
    current = [0, 0]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = parts[5] if len(parts) > 5 else f"[anon {parts[0].split('-')[0]}]"
            current = sums.setdefault(name, [0, 0])
        elif parts[:1] == ["Rss:"]:
            current[0] += int(parts[1])
        elif parts[:1] == ["Anonymous:"]:
            current[1] += int(parts[1])
    return {k: (v[0], v[1]) for k, v in sums.items()}


def snapshot(trace: Path, pids: dict[str, int], stage: int) -> dict[str, Path]:
    """One memtrace dump of each process; the base paths (without .json/.snap)."""
    out = {}
    for name, pid in pids.items():
        os.kill(pid, signal.SIGUSR2)
        base = trace / f"{pid}-{stage + 1}"   # memtrace counts from 1
        deadline = time.monotonic() + 60
        while not Path(str(base) + ".snap").exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"no snapshot from {name} ({base})")
            time.sleep(0.05)
        out[name] = base
    return out


def report_trace(now: dict[str, Path], before: dict[str, Path] | None, top: int) -> None:
    for name, base in now.items():
        doc = json.loads(Path(str(base) + ".json").read_text())
        m = doc["malloc"]
        line = (f"  {name:8s} traced {doc['traced'] // 1024} KiB (peak {doc['peak'] // 1024}), glibc in use "
                f"{m.get('uordblks', 0) // 1024} KiB free {m.get('fordblks', 0) // 1024} KiB mmapped "
                f"{m.get('hblkhd', 0) // 1024} KiB arena {m.get('arena', 0) // 1024} KiB, objects {doc['objects']}")
        print(line)
        if before is None or not top:
            continue
        old = tracemalloc.Snapshot.load(str(before[name]) + ".snap")
        new = tracemalloc.Snapshot.load(str(base) + ".snap")
        for stat in new.compare_to(old, "lineno")[:top]:
            if stat.size_diff > 0:
                frame = stat.traceback[0]
                print(f"      {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks "
                      f"{frame.filename.split('/src/')[-1]}:{frame.lineno}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 10, 100], help="clients up after each stage")
    ap.add_argument("--mappings", type=int, default=6, help="mappings that grew the most, per process and stage")
    ap.add_argument("--trace", type=Path, help="memtrace both processes, snapshots in this directory")
    ap.add_argument("--top", type=int, default=15, help="lines of traced growth per process and stage")
    ap.add_argument("--frames", type=int, default=1, help="tracemalloc frames (--trace)")
    args = ap.parse_args()
    if reason := scale.precheck():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    argv0: list[str] = []
    if args.trace:
        args.trace.mkdir(parents=True, exist_ok=True)
        args.trace.chmod(0o777)   # the worker writes here after dropping root
        wrapper = args.trace / "traced_gateway.py"
        wrapper.write_text(_WRAPPER)
        os.environ[memtrace.ENV_DIR] = str(args.trace)
        os.environ[memtrace.ENV_FRAMES] = str(args.frames)
        argv0 = [sys.executable, str(wrapper)]
    with TwoHosts(ipv6=False, prefix="ms") as topo:
        scale.no_ipv6(topo)
        psk = secrets.token_hex(16)
        gateway = TunsecGateway(topo, psk, max(args.stages))
        gateway.start(argv0)
        clients = RoadWarriors(topo, psk, 1)
        clients.start()
        time.sleep(1.0)   # as scale.py before its "before" sample
        assert gateway.proc is not None
        control = gateway.proc.pid
        pids = {"control": control, "worker": descendants(control)[0].pid}
        up, stage = 0, 0
        roll = {p: rollup(pid) for p, pid in pids.items()}
        maps = {p: mappings(pid) for p, pid in pids.items()}
        cpu = {p: cpu_ns(pid) for p, pid in pids.items()}
        print("-- idle: " + ", ".join(f"{p} RSS {r['Rss']} KiB (anonymous {r['Anonymous']})" for p, r in roll.items()))
        traced = snapshot(args.trace, pids, stage) if args.trace else None
        if traced:
            report_trace(traced, None, 0)
        for n in args.stages:
            stage += 1
            bring_up(topo, clients, n, 30 + n / 10)
            new = n - up
            up = n
            roll2 = {p: rollup(pid) for p, pid in pids.items()}
            maps2 = {p: mappings(pid) for p, pid in pids.items()}
            cpu2 = {p: cpu_ns(pid) for p, pid in pids.items()}
            total = sum(roll2[p]["Rss"] - roll[p]["Rss"] for p in pids)
            print(f"-- {n} up (+{new}): gateway +{total} KiB = {total / new:.1f} KiB per new client")
            for p in pids:
                grew = roll2[p]["Rss"] - roll[p]["Rss"]
                anon = roll2[p]["Anonymous"] - roll[p]["Anonymous"]
                print(f"  {p:8s} RSS {roll2[p]['Rss']} KiB +{grew} (anonymous +{anon}) = {grew / new:.1f} KiB "
                      f"per client, CPU {(cpu2[p] - cpu[p]) / 1e6 / new:.2f} ms per client")
                zero = (0, 0)
                rows = sorted(((maps2[p].get(k, zero)[0] - maps[p].get(k, zero)[0],
                                maps2[p].get(k, zero)[1] - maps[p].get(k, zero)[1], k)
                               for k in maps2[p].keys() | maps[p].keys()), key=lambda r: -abs(r[0]))
                for g, a, name in rows[:args.mappings]:
                    if g:
                        print(f"      {g:+6d} KiB (anonymous {a:+d}) {name}")
            if args.trace:
                now = snapshot(args.trace, pids, stage)
                report_trace(now, traced, args.top)
                traced = now
            roll, maps, cpu = roll2, maps2, cpu2
        with contextlib.suppress(ProcessLookupError):
            os.kill(control, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
