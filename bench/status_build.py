#!/usr/bin/env python3
"""What a scrape's body and a `tunsec status` answer cost the control process's event loop at N
clients, built as before h/metricsfast and as now, side by side (~1 min at the defaults).

    python3 bench/status_build.py [--clients 1000 2000 5000] [--repeat 3]

The state is tests/status_state.py's (each client an IKE SA with a Child SA, its two SAs in the
worker's DUMP with the fast path's counters, two policies, a lease), put through the real code:
status.status_rows, services/ike/status.ike_sa_rows, the metrics' families and encoders.  Before:
the document at once (status_document), the per-SA and per-policy families as prometheus_client
objects (tests/metrics_reference.py) encoded by its generate_latest, the status answer by one
json.dumps.  Now: MetricsServer._build and Daemon._status's steps, a slice per turn of the loop.
A last line per N: the scrape's CPU with every row of `tunsec status` (h/metricsfast's build) and
with a scrape's brief rows (h/scrape: status_document_sliced(scrape=True)).

For each, on a uvloop event loop with a task that does nothing but turn it: the build's CPU time
(process_time) and the longest the loop was held at once (the largest gap between two of that
task's turns: before, the whole build).  The best of --repeat runs; the machine's load moves the
figures, the ratios less.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import metrics_reference  # noqa: E402
import status_state  # noqa: E402
from prometheus_client.openmetrics import exposition as openmetrics  # noqa: E402

from tunsec import ctlsocket, metrics  # noqa: E402
from tunsec.conf.tunsec_section import ListenAddress  # noqa: E402
from tunsec.dataplane import pipe  # noqa: E402
from tunsec.status import status_document, status_document_sliced  # noqa: E402


async def measured(build: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(CPU seconds, longest hold of the loop in seconds, the build's result)."""
    done = False
    longest = 0.0

    async def turn() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    gc.collect()   # not the previous build's garbage
    ticker = asyncio.ensure_future(turn())
    await asyncio.sleep(0)
    cpu = time.process_time()
    result = await build()
    cpu = time.process_time() - cpu
    done = True
    await ticker
    return cpu, longest, result


def server_for(d: Any, dump: pipe.Reply, scrape: bool = True) -> metrics.MetricsServer:
    """An endpoint (not listening) whose worker answers dump and whose document is d's status (a
    scrape's, as the daemon's; scrape=False: with every row of `tunsec status`, as before h/scrape)."""
    async def worker_dump() -> pipe.Reply:
        return dump

    return metrics.MetricsServer(ListenAddress(ipaddress.ip_address("127.0.0.1"), 0), metrics.Source(
        dump=worker_dump, document=lambda reply: status_document_sliced(d, reply, scrape), events=lambda: None,
        worker_restarts=lambda: 0, worker_pid=lambda: None))


async def one(n: int) -> dict[str, tuple[float, float]]:
    gw = status_state.gateway(n)
    d = status_state.daemon(gw)
    dump = gw.dump()   # the worker's part (and the pipe's decoding): made once, outside the figures
    srv = server_for(d, dump)
    full = server_for(d, dump, scrape=False)
    out: dict[str, tuple[float, float]] = {}

    async def scrape_before() -> bytes:
        doc = status_document(d, dump)
        families = metrics_reference.families(srv, doc, True)
        return bytes(openmetrics.generate_latest(metrics_reference.Families(families)))

    async def scrape_now() -> bytes:
        srv._bodies.clear()   # no cached body
        return (await srv._build("openmetrics")).data

    async def scrape_full_rows() -> bytes:   # h/metricsfast's build: every IKE SA's and lease's status row
        full._bodies.clear()
        return (await full._build("openmetrics")).data

    async def status_before() -> bytes:
        return ctlsocket.Answer({"ok": True, "status": status_document(d, dump)}).line

    async def status_now() -> bytes:
        answer = ctlsocket.Answer({"ok": True, "status": await status_document_sliced(d, dump)})
        await answer.encode_sliced()
        return answer.line

    sizes: dict[str, int] = {}
    for name, build in (("scrape before", scrape_before), ("scrape now", scrape_now), ("scrape rows", scrape_full_rows),
                        ("status before", status_before), ("status now", status_now)):
        cpu, held, body = await measured(build)
        out[name] = (cpu, held)
        sizes[name] = len(body)
    out["sizes"] = (float(sizes["scrape now"]), float(sizes["status now"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, nargs="+", default=[1000, 2000, 5000])
    ap.add_argument("--repeat", type=int, default=3, help="runs per N; the best of each figure is reported")
    args = ap.parse_args()
    try:
        import uvloop
        run: Callable[[Any], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    print(f"{'N':>6} {'what':<7} {'CPU before':>11} {'now':>8} {'ratio':>6}   {'loop held before':>16} "
          f"{'now':>8} {'ratio':>6}   body")
    for n in args.clients:
        runs = [run(one(n)) for _ in range(args.repeat)]
        for what in ("scrape", "status"):
            before = (min(r[f"{what} before"][0] for r in runs), min(r[f"{what} before"][1] for r in runs))
            now = (min(r[f"{what} now"][0] for r in runs), min(r[f"{what} now"][1] for r in runs))
            size = runs[0]["sizes"][0 if what == "scrape" else 1]
            print(f"{n:>6} {what:<7} {before[0]:>10.3f}s {now[0]:>7.3f}s {before[0] / now[0]:>6.1f}   "
                  f"{before[1] * 1000:>14.1f}ms {now[1] * 1000:>6.1f}ms {before[1] / now[1]:>6.0f}   "
                  f"{size / 1e6:.1f} MB", flush=True)
        rows, now = min(r["scrape rows"][0] for r in runs), min(r["scrape now"][0] for r in runs)
        print(f"{n:>6} scrape CPU with every status row (h/metricsfast) {rows:.3f}s, with a scrape's "
              f"rows {now:.3f}s: {rows / now:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
