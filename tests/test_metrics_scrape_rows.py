"""A scrape's document holds only what its metric families read (status_document_sliced(scrape=True),
Rows.brief): an IKE SA's row its connection, state and Child SAs' SPIs and remote, a policy's row its
id, action and packets, no lease.  Every metric comes out as it did from the whole `tunsec status`
document, and the full rows' builders are never called for a scrape (~30% of its CPU at 5,000 clients)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import types
from typing import Any

import pytest
import status_state
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tunsec import exposition, metrics, status
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Alg, Direction, SaInfo
from tunsec.ike.sa import State
from tunsec.services.ike import status as ike_status

LOOPBACK = ListenAddress(ipaddress.ip_address("127.0.0.1"), 0)


def _gateway() -> tuple[status_state.Gateway, pipe.Reply]:
    """60 clients of three connections (one named to need escaping), EAP users with groups, virtual
    IPs, a client with a second Child SA, one rekeyed (its Child SA under the successor only), one
    still connecting, one gone (its SAs in the DUMP have no owner)."""
    gw = status_state.gateway(60)
    for n in range(0, 60, 3):
        c = gw.clients[n]
        c.sa.name = "eap"
        c.record.update(remote_eap_id=f"user{n}", groups=["staff", f"g{n % 2}"], remote_id_proven=n % 2 == 0)
    gw.clients[5].sa.name = 'odd "name"\\ with\nnewline é'
    gw.clients[8].sa.state = State.CONNECTING
    gw.rekey(11, 100)
    gw.remove(13)
    second = types.SimpleNamespace(**{**vars(gw.clients[4].child), "child": "voice", "spi_in": 0xC1000004,
                                      "spi_out": 0x11000004})
    gw.children[second.spi_in] = second
    dump = gw.dump()
    extra = tuple(SaInfo(spi, direction, "mature", Alg.AES256GCM16, False, 5, 64, status_state.GW, second.remote, 9,
                         False, False, 61, {"packets": 7, "bytes": 9100, "replay_drops": 1, "auth_drops": 0,
                                            "policy_drops": 2})
                  for spi, direction in ((second.spi_in, Direction.IN), (second.spi_out, Direction.OUT)))
    return gw, dataclasses.replace(dump, sas=dump.sas + extra)


def _body(doc: dict[str, Any], encoder: exposition.Encoder) -> bytes:
    """The scrape's families from doc, encoded (not the processes' own families: those change by the moment)."""
    srv = metrics.MetricsServer(LOOPBACK, metrics.Source(
        dump=None, document=None, events=lambda: None, worker_restarts=lambda: 2,   # type: ignore[arg-type]
        worker_pid=lambda: None))

    async def build() -> bytes:
        return exposition.encode(encoder, await srv.families(doc, True), CollectorRegistry(auto_describe=False))

    return asyncio.run(build())


@pytest.mark.parametrize("encoder", [generate_latest, openmetrics.generate_latest])
def test_a_scrapes_document_gives_every_metric_the_whole_document_gives(encoder: exposition.Encoder) -> None:
    gw, dump = _gateway()
    d = status_state.daemon(gw)
    whole = asyncio.run(status.status_document_sliced(d, dump))
    brief = asyncio.run(status.status_document_sliced(d, dump, scrape=True))
    assert brief["leases"] == [] and len(whole["leases"]) == 60
    assert "local_id" not in brief["ike_sas"][0] and "selector" not in brief["policies"][0]
    full_body, brief_body = _body(whole, encoder), _body(brief, encoder)
    # byte for byte: the families' order and each one's samples' come from the same lists
    assert brief_body == full_body
    if encoder is generate_latest:   # what the test's state should show does show
        series = {(s.name, tuple(sorted(s.labels.items())), s.value)
                  for f in parse_text(full_body.decode()) for s in f.samples}
        assert ("tunsec_child_sas", (("child", "voice"), ("connection", "rw")), 1.0) in series
        assert ("tunsec_ike_sas", (("connection", "rw"), ("state", "connecting")), 1.0) in series
        assert ("tunsec_ike_sas", (("connection", "rw"), ("state", "rekeyed")), 1.0) in series
        assert any(name == "tunsec_child_sas" and dict(labels)["connection"] == 'odd "name"\\ with\nnewline é'
                   for name, labels, _ in series)
        owned = {dict(labels)["connection"] for name, labels, _ in series if name == "tunsec_child_sa_bytes_total"}
        assert owned == {"rw", "eap", 'odd "name"\\ with\nnewline é', ""}


def test_a_scrape_builds_no_ike_sa_lease_or_policy_status_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row builders `tunsec status` uses raise: a scrape (the daemon's document, scrape=True) is
    built all the same, with its IKE SA families."""
    def never(*args: Any) -> dict[str, Any]:
        raise AssertionError("a scrape built a row of `tunsec status` it does not read")

    monkeypatch.setattr(ike_status, "_ike_sa", never)
    monkeypatch.setattr(ike_status, "_lease", never)
    monkeypatch.setattr(status, "_policy", never)
    gw, dump = _gateway()
    d = status_state.daemon(gw)

    async def worker_dump() -> pipe.Reply:
        return dump

    srv = metrics.MetricsServer(LOOPBACK, metrics.Source(
        dump=worker_dump, document=lambda reply: status.status_document_sliced(d, reply, scrape=True),
        events=lambda: None, worker_restarts=lambda: 0, worker_pid=lambda: None))
    body = asyncio.run(srv._build("text")).data.decode()
    assert 'tunsec_ike_sas{connection="eap",state="established"} 20.0' in body
    assert 'tunsec_policy_packets_total{action="protect",policy="3"} 7.0' in body
    with pytest.raises(AssertionError, match="a scrape built"):   # and `tunsec status` does use them
        status.status_document(d, dump)


def test_the_daemons_endpoint_asks_for_a_scrapes_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemon._start_metrics's Source builds the document with scrape=True (the brief rows)."""
    from tunsec import daemon

    asked: list[dict[str, Any]] = []
    started: list[metrics.Source] = []

    async def document(d: Any, reply: pipe.Reply, **kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        return {}

    async def start(listen: ListenAddress, source: metrics.Source, serve: bool = True) -> None:
        started.append(source)

    monkeypatch.setattr(daemon, "status_document_sliced", document)
    monkeypatch.setattr(metrics, "start", start)
    d = types.SimpleNamespace(cfg=types.SimpleNamespace(tunsec=types.SimpleNamespace(metrics_listen=LOOPBACK)),
                              dump=None, ike=None, worker_restarts=0, worker=types.SimpleNamespace(pid=None))
    asyncio.run(daemon.Daemon._start_metrics(d))   # type: ignore[arg-type]
    asyncio.run(started[0].document(pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK)))
    assert asked == [{"scrape": True}]
