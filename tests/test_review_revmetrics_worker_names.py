"""Review revmetrics F2: names a (taken-over) worker puts in its DUMP become metric family names
that clash with the control process's own, and the OpenMetrics body no longer parses.

The worker parses packets from the network and its answers are checked as a liar's
(tunsec.worker_distrust). A DUMP's GAUGE names and per-SA counter names pass the pipe's check if
they match ``[a-z][a-z0-9_]{0,31}``; metrics.state_families exports every gauge as
``tunsec_worker_<name>`` and metrics.sa_families every per-SA counter as ``tunsec_child_sa_<name>``,
"listed or not". A gauge named ``up`` or ``restarts`` gives a second ``tunsec_worker_up`` family,
or a gauge ``tunsec_worker_restarts`` beside the counter of the control process's own count of the
worker's deaths; a per-SA counter named ``drops`` a second ``tunsec_child_sa_drops``. The OpenMetrics
format (what Prometheus asks for) allows a family once: the whole scrape fails to parse, every series
of the gateway is lost for as long as the worker says so (the text format carries both families,
the worker's value beside the control process's).

Real parts: the DUMP's bytes through the pipe's encoder and decoder (what the control process takes
from a worker), the status document tunsec.status builds from it, the real endpoint scraped over
HTTP on loopback as Prometheus asks (Accept: application/openmetrics-text), prometheus_client's
OpenMetrics parser reading the body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from typing import Any

import pytest
import status_state
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tunsec import metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe
from tunsec.status import status_document_sliced

LOOPBACK = ListenAddress(ipaddress.ip_address("127.0.0.1"), 0)
OPENMETRICS = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"


def _lying_dump(gw: status_state.Gateway, gauges: tuple[tuple[str, int], ...], counter: str | None) -> pipe.Reply:
    """gw's DUMP with the worker's gauges replaced (and a per-SA counter added), through the pipe's bytes."""
    reply = gw.dump()
    sas = reply.sas if counter is None else tuple(
        dataclasses.replace(sa, counters={**sa.counters, counter: 1}) for sa in reply.sas)
    lying = dataclasses.replace(reply, gauges=gauges, sas=sas)
    decoded = pipe.decode(pipe.encode(lying))   # what the control process takes from the worker's pipe
    assert isinstance(decoded, pipe.Reply)
    return pipe.join_dump_replies([decoded])


async def _scrape(reply: pipe.Reply, gw: status_state.Gateway) -> str:
    d = status_state.daemon(gw)

    async def dump() -> pipe.Reply:
        return reply

    src = metrics.Source(dump=dump, document=lambda r: status_document_sliced(d, r, scrape=True),
                         events=lambda: None, worker_restarts=lambda: 3, worker_pid=lambda: None)
    server = await metrics.start(LOOPBACK, src)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OPENMETRICS)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await server.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body.decode()


@pytest.mark.parametrize(("gauges", "counter"), [
    ((("live_sa_entries", 10), ("up", 1)), None),          # a second tunsec_worker_up
    ((("live_sa_entries", 10), ("restarts", 0)), None),    # beside tunsec_worker_restarts_total
    ((("live_sa_entries", 10),), "drops"),                  # a per-SA counter: a second tunsec_child_sa_drops
])
def test_names_a_worker_chooses_leave_the_scrape_readable(gauges: tuple[tuple[str, int], ...],
                                                          counter: str | None) -> None:
    gw = status_state.gateway(3)
    body = asyncio.run(_scrape(_lying_dump(gw, gauges, counter), gw))
    families: dict[str, Any] = {f.name: f for f in parse_openmetrics(body)}   # main: ValueError, Clashing name
    # the control process's own families are the ones the scrape carries
    assert [s.value for s in families["tunsec_worker_up"].samples] == [1]
    assert [s.value for s in families["tunsec_worker_restarts"].samples] == [3]
