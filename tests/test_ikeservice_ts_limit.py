"""A gateway's clients proposing more traffic selectors than a Child SA holds (review O, F1): each
IKE_AUTH of 255 TSi x 255 TSr pieces is refused with TS_UNACCEPTABLE (exchanges/child.py
side_limit), counted (``ts_limit_refused``, tunsec_child_sa_ts_limit_refused) and logged with the
peer's address, a few lines a minute per peer (the service's refusals.refused on a fake clock: each
client's line passes, review revpeerdos R3); nothing of them
reaches the worker.  The gateway is a real IkeService with the worker's request handling and the C
fast path in process; the clients are IKE engines wired to it."""

from __future__ import annotations

import logging

import pytest
from status_stub import stub_daemon
from test_ikeservice_peers import run, site_ip
from test_ikeservice_ts_claims import Client, TsGateway, refusals
from test_metrics_events import scrape

from tunsec.dataplane import pipe
from tunsec.dataplane.pipe import Action
from tunsec.loglimit import PeerLogLimiter
from tunsec.metrics import event_families
from tunsec.status import render, status_document

CLIENTS = 7


def cut(addr: str, first_port: int) -> str:
    """``addr`` in 255 selectors, TCP with one port each."""
    return ", ".join(f"{addr}[tcp/{first_port + i}]" for i in range(255))


def test_ike_auths_of_255_by_255_pieces_are_refused_counted_and_logged_per_peer(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tunsec")
    clock = [0.0]

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "proposed 255 TSi" in r.getMessage()]

    async def body() -> None:
        clients = tuple(Client(f"c{i}.example", cut(f"10.2.{i}.1", 1000), gw_side=cut("10.1.0.1", 2000))
                        for i in range(CLIENTS))
        gw = TsGateway(CLIENTS, mobike=False, clients=clients)
        await gw.start()
        gw.service.refusals.refused = PeerLogLimiter(burst=5, period=60.0, clock=lambda: clock[0])
        for i in range(CLIENTS):
            gw.connect(i)
            await gw.settle()
        for i in range(CLIENTS):
            assert [e.reason for e in refusals(gw, i)] == ["TS_UNACCEPTABLE"]
        assert gw.service.events.ts_limit_refused == {("gw", "net"): CLIENTS}
        (metric,) = [f for f in event_families(gw.service.events, 0) if f.name == "tunsec_child_sa_ts_limit_refused"]
        assert [(s.labels, s.value) for s in metric.samples] == [({"connection": "gw", "child": "net"}, CLIENTS)]
        dump = pipe.Reply(1, pipe.MsgType.DUMP, pipe.Errno.OK)
        doc = status_document(stub_daemon(gw.service.status), dump)  # type: ignore[arg-type]
        assert doc["ts_limit_refused"] == [{"connection": "gw", "child": "net", "count": CLIENTS}]
        assert f"Child SAs refused, their selectors more than an SA holds: gw/net {CLIENTS}" in \
            render(doc).splitlines()
        assert (await scrape(gw.service))['tunsec_child_sa_ts_limit_refused_total{child="net",connection="gw"}'] \
            == CLIENTS
        assert not gw.service.children
        assert not [p for p in gw.worker.dp.policies() if p.action is Action.PROTECT]
    run(body())
    assert len(lines()) == CLIENTS   # more than a burst: each client's line, in its own share
    for i, line in enumerate(lines()):
        assert line.startswith(f"gw child net: TS_UNACCEPTABLE from {site_ip(i)}: proposed 255 TSi"), line
        assert "(and 247 more)" in line and len(line) < 2000
