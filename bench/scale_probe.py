#!/usr/bin/env python3
"""One tunsec run of the scale benchmark (bench/scale.py) with the gateway's two processes observed
during the burst (from the clients' load to all IKE SAs up), per client:

    python3 bench/scale_probe.py --clients 100                   # CPU, slices, wakeups per thread
    python3 bench/scale_probe.py --clients 100 --mode trace      # + perf trace -s: syscalls per thread
    python3 bench/scale_probe.py --clients 300 --mode record     # + perf record -g (software clock)
    python3 bench/scale_probe.py --clients 100 --mode callgrind  # the worker's instructions (valgrind)

Every mode prints, for each thread of the control process and the worker, its CPU time on a CPU
(schedstat, ns), its time slices and its voluntary (it slept: a wakeup) and involuntary context
switches, per client.  ``trace`` and ``record`` leave perf's output in --out (perf report -i ...).
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
from tunsec.bench.procs import descendants

# argv: OUT -m tunsec up -c CONF
_WRAPPER = """import runpy, sys
from tunsec.dataplane import client
out, command, start = sys.argv[1], client.worker_command, client.WorkerClient.start
client.worker_command = lambda: ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                 "--callgrind-out-file=" + out] + command()
async def as_root(self, fds, mtu, larval_timeout, log_level, user=None, log_format="text"):
    return await start(self, fds, mtu, larval_timeout, log_level, None, log_format)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--mode", default="sched", choices=["sched", "trace", "record", "callgrind"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/scale_probe"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {}
    tracers: list[subprocess.Popen[bytes]] = []
    start, stop = scale.SchedSampler.start, scale.SchedSampler.stop

    def started(sampler: scale.SchedSampler) -> None:   # right before the clients are loaded
        control = sampler.pids[0]
        worker = descendants(control)[0].pid
        seen["pids"] = {"control": control, "worker": worker}
        for name, pid in seen["pids"].items():
            out = str(args.out / f"{args.mode}.{name}")
            if args.mode == "trace":
                tracers.append(subprocess.Popen(["perf", "trace", "-s", "-o", out, "-p", str(pid)]))
            elif args.mode == "record":
                tracers.append(subprocess.Popen(["perf", "record", "-F", "4000", "-g", "-o", out + ".data",
                                                 "-p", str(pid)], stderr=subprocess.DEVNULL))
        if args.mode == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(worker)], check=True, capture_output=True)
        time.sleep(1.5 if tracers else 0)   # perf attaches
        seen["before"] = {name: threads(pid) for name, pid in seen["pids"].items()}
        start(sampler)

    def stopped(sampler: scale.SchedSampler) -> None:   # all IKE SAs up
        stop(sampler)
        seen["after"] = {name: threads(pid) for name, pid in seen["pids"].items()}
        if args.mode == "callgrind":
            subprocess.run(["callgrind_control", "-d", "burst", str(seen["pids"]["worker"])], check=True,
                           capture_output=True)
        for t in tracers:
            t.send_signal(signal.SIGINT)
        for t in tracers:
            t.wait(30)

    scale.SchedSampler.start, scale.SchedSampler.stop = started, stopped   # type: ignore[method-assign,assignment]
    cg_out = args.out / "callgrind.worker"
    if args.mode == "callgrind":
        gateway_start, tuning = scale.TunsecGateway.start, scale_clients.charon_tuning
        wrapper = args.out / "callgrind_gateway.py"
        wrapper.write_text(_WRAPPER)
        for old in args.out.glob("callgrind.worker*"):
            old.unlink()

        def under_callgrind(gw: scale.TunsecGateway, argv0: Sequence[str] = ()) -> None:
            gateway_start(gw, [sys.executable, str(wrapper), str(cg_out)])

        def patient(clients: int, *, gateway: bool) -> str:
            return tuning(clients, gateway=gateway) + ("" if gateway else "  retransmit_timeout = 120\n")

        scale.TunsecGateway.start = under_callgrind   # type: ignore[method-assign,assignment]
        scale_clients.charon_tuning = patient   # where the clients' charon looks it up
    result = scale.run_one("tunsec", args.clients, 30 + args.clients / 10 + (300 if args.mode == "callgrind" else 0))
    print(scale.format_table([result]))
    if "after" not in seen:
        return 1
    n = args.clients
    for name in ("control", "worker"):
        before, after = seen["before"][name], seen["after"][name]
        for thread, a in after.items():
            d = {k: v - before.get(thread, {}).get(k, 0) for k, v in a.items()}
            if d["run_ns"] > 1e6 or d["vol"]:
                print(f"{name:8s} {thread:24s} {d['run_ns'] / 1e6 / n:7.3f} ms on a CPU  {d['slices'] / n:6.2f} slices"
                      f"  {d['vol'] / n:6.2f} wakeups  {d['nvol'] / n:6.2f} preempted  per client")
    if args.mode == "callgrind":
        dumps = sorted(args.out.glob("callgrind.worker.*"))
        total = subprocess.run(["callgrind_annotate", str(dumps[-1])], capture_output=True, text=True).stdout
        refs = next((int(line.split()[0].replace(",", "")) for line in total.splitlines()
                     if "PROGRAM TOTALS" in line), 0)
        print(f"worker: {refs // n} instructions per client (burst; {dumps[-1]})")
    return 0 if not result.reason else 1


if __name__ == "__main__":
    sys.exit(main())
