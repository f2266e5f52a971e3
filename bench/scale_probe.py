#!/usr/bin/env python3
"""One tunsec run of the scale benchmark (bench/scale.py) with the gateway's two processes observed
during the burst (from the clients' load to all IKE SAs up), per client:

    python3 bench/scale_probe.py --clients 100                   # CPU, slices, wakeups per thread
    python3 bench/scale_probe.py --clients 100 --mode trace      # + perf trace -s: syscalls per thread
    python3 bench/scale_probe.py --clients 300 --mode record     # + perf record -g (software clock)
    python3 bench/scale_probe.py --clients 100 --mode callgrind  # the worker's instructions (valgrind)
    python3 bench/scale_probe.py --clients 100 --mode callgrind-control  # the control process's instructions
    python3 bench/scale_probe.py --clients 100 --mode pyspy --py-spy /path/to/py-spy   # Python stacks

Every mode prints, for each thread of the control process and the worker, its CPU time on a CPU
(schedstat, ns), its time slices and its voluntary (it slept: a wakeup) and involuntary context
switches, per client.  ``trace`` and ``record`` leave perf's output in --out (perf report -i ...).
``pyspy`` samples both processes' Python stacks with py-spy (``record --format raw``, 1000 Hz,
``--native`` with ``--native``; not installed by tunsec: give its path) from the load until all
pinged, and prints each process's top functions by own and by total samples (py-spy samples a
thread that waits for a CPU too: a call that wakes another task looks dearer than it is).  Every mode also
prints the processes' CPU from the load until all pinged (the window of scale.py's cpu_gateway)
per process of the gateway's tree (the control process, the spawner, the worker, ...).
``callgrind-control`` runs the control process under valgrind (the same: instrumentation on from the
load to all up, the clients' retransmissions after 120 s, and ``user = root`` in its tunsec { } so
that vgdb reaches it; the worker runs natively).
``callgrind`` runs the worker under valgrind (instrumentation on from the load to all up, the
count printed per client); the worker then stays root (valgrind's vgdb cannot reach a process
that changed its uid) and the clients' charon retransmits only after 120 s (the slowed worker
would otherwise make it retransmit every IKE_AUTH, and count those too).  Instruction counts do
not move with the host's load; CPU time swings ~40% between its slow and fast periods here.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import tunsec.bench.scale as scale
import tunsec.bench.scale_clients as scale_clients
import tunsec.bench.scale_gateways as scale_gateways
from tunsec.bench.procs import descendants

# argv: OUT -m tunsec up -c CONF
_WRAPPER = """import runpy, sys
from tunsec.dataplane import client
out, command, start = sys.argv[1], client.worker_command, client.WorkerClient.start
client.worker_command = lambda: ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 "--callgrind-out-file=" + out] + command()
async def as_root(self, fds, mtu, larval_timeout, log_level, user=None, log_format="text", spawner=None,
                  *rest, **kw):   # started here, as root, not by the spawner as its user
    return await start(self, fds, mtu, larval_timeout, log_level, None, log_format, None, *rest, **kw)
