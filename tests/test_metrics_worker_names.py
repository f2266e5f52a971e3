"""The names a worker chooses for its gauges and per-SA counters (tunsec.metrics_names): exported
unless they clash with a name the scrape writes itself or with one of the worker's taken before,
at most MAX_NAMES of each kind, the others counted in tunsec_metrics_worker_names_skipped; the
body always reads as OpenMetrics (review revmetrics F2; the endpoint over HTTP:
tests/test_review_revmetrics_worker_names.py).

Real parts: the DUMP's bytes through the pipe's encoder and decoder, the status document
tunsec.status builds from it, the families MetricsServer makes, prometheus_client's encoders and
parsers."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from typing import Any

import pytest
import status_state
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tunsec import exposition, metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe
from tunsec.metrics_names import MAX_NAMES
from tunsec.status import status_document

LOOPBACK = ListenAddress(ipaddress.ip_address("127.0.0.1"), 0)


def _server() -> metrics.MetricsServer:
    async def dump() -> pipe.Reply:
        raise AssertionError("families() is given its document")

    async def document(reply: pipe.Reply) -> dict[str, Any]:
        raise AssertionError("families() is given its document")

    return metrics.MetricsServer(LOOPBACK, metrics.Source(
        dump=dump, document=document, events=lambda: None, worker_restarts=lambda: 3, worker_pid=lambda: None))


def _document(gauges: tuple[tuple[str, int], ...], counters: tuple[str, ...]) -> dict[str, Any]:
    """The status document of 3 clients whose worker's DUMP (through the pipe's bytes) gave these
    gauges and, on every SA, these per-SA counters (each 7) besides the fast path's."""
    gw = status_state.gateway(3)
    reply = gw.dump()
    sas = tuple(dataclasses.replace(sa, counters={**sa.counters, **dict.fromkeys(counters, 7)}) for sa in reply.sas)
    decoded = pipe.decode(pipe.encode(dataclasses.replace(reply, gauges=gauges, sas=sas)))
    assert isinstance(decoded, pipe.Reply)
    return status_document(status_state.daemon(gw), pipe.join_dump_replies([decoded]))


def _scrape(doc: dict[str, Any], encoder: exposition.Encoder = openmetrics.generate_latest) -> str:
    parts = asyncio.run(_server().families(doc, True))
    return exposition.encode(encoder, parts, CollectorRegistry(auto_describe=False)).decode()


def _skipped(families: dict[str, Any]) -> dict[str, float]:
    return {s.labels["kind"]: s.value for s in families["tunsec_metrics_worker_names_skipped"].samples}


def test_names_that_clash_with_the_scrapes_own_are_skipped_and_counted() -> None:
    doc = _document(gauges=(("live_sa_entries", 10), ("made_up", 5), ("restarts_total", 9), ("queue_cpu_seconds", 1),
                            ("process_open_fds", 99)),
                    counters=("tfc_packets", "rekeys", "odd", "odd_total"))
    families = {f.name: f for f in parse_openmetrics(_scrape(doc))}   # before: ValueError, Clashing name
    # the fast path's and the harmless unknown ones are exported
    assert [s.value for s in families["tunsec_worker_live_sa_entries"].samples] == [10]
    assert [s.value for s in families["tunsec_worker_made_up"].samples] == [5]
    assert len(families["tunsec_child_sa_tfc_packets"].samples) == 6   # 3 clients, 2 SAs each
    assert len(families["tunsec_child_sa_odd"].samples) == 6
    # the scrape's own families are its own: tunsec_worker_restarts_total is the control process's count
    # (3), tunsec_child_sa_rekeys its count of rekeys (none here), tunsec_worker_queue_cpu_seconds the
    # queues' CPU (no worker pid: none), tunsec_worker_process_* the worker's ProcessCollector's
    assert [s.value for s in families["tunsec_worker_restarts"].samples] == [3]
    assert families["tunsec_child_sa_rekeys"].samples == []
    assert families["tunsec_worker_queue_cpu_seconds"].samples == []
    assert "tunsec_worker_restarts_total" not in families and "tunsec_worker_process_open_fds" not in families
    assert "tunsec_child_sa_odd_total" not in families   # tunsec_child_sa_odd's sample name
    assert _skipped(families) == {"gauge": 3, "sa_counter": 2}


def test_a_scrape_exports_at_most_max_names_of_each_kind() -> None:
    gauges = tuple((f"g{i}", i) for i in range(MAX_NAMES + 36))
    doc = _document(gauges=gauges, counters=())
    for sa in doc["sas"]:   # past what one DUMP datagram may name (a DUMP of many datagrams may name more)
        sa.update({f"c{i}": i for i in range(MAX_NAMES + 20)})
    families = {f.name: f for f in parse_openmetrics(_scrape(doc))}
    assert sum(name.startswith("tunsec_worker_g") for name in families) == MAX_NAMES
    assert "tunsec_worker_g0" in families and f"tunsec_worker_g{MAX_NAMES}" not in families
    # the fast path's 5 (packets, bytes, 3 drop reasons) first, then the worker's others up to the cap
    exported = sum(name.startswith("tunsec_child_sa_c") for name in families)
    assert exported == MAX_NAMES - 5
    assert _skipped(families) == {"gauge": 36, "sa_counter": MAX_NAMES + 20 - exported}
    assert len(families["tunsec_child_sa_drops"].samples) == 3 * 3   # the inbound SAs' three reasons


@pytest.mark.parametrize("encoder", [generate_latest, openmetrics.generate_latest])
def test_a_worker_that_names_nothing_odd_skips_nothing(encoder: exposition.Encoder) -> None:
    doc = _document(gauges=(("live_sa_entries", 10), ("sandbox", 3)), counters=())
    body = _scrape(doc, encoder)
    families = {f.name: f for f in (parse_openmetrics if encoder is openmetrics.generate_latest else parse_text)(body)}
    assert _skipped(families) == {"gauge": 0, "sa_counter": 0}
    assert [s.value for s in families["tunsec_worker_sandbox"].samples] == [3]
