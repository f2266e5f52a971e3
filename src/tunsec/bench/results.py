"""Result records of a benchmark run (serialised to JSON as they are)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

GB = 1e9


@dataclass(frozen=True)
class Stat:
    """Median, min and max of the successful runs."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        vals = [v for v in values if v is not None]
        if not vals:
            return None
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))


@dataclass
class RunSample:
    """One iperf3 run with the counters sampled around it."""

    bits_per_second: float = 0.0
    bytes: int = 0
    seconds: float = 0.0
    retransmits: int | None = None
    packets_per_second: float | None = None
    lost_packets: int | None = None
    cpu_system_s: float = 0.0
    cpu_tunnel_s: float | None = None
    rcvbuf_drops: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.bytes > 0

    def per_gb(self, cpu_seconds: float | None) -> float | None:
        if cpu_seconds is None or not self.ok:
            return None
        return cpu_seconds / (self.bytes / GB)


@dataclass
class TestSummary:
    """All runs of one test on one system, and their statistics."""

    key: str
    label: str
    runs: list[RunSample] = field(default_factory=list)
    gbps: Stat | None = None
    pps: Stat | None = None
    cpu_system_s_per_gb: Stat | None = None
    cpu_tunnel_s_per_gb: Stat | None = None
    retransmits: Stat | None = None
    rcvbuf_drops: Stat | None = None

    def summarise(self) -> None:
        ok = [r for r in self.runs if r.ok]
        self.gbps = Stat.of([r.bits_per_second / 1e9 for r in ok])
        self.pps = Stat.of([r.packets_per_second for r in ok])
        self.cpu_system_s_per_gb = Stat.of([r.per_gb(r.cpu_system_s) for r in ok])
        self.cpu_tunnel_s_per_gb = Stat.of([r.per_gb(r.cpu_tunnel_s) for r in ok])
        self.retransmits = Stat.of([float(r.retransmits) if r.retransmits is not None else None for r in ok])
        self.rcvbuf_drops = Stat.of([float(sum(r.rcvbuf_drops.values())) for r in ok])

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.runs if r.error]


@dataclass
class SystemResult:
    """One row of the table: a system's tests, or why it did not run."""

    name: str
    description: str
    reason: str | None = None
    setup_seconds: float | None = None
    tests: dict[str, TestSummary] = field(default_factory=dict)
    diagnostics: dict[str, str] = field(default_factory=dict)

    def median(self, key: str, metric: str = "gbps") -> float | None:
        test = self.tests.get(key)
        stat = getattr(test, metric) if test is not None else None
        return stat.median if isinstance(stat, Stat) else None
