"""The metrics' per-SA and per-policy families as they were made before tunsec.exposition (h/metricsfast):
prometheus_client's family objects, a Sample per series, encoded by its own generate_latest.  The
reference the direct encoder is held to (tests/test_metrics_text.py) and measured against
(bench/status_build.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tunsec import metrics, metrics_names
from tunsec.exposition import Written
from tunsec.status import SA_FIELDS

_SA_LABELS = ["connection", "child", "direction", "spi", "remote"]


def _sa_owners(doc: dict[str, Any]) -> dict[tuple[str, str, str | None], tuple[str, str]]:
    owners: dict[tuple[str, str, str | None], tuple[str, str]] = {}
    for ike in doc.get("ike_sas", []):
        for c in ike["children"]:
            owners[(c["spi_in"], "in", None)] = (ike["name"], c["name"])
            owners[(c["spi_out"], "out", c.get("remote"))] = (ike["name"], c["name"])
    for t in doc.get("tunnels", []):
        for sa in t["sas"]:
            owners[(sa["spi"], sa["direction"], sa["remote"] if sa["direction"] == "out" else None)] = \
                (t["name"], t["name"])
    return owners


def sa_families(doc: dict[str, Any]) -> Iterator[Metric]:
    """Per Child SA (each direction is an SA of its own in the worker): its counters and age."""
    counters = {name: CounterMetricFamily(f"tunsec_child_sa_{name}", help_text, labels=_SA_LABELS)
                for name, help_text in metrics.SA_COUNTER_HELP.items()}
    drops = CounterMetricFamily("tunsec_child_sa_drops", "Inbound packets the SA dropped, by reason",
                                labels=[*_SA_LABELS, "reason"])
    age = GaugeMetricFamily("tunsec_child_sa_age_seconds", "Seconds since the SA was installed", labels=_SA_LABELS)
    owners = _sa_owners(doc)
    for sa in doc.get("sas", []):
        remote = sa["remote"] if sa["direction"] == "out" else None
        conn, child = owners.get((sa["spi"], sa["direction"], remote), ("", ""))
        labels = [conn, child, sa["direction"], sa["spi"], sa.get("remote") or ""]
        age.add_metric(labels, sa["age_seconds"])
        for name, count in sa.items():
            if name in SA_FIELDS:
                continue
            if name.endswith("_drops"):
                if sa["direction"] == "in":
                    drops.add_metric([*labels, name.removesuffix("_drops")], count)
                continue
            if name not in counters:
                counters[name] = CounterMetricFamily(
                    f"tunsec_child_sa_{name}", f"The fast path's per-SA counter {name} (enum ts_sa_counter)",
                    labels=_SA_LABELS)
            counters[name].add_metric(labels, count)
    yield from counters.values()
    yield from (drops, age)


def policy_family(doc: dict[str, Any]) -> Metric:
    policies = CounterMetricFamily("tunsec_policy_packets", "Packets that matched a policy",
                                   labels=["policy", "action"])
    for p in doc.get("policies", []):
        policies.add_metric([str(p["id"]), p["action"]], p["packets"])
    return policies


class Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def as_before(doc: dict[str, Any], parts: list[Metric | Written]) -> list[Metric]:
    """parts (MetricsServer.families) with each Written family replaced by the object it was made
    as before, in its place."""
    old = {f.name: f for f in [*sa_families(doc), policy_family(doc)]}
    out: list[Metric] = []
    for part in parts:
        out.append(old.pop(part.name) if isinstance(part, Written) else part)
    assert not old or (not doc.get("policies") and set(old) == {"tunsec_policy_packets"}), sorted(old)
    return out


def families(server: metrics.MetricsServer, doc: dict[str, Any], worker_up: bool) -> list[Metric]:
    """A scrape's families as they were made before (MetricsServer.families then)."""
    return [
        *metrics.state_families(doc, worker_up, policy_family(doc)),
        *sa_families(doc),
        *metrics.ike_families(doc),
        *metrics.event_families(server.source.events(), server.source.worker_restarts()),
        *metrics.queue_cpu(server.source.worker_pid()),
        CounterMetricFamily("tunsec_metrics_connections_refused", "Connections to this endpoint closed "
                            "unanswered: every slot, or the share of their source address, was taken",
                            value=server.refused),
        CounterMetricFamily("tunsec_metrics_connections_evicted", "Connections to this endpoint closed "
                            "before their request came, for a newer one: every slot was taken (the oldest "
                            "waiting of the source holding the most)", value=server.evicted),
        metrics_names.WorkerNames().family(),
    ]
