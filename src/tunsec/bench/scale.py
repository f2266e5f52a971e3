"""The scale benchmark: N strongSwan road warriors against a tunsec gateway and a strongSwan gateway.

``python3 bench/scale.py --clients 1000`` -> :func:`main`. For each gateway, in a fresh
:class:`~tunsec.bench.netns.TwoHosts` (A: the gateway, B: the clients):

- the gateway serves one connection ``rw`` with a pool (``remote_ts = dynamic``,
  ``remote.id = %any``, one wildcard PSK), the same swanctl.conf text for both;
- one charon in B (kernel-libipsec) holds N connections ``rw1..rwN`` with the identities
  ``rwK@example.org``, each asking for a virtual IP (``vips = 0.0.0.0``); all start at
  once when they are loaded (``start_action = start``): a burst of N IKE_SA_INITs from one
  address;
- measured from the load: the time until all N IKE SAs are established (charon's
  ``swanctl --stats``, cheap to poll), and the time until every client's virtual IP has
  answered a ping to the gateway's inner address with that virtual IP as its source
  (:func:`~tunsec.bench.ping.ping_from`: one raw socket, IP_PKTINFO picks the source, retried until answered);
- the gateway's RSS (its process and its descendants: tunsec's control process and worker,
  charon) before the load and after the pings, and its time on a CPU in between (each thread's
  schedstat, ns: tunsec.bench.procs.thread_times; 10 ms ticks until 2026-12-05); and the
  RSS once more SETTLE_SECONDS later, what the gateway keeps once calm (tunsec gives the burst's
  free heap back when it has been idle for 2 s: tunsec.memtrim).

The DoS protection of both gateways is set explicitly so that the burst from one address
is neither answered with COOKIEs nor dropped (:func:`~tunsec.bench.scale_conf.dos_settings`): this measures setup,
not the cookie round trip. strongSwan's gateway and client get a hashed IKE SA table of
sensible size (``ikesa_table_size``; its default is a single list), as strongSwan's docs
advise for many SAs. Fair to both: strongSwan's per-address COOKIE threshold is raised too (real
road warriors come from many addresses), the clients' charon does not reuse IKE SAs (each
connection is its own road warrior), and the namespaces have no IPv6 (:func:`no_ipv6`). The
burst is also timed by the clients' charon's log
(:func:`~tunsec.bench.scale_clients.burst_seconds`), without the swanctl calls and the polling
around it.  The same log tells whether a run measured the gateway or the clients
(:class:`~tunsec.bench.scale_clients.ClientTimes`): the clients' own pace (first to last
IKE_SA_INIT; a gateway that keeps up is done a few ms after it) and each client's IKE_SA_INIT to IKE SA up (milliseconds
when the gateway keeps up, its queue when it does not).  And the gateway's main process's share
of the set-up on a CPU and waiting for one (:func:`~tunsec.bench.procs.sched_seconds`): the rest
it slept, i.e. waited on a socket, a timer or the worker.

This module runs it (:func:`run_one`, :func:`main`); its parts, which the tests and other
benchmarks reuse: scale_conf.py (swanctl.conf and strongswan.conf texts), scale_gateways.py
(:class:`~tunsec.bench.scale_gateways.TunsecGateway`, ``CharonGateway``), scale_clients.py
(:class:`~tunsec.bench.scale_clients.RoadWarriors` and their charon's log), ping.py, procs.py
(``SchedSampler``), scale_report.py (``ScaleResult``, the tables).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tunsec.bench import timeline
from tunsec.bench.harness import rcvbuf_errors
from tunsec.bench.netns import TwoHosts
from tunsec.bench.ping import ping_from
from tunsec.bench.procs import (
    SchedSampler,
    cpu_between,
    rss_bytes,
    thread_times,
    tree_rss_bytes,
)
from tunsec.bench.scale_clients import RoadWarriors, burst_seconds, client_times, retransmissions_by_message
from tunsec.bench.scale_conf import POOL4
from tunsec.bench.scale_gateways import CharonGateway, Gateway, TunsecGateway
from tunsec.bench.scale_report import SETTLE_SECONDS, ScaleResult, format_marginal, format_table, gateway_drops
from tunsec.bench.systems.base import Unavailable, missing_commands
from tunsec.bench.systems.strongswan import CHARON, LIBIPSEC_PLUGIN
from tunsec.bench.systems.tunsec import tunsec_importable

LOOP_THREAD = "tunsec-q"         # the worker's C packet loops name their threads tunsec-q<N> (csrc/loop.c)


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


def no_ipv6(topo: TwoHosts) -> None:
    """No IPv6 in the namespaces (the benchmark is IPv4 only), before any daemon starts: otherwise the
    veths' link-local addresses finish duplicate address detection a second or two after the link came
    up, often during the burst, and each charon takes the address change for a roam and sends a MOBIKE
    address update to every IKE SA it holds (100 extra exchanges in half the runs at N = 100)."""
    for host in topo.hosts:
        topo.run(host, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"])


def run_clients(topo: TwoHosts, gateway: Gateway, clients: RoadWarriors, timeout: float) -> ScaleResult:
    """Start ``gateway`` and the client charon, load the clients, measure until all pinged."""
    res = ScaleResult(gateway.name, clients.clients)
    no_ipv6(topo)
    gateway.start()
    clients.start()
    time.sleep(1.0)                         # let both settle before the "before" sample
    res.rss_before = tree_rss_bytes(gateway.pids())
    res.rss_main_before = sum(rss_bytes(p) for p in gateway.pids())
    cpu0, ccpu0 = thread_times(gateway.pids()), thread_times(clients.pids())
    sampler = SchedSampler(gateway.pids())
    sampler.start()
    drops0 = rcvbuf_errors(topo)   # a retransmission after a drop here is the kernel's, not the gateway's answer
    t0 = time.monotonic()
    clients.load()
    if (done := clients.wait_established(timeout)) is not None:
        res.t_established = done - t0
    sampler.stop()
    vips = clients.wait_vips(max(5.0, timeout - (time.monotonic() - t0)))
    res.established = clients.established()
    res.distinct_vips = len(set(vips.values()))
    lines = clients.log_lines()
    res.t_burst = burst_seconds(lines, clients.clients)
    times = client_times(lines)
    res.t_pace = times.pace()
    by_message = retransmissions_by_message(lines)
    res.retransmits = sum(by_message.values())
    res.retransmits_init, res.retransmits_auth = by_message.get(0, 0), by_message.get(1, 0)
    if setups := times.setup_seconds():
        res.setup_median, res.setup_max = statistics.median(setups), setups[-1]
    if res.t_burst is not None:
        shares = sampler.shares(times.wall(0.0), times.wall(res.t_burst))
        if shares is not None:
            res.main_run, res.main_wait = shares
    answered = ping_from(topo.b, sorted(vips.values()), topo.a.inner4,
                         max(5.0, timeout - (time.monotonic() - t0)))
    res.pinged = len(answered)
    drops = rcvbuf_errors(topo)
    res.rcvbuf_gateway = drops[topo.a.ns] - drops0[topo.a.ns]
    res.rcvbuf_clients = drops[topo.b.ns] - drops0[topo.b.ns]
    if res.pinged == clients.clients:
        res.t_pinged = time.monotonic() - t0
    # on a CPU by schedstat (ns), not by 10 ms ticks: 0.1 s of CPU over 100 clients was 10 ticks
    cpu1, ccpu1 = thread_times(gateway.pids()), thread_times(clients.pids())
    res.cpu_gateway = cpu_between(cpu0, cpu1)
    res.cpu_main = cpu_between(cpu0, cpu1, pids=gateway.pids())
    res.cpu_loops = cpu_between(cpu0, cpu1, prefix=LOOP_THREAD)
    res.cpu_clients = cpu_between(ccpu0, ccpu1)
    res.rss_after = tree_rss_bytes(gateway.pids())
    res.rss_main_after = sum(rss_bytes(p) for p in gateway.pids())
    # nothing asked of either gateway meanwhile (tunsec's status below would be a request strongSwan never gets)
    time.sleep(SETTLE_SECONDS)
    res.rss_settled = tree_rss_bytes(gateway.pids())
    res.rss_main_settled = sum(rss_bytes(p) for p in gateway.pids())
    if isinstance(gateway, TunsecGateway):
        _install_holds(gateway, res)
    if res.pinged < clients.clients:
        res.reason = (f"{res.established} established, {len(vips)} with a virtual IP, {res.pinged} pinged\n"
                      f"gateway:\n{gateway.diagnostics()}\nclients:\n{clients.diagnostics()}")
    return res


def _install_holds(gateway: TunsecGateway, res: ScaleResult) -> None:
    """How long the clients' IKE answers waited for their Child SA installs, and what the gateway
    dropped over the burst (tunsec status: its counters start with it, and nothing came before the load)."""
    try:
        doc = gateway.status()
    except (Unavailable, ValueError):
        return
    held = doc.get("ike_held", {})
    res.install_holds = int(held.get("install_holds", 0))
    res.spi_waits = int(held.get("spi_waits", 0))
    res.held_max_half_open = int(held.get("waiting_max_half_open", 0))
    res.held_dropped = int(held.get("held_dropped", 0))
    if res.install_holds:
        res.install_hold_mean = float(held.get("install_hold_seconds", 0.0)) / res.install_holds
        res.install_hold_max = float(held.get("install_hold_max", 0.0))
    res.gateway_drops = gateway_drops(doc)


def run_one(kind: str, n: int, timeout: float, keep_workdir: bool = False,
            timeline: Path | None = None, own_sessions: bool = True, ns_prefix: str = "sc",
            client_addresses: int = 1) -> ScaleResult:
    """One gateway against N clients.

    ``own_sessions``: the gateway and the clients' charon each lead a session of their own, as
    daemons an init system starts do. With the kernel's autogroup scheduling (on by default on
    desktop and many server kernels, /proc/sys/kernel/sched_autogroup_enabled) CPU time is shared
    between sessions first and between threads within one only then; in one shared session
    (``False``, the benchmark before 2026-12-03) a single-threaded gateway got one thread's share
    against the clients' charon's many busy threads, and a gateway with as many threads as the
    clients half the CPU: the run measured how the gateway's threads compete with its clients'
    on one host, which separate machines never do.

    ``client_addresses``: the clients spread over this many source addresses (1: all behind one NAT)."""
    with TwoHosts(ipv6=False, prefix=ns_prefix, keep_workdir=keep_workdir) as topo:
        psk = secrets.token_hex(16)
        gateway: Gateway = (TunsecGateway(topo, psk, n, timeline=timeline, own_session=own_sessions)
                            if kind == "tunsec" else CharonGateway(topo, psk, n, own_session=own_sessions))
        try:
            clients = RoadWarriors(topo, psk, n, own_session=own_sessions, addresses=client_addresses)
            res = run_clients(topo, gateway, clients, timeout)
            res.client_addresses = client_addresses
            return res
        except Unavailable as exc:
            return ScaleResult(kind, n, reason=str(exc))


def precheck() -> str | None:
    missing = missing_commands(CHARON, "swanctl", "unshare") or tunsec_importable()
    if missing:
        return missing
    if not Path(LIBIPSEC_PLUGIN).is_file():
        return "kernel-libipsec plugin missing (apt install libcharon-extra-plugins)"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    return None


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)     # so the namespaces are torn down


def main(argv: Sequence[str] | None = None, prog: str = "bench/scale.py") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, nargs="+", default=[100], help="N (several: one table each)")
    ap.add_argument("--gateways", nargs="+", default=["tunsec", "strongswan"], choices=["tunsec", "strongswan"])
    ap.add_argument("--timeout", type=float, default=0.0, help="seconds per run (default: 30 + N / 10)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs and logs (printed)")
    ap.add_argument("--timeline", type=Path, metavar="FILE",
                    help="record the tunsec gateway's per-client timeline in FILE.N and print its summary "
                         "(tunsec.bench.timeline; costs the control process some CPU)")
    ap.add_argument("--shared-session", action="store_true",
                    help="run the gateway and the clients in this command's session, as before 2026-12-03 "
                         "(see run_one: with autogroup scheduling they then compete thread by thread)")
    ap.add_argument("--ns-prefix", default="sc", metavar="NAME",
                    help="the network namespaces' names begin NAME- (default sc): runs side by side, or one "
                         "that must not touch another's namespaces, each give their own")
    ap.add_argument("--client-addresses", type=int, default=1, metavar="K",
                    help="the clients' source addresses (default 1: N road warriors behind one NAT, the "
                         "gateways' per-address limits raised for it); K spreads them, client k from the k mod K-th")
    args = ap.parse_args(argv)
    if not 1 <= args.client_addresses <= 100:
        ap.error(f"--client-addresses {args.client_addresses}: 1 to 100")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", args.ns_prefix):
        ap.error(f"--ns-prefix {args.ns_prefix!r}: 1 to 8 lower-case letters and digits, a letter first")
    reason = precheck()
    if reason:
        print(f"scale benchmark cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    everything: list[dict[str, Any]] = []
    runs: list[ScaleResult] = []
    for n in args.clients:
        if not 1 <= n <= ipaddress.ip_network(POOL4).num_addresses - 2:
            ap.error(f"--clients {n}: 1 to {ipaddress.ip_network(POOL4).num_addresses - 2}")
        results = []
        for kind in args.gateways:
            print(f"{kind}: {n} clients ...", file=sys.stderr, flush=True)
            trace = args.timeline.with_name(f"{args.timeline.name}.{n}") if args.timeline and kind == "tunsec" \
                else None
            results.append(run_one(kind, n, args.timeout or 30 + n / 10, args.keep_workdir, trace,
                                   own_sessions=not args.shared_session, ns_prefix=args.ns_prefix,
                                   client_addresses=args.client_addresses))
            if trace is not None and trace.is_file():
                print(timeline.summarize(timeline.load(trace)), flush=True)
        print(format_table(results), flush=True)
        print()
        runs += results
        everything += [{**dataclasses.asdict(r), "ike_sas_per_s": r.ike_sas_per_s,
                        "kib_per_client": r.kib_per_client, "kib_per_client_settled": r.kib_per_client_settled,
                        "cpu_worker": r.cpu_worker} for r in results]
    if marginal := format_marginal(runs):
        print(marginal, flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2) + "\n")
    return 0 if all(not r["reason"] for r in everything) else 1