client.WorkerClient.start = as_root
sys.argv = sys.argv[3:]
runpy.run_module("tunsec", run_name="__main__", alter_sys=True)
"""


def threads(pid: int) -> dict[str, dict[str, int]]:
    """Per thread (comm/tid): ns on a CPU, time slices, voluntary and involuntary switches."""
    out: dict[str, dict[str, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = Path(f"{base}/comm").read_text().strip()
            run_ns, _, slices = (int(x) for x in Path(f"{base}/schedstat").read_text().split())
            status = Path(f"{base}/status").read_text()
        except OSError:
            continue
        vol, nvol = (int(m.group(1)) for m in re.finditer(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", status, re.M))
        out[f"{comm}/{tid}"] = {"run_ns": run_ns, "slices": slices, "vol": vol, "nvol": nvol}
    return out


def tree(control: int) -> dict[str, int]:
    """The gateway's processes by role: the control process and its descendants by their comm."""
    found = {"control": control}
    for info in descendants(control):
        try:
            comm = Path(f"/proc/{info.pid}/comm").read_text().strip()
        except OSError:
            continue
        found[f"{comm}/{info.pid}"] = info.pid
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--mode", default="sched",
                    choices=["sched", "trace", "record", "callgrind", "callgrind-control", "pyspy"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/scale_probe"))
    ap.add_argument("--ns-prefix", default="probe", help="the namespaces' prefix (scale.py's --ns-prefix)")
    ap.add_argument("--py-spy", default="py-spy", metavar="PATH", help="py-spy's path (--mode pyspy)")
    ap.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {}
    tracers: list[subprocess.Popen[bytes]] = []
    start, stop, ping_from = scale.SchedSampler.start, scale.SchedSampler.stop, scale.ping_from

    def started(sampler: scale.SchedSampler) -> None:   # right before the clients are loaded
        control = sampler.pids[0]
        seen["pids"] = tree(control)
        worker = next((pid for name, pid in seen["pids"].items() if name.startswith("tunsec-dp")),
                      descendants(control)[-1].pid)
        seen["roles"] = {"control": control, "worker": worker}
        for name, pid in seen["roles"].items():
            out = str(args.out / f"{args.mode}.{name}")
            if args.mode == "trace":
                tracers.append(subprocess.Popen(["perf", "trace", "-s", "-o", out, "-p", str(pid)]))
            elif args.mode == "record":
                tracers.append(subprocess.Popen(["perf", "record", "-F", "4000", "-g", "-o", out + ".data",
                                                 "-p", str(pid)], stderr=subprocess.DEVNULL))
            elif args.mode == "pyspy":
                tracers.append(subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "--rate", "1000",
                                                 "--format", "raw", "--nonblocking", "--threads",
                                                 *(["--native"] if args.native else []), "-o", out + ".txt"],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if args.mode.startswith("callgrind"):
            target = worker if args.mode == "callgrind" else control
            subprocess.run(["callgrind_control", "-i", "on", str(target)], check=True, capture_output=True)
        time.sleep(1.5 if tracers else 0)   # perf attaches
        seen["before"] = {name: threads(pid) for name, pid in seen["pids"].items()}
        start(sampler)

    def stopped(sampler: scale.SchedSampler) -> None:   # all IKE SAs up
        stop(sampler)
        seen["after"] = {name: threads(pid) for name, pid in seen["pids"].items()}
        if args.mode.startswith("callgrind"):
            target = seen["roles"]["worker" if args.mode == "callgrind" else "control"]
            subprocess.run(["callgrind_control", "-d", "burst", str(target)], check=True, capture_output=True)
        if args.mode not in ("pyspy",):
            finish()

    def finish() -> None:
        for t in tracers:
            t.send_signal(signal.SIGINT)
        for t in tracers:
            t.wait(30)
        tracers.clear()

    def pinged(*a: Any, **kw: Any) -> set[str]:   # all pinged: the end of scale.py's cpu_gateway
        answered = ping_from(*a, **kw)
        if "pids" in seen:
            seen["pinged"] = {name: threads(pid) for name, pid in seen["pids"].items()}
        finish()
        return answered

    scale.ping_from = pinged   # type: ignore[assignment]

    scale.SchedSampler.start, scale.SchedSampler.stop = started, stopped   # type: ignore[method-assign,assignment]
    who = "worker" if args.mode == "callgrind" else "control"
    cg_out = args.out / f"callgrind.{who}"
    if args.mode.startswith("callgrind"):
        gateway_start, tuning = scale.TunsecGateway.start, scale_clients.charon_tuning
        wrapper = args.out / "callgrind_gateway.py"
        wrapper.write_text(_WRAPPER)
        for old in args.out.glob(f"callgrind.{who}*"):
            old.unlink()
        wait_until = scale_gateways.wait_until

        def under_callgrind(gw: scale.TunsecGateway, argv0: Sequence[str] = ()) -> None:
            if args.mode == "callgrind":
                gateway_start(gw, [sys.executable, str(wrapper), str(cg_out)])
            else:   # as root: valgrind's vgdb cannot reach a process that changed its uid
                gw.conf.write_text(gw.conf.read_text().replace("tunsec {\n", "tunsec {\n  user = root\n", 1))
                gateway_start(gw, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                   f"--callgrind-out-file={cg_out}", sys.executable])

        def slow_start(check: Any, timeout: float, interval: float = 0.1) -> bool:   # start-up under valgrind
            return bool(wait_until(check, timeout * 10, interval))

        scale_gateways.wait_until = slow_start   # type: ignore[assignment]

        def patient(clients: int, *, gateway: bool) -> str:
            return tuning(clients, gateway=gateway) + ("" if gateway else "  retransmit_timeout = 120\n")

        scale.TunsecGateway.start = under_callgrind   # type: ignore[method-assign,assignment]
        scale_clients.charon_tuning = patient   # where the clients' charon looks it up
    slow = 300 if args.mode.startswith("callgrind") else 0
    result = scale.run_one("tunsec", args.clients, 30 + args.clients / 10 + slow, ns_prefix=args.ns_prefix)
    print(scale.format_table([result]))
    if "after" not in seen:
        return 1
    n = args.clients
    print("from the load until all IKE SAs up:")
    report(seen["before"], seen["after"], n)
    if "pinged" in seen:
        print("from the load until all pinged (scale.py's cpu_gateway):")
        report(seen["before"], seen["pinged"], n)
    if args.mode == "pyspy":
        for name in seen["roles"]:
            print(pyspy_top(args.out / f"pyspy.{name}.txt", name))
    if args.mode.startswith("callgrind"):
        dumps = sorted(args.out.glob(f"callgrind.{who}.*"))
        total = subprocess.run(["callgrind_annotate", str(dumps[-1])], capture_output=True, text=True).stdout
        refs = next((int(line.split()[0].replace(",", "")) for line in total.splitlines()
                     if "PROGRAM TOTALS" in line), 0)
        print(f"{who}: {refs // n} instructions per client (burst; {dumps[-1]})")
    return 0 if not result.reason else 1


def report(before: dict[str, Any], after: dict[str, Any], n: int) -> None:
    """Each thread's CPU, slices, wakeups and preemptions between two snapshots, per client."""
    total = 0.0
    for name, threads_after in after.items():
        for thread, a in threads_after.items():
            d = {k: v - before.get(name, {}).get(thread, {}).get(k, 0) for k, v in a.items()}
            total += d["run_ns"]
            if d["run_ns"] > 1e6 or d["vol"]:
                print(f"  {name:18s} {thread:22s} {d['run_ns'] / 1e6 / n:7.3f} ms on a CPU"
                      f"  {d['slices'] / n:6.2f} slices"
                      f"  {d['vol'] / n:6.2f} wakeups  {d['nvol'] / n:6.2f} preempted  per client")
    print(f"  all {total / 1e6 / n:.3f} ms per client")


def pyspy_top(path: Path, name: str, top: int = 25) -> str:
    """py-spy's raw (collapsed) stacks: the functions with the most samples, own and anywhere on the stack."""
    own: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return f"{name}: no py-spy output ({exc})"
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        k = int(count)
        total += k
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            anywhere[f] = anywhere.get(f, 0) + k
    out = [f"{name}: {total} samples"]
    for title, table in (("own", own), ("total", anywhere)):
        out.append(f"  by {title}:")
        for f, k in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"    {k:6d} {100 * k / max(total, 1):5.1f}%  {f}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
