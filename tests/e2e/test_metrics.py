"""Prometheus metrics, scraped by a real Prometheus server (Debian's `prometheus`).

tunsec A <-> tunsec B with IKEv2 in two namespaces; A serves metrics on its
loopback (`metrics_listen`), a Prometheus started here in A's namespace
scrapes it every second, and the values are read back through Prometheus's
HTTP API.  Before that, A starts with the port taken and must say so.  Then
the worker is stopped (SIGSTOP): a scrape still answers, with
`tunsec_worker_up 0`; then killed: the restart is counted.  A logs in JSON
(`log_format = json`), both its processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import CHILD, CONN, Conn, TunsecIke

from tunsec.bench.netns import TwoHosts, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PINGS = 5

pytestmark = pytest.mark.skipif(not os.path.exists(PROMETHEUS),
                                reason="Debian's prometheus is not installed (scripts/install-deps.sh installs it)")


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=False) as t:
        yield t


def free_port(topo: TwoHosts) -> int:
    """A TCP port nothing listens on in A's namespace (the kernel picks it)."""
    with topo.socket(topo.a, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(topo: TwoHosts, url: str, timeout: float = 10.0) -> str:
    with topo.netns(topo.a), urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
        return body.decode()


class Prometheus:
    def __init__(self, topo: TwoHosts, target: str) -> None:
        self.topo = topo
        self.port = free_port(topo)
        d = topo.workdir / "prometheus"
        d.mkdir()
        conf = d / "prometheus.yml"
        conf.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tunsec
    static_configs:
      - targets: ["{target}"]
""")
        self.log = d / "prometheus.log"
        self.proc = topo.popen(topo.a, [
            PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ], log=self.log)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            doc = json.loads(http_get(self.topo, url))
        except OSError:
            return []   # not listening yet
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def wait_value(self, expr: str, ok: Any, timeout: float = 15) -> float:
        assert wait_until(lambda: (v := self.value(expr)) is not None and ok(v), timeout, interval=0.5), \
            f"{expr} = {self.query(expr)}\n{self.log.read_text()[-2000:]}"
        v = self.value(expr)
        assert v is not None
        return v

    def stop(self) -> None:
        assert self.topo.stop(self.proc) == 0, self.log.read_text()[-2000:]


def test_prometheus_scrapes_child_sa_counters_and_survives_a_stuck_worker(topo: TwoHosts) -> None:
    port = free_port(topo)
    b = TunsecIke(topo, Conn(topo.b, topo.a))
    a = TunsecIke(topo, Conn(topo.a, topo.b, start_action="start"),
                  tunsec_extra=f"  metrics_listen = 127.0.0.1:{port}\n  log_format = json\n")
    b.start()
    # the port taken: a startup error that says where and what to do
    with topo.socket(topo.a, socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(AssertionError, match="did not start"):
            a.start()
    assert (f"cannot start: cannot listen for Prometheus scrapes on TCP 127.0.0.1:{port} "
            "(tunsec { metrics_listen }): Address already in use; choose a free port") in a.log_text()
    a.start()
    prom = Prometheus(topo, f"127.0.0.1:{port}")
    child = a.wait_established()["children"][0]
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    assert topo.ping(topo.a, topo.b.inner4, count=PINGS, src=topo.a.inner4)

    sa = f'connection="{CONN}",child="{CHILD}"'
    out = prom.wait_value(f'tunsec_child_sa_packets_total{{{sa},direction="out"}}', lambda v: v >= PINGS + 1)
    # B answered every ping: its answers came in through the inbound SA
    assert prom.value(f'tunsec_child_sa_packets_total{{{sa},direction="in",spi="{child["spi_in"]}"}}') >= PINGS
    assert prom.value(f'tunsec_child_sa_bytes_total{{{sa},direction="out"}}') >= out * 84   # 84-byte pings
    assert prom.value(f'tunsec_child_sa_drops_total{{{sa},reason="auth"}}') == 0
    assert prom.value(f'tunsec_ike_sas{{connection="{CONN}",state="established"}}') == 1
    assert prom.value(f'tunsec_child_sas{{{sa}}}') == 1
    assert prom.value("tunsec_worker_up") == 1
    assert prom.value('tunsec_drops_total{reason="auth"}') == 0
    assert prom.value("tunsec_worker_restarts_total") == 0
    assert prom.value("tunsec_ike_half_open_sas") == 0
    # the worker's gauges: the Child SA's two SAs (and the IKE service's larval SPIs) and its policy
    assert prom.value("tunsec_worker_live_sa_entries") >= 2 and prom.value("tunsec_worker_live_cipher_contexts") >= 2
    assert prom.value("tunsec_worker_spd_entries") >= 1
    assert prom.value("tunsec_worker_malformed_messages_total") == 0
    assert prom.value('sum(tunsec_worker_queue_cpu_seconds_total{queue="0"})') is not None
    assert prom.value("process_resident_memory_bytes") is not None

    # a worker that does not answer: the scrape still answers, with what the control process knows
    worker = a.status()["worker"]["pid"]
    os.kill(worker, signal.SIGSTOP)
    try:
        # a body built before the stop answers for up to a second (metrics.CACHE_AGE): the next is built anew
        for _ in range(20):
            text = http_get(topo, f"http://127.0.0.1:{port}/metrics")
            if "tunsec_worker_up 0.0" in text:
                break
            time.sleep(0.25)
    finally:
        os.kill(worker, signal.SIGCONT)
    assert "tunsec_worker_up 0.0" in text
    assert f'tunsec_ike_sas{{connection="{CONN}",state="established"}} 1.0' in text
    assert not [line for line in text.splitlines() if line.startswith("tunsec_child_sa_packets_total")]

    # a worker that dies is restarted, and counted
    os.kill(worker, signal.SIGKILL)
    prom.wait_value("tunsec_worker_restarts_total", lambda v: v == 1)
    prom.wait_value("tunsec_worker_up", lambda v: v == 1)
    prom.stop()
    # log_format = json: every line of both processes is one JSON object
    docs = [json.loads(line) for line in a.log_text().splitlines()]
    # (and the spawner's, where the worker has a user of its own: tunsec-dp exists)
    assert {"tunsec", "tunsec-worker"} <= {d["process"] for d in docs} <= {"tunsec", "tunsec-worker", "tunsec-spawner"}
    # the worker's own lines, passed on by the control process (stderr_relay.py) with the pid it started
    assert any(d["process"] == "tunsec-worker" and d["pid"] == worker and d["msg"].startswith("worker ready, ")
               for d in docs), [d for d in docs if d["process"] == "tunsec-worker"]
    assert any(d["logger"] == "tunsec.metrics" and d["msg"] == f"Prometheus metrics on http://127.0.0.1:{port}/metrics"
               for d in docs)

