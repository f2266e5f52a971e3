"""The scale benchmark's result of one run (ScaleResult) and its tables: a run per gateway side by side,
and the memory per additional client between runs of different N."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The settled sample waits this long after the "after" one: past the gateways' idle-time clean-ups
# (tunsec gives its free heap back 2 s after the last request: tunsec.memtrim.QUIET)
SETTLE_SECONDS = 3.0


@dataclass
class ScaleResult:
    gateway: str
    clients: int
    client_addresses: int = 1       # source addresses the clients came from (scale.py --client-addresses)
    established: int = 0            # IKE SAs charon counted established
    pinged: int = 0                 # virtual IPs that answered
    distinct_vips: int = 0
    t_established: float | None = None    # seconds from the load until all IKE SAs were established
    t_pinged: float | None = None         # ... until every virtual IP answered a ping
    t_burst: float | None = None          # first IKE_SA_INIT to all IKE SAs up, by the client charon's log
    t_pace: float | None = None           # first to last IKE_SA_INIT, by the same log (ClientTimes.pace)
    setup_median: float | None = None     # per client, IKE_SA_INIT to IKE SA up (ClientTimes.setup_seconds) ...
    setup_max: float | None = None        # ... and the slowest
    retransmits: int = 0            # requests the clients sent again (their log): answers later than 4 s, or lost
    retransmits_init: int = 0       # ... of them IKE_SA_INITs (message ID 0, port 500) ...
    retransmits_auth: int = 0       # ... and IKE_AUTHs (message ID 1, port 4500: through tunsec's worker)
    rcvbuf_gateway: int = 0         # UDP datagrams the kernel dropped for a full receive buffer (RcvbufErrors)
    rcvbuf_clients: int = 0         # ... in the gateway's and the clients' namespaces, load to last ping
    main_run: float | None = None   # share of t_burst the gateway's main process (threads summed) was on a CPU
    main_wait: float | None = None  # ... runnable but waiting for one (the rest it slept: SchedSampler)
    rss_before: int = 0
    rss_after: int = 0
    rss_main_before: int = 0        # of these, the gateway's main process (tunsec: the control process)
    rss_main_after: int = 0
    rss_settled: int = 0            # RSS again, SETTLE_SECONDS after the "after" sample (what a calm gateway keeps)
    rss_main_settled: int = 0
    cpu_gateway: float = 0.0        # seconds on a CPU of the gateway's processes, load to last ping (schedstat)
    cpu_clients: float = 0.0        # ... of the client charon (is it the bottleneck?)
    cpu_main: float = 0.0           # of cpu_gateway, the main process (tunsec: the control process; charon)
    cpu_loops: float = 0.0          # of cpu_gateway, tunsec's C packet loop threads (tunsec-q<N>, in the worker)
    install_holds: int = 0          # tunsec: IKE SAs whose answers waited for their Child SA installs ...
    install_hold_mean: float | None = None   # ... seconds on average (the pipe round trip as the answer sees it)
    install_hold_max: float | None = None    # ... and at most
    spi_waits: int = 0              # tunsec: IKE_AUTHs that waited for an inbound SPI (ike_held.spi_waits)
    held_max_half_open: int = 0     # tunsec: the most half-open IKE SAs' datagrams that waited at once (of ...
    held_dropped: int = 0           # ... HELD_MAX - HELD_RESERVE), and datagrams dropped for want of room
    # tunsec: what its status counted dropped, refused or unanswered (gateway_drops), the non-zero ones
    gateway_drops: dict[str, int] = field(default_factory=dict)
    reason: str = ""

    @property
    def ike_sas_per_s(self) -> float | None:
        return self.clients / self.t_established if self.t_established else None

    @property
    def cpu_worker(self) -> float:
        """The gateway's other processes (tunsec: the worker, its packet loops too)."""
        return self.cpu_gateway - self.cpu_main

    @property
    def kib_per_client(self) -> float:
        return (self.rss_after - self.rss_before) / 1024 / self.clients

    @property
    def kib_per_client_settled(self) -> float | None:
        """As kib_per_client, from the settled sample (None when it was not taken)."""
        return (self.rss_settled - self.rss_before) / 1024 / self.clients if self.rss_settled else None


# the parts of `tunsec status --json` that count datagrams or requests dropped, refused or left unanswered:
# the worker's (its fast path's and its pipe writer's, "drops"), the engine's ("ike_drops", "ike_refused"),
# the SPI pool's hold queue's, and the worker's answers that came too late
_DROP_PARTS = ("drops", "ike_drops", "ike_refused")
_DROP_SCALARS = (("ike_held", "held_dropped"), ("worker", "late_answers"), ("ike_sends_unanswered", None),
                 ("ike_reserve_refused", None))


def gateway_drops(doc: dict[str, Any]) -> dict[str, int]:
    """The non-zero drop counters of a tunsec status document, by name (a part's name before
    the counter's where two parts share one)."""
    found: dict[str, int] = {}
    for part in _DROP_PARTS:
        for name, n in (doc.get(part) or {}).items():
            if isinstance(n, int) and n:
                found[f"{part}.{name}"] = n
    for part, key in _DROP_SCALARS:
        n = doc.get(part) if key is None else (doc.get(part) or {}).get(key)
        if isinstance(n, int) and n:
            found[part if key is None else f"{part}.{key}"] = n
    return found


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _tunsec_only(r: ScaleResult, value: float) -> float | None:
    return value if r.gateway == "tunsec" else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _pct(share: float | None) -> float | None:
    """A share in percent (threads summed: a multi-threaded process can pass 100)."""
    return None if share is None else 100 * share


