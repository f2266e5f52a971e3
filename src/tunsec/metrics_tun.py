"""The metrics of the TUN's routes (metrics.py's state families): the tunnels' networks the kernel refused to
route, and the routes and rules the kernel or someone else removed, put back or lost (dataplane/routekeep.py).
Imported by metrics.py only, so only where ``metrics_listen`` is set."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric


def tun_families(doc: dict[str, Any]) -> Iterator[Metric]:
    """From the status document's "tun" part."""
    tun = doc.get("tun", {})
    unrouted = GaugeMetricFamily("tunsec_tun_unrouted_networks", "Tunnels' networks the kernel refused to route "
                                 "through the TUN at a reload; blocked=1: a prohibit route refuses their traffic, "
                                 "0: the kernel refused that too", labels=["blocked"])
    held = collections.Counter(bool(u["blocked"]) for u in tun.get("unrouted", ()))
    for blocked in (True, False):
        unrouted.add_metric(["1" if blocked else "0"], held[blocked])
    yield unrouted
    kept = CounterMetricFamily("tunsec_tun_routes_put_back", "TUN routes, and rules that look up tunsec's table "
                               "before the main table, put back after the kernel or someone else removed them",
                               labels=["kind"])
    for kind in ("route", "rule"):
        kept.add_metric([kind], tun.get(f"{kind}s_put_back", 0))
    yield kept
    yield GaugeMetricFamily("tunsec_tun_routes_lost", "TUN routes and rules removed and not put back (yet): their "
                            "tunnels' traffic is held by the kill switch, or follows the host's other routes",
                            value=len(tun.get("routes_lost", ())))
