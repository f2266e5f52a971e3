"""The table, the raw JSON and the bar chart of a benchmark run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tunsec.bench.iperf import IperfTest
from tunsec.bench.results import Stat, SystemResult

REFERENCE = "tunsec"


def _range(stat: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    if stat is None:
        return "-"
    m, lo, hi = (v * scale for v in (stat.median, stat.min, stat.max))
    return f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def _num(stat: Stat | None, digits: int = 0) -> str:
    return "-" if stat is None else f"{stat.median:.{digits}f}"


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or ref is None or ref <= 0:
        return "n/a"
    return f"{value / ref:.2f}"


def _row(res: SystemResult, ref: SystemResult | None, tests: Sequence[IperfTest]) -> list[str]:
    t = res.tests
    tcp = [k.key for k in tests if not k.udp]
    udp = [k.key for k in tests if k.udp]
    cells = [res.name]
    cells += [_range(t[k].gbps) if k in t else "-" for k in tcp]
    cells += [_range(t[k].pps, 1e-3, 1) if k in t else "-" for k in udp]
    first = t.get(tcp[0]) if tcp else None
    cells.append(
        "-" if first is None else f"{_num(first.cpu_system_s_per_gb, 1)} | {_num(first.cpu_tunnel_s_per_gb, 1)}"
    )
    cells.append(" | ".join(_num(t[k].retransmits) if k in t else "-" for k in tcp))
    cells.append(" | ".join(_num(t[k].rcvbuf_drops) if k in t else "-" for k in (*tcp, *udp)))
    cells.append(" | ".join(_ratio(res.median(k), ref.median(k) if ref else None) for k in tcp))
    return cells


def _headers(tests: Sequence[IperfTest]) -> list[str]:
    tcp = [t.label for t in tests if not t.udp]
    udp = [t.label for t in tests if t.udp]
    first = tcp[0] if tcp else ""
    return [
        "system",
        *(f"{x} Gbit/s" for x in tcp),
        *(f"{x} kpkt/s" for x in udp),
        f"CPU s/GB {first} sys | tun",
        "retrans " + " | ".join(tcp),
        "rcvbuf drops " + " | ".join([*tcp, *udp]),
        "vs tunsec " + " | ".join(tcp),
    ]


def format_table(results: Sequence[SystemResult], tests: Sequence[IperfTest]) -> str:
    ref = next((r for r in results if r.name == REFERENCE and not r.reason), None)
    header = _headers(tests)
    rows = [_row(r, ref, tests) for r in results if not r.reason]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.reason:
            first = r.reason.strip().splitlines()[0] if r.reason.strip() else "?"
            lines.append(f"{r.name.ljust(widths[0])}  not run: {first[:160]}")
    lines += _footer(results, ref, tests)
    return "\n".join(lines)


def _footer(results: Sequence[SystemResult], ref: SystemResult | None, tests: Sequence[IperfTest]) -> list[str]:
    notes = [
        "",
        "Gbit/s and kpkt/s: median [min-max] of the runs (iperf3 receiver side).",
        "CPU s/GB: sys = host-wide busy CPU (/proc/stat, all CPUs, incl. iperf3 and "
        "kernel); tun = tunnel processes (/proc/<pid>/stat).",
        "retrans and rcvbuf drops (UdpRcvbufErrors, both namespaces): median per run.",
    ]
    if ref is None:
        notes.append("vs tunsec: n/a -- tunsec did not run.")
        return notes
    notes.append("vs tunsec: system median / tunsec median.")
    for r in results:
        if r is ref or r.reason:
            continue
        parts = [f"{t.label} {_ratio(ref.median(t.key), r.median(t.key))}x" for t in tests if not t.udp]
        notes.append(f"tunsec / {r.name}: " + ", ".join(parts))
    return notes


def print_table(results: Sequence[SystemResult], tests: Sequence[IperfTest]) -> None:
    print(format_table(results, tests))


def write_json(path: Path, results: Sequence[SystemResult], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "systems": [asdict(r) for r in results]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def write_chart(path: Path, results: Sequence[SystemResult]) -> str:
    """Draw the bar chart; returns a message (where it went, or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_tcp, ax_udp) = plt.subplots(1, 2, figsize=(12, 5))
    _bars(ax_tcp, results, [("tcp1", "TCP x1"), ("tcp4", "TCP x4")], "gbps", 1.0)
    ax_tcp.set_ylabel("Gbit/s (median, bars: min-max)")
    ax_tcp.set_title("iperf3 TCP throughput")
    _bars(ax_udp, results, [("udp64", "UDP 64 B")], "pps", 1e-3)
    ax_udp.set_ylabel("kpackets/s received")
    ax_udp.set_title("iperf3 UDP 64-byte packet rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def _bars(ax: Any, results: Sequence[SystemResult], series: list[tuple[str, str]], metric: str, scale: float) -> None:
    names = [r.name for r in results]
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        xs: list[float] = []
        meds: list[float] = []
        errs: tuple[list[float], list[float]] = ([], [])
        for x, r in enumerate(results):
            test = r.tests.get(key)
            stat = getattr(test, metric) if test is not None else None
            if not isinstance(stat, Stat):
                continue
            xs.append(x + (i - (len(series) - 1) / 2) * width)
            meds.append(stat.median * scale)
            errs[0].append((stat.median - stat.min) * scale)
            errs[1].append((stat.max - stat.median) * scale)
        bars = ax.bar(xs, meds, width, yerr=errs, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.2f" if scale == 1.0 else "%.0f", fontsize=7)
    for x, r in enumerate(results):
        if r.reason:
            ax.text(
                x,
                0.03,
                "not run",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90,
                transform=ax.get_xaxis_transform(),
            )
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_yscale("log")
    ax.legend()
