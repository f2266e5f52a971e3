"""Soak: two tunsec IKE peers in namespaces rekeying fast while `status` is polled.

    make soak                                    # SOAK_SECONDS=600 by default
    python3 bench/soak.py --seconds 600 --rekey 5 --ike-rekey 7 --poll 1

A (initiator) and B run `tunsec up` with a child rekey_time of ``--rekey``
seconds and an IKE rekey_time of ``--ike-rekey`` seconds; both control sockets
are asked for `status` every ``--poll`` seconds (the CLI's own request, sent
directly so the poller costs no Python start-up). Every ``--sample`` seconds
the RSS (VmRSS) and the number of open descriptors of both control processes
and both workers are read from /proc. At the end the least-squares slope of
each series after the warm-up (``--warmup`` seconds) is printed in KiB/min and
fds/min, with the number of rekeys each side logged. Not part of CI: it runs
for minutes and its figure is a measurement, not a pass/fail.

The control processes' RSS rises for the first ~10 minutes at these rekey times
(+32 KiB in a 2100 s run) and is flat after that: CPython's free list of 1-tuples fills.
A ``tuple(<generator>)`` of one item (one transform of a type, one proposal, one
traffic selector: ~7 per Child SA rekey) is made as a 10-tuple and shrunk, and
each one that dies stays in that list, up to 2000 (64 KiB). A slope fitted over
a 900 s run with the default warm-up is that filling (1.9-3.5 KiB/min was
reported); ``--seconds 2100`` shows it end (0 KiB from 630 s to 2100 s), and
``--trace`` prints the free lists that grew (tunsec.memtrace.free_lists).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from tunsec.bench.netns import Host, TwoHosts, wait_until


@dataclass
class Series:
    name: str
    t: list[float] = field(default_factory=list)
    rss_kib: list[float] = field(default_factory=list)
    fds: list[float] = field(default_factory=list)


def slope_per_minute(t: list[float], y: list[float]) -> float:
    """Least-squares slope of y over t (seconds), per minute."""
    n = len(t)
    if n < 2:
        return 0.0
    mt, my = sum(t) / n, sum(y) / n
    var = sum((x - mt) ** 2 for x in t)
    if var == 0:
        return 0.0
    return 60.0 * sum((x - mt) * (v - my) for x, v in zip(t, y, strict=True)) / var


def conf_text(me: Host, peer: Host, sock: Path, start: bool, rekey: int, ike_rekey: int, life: int) -> str:
    return f"""tunsec {{
  tun = tunsec0
  control_socket = {sock}
  state_dir = {sock.parent / "state"}
  log_level = info
}}
connections {{
  tun {{
    version = 2
    local_addrs = {me.outer4}
    remote_addrs = {peer.outer4}
    encap = yes
    proposals = aes128gcm16-prfsha256-curve25519
    rekey_time = {ike_rekey}s
    local {{
      auth = psk
      id = {me.ns[:4]}.tunsec.test
    }}
    remote {{
      auth = psk
      id = {peer.ns[:4]}.tunsec.test
    }}
    children {{
      net {{
        local_ts = {me.inner_net4}
        remote_ts = {peer.inner_net4}
        esp_proposals = aes128gcm16
        rekey_time = {rekey}s
        life_time = {life}s
        start_action = {"start" if start else "none"}
      }}
    }}
  }}
}}
secrets {{
  ike-peers {{
    id-me = {me.ns[:4]}.tunsec.test
    id-peer = {peer.ns[:4]}.tunsec.test
    secret = "tunsec soak secret 0123456789"
  }}
}}
"""


def ask_status(path: Path) -> dict[str, object] | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10.0)
            s.connect(str(path))
            s.sendall(b'{"cmd": "status"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        answer = json.loads(buf)
        return answer if isinstance(answer, dict) and answer.get("ok") else None
    except (OSError, ValueError):
        return None


def installed(answer: dict[str, object] | None) -> tuple[int, int, int]:
    """(IKE SAs, Child SAs, non-larval SAs in the worker) of a status answer."""
    doc = answer.get("status") if answer else None
    if not isinstance(doc, dict):
        return (-1, -1, -1)
    ike = doc.get("ike_sas", [])
    return (len(ike), sum(len(sa.get("children", [])) for sa in ike),
            sum(1 for sa in doc.get("sas", []) if sa.get("state") != "larval"))


def answers(sock: Path) -> bool:
    return ask_status(sock) is not None


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def sample(pid: int) -> tuple[float, float] | None:
    """(VmRSS in KiB, open descriptors) of a process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return None if rss is None else (float(rss), float(fds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rekey", type=int, default=5, help="child rekey_time (s)")
    ap.add_argument("--ike-rekey", type=int, default=7, help="IKE rekey_time (s)")
    ap.add_argument("--life", type=int, default=0, help="child life_time (s; default twice --rekey)")
    ap.add_argument("--poll", type=float, default=1.0, help="status request interval per side (s)")
    ap.add_argument("--sample", type=float, default=5.0, help="RSS/fd sampling interval (s)")
    ap.add_argument("--warmup", type=float, default=60.0, help="samples before this are not fitted (s)")
    ap.add_argument("--logs", type=Path, default=None, help="copy both tunsec logs here at the end")
    ap.add_argument("--trace", type=Path, default=None,
                    help="run the control processes and workers under tracemalloc (tunsec.memtrace); snapshots "
                         "at the end of the warm-up and of the run go to this directory, and the lines that grew "
                         "most are printed")
    ap.add_argument("--trace-only", choices=("control", "worker"), default=None,
                    help="with --trace: snapshot only these processes (tracing slows a control process enough "
                         "that a short IKE rekey_time can run out)")
    args = ap.parse_args()

    if args.trace:
        args.trace.mkdir(parents=True, exist_ok=True)
        args.trace.chmod(0o1777)   # both processes write there after dropping root (tunsec { user })
    with TwoHosts(ipv6=False) as topo:
        sides = {}
        for name, me, peer, start in (("B", topo.b, topo.a, False), ("A", topo.a, topo.b, True)):
            d = topo.workdir / f"soak-{name}"
            d.mkdir(parents=True, exist_ok=True)
            sock = d / "tunsec.sock"
            (d / "state").mkdir(mode=0o700, exist_ok=True)   # not the host's /var/lib/tunsec
            conf = d / "tunsec.conf"
            conf.write_text(conf_text(me, peer, sock, start, args.rekey, args.ike_rekey,
                                      args.life or 2 * args.rekey))
            conf.chmod(0o600)
            log = d / "tunsec.log"
            tunsec = [str(Path(__file__).with_name("traced_tunsec.py"))] if args.trace else ["-m", "tunsec"]
            env = dict(os.environ, TUNSEC_TRACE_DIR=str(args.trace)) if args.trace else None
            proc = topo.popen(me, [sys.executable, *tunsec, "up", "-c", str(conf)], log=log, env=env)
            if not wait_until(functools.partial(answers, sock), 60):
                print(f"tunsec {name} did not start:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
                return 1
            sides[name] = (proc, sock, log)

        def tunnel_up() -> bool:
            st = ask_status(sides["A"][1])
            doc = st.get("status") if st else None
            return isinstance(doc, dict) and any(sa.get("children") for sa in doc.get("ike_sas", []))

        if not wait_until(tunnel_up, 30):
            print("no Child SA came up", file=sys.stderr)
            return 1
        pids = {}
        for name, (proc, _, _) in sides.items():
            workers = children_of(proc.pid)
            pids[f"{name} control"] = proc.pid
            if workers:
                pids[f"{name} worker"] = workers[0]
        series = {label: Series(label) for label in pids}
        t0 = time.monotonic()
        next_sample = t0
        polls = failed = 0
        snapshots: dict[str, list[Path]] = {}
        while (now := time.monotonic()) - t0 < args.seconds:
            for _, sock, _ in sides.values():
                polls += 1
                failed += ask_status(sock) is None
            due = args.warmup if not snapshots else args.seconds - 3 * args.poll
            if args.trace and len(snapshots) < 2 and now - t0 >= due:
                traced = [pid for label, pid in pids.items() if args.trace_only in (None, label.split()[1])]
                snapshots[f"t{len(snapshots)}"] = take_snapshots(args.trace, traced)
            if now >= next_sample:
                next_sample += args.sample
                for label, pid in pids.items():
                    got = sample(pid)
                    if got is not None:
                        s = series[label]
                        s.t.append(now - t0)
                        s.rss_kib.append(got[0])
                        s.fds.append(got[1])
            time.sleep(max(0.0, args.poll - (time.monotonic() - now)))
        ping_ok = topo.ping(topo.a, topo.b.inner4, count=3, src=topo.a.inner4)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for name, (_, _, log) in sides.items():
                shutil.copy(log, args.logs / f"tunsec-{name}.log")
        final = {name: installed(ask_status(sock)) for name, (_, sock, _) in sides.items()}
        rekeys = {name: log.read_text(errors="replace").count("CHILD_SA net up") for name, (_, _, log) in sides.items()}
        ike_rekeys = {name: log.read_text(errors="replace").count("IKE SA rekeyed") for name, (_, _, log) in
                      sides.items()}

    print(f"soak: {args.seconds:.0f} s, child rekey_time {args.rekey} s, life_time {args.life or 2 * args.rekey} s, "
          f"IKE rekey_time {args.ike_rekey} s, "
          f"status every {args.poll:g} s per side ({polls} requests, {failed} failed), warm-up {args.warmup:.0f} s")
    print(f"child SAs installed: {rekeys}; IKE rekeys: {ike_rekeys}; tunnel at the end: "
          f"{'ping ok' if ping_ok else 'PING FAILED'}")
    for name, (ike_sas, children, sas) in final.items():
        print(f"{name} at the end: {ike_sas} IKE SA(s), {children} Child SA(s), {sas} non-larval SA(s) in the worker")
    print(f"{'process':<12} {'RSS start KiB':>14} {'RSS end KiB':>12} {'KiB/min':>9} {'fds end':>8} {'fds/min':>8}")
    for s in series.values():
        keep = [i for i, t in enumerate(s.t) if t >= args.warmup] or list(range(len(s.t)))
        t = [s.t[i] for i in keep]
        rss = slope_per_minute(t, [s.rss_kib[i] for i in keep])
        fds = slope_per_minute(t, [s.fds[i] for i in keep])
        first = s.rss_kib[keep[0]] if keep else 0
        print(f"{s.name:<12} {first:>14.0f} {s.rss_kib[-1] if s.rss_kib else 0:>12.0f} {rss:>9.1f} "
              f"{s.fds[-1] if s.fds else 0:>8.0f} {fds:>8.2f}")
    print_timeline(series, args.seconds)
    if len(snapshots) == 2:
        for before, after in zip(snapshots["t0"], snapshots["t1"], strict=True):
            pid = int(after.name.split('-')[0])
            label = next((k for k, v in pids.items() if v == pid), str(pid))
            print(f"\ntracemalloc growth of {label} ({pid}) from the end of the warm-up to the end:")
            stats = tracemalloc.Snapshot.load(str(after)).compare_to(tracemalloc.Snapshot.load(str(before)), "lineno")
            for stat in stats[:15]:
                print(f"  {stat}")
            print_sidecars(before, after)
            by_tb = tracemalloc.Snapshot.load(str(after)).compare_to(tracemalloc.Snapshot.load(str(before)),
                                                                      "traceback")
            for grew in by_tb[:8]:
                print(f"  grew {grew.size_diff / 1024:+.1f} KiB ({grew.count_diff:+d} blocks), allocated at:")
                for line in grew.traceback.format(most_recent_first=True)[:2 * 25]:
                    print(f"    {line}")
    return 0


def print_timeline(series: dict[str, Series], seconds: float) -> None:
    """RSS of each process at ten points of the run: a slope that levels off shows here."""
    marks = [seconds * i / 10 for i in range(11)]
    print("RSS (KiB) at " + ", ".join(f"{m:.0f}" for m in marks) + " s:")
    for s in series.values():
        if not s.t:
            continue
        at = [s.rss_kib[min(range(len(s.t)), key=lambda i, m=m: abs(s.t[i] - m))] for m in marks]
        print(f"  {s.name:<12} " + " ".join(f"{v:.0f}" for v in at))


def print_sidecars(before: Path, after: Path) -> None:
    """Traced memory against RSS, and the object types that grew, between two snapshots."""
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (before, after))
    print(f"  traced {a['traced'] / 1024:.0f} -> {b['traced'] / 1024:.0f} KiB, "
          f"RSS {a['rss_kib']} -> {b['rss_kib']} KiB, gc objects {a['objects']} -> {b['objects']}")
    if "tracemalloc_self" in b:
        print(f"  tracemalloc's own memory {a['tracemalloc_self'] / 1024:.0f} -> {b['tracemalloc_self'] / 1024:.0f} "
              "KiB (in the RSS and malloc figures, not in the process's)")
    ma, mb = a.get("malloc", {}), b.get("malloc", {})
    if ma and mb:   # glibc: in use (uordblks + mmapped), free inside the heap (fordblks), heap size (arena)
        print("  malloc " + ", ".join(f"{k} {ma[k] / 1024:.0f} -> {mb[k] / 1024:.0f} KiB"
                                      for k in ("uordblks", "fordblks", "arena", "hblkhd")))
    fa, fb = a.get("free_lists", {}), b.get("free_lists", {})
    if fb:   # freed objects CPython keeps for reuse: memory no object holds (tunsec.memtrace.free_lists)
        print("  CPython free lists that grew: " + (", ".join(f"{k} {fa.get(k, 0)} -> {n}" for k, n in fb.items()
                                                              if n > fa.get(k, 0)) or "none"))
    grown = sorted(((n - a["types"].get(k, 0), k) for k, n in b["types"].items()), reverse=True)[:10]
    print("  object types that grew most: " + ", ".join(f"{k} +{d}" for d, k in grown if d > 0))


def take_snapshots(directory: Path, pids: list[int]) -> list[Path]:
    """SIGUSR2 each traced control process and wait for its snapshot file."""
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.glob("*.snap"))
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: len(set(directory.glob("*.snap")) - before) >= len(pids), 120)
    new = sorted(set(directory.glob("*.snap")) - before)   # renamed into place once complete
    return sorted(new, key=lambda p: pids.index(int(p.name.split("-")[0])))


if __name__ == "__main__":
    sys.exit(main())