def format_table(results: Sequence[ScaleResult]) -> str:
    """Metrics as rows, gateways as columns, and tunsec / strongSwan as the last column."""
    by = {r.gateway: r for r in results}
    t, s = by.get("tunsec"), by.get("strongswan")
    names = [r.gateway for r in results]
    rows: list[tuple[str, list[float | None], int]] = [
        ("clients up (VIP + ping)", [float(r.pinged) for r in results], 0),
        ("clients' source addresses", [float(r.client_addresses) for r in results], 0),
        ("distinct virtual IPs", [float(r.distinct_vips) for r in results], 0),
        ("s until all IKE SAs up", [r.t_established for r in results], 2),
        ("IKE SAs established / s", [r.ike_sas_per_s for r in results], 1),
        ("s until all VIPs pinged", [r.t_pinged for r in results], 2),
        ("s first INIT to all up (client log)", [r.t_burst for r in results], 3),
        ("s first INIT to last INIT (client log)", [r.t_pace for r in results], 3),
        ("ms INIT to up per client, median", [_ms(r.setup_median) for r in results], 0),
        ("ms INIT to up per client, max", [_ms(r.setup_max) for r in results], 0),
        ("client retransmissions (client log)", [float(r.retransmits) for r in results], 0),
        ("  of IKE_SA_INIT (message ID 0)", [float(r.retransmits_init) for r in results], 0),
        ("  of IKE_AUTH (message ID 1)", [float(r.retransmits_auth) for r in results], 0),
        ("UDP receive-buffer drops, gateway namespace", [float(r.rcvbuf_gateway) for r in results], 0),
        ("UDP receive-buffer drops, clients' namespace", [float(r.rcvbuf_clients) for r in results], 0),
        ("gateway RSS before, MiB", [r.rss_before / 2**20 for r in results], 1),
        ("gateway RSS after, MiB", [r.rss_after / 2**20 for r in results], 1),
        ("gateway KiB per client", [r.kib_per_client for r in results], 1),
        ("  of which main process", [(r.rss_main_after - r.rss_main_before) / 1024 / r.clients for r in results], 1),
        (f"gateway KiB per client, settled (RSS {SETTLE_SECONDS:.0f} s after the burst)",
         [r.kib_per_client_settled for r in results], 1),
        ("  of which main process, settled", [(r.rss_main_settled - r.rss_main_before) / 1024 / r.clients
                                              if r.rss_settled else None for r in results], 1),
        ("gateway CPU s (on a CPU, schedstat)", [r.cpu_gateway for r in results], 2),
        ("gateway CPU ms per client", [r.cpu_gateway * 1000 / r.clients for r in results], 2),
        ("  main process (control; charon)", [r.cpu_main * 1000 / r.clients for r in results], 2),
        ("main process on a CPU, % of burst", [_pct(r.main_run) for r in results], 0),
        ("main process waiting for a CPU, %", [_pct(r.main_wait) for r in results], 0),
        ("  worker: Python", [_tunsec_only(r, (r.cpu_worker - r.cpu_loops) * 1000 / r.clients) for r in results], 2),
        ("  worker: packet loops", [_tunsec_only(r, r.cpu_loops * 1000 / r.clients) for r in results], 2),
        ("install hold ms, mean", [_ms(r.install_hold_mean) for r in results], 1),
        ("install hold ms, max", [_ms(r.install_hold_max) for r in results], 1),
        ("IKE_AUTHs that waited for an SPI", [_tunsec_only(r, r.spi_waits) for r in results], 0),
        ("  most half-open SAs' datagrams waiting at once", [_tunsec_only(r, r.held_max_half_open) for r in results],
         0),
        ("  datagrams dropped, no room to wait", [_tunsec_only(r, r.held_dropped) for r in results], 0),
        ("gateway drops (tunsec status, all counters)",
         [_tunsec_only(r, sum(r.gateway_drops.values())) for r in results], 0),
        ("client charon CPU s", [r.cpu_clients for r in results], 2),
    ]
    ti, si = (names.index("tunsec") if t else -1), (names.index("strongswan") if s else -1)
    header = [f"N = {results[0].clients}" if results else "", *names] + (["tunsec / strongSwan"] if t and s else [])
    table = [header]
    for label, values, digits in rows:
        cells = [label, *(_fmt(v, digits) for v in values)]
        if t and s:
            cells.append(_ratio(values[ti], values[si]))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        if r.gateway_drops:
            lines.append(f"\n{r.gateway}'s drops: " + ", ".join(f"{k} {v}" for k, v in r.gateway_drops.items()))
    for r in results:
        if r.reason:
            lines.append(f"\n{r.gateway}: {r.reason}")
    return "\n".join(lines)


def format_marginal(runs: Sequence[ScaleResult]) -> str:
    """Memory an additional client costs, per gateway, between the smallest and largest N run:
    (RSS after at N2 - RSS after at N1) / (N2 - N1). Unlike "KiB per client" (RSS after - RSS
    before, over N) it leaves out what a gateway allocates once when clients start to arrive
    (buffers of the first packets, allocator arenas), which dominates at small N."""
    lines = []
    for name in dict.fromkeys(r.gateway for r in runs):
        mine = sorted((r for r in runs if r.gateway == name and not r.reason), key=lambda r: r.clients)
        if len(mine) >= 2 and mine[-1].clients > mine[0].clients:
            lo, hi = mine[0], mine[-1]
            kib = (hi.rss_after - lo.rss_after) / 1024 / (hi.clients - lo.clients)
            lines.append(f"{name}: {kib:.1f} KiB per additional client (N = {lo.clients} -> {hi.clients})")
    return "\n".join(lines)
