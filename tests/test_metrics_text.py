"""The status document and the scrape body of thousands of clients are built a slice at a time:
the event loop answers IKE meanwhile (a datagram here), a client coming or going mid-build shows
once or not at all, and what comes out is what came out before: the per-SA families written
directly (tunsec.exposition) read as prometheus_client's objects did (tests/metrics_reference.py),
byte for byte and through its own parsers; the JSON encoded in slices is json.dumps's."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

import metrics_reference
import pytest
import status_state
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tunsec import ctlsocket, exposition, metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe
from tunsec.status import status_document, status_document_sliced

LOOPBACK = ListenAddress(ipaddress.ip_address("127.0.0.1"), 0)
N = 2000


def server(gw: status_state.Gateway, began: Callable[[], None] = lambda: None) -> metrics.MetricsServer:
    """A metrics endpoint (not listening) whose document is gw's status; began() as its build begins."""
    d = status_state.daemon(gw)

    async def dump() -> pipe.Reply:
        return gw.dump()

    async def document(reply: pipe.Reply) -> dict[str, Any]:
        began()
        return await status_document_sliced(d, reply)

    return metrics.MetricsServer(LOOPBACK, metrics.Source(
        dump=dump, document=document, events=lambda: None, worker_restarts=lambda: 2, worker_pid=lambda: None))


def _odd_state() -> tuple[status_state.Gateway, dict[str, Any]]:
    """300 clients, one of a connection whose name needs escaping, one whose IKE SA is gone (its
    SAs have no owner), and a per-SA counter the metrics have no help text for."""
    gw = status_state.gateway(300)
    gw.clients[7].sa.name = 'odd "name"\\ with\nnewline é'
    gw.remove(9)
    doc = status_document(status_state.daemon(gw), gw.dump())
    for sa in doc["sas"]:
        sa["tfc_packets"] = int(sa["spi"], 16) % 1000
    return gw, doc


@pytest.mark.parametrize(("encoder", "parse"), [(generate_latest, parse_text),
                                                (openmetrics.generate_latest, parse_openmetrics)])
def test_the_direct_encoding_reads_as_prometheus_clients_did(encoder: exposition.Encoder,
                                                             parse: Callable[[str], Any]) -> None:
    gw, doc = _odd_state()
    parts = asyncio.run(server(gw).families(doc, True))
    new = exposition.encode(encoder, parts, CollectorRegistry(auto_describe=False))
    old = encoder(metrics_reference.Families(metrics_reference.as_before(doc, parts)))
    assert new == old
    assert encoder(metrics_reference.Families(metrics_reference.families(server(gw), doc, True))) == old

    def read(body: bytes) -> list[tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]]:
        return [(f.name, f.type, f.documentation, [(s.name, tuple(sorted(s.labels.items())), s.value)
                                                   for s in f.samples]) for f in parse(body.decode())]

    families = {name: samples for name, _, _, samples in read(new)}
    assert read(new) == read(old)
    assert len(families["tunsec_child_sa_drops"]) == 3 * 300   # the inbound SAs' three reasons
    assert len(families["tunsec_child_sa_tfc_packets"]) == 600
    assert len(families["tunsec_policy_packets"]) == 600
    odd = [s for s in families["tunsec_child_sa_bytes"] if dict(s[1])["connection"] != "rw"]
    assert [dict(s[1])["connection"] for s in odd] == ['odd "name"\\ with\nnewline é'] * 2 + [""] * 2
    assert ("tunsec_child_sa_packets_total", (("child", "net"), ("connection", "rw"), ("direction", "out"),
            ("remote", "198.51.0.2[4500]"), ("spi", "10000001")), 10001009.0) in families["tunsec_child_sa_packets"]


def test_values_are_written_as_prometheus_client_writes_them() -> None:
    from prometheus_client.utils import floatToGoString
    for v in [0, 1, 7, 999_999, 1_000_000, 1_234_567, 10**12, 2**64 - 1, 0.5, 1e-7, 12345678.9, -3, True]:
        assert exposition.value(v) == floatToGoString(v), v


