"""The metrics endpoint on loopback, with the daemon's side replaced by callables.

The real daemon, worker and a real Prometheus are in tests/e2e/test_metrics.py;
here: what a scrape shows when the worker does not answer, what labels SAs get,
and what the HTTP side does with requests that are not a scrape.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tunsec import metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe

LOOPBACK = ListenAddress(ipaddress.ip_address("127.0.0.1"), 0)


async def document(reply: pipe.Reply) -> dict[str, Any]:
    """What status_document gives for one IKE child (SPIs 0000abcd in, 0000beef out to 192.0.2.2[4500])."""
    sa = {"packets": 7, "bytes": 700, "age_seconds": 3, "replay_drops": 1, "auth_drops": 2, "policy_drops": 0}
    return {
        "ike_sas": [
            {"name": "gw", "state": "established", "children": [
                {"name": "net", "spi_in": "0000abcd", "spi_out": "0000beef", "remote": "192.0.2.2[4500]"}]},
            {"name": "gw", "state": "connecting", "children": []},
        ],
        "tunnels": [],
        "sas": [{**sa, "spi": "0000abcd", "direction": "in", "state": "mature", "remote": "192.0.2.2[4500]"},
                {**sa, "spi": "0000beef", "direction": "out", "state": "mature", "remote": "192.0.2.2[4500]"}]
        if reply.req_id == 7 else [],
        "larval_sas": 4,
        "policies": [],
        "drops": {"auth": 2, "no_sa": 5} if reply.req_id == 7 else {},
        "ike_half_open": 1,
        "ike_drops": {"malformed": 9, "cookies_sent": 3, "half_open_closed": 2, "redirects_sent": 4, "too_big": 6,
                      "init_refused": 5},
        "ike_refused": {"ike_rekeys_refused": 1, "mobike_checks_failed": 7},
        # as AuthBan.bans gives them (ike/auth_ban.py): an IPv4 address, /64s (one link-local), a /48
        "auth_bans": [{"source": s, "seconds_left": 60, "failures": 10} for s in (
            "198.51.100.7", "2001:db8:1:2::/64", "fe80::/64%eth0", "2001:db8:5::/48")],
        "auth_ban_uncounted": 11,
        "auth_bans_started": 13,
        "tun": {"unrouted": [{"network": "fd00:3::/64", "blocked": True, "reason": "Permission denied"}]},
    }


def source(dump: Callable[[], Any], events: metrics.EventCounts | None = None) -> metrics.Source:
    return metrics.Source(dump=dump, document=document, events=lambda: events, worker_restarts=lambda: 3,
                          worker_pid=lambda: None)


@asynccontextmanager
async def serving(src: metrics.Source, clock: Callable[[], float] | None = None) -> AsyncIterator[int]:
    server = await metrics.start(LOOPBACK, src, *([clock] if clock else []))
    assert server._server is not None
    try:
        yield server._server.sockets[0].getsockname()[1]
    finally:
        await server.close()


async def http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        data = b""   # closed with our request unread
    writer.close()
    return data


def samples(answer: bytes) -> dict[str, float]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"


def test_a_worker_that_does_not_answer_gives_the_control_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "DUMP_TIMEOUT", 0.05)
    calls = 0

    async def stuck() -> pipe.Reply:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()
        raise AssertionError("never")

    events = metrics.EventCounts()
    events.child_rekeys[("gw", "net")] += 2
    events.dpd_failures["gw"] += 1

    async def run() -> list[dict[str, float]]:
        async with serving(source(stuck, events)) as port:
            answers = await asyncio.gather(*(http(port, SCRAPE) for _ in range(3)))
        return [samples(a) for a in answers]

    for got in asyncio.run(run()):
        assert got["tunsec_worker_up"] == 0
        assert got['tunsec_tun_unrouted_networks{blocked="1"}'] == 1   # alertable: a route refused at a reload
        assert got['tunsec_tun_unrouted_networks{blocked="0"}'] == 0
        assert got['tunsec_ike_sas{connection="gw",state="established"}'] == 1
        assert got['tunsec_ike_sas{connection="gw",state="connecting"}'] == 1
        assert got['tunsec_child_sa_rekeys_total{child="net",connection="gw"}'] == 2
        assert got['tunsec_dpd_failures_total{connection="gw"}'] == 1
        assert got["tunsec_worker_restarts_total"] == 3
        assert got["tunsec_ike_half_open_sas"] == 1
        assert got['tunsec_ike_requests_dropped_total{reason="malformed"}'] == 9
        assert got["tunsec_ike_cookies_sent_total"] == 3
        assert got["tunsec_ike_redirects_sent_total"] == 4
        assert 'tunsec_ike_requests_dropped_total{reason="redirects_sent"}' not in got
        assert got['tunsec_ike_requests_dropped_total{reason="too_big"}'] == 6
        assert got["tunsec_ike_init_refused_total"] == 5
        # the bans in force by family and prefix length, never a source (review revban2 F4)
        assert {k: v for k, v in got.items() if k.startswith("tunsec_ike_auth_bans{")} == {
            'tunsec_ike_auth_bans{family="ipv4",prefix_length="32"}': 1,
            'tunsec_ike_auth_bans{family="ipv6",prefix_length="64"}': 2,
            'tunsec_ike_auth_bans{family="ipv6",prefix_length="56"}': 0,
            'tunsec_ike_auth_bans{family="ipv6",prefix_length="48"}': 1}
        assert got["tunsec_ike_auth_ban_uncounted_total"] == 11
        assert got["tunsec_ike_auth_bans_started_total"] == 13
        assert 'tunsec_ike_requests_dropped_total{reason="init_refused"}' not in got
        assert got['tunsec_ike_authenticated_refused_total{reason="mobike_checks_failed"}'] == 7
        assert 'tunsec_ike_requests_dropped_total{reason="mobike_checks_failed"}' not in got
        assert not any(k.startswith(("tunsec_child_sa_packets", "tunsec_drops")) for k in got)
    assert calls == 1   # the scrapes waited on one DUMP, left running, instead of piling up more


def test_sa_counters_carry_connection_child_direction_spi_and_remote() -> None:
    async def answer() -> pipe.Reply:
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def run() -> bytes:
        async with serving(source(answer)) as port:
            return await http(port, SCRAPE)

    got = samples(asyncio.run(run()))
    labels = 'child="net",connection="gw",direction="{}",remote="192.0.2.2[4500]",spi="{}"'
    assert got["tunsec_worker_up"] == 1
    assert got["tunsec_child_sa_packets_total{" + labels.format("in", "0000abcd") + "}"] == 7
    assert got["tunsec_child_sa_bytes_total{" + labels.format("out", "0000beef") + "}"] == 700
    drops = ('tunsec_child_sa_drops_total{{child="net",connection="gw",direction="in",reason="{}",'
             'remote="192.0.2.2[4500]",spi="0000abcd"}}')
    assert got[drops.format("auth")] == 2
    assert got[drops.format("replay")] == 1
    assert drops.format("auth").replace('"in"', '"out"').replace("abcd", "beef") not in got
    assert got['tunsec_drops_total{reason="no_sa"}'] == 5
    assert got['tunsec_esp_sas{direction="in",state="larval"}'] == 4
    assert got['tunsec_child_sas{child="net",connection="gw"}'] == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
        (b"\x16\x03\x01 garbage\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b""),   # too long: closed unanswered
        (b"GET /metrics HTTP/1.1\r\n", b""),                                     # never finished: closed
    ],
)
def test_requests_that_are_not_a_scrape(monkeypatch: pytest.MonkeyPatch, request_bytes: bytes,
                                        status: bytes) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.2)

    async def never() -> pipe.Reply:
        raise AssertionError("no DUMP for a request that is not a scrape")

    async def run() -> bytes:
        async with serving(source(never)) as port:
            return await http(port, request_bytes)

    answer = asyncio.run(run())
    assert answer.split(b"\r\n", 1)[0] == status



def _daemon(worker_malformed: int = 0) -> Any:
    """What status_document reads of the daemon, for a worker in-process (no TUN, no sockets)."""
    from types import SimpleNamespace

    from tunsec.ctlsocket import Counts
    return SimpleNamespace(ctl_counts=Counts(), route_keeper=None,
        cfg=SimpleNamespace(tunsec=SimpleNamespace(tun="tun0")), mtu=1400, tun=None,
        sockets=SimpleNamespace(offloads=lambda: []),
        worker=SimpleNamespace(pid=None, malformed=worker_malformed, late=0, dump_overflows=0, stderr_dropped=0),
        unowned=SimpleNamespace(count=0), services=[],
        calm=None,
        restarts=[], started=0.0, service_status=lambda dump: [{"tunnels": []}])


def test_the_worker_gauges_follow_its_sas_in_status_and_in_the_scrape() -> None:
    """The worker's gauges (its live C allocations, its SPD) as `tunsec status` and a scrape show
    them, from the DUMP of a real worker (its request handling and C fast path in-process): up with
    an SA and a policy added, back where they were with them deleted."""
    import os

    from test_ikeservice_peers import InProcessWorker

    from tunsec.dataplane.pipe import Action, Alg, Direction, Endpoint, Lifetime, Policy, SaSpec, Selector
    from tunsec.status import render, status_document, status_document_sliced

    peer = Endpoint(ipaddress.ip_address("192.0.2.2"), 4500)
    sel = Selector.from_networks(ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("10.2.0.0/24"))
    out = SaSpec(spi=0x2000, direction=Direction.OUT, alg=Alg.AES128GCM16, key=os.urandom(20), esn=False,
                 replay_window=0, reqid=5, local=Endpoint(ipaddress.ip_address("192.0.2.1"), 4500), remote=peer,
                 soft=Lifetime(), hard=Lifetime(), selectors=(sel,))
    names = ("live_sa_entries", "live_cipher_contexts", "spd_entries", "spd_slots", "ike_spis", "malloc_trims",
             "sandbox")

    async def run() -> list[tuple[dict[str, int], dict[str, float], str]]:
        gc.collect()   # the gauges are process-wide: no earlier test's Dataplane may be freed midway
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        daemon = _daemon()

        async def dump() -> pipe.Reply:
            return pipe.join_dump_replies(await worker.request(lambda r: pipe.Dump(r)))
        src = metrics.Source(dump=dump, document=lambda reply: status_document_sliced(daemon, reply),
                             events=lambda: None, worker_restarts=lambda: 0, worker_pid=lambda: None)
        seen = []
        now = [0.0]
        async with serving(src, lambda: now[0]) as port:
            for change in (None, lambda r: pipe.Add(r, out),
                           lambda r: pipe.SpdAdd(r, Policy(9, 1, Action.PROTECT, 5, sel)),
                           lambda r: pipe.Delete(r, 0x2000, Direction.OUT, peer), lambda r: pipe.SpdDelete(r, 9)):
                if change is not None:
                    await worker.request(change)
                now[0] += metrics.CACHE_AGE   # the last scrape's body is too old now
                doc = status_document(daemon, await dump())
                seen.append((doc["worker"]["gauges"], samples(await http(port, SCRAPE)), render(doc)))
        return seen

    (before, added, with_policy, deleted, after) = asyncio.run(run())
    for gauges, scraped, text in (before, added, with_policy, deleted, after):
        assert set(gauges) == set(names)
        assert {n: scraped[f"tunsec_worker_{n}"] for n in names} == gauges   # the scrape shows what status does
        assert "worker: " + ", ".join(f"{n} {gauges[n]}" for n in names) in text
    assert added[0]["live_sa_entries"] == before[0]["live_sa_entries"] + 1
    assert added[0]["live_cipher_contexts"] > before[0]["live_cipher_contexts"]
    assert with_policy[0]["spd_entries"] == added[0]["spd_entries"] + 1
    assert deleted[0]["live_sa_entries"] == before[0]["live_sa_entries"]
    assert deleted[0]["live_cipher_contexts"] == before[0]["live_cipher_contexts"]
    assert with_policy[0]["spd_slots"] >= 1
    # the SPD keeps its smallest allocation (16 slots) once it had one
    assert {**after[0], "spd_slots": 0} == {**before[0], "spd_slots": 0} and after[0]["spd_slots"] <= 16


def test_two_clients_with_the_same_outbound_spi_get_a_series_each() -> None:
    """An outbound SPI is the peer's choice: two clients of one %any connection may pick the same."""
    async def two_clients(reply: pipe.Reply) -> dict[str, Any]:
        sa = {"direction": "out", "state": "mature", "spi": "deadbeef"}
        return {"ike_sas": [{"name": "rw", "state": "established", "children": [
                    {"name": "net", "spi_in": f"c100000{n}", "spi_out": "deadbeef", "remote": remote}]}
                    for n, remote in ((1, "198.51.100.1[4500]"), (2, "203.0.113.66[4500]"))],
                "tunnels": [], "policies": [],
                "sas": [{**sa, "remote": "198.51.100.1[4500]", "age_seconds": 10, "packets": 1000, "bytes": 10**6},
                        {**sa, "remote": "203.0.113.66[4500]", "age_seconds": 5, "packets": 1, "bytes": 100}]}

    async def answer() -> pipe.Reply:
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def run() -> bytes:
        src = metrics.Source(dump=answer, document=two_clients, events=lambda: None, worker_restarts=lambda: 0,
                             worker_pid=lambda: None)
        async with serving(src) as port:
            return await http(port, SCRAPE)

    body = asyncio.run(run())
    lines = [line.rsplit(" ", 1)[0] for line in body.partition(b"\r\n\r\n")[2].decode().splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == len(set(lines))   # no label set twice: Prometheus would keep only one
    got = samples(body)
    labels = 'child="net",connection="rw",direction="out",remote="{}",spi="deadbeef"'
    assert got["tunsec_child_sa_packets_total{" + labels.format("198.51.100.1[4500]") + "}"] == 1000
    assert got["tunsec_child_sa_packets_total{" + labels.format("203.0.113.66[4500]") + "}"] == 1
    assert got["tunsec_child_sa_age_seconds{" + labels.format("203.0.113.66[4500]") + "}"] == 5


def test_scrapes_within_the_cache_age_share_one_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 scrapes at once and 50 after them, the clock standing still: one status document is built
    (each costs seconds at thousands of clients, on the event loop); once the body is CACHE_AGE
    old the next scrape builds a new one, with the worker's new counters."""
    monkeypatch.setattr(metrics, "MAX_PER_SOURCE", metrics.MAX_CLIENTS)   # all 16 from loopback
    now = [100.0]
    built = []

    async def answer() -> pipe.Reply:
        await asyncio.sleep(0.01)   # the DUMP takes a while: the 16 arrive while it is under way
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def counted(reply: pipe.Reply) -> dict[str, Any]:
        built.append(now[0])
        doc = await document(reply)
        doc["sas"][0]["packets"] = len(built)   # which build a body came from
        return doc

    async def run() -> tuple[list[bytes], list[bytes], bytes]:
        src = metrics.Source(dump=answer, document=counted, events=lambda: None, worker_restarts=lambda: 0,
                             worker_pid=lambda: None)
        async with serving(src, lambda: now[0]) as port:
            together = await asyncio.gather(*(http(port, SCRAPE) for _ in range(16)))
            after = [await http(port, SCRAPE) for _ in range(50)]
            now[0] += metrics.CACHE_AGE
            return together, after, await http(port, SCRAPE)

    together, after, later = asyncio.run(run())
    packets = 'tunsec_child_sa_packets_total{child="net",connection="gw",direction="in",remote="192.0.2.2[4500]",' \
              'spi="0000abcd"}'
    assert len(built) <= 2, built   # was one per scrape: 66
    assert {samples(a)[packets] for a in [*together, *after]} <= {1, 2}
    assert samples(later)[packets] == len(built) and built[-1] == 100.0 + metrics.CACHE_AGE


def test_each_format_is_built_once_and_a_bad_accept_header_gets_text() -> None:
    """Prometheus's OpenMetrics and the text format each have a body; an Accept header asking for
    a version that does not parse (prometheus_client's choose_encoder raised on it, and put the
    version asked for in its Content-Type: a build per version) is answered as any other."""
    built = []

    async def answer() -> pipe.Reply:
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def counted(reply: pipe.Reply) -> dict[str, Any]:
        built.append(1)
        return await document(reply)

    accepts = ["application/openmetrics-text; version=abc", "text/plain; version=x.y",
               "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3",
               *(f"application/openmetrics-text; version=1.0.{n}" for n in range(10)), "text/plain", ""]

    async def run() -> list[bytes]:
        src = metrics.Source(dump=answer, document=counted, events=lambda: None, worker_restarts=lambda: 0,
                             worker_pid=lambda: None)
        async with serving(src, lambda: 0.0) as port:
            return [await http(port, b"GET /metrics HTTP/1.1\r\nAccept: " + a.encode() + b"\r\n\r\n") for a in accepts]

    answers = asyncio.run(run())
    heads = [a.partition(b"\r\n\r\n")[0].split(b"\r\n") for a in answers]
    assert all(h[0] == b"HTTP/1.1 200 OK" for h in heads), heads
    types = {a: h[1].decode() for a, h in zip(accepts, heads, strict=True)}
    assert types["text/plain; version=x.y"] == "Content-Type: text/plain; version=0.0.4; charset=utf-8"
    assert types["application/openmetrics-text; version=abc"] == \
        "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert len(set(types.values())) == 2 and len(built) == 2
    assert answers[0].endswith(b"# EOF\n") and samples(answers[-1])["tunsec_worker_up"] == 1


# run in a network namespace of its own (unshare --net), where 192.0.2.1-3 are on lo: two sources
_TWO_SOURCES = """
import asyncio, ipaddress, json, sys
sys.path[:0] = sys.argv[1:]
from test_metrics_endpoint import SCRAPE, source
from tunsec import metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe

async def connect(port, src):
    return await asyncio.open_connection("192.0.2.1", port, local_addr=(src, 0))

async def ask(port, src):
    reader, writer = await connect(port, src)
    writer.write(SCRAPE)
    try:
        answer = await reader.read()
    except ConnectionResetError:
        answer = b""   # closed with our request unread
    writer.close()
    return answer.split(b"\\r\\n", 1)[0].decode()

async def main():
    async def answer():
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)
    server = await metrics.start(ListenAddress(ipaddress.ip_address("192.0.2.1"), 9101), source(answer),
                                 clock=lambda: 0.0)
    idle = [await connect(9101, "192.0.2.2") for _ in range(metrics.MAX_PER_SOURCE)]
    for _ in range(1000):   # until the server took them (accepted in order, but in its own time)
        if server._per_source["192.0.2.2"] == metrics.MAX_PER_SOURCE:
            break
        await asyncio.sleep(0.005)
    over = await ask(9101, "192.0.2.2")
    other = await ask(9101, "192.0.2.3")
    reader, writer = await connect(9101, "192.0.2.3")
    writer.write(SCRAPE)
    body = (await reader.read()).decode()
    for _, w in idle:
        w.close()
    await server.close()
    refused = [line for line in body.splitlines() if line.startswith("tunsec_metrics_connections_refused_total")]
    print(json.dumps({"over": over, "other": other, "refused": refused}))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_a_source_over_its_share_is_refused_while_another_is_served() -> None:
    """One address holding MAX_PER_SOURCE connections idle (no request: each would hold its slot for
    REQUEST_TIMEOUT) gets nothing on another, while a scraper at another address is served (16
    idle connections from one client held every slot before)."""
    here = os.path.dirname(os.path.abspath(__file__))
    setup = "ip link set lo up && for a in 1 2 3; do ip addr add 192.0.2.$a/32 dev lo; done && exec \"$@\""
    src = os.path.dirname(os.path.dirname(os.path.abspath(metrics.__file__)))
    out = subprocess.run(["unshare", "--net", "sh", "-c", setup, "sh", sys.executable, "-c", _TWO_SOURCES,
                          here, src], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["over"] == ""   # closed unanswered
    assert got["other"] == "HTTP/1.1 200 OK"
    assert got["refused"] == ["tunsec_metrics_connections_refused_total 1.0"]


# in a network namespace of its own (unshare --net), 192.0.2.1-6 on lo: four sources at their share,
# then Prometheus at a fifth
_FOUR_SOURCES = """
import asyncio, ipaddress, json, sys
sys.path[:0] = sys.argv[1:]
from test_metrics_endpoint import SCRAPE, source
from tunsec import metrics
from tunsec.conf.tunsec_section import ListenAddress
from tunsec.dataplane import pipe

async def connect(src):
    return await asyncio.open_connection("192.0.2.1", 9101, local_addr=(src, 0))

async def scrape(src):
    reader, writer = await connect(src)
    writer.write(SCRAPE)
    try:
        answer = await reader.read()
    except ConnectionResetError:
        answer = b""
    writer.close()
    return answer.decode()

async def main():
    async def answer():
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)
    server = await metrics.start(ListenAddress(ipaddress.ip_address("192.0.2.1"), 9101), source(answer),
                                 clock=lambda: 0.0)
    attackers = ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"]
    idle = [await connect(a) for a in attackers for _ in range(metrics.MAX_PER_SOURCE)]   # send nothing
    for _ in range(1000):   # until the server took them all (in its own time)
        if server._clients == metrics.MAX_CLIENTS:
            break
        await asyncio.sleep(0.005)
    held = dict(server._per_source)
    first = await scrape("192.0.2.6")
    body = await scrape("192.0.2.6")   # its counters: the first scrape's eviction in them
    gone = sum(1 for r, _ in idle if r.at_eof())
    for _, w in idle:
        w.close()
    await server.close()
    counted = [line for line in body.splitlines() if line.startswith("tunsec_metrics_connections_")]
    print(json.dumps({"held": held, "first": first.split("\\r\\n", 1)[0], "gone": gone, "counted": counted}))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_sources_at_their_share_holding_every_slot_cannot_shut_out_another() -> None:
    """Four addresses, each holding its MAX_PER_SOURCE connections idle, take all MAX_CLIENTS slots
    (each held for REQUEST_TIMEOUT, and opened again after): a scraper at a fifth address is served
    all the same, one idle connection closed for it and counted (it got nothing, 16 idle connections
    shut Prometheus out before)."""
    here = os.path.dirname(os.path.abspath(__file__))
    setup = "ip link set lo up && for a in 1 2 3 4 5 6; do ip addr add 192.0.2.$a/32 dev lo; done && exec \"$@\""
    src = os.path.dirname(os.path.dirname(os.path.abspath(metrics.__file__)))
    out = subprocess.run(["unshare", "--net", "sh", "-c", setup, "sh", sys.executable, "-c", _FOUR_SOURCES,
                          here, src], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["held"] == {f"192.0.2.{n}": metrics.MAX_PER_SOURCE for n in (2, 3, 4, 5)}
    assert got["first"] == "HTTP/1.1 200 OK"
    assert got["gone"] == 1   # one idle connection closed, the others kept
    assert sorted(got["counted"]) == ["tunsec_metrics_connections_evicted_total 1.0",
                                      "tunsec_metrics_connections_refused_total 0.0"]


def test_a_connection_being_answered_is_never_closed_for_a_newer_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slot held by a scrape whose request came (their DUMP held back): the next connection is
    refused, none of them is cut; once the DUMP comes, all of them get their answer."""
    monkeypatch.setattr(metrics, "MAX_PER_SOURCE", metrics.MAX_CLIENTS)   # all from loopback
    monkeypatch.setattr(metrics, "DUMP_TIMEOUT", 600.0)   # held until the test lets it go
    go = asyncio.Event()

    async def held() -> pipe.Reply:
        await go.wait()
        return pipe.Reply(7, pipe.MsgType.DUMP, pipe.Errno.OK)

    async def run() -> tuple[list[bytes], bytes, int, int]:
        server = await metrics.start(LOOPBACK, source(held), lambda: 0.0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        try:
            scrapes = [asyncio.ensure_future(http(port, SCRAPE)) for _ in range(metrics.MAX_CLIENTS)]
            while not (server._clients == metrics.MAX_CLIENTS and all(c.answering for c in server._conns)):
                await asyncio.sleep(0.005)
            late = await http(port, SCRAPE)
            go.set()
            return list(await asyncio.gather(*scrapes)), late, server.refused, server.evicted
        finally:
            await server.close()

    answers, late, refused, evicted = asyncio.run(run())
    assert late == b"" and refused == 1 and evicted == 0
    assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)


@pytest.mark.parametrize(("peer", "source"), [
    (("192.0.2.7", 5000), "192.0.2.7"), (("127.0.0.9", 5000), "loopback"), (("::1", 5000, 0, 0), "loopback"),
    (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"), (("fe80::1%eth0", 5000, 0, 2), "fe80::/64"),
    (None, "?"), (("not an address", 1), "?")])
def test_sources_are_addresses_ipv6_prefixes_and_loopback_as_one(peer: Any, source: str) -> None:
    assert metrics.source_of(peer) == source


def test_a_ban_of_no_address_gives_no_label_of_its_text() -> None:
    """AuthBan counts a source no socket gives (not an address) as given: its text is no label value."""
    family = metrics.auth_ban_family([{"source": "2001:db8::/64"}, {"source": "x:y/<script>"}, {"source": "a:b"}])
    assert {(s.labels["family"], s.labels["prefix_length"]): s.value for s in family.samples} == {
        ("ipv4", "32"): 0, ("ipv6", "48"): 0, ("ipv6", "56"): 0, ("ipv6", "64"): 1, ("ipv6", "other"): 2}
