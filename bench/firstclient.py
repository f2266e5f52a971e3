#!/usr/bin/env python3
"""What a tunsec gateway pays once and what each client costs, by stage (root, netns, ~20 s).

    python3 bench/firstclient.py [--clients 100] [--mappings 8]

bench/scale.py's gateway and clients (one charon, N road warriors with a virtual IP each), but
in three stages: the gateway idle after start, after one client (IKE SA, Child SA, one ping),
after the other N - 1.  At each stage, per process (control, worker): RSS, its anonymous and
file-backed parts (/proc/PID/smaps_rollup) and the CPU time on the CPU since the previous stage
(/proc/PID/task/*/schedstat, ns); between stages, the mappings (/proc/PID/smaps: a library, the
heap, anonymous memory) that grew the most.  What the first client costs beyond the others is
what scale.py's "KiB per client" pays once at N = 100 (docs/benchmarks.md, h/warm).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from tunsec.bench import scale
from tunsec.bench.netns import TwoHosts
from tunsec.bench.ping import ping_from
from tunsec.bench.procs import descendants
from tunsec.bench.scale_clients import RoadWarriors
from tunsec.bench.scale_conf import client_swanctl
from tunsec.bench.scale_gateways import TunsecGateway

Mappings = dict[str, tuple[int, int]]   # path (or [heap], [anon]) -> (Rss KiB, Anonymous KiB)


def rollup(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def mappings(pid: int) -> Mappings:
    sums: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            current = parts[5] if len(parts) > 5 else "[anon]"
        elif parts[:1] == ["Rss:"]:
            sums[current][0] += int(parts[1])
        elif parts[:1] == ["Anonymous:"]:
            sums[current][1] += int(parts[1])
    return {k: (v[0], v[1]) for k, v in sums.items()}


def cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):   # a thread that ended meanwhile
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total


class Stage:
    def __init__(self, name: str, pids: dict[str, int]) -> None:
        self.name = name
        self.roll = {p: rollup(pid) for p, pid in pids.items()}
        self.maps = {p: mappings(pid) for p, pid in pids.items()}
        self.cpu = {p: cpu_ns(pid) for p, pid in pids.items()}


def report(stage: Stage, before: Stage | None, clients: int, top: int) -> None:
    print(f"-- {stage.name}")
    for proc, roll in stage.roll.items():
        anon = roll["Anonymous"]
        line = f"  {proc:8s} RSS {roll['Rss']:6d} KiB (anonymous {anon}, files {roll['Rss'] - anon})"
        if before is not None:
            grew = roll["Rss"] - before.roll[proc]["Rss"]
            cpu = (stage.cpu[proc] - before.cpu[proc]) / 1e6
            line += f"  +{grew} KiB, CPU {cpu:.1f} ms" + (
                f"  = {grew / clients:.1f} KiB and {cpu / clients:.2f} ms per client" if clients > 1 else "")
        else:
            line += f"  CPU since start {stage.cpu[proc] / 1e6:.0f} ms"
        print(line)
        if before is not None and top:
            old = before.maps[proc]
            rows = sorted(((rss - old.get(k, (0, 0))[0], anon - old.get(k, (0, 0))[1], k)
                           for k, (rss, anon) in stage.maps[proc].items()), reverse=True)
            for grew, anon, name in rows[:top]:
                if grew > 0:
                    print(f"      +{grew:5d} KiB (anonymous +{anon}) {name}")


def bring_up(topo: TwoHosts, clients: RoadWarriors, n: int, timeout: float) -> None:
    clients.clients = n
    (clients.inst.dir / "swanctl.conf").write_text(client_swanctl(topo.b, topo.a, clients.psk, n))
    clients.load()    # loads the connections not loaded yet: they start
    if clients.wait_established(timeout) is None:
        raise SystemExit(f"only {clients.established()} of {n} clients established")
    vips = clients.wait_vips(timeout)
    answered = ping_from(topo.b, sorted(vips.values()), topo.a.inner4, timeout)
    if len(answered) < n:
        raise SystemExit(f"only {len(answered)} of {n} virtual IPs answered a ping")
    time.sleep(0.3)   # the last answers' installs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--mappings", type=int, default=8, help="mappings that grew the most, per process and stage")
    args = ap.parse_args()
    if reason := scale.precheck():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with TwoHosts(ipv6=False, prefix="fc") as topo:
        psk = secrets.token_hex(16)
        gateway = TunsecGateway(topo, psk, args.clients)
        gateway.start()
        clients = RoadWarriors(topo, psk, 1)
        clients.start()
        time.sleep(1.0)
        assert gateway.proc is not None
        control = gateway.proc.pid
        workers = [p.pid for p in descendants(control)]
        pids = {"control": control, **{f"worker{i if i else ''}": pid for i, pid in enumerate(workers)}}
        idle = Stage("idle after start", pids)
        report(idle, None, 0, 0)
        bring_up(topo, clients, 1, 30)
        first = Stage("after the first client", pids)
        report(first, idle, 1, args.mappings)
        if args.clients > 1:
            bring_up(topo, clients, args.clients, 30 + args.clients / 10)
            rest = Stage(f"after {args.clients - 1} more", pids)
            report(rest, first, args.clients - 1, args.mappings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