async def _answered_during(build: Callable[[Callable[[], None]], Awaitable[Any]]) -> list[str]:
    """What happened in which order: a datagram sent to an echo server on loopback as the build
    began (build calls its argument), its echo ("answered"), and the build's end ("built")."""
    loop = asyncio.get_running_loop()
    order: list[str] = []

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)   # type: ignore[attr-defined]

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            order.append("answered")

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client, _ = await loop.create_datagram_endpoint(Client, remote_addr=echo.get_extra_info("sockname"))
    try:
        await build(lambda: client.sendto(b"IKE_SA_INIT"))
        order.append("built")
        for _ in range(100):   # a build that held the loop: the echo comes after it
            if "answered" in order:
                break
            await asyncio.sleep(0.01)
    finally:
        echo.close()
        client.close()
    return order


def test_the_loop_answers_a_datagram_while_a_scrape_of_2000_clients_is_built() -> None:
    gw = status_state.gateway(N)

    async def scrape(began: Callable[[], None]) -> None:
        await server(gw, began)._build("openmetrics")

    assert asyncio.run(_answered_during(scrape)) == ["answered", "built"]


def test_the_loop_answers_a_datagram_while_the_status_of_2000_clients_is_built() -> None:
    gw = status_state.gateway(N)
    d = status_state.daemon(gw)

    async def status(began: Callable[[], None]) -> None:   # Daemon._status without the worker
        dump = gw.dump()
        began()
        answer = ctlsocket.Answer({"ok": True, "status": await status_document_sliced(d, dump)})
        await answer.encode_sliced()

    assert asyncio.run(_answered_during(status)) == ["answered", "built"]


def test_clients_coming_going_and_rekeying_during_a_build_show_once_or_not_at_all() -> None:
    """Between the slices a client leaves, a new one comes, one rekeys (its successor takes the
    handle, the old SA is REKEYED): every Child SA of the DUMP is under one IKE SA at most, every
    series is there once, nothing raises."""
    gw = status_state.gateway(N)
    srv = server(gw)
    changes = 0

    async def churn(done: asyncio.Future[Any]) -> None:
        nonlocal changes
        n = N
        while not done.done():
            gw.remove(changes)
            gw.add(status_state.client(n))
            gw.rekey(N - 1 - changes, n + 1)
            n += 2
            changes += 1
            await asyncio.sleep(0)

    async def run() -> tuple[metrics.Body, dict[str, Any]]:
        d = status_state.daemon(gw)
        built = asyncio.ensure_future(asyncio.gather(srv._build("text"), status_document_sliced(d, gw.dump())))
        await churn(built)
        body, doc = await built
        return body, doc

    body, doc = asyncio.run(run())
    assert changes > 10   # the loop turned while the scrape and the status were built
    spis = [c["spi_in"] for ike in doc["ike_sas"] for c in ike["children"]]
    assert len(spis) == len(set(spis)) and len(spis) > N - 2 * changes
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in parse_text(body.data.decode()) for s in f.samples]
    assert len(series) == len(set(series))
    assert sum(1 for name, _ in series if name == "tunsec_child_sa_bytes_total") == 2 * N


def test_the_status_built_in_slices_is_the_one_built_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    gw = status_state.gateway(N)
    d = status_state.daemon(gw)
    whole = status_document(d, gw.dump())
    assert asyncio.run(status_document_sliced(d, gw.dump())) == whole
    assert len(whole["ike_sas"]) == len(whole["leases"]) == N and len(whole["sas"]) == 2 * N


def test_the_json_encoded_in_slices_is_json_dumps() -> None:
    gw = status_state.gateway(N)
    doc = status_document(status_state.daemon(gw), gw.dump())
    slice_ = ctlsocket.JSON_SLICE
    for value in [{"ok": True, "status": doc}, {"ok": False, "error": "worker unavailable: x"},
                  {"a": [], "b": {}, "c": [[1] * slice_, list(range(slice_ + 1))], "d": {1: "int key", "é": "\u2028"},
                   "e": list(range(3 * slice_)), "f": [{"x": [None] * (slice_ + 2)}] * (slice_ + 1), "g": 1.5e300}]:
        answer = ctlsocket.Answer(value)

        async def encode(a: ctlsocket.Answer = answer) -> None:
            await a.encode_sliced()
        asyncio.run(encode())
        assert answer.line == json.dumps(value).encode() + b"\n"
        assert json.loads(answer.line) == json.loads(json.dumps(value))
