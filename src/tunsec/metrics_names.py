"""Which names of the worker's choosing a scrape exports (review revmetrics F2).

A DUMP names the worker's gauges and per-SA counters itself (names only checked against
``[a-z][a-z0-9_]{0,31}``, tunsec.dataplane.pipe.values), and the scrape exports them as
``tunsec_worker_<name>`` and ``tunsec_child_sa_<name>``, listed in tunsec.metrics or not, so that a
counter the fast path gains shows without a change there.  A worker that lies (one taken over by a
packet it parsed: tunsec.worker_distrust) could name one as one of the scrape's own families
(``up``, ``restarts``, ``drops``, ``process_open_fds``): OpenMetrics, what Prometheus asks for,
allows a name once, and the whole body would fail to parse, every series of the gateway lost.  So a
name of the worker's is exported only when neither its family's name nor any of its samples' is one
the scrape writes already, and at most :data:`MAX_NAMES` of each kind per scrape; the others are
counted in ``tunsec_metrics_worker_names_skipped`` (a name of the control process's own, which no
worker name can take) and still shown by ``tunsec status``.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from tunsec.dataplane.pipe.protocol import MAX_SA_COUNTERS
from tunsec.exposition import Written

__all__ = ["MAX_NAMES", "WorkerNames", "names_of", "taken_by"]

# The names a family of a type takes in OpenMetrics besides its own (prometheus_client's parser:
# a family's name and these must not be another family's)
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "histogram": ("_count", "_sum", "_bucket", "_created"),
    "gaugehistogram": ("_gcount", "_gsum", "_bucket"),
    "info": ("_info",),
}
# Gauges and per-SA counter names a scrape exports at most, of each kind: the pipe's bound on one DUMP
# datagram's per-SA counters (the fast path has 5 of those and 7 gauges)
MAX_NAMES = MAX_SA_COUNTERS
# tunsec_worker_process_*: the worker's ProcessCollector (namespace tunsec_worker), in every body's tail
_GAUGE_PREFIXES_RESERVED = ("process_",)


def taken_by(name: str, kind: str) -> list[str]:
    """The names a family takes: its own and its samples' (a counter's ``_total``, ``_created``)."""
    return [name, *[name + suffix for suffix in _SUFFIXES.get(kind, ())]]


def names_of(families: Iterable[Metric | Written]) -> frozenset[str]:
    """Every name the families take."""
    return frozenset(n for f in families for n in taken_by(f.name, f.type))


@dataclass
class WorkerNames:
    """One scrape's names: those it writes itself, those the worker's names took, and how many of
    the worker's it skipped (by kind).  ``reserved``: the names of the scrape's own families
    (names_of them; MetricsServer makes them once, from a document without the worker's names)."""

    reserved: frozenset[str] = frozenset()
    taken: set[str] = field(init=False)
    exported: dict[str, int] = field(default_factory=lambda: {"gauge": 0, "sa_counter": 0})
    skipped: dict[str, int] = field(default_factory=lambda: {"gauge": 0, "sa_counter": 0})
    _sa_counters: dict[str, bool] = field(default_factory=dict, repr=False)   # name: exported

    def __post_init__(self) -> None:
        self.taken = set(self.reserved)

    def gauge(self, name: str) -> str | None:
        """The family name of the worker's gauge ``name`` (tunsec_worker_<name>), None if skipped."""
        family = f"tunsec_worker_{name}"
        reserved = name.startswith(_GAUGE_PREFIXES_RESERVED)
        return family if self._take("gauge", taken_by(family, "gauge"), reserved) else None

    def sa_counter(self, name: str, listed: Container[str]) -> bool:
        """Whether the per-SA counter ``name`` is exported: as a sample of a family of the scrape's own
        (one listed, a reason of tunsec_child_sa_drops) or as tunsec_child_sa_<name>.  Decided at its
        first SA, kept for the scrape's others (a dict look-up per SA and counter)."""
        if (ok := self._sa_counters.get(name)) is None:
            own = name in listed or name.endswith("_drops")
            names = [] if own else taken_by(f"tunsec_child_sa_{name}", "counter")
            ok = self._sa_counters[name] = self._take("sa_counter", names)
        return ok

    def _take(self, kind: str, names: list[str], reserved: bool = False) -> bool:
        if reserved or self.exported[kind] >= MAX_NAMES or not self.taken.isdisjoint(names):
            self.skipped[kind] += 1
            return False
        self.exported[kind] += 1
        self.taken.update(names)
        return True

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "tunsec_metrics_worker_names_skipped", "Names of the worker's gauges (kind=gauge) or per-SA "
            f"counters (sa_counter) this scrape did not export: one the scrape writes itself, or past {MAX_NAMES} "
            "of their kind (a worker that misbehaves; tunsec status shows them)", labels=["kind"])
        for kind, n in sorted(self.skipped.items()):
            family.add_metric([kind], n)
        return family
