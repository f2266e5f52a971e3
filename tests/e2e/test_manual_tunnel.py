"""tunsec <-> tunsec with manual keys, end to end in two namespaces."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import control
import pytest
from conftest import Side, TunnelOptions, TunsecPair

from tunsec.bench.netns import TwoHosts, wait_until


def iperf3(topo: TwoHosts, seconds: int = 3, streams: int = 1) -> dict[str, Any]:
    srv = topo.popen(topo.b, ["iperf3", "-s", "-1", "-B", topo.b.inner4])
    try:
        assert wait_until(lambda: _listening(topo), 10), "iperf3 server did not start"
        r = topo.run(topo.a, ["iperf3", "-c", topo.b.inner4, "-B", topo.a.inner4, "-t", str(seconds),
                              "-P", str(streams), "--json"], check=False, timeout=seconds + 30)
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc
    finally:
        topo.stop(srv)


def _listening(topo: TwoHosts) -> bool:
    r = topo.run(topo.b, ["ss", "-ltn"], check=False)
    return ":5201" in r.stdout


def sa(side_doc: dict[str, Any], direction: str) -> dict[str, Any]:
    (found,) = [s for s in side_doc["tunnels"][0]["sas"] if s["direction"] == direction]
    return found


def test_ping_both_ways_ipv4_and_ipv6_inner(pair: TunsecPair) -> None:
    topo = pair.topo
    assert topo.ping(topo.a, topo.b.inner4, count=3, src=topo.a.inner4)
    assert topo.ping(topo.b, topo.a.inner4, count=3, src=topo.b.inner4)
    assert topo.ping(topo.a, topo.b.inner6, count=3, src=topo.a.inner6)
    assert topo.ping(topo.b, topo.a.inner6, count=3, src=topo.b.inner6)
    a, b = pair.a.status_json(topo), pair.b.status_json(topo)
    # 12 echo requests out of A: 6 of its own pings' requests and 6 replies to B's
    assert sa(a, "out")["packets"] == 12 == sa(b, "in")["packets"]
    assert sa(b, "out")["packets"] == 12 == sa(a, "in")["packets"]
    for doc in (a, b):
        assert doc["drops"]["auth"] == doc["drops"]["replay"] == doc["drops"]["malformed"] == 0


def test_iperf3_tcp_through_the_tunnel(pair: TunsecPair) -> None:
    topo = pair.topo
    doc = iperf3(topo, seconds=3)
    received = doc["end"]["sum_received"]["bytes"]
    assert received > 10_000_000, doc.get("error")
    a, b = pair.a.status_json(topo), pair.b.status_json(topo)
    assert sa(a, "out")["bytes"] >= received     # every byte iperf3 got went through A's outbound SA
    assert sa(b, "in")["packets"] > 1000
    assert b["drops"]["auth"] == 0 and b["drops"]["malformed"] == 0


def test_status_shows_counters_and_never_keys(pair: TunsecPair) -> None:
    topo = pair.topo
    assert topo.ping(topo.a, topo.b.inner4, count=2, src=topo.a.inner4)
    for side in (pair.a, pair.b):
        human = side.status(topo)
        assert human.returncode == 0
        assert "c0010001" in human.stdout and "c0020001" in human.stdout
        assert "drops:" in human.stdout
        machine = side.status(topo, "--json").stdout
        for key in pair.o.keys.values():
            for text in (human.stdout, machine, side.log.read_text()):
                assert key not in text and key.upper() not in text


def test_status_by_socket_path(pair: TunsecPair) -> None:
    r = pair.topo.run(pair.topo.a, [sys.executable, "-m", "tunsec", "status", "--socket", str(pair.a.sock)],
                      check=False)
    assert r.returncode == 0 and "c0020001" in r.stdout


def test_wrong_key_is_counted_as_auth_failure(topo: TwoHosts) -> None:
    pair = TunsecPair(topo, TunnelOptions(wrong_key_on_b=True))
    pair.start_both()
    assert not topo.ping(topo.a, topo.b.inner4, count=2, src=topo.a.inner4, timeout=1)
    # counted when B's worker got to them: not always within ping's second on a loaded machine
    assert wait_until(lambda: pair.b.status_json(topo)["drops"]["auth"] >= 2, 10), pair.b.status_json(topo)
    b = pair.b.status_json(topo)
    assert b["drops"]["auth"] >= 2
    assert sa(b, "in")["auth_drops"] >= 2 and sa(b, "in")["packets"] == 0


@pytest.mark.parametrize("esp", ["aes256gcm16"])
def test_aes256_esn_over_ipv6_outer(topo: TwoHosts, esp: str) -> None:
    pair = TunsecPair(topo, TunnelOptions(esp=esp, esn=True, outer6=True))
    pair.start_both()
    assert topo.ping(topo.a, topo.b.inner4, count=2, src=topo.a.inner4)
    assert topo.ping(topo.b, topo.a.inner6, count=2, src=topo.b.inner6)
    a = pair.a.status_json(topo)
    assert sa(a, "out")["esn"] is True and sa(a, "out")["alg"] == "aes256gcm16"
    assert a["tunnels"][0]["remote"].startswith("2001:db8::2")
    assert a["tun"]["mtu"] == 1500 - 40 - 8 - 32 - 2   # IPv6 outer header, UDP, ESP, trailer


BURST_SCRIPT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for i in range(int(sys.argv[3])):
    s.sendto(b"x" * 64, (sys.argv[2], 9))
    time.sleep(0.001)
"""


def _tun_exists(topo: TwoHosts, side: Side, name: str = "tunsec0") -> bool:
    return topo.run(side.host, ["ip", "link", "show", name], check=False).returncode == 0


def _worker_pids(topo: TwoHosts, side: Side) -> list[int]:
    pid = side.status_json(topo)["worker"]["pid"]
    return [int(pid)]


def test_sigterm_removes_tun_routes_socket_and_worker(pair: TunsecPair) -> None:
    topo, side = pair.topo, pair.a
    (worker,) = _worker_pids(topo, side)
    assert _tun_exists(topo, side)
    assert side.proc is not None
    side.proc.send_signal(signal.SIGTERM)
    assert side.proc.wait(timeout=10) == 0
    assert not _tun_exists(topo, side)
    routes = topo.run(side.host, ["ip", "route", "show", "table", "all", topo.b.inner_net4], check=False).stdout
    assert routes.strip() == ""
    # nothing listens there any more; the file itself stays when the directory is root's (tunsec made it
    # root:<the user's group> 0750 so the user cannot replace the socket; the next start clears it)
    assert not side.sock.exists() or _refused(side.sock)
    assert wait_until(lambda: not os.path.exists(f"/proc/{worker}"), 5), "worker left behind"


def _refused(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except ConnectionRefusedError:
            return True
    return False


def test_sigint_also_shuts_down_cleanly(pair: TunsecPair) -> None:
    assert pair.b.proc is not None
    pair.b.proc.send_signal(signal.SIGINT)
    assert pair.b.proc.wait(timeout=10) == 0
    assert not _tun_exists(pair.topo, pair.b)


def test_attaches_to_existing_tun_and_leaves_it(topo: TwoHosts) -> None:
    topo.run(topo.a, ["ip", "tuntap", "add", "mode", "tun", "name", "tsx0"])
    pair = TunsecPair(topo, TunnelOptions(tun="tsx0", inner6=False))
    # B uses the default name; only A attaches to a pre-made device
    pair.b.conf.write_text(pair.b.conf.read_text().replace("tun = tsx0", "tun = tunsec0"))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4), (
        pair.logs() + pair.a.status(topo).stdout + pair.b.status(topo).stdout
        + topo.run(topo.a, ["ip", "-d", "link", "show", "tsx0"], check=False).stdout
        + topo.run(topo.a, ["ip", "route"], check=False).stdout)
    assert pair.a.status_json(topo)["tun"]["created"] is False
    # the control process keeps CAP_NET_ADMIN (only) to take its routes off the TUN that outlives it
    worker = pair.a.status_json(topo)["worker"]["pid"]
    control = _parent(worker)
    if "tunsec.dataplane.spawner" in Path(f"/proc/{control}/cmdline").read_text():   # the worker's own user
        control = _parent(control)
    caps = dict(line.split(":\t") for line in Path(f"/proc/{control}/status").read_text().splitlines()
                if line.startswith("Cap"))
    assert (int(caps["CapEff"], 16), int(caps["CapPrm"], 16), int(caps["CapBnd"], 16)) == (1 << 12, 1 << 12, 0), caps
    # a single-queue device means one loop thread and one ESP socket: a second
    # SO_REUSEPORT socket nobody reads would swallow part of the peer's traffic
    sockets = topo.run(topo.a, ["ss", "-uan", "sport", "= :4500"], check=False).stdout.splitlines()[1:]
    assert len(sockets) == 1, sockets
    assert pair.a.proc is not None
    pair.a.proc.send_signal(signal.SIGTERM)
    assert pair.a.proc.wait(timeout=10) == 0
    assert _tun_exists(topo, pair.a, "tsx0"), "a TUN tunsec did not create must survive it"
    routes = topo.run(topo.a, ["ip", "route", "show", "table", "all", "dev", "tsx0"], check=False).stdout
    assert topo.b.inner_net4 not in routes


def test_worker_death_is_survived_without_losing_state(pair: TunsecPair) -> None:
    topo, side = pair.topo, pair.a
    assert topo.ping(topo.a, topo.b.inner4, count=2, src=topo.a.inner4)
    before = side.status_json(topo)
    old = before["worker"]["pid"]
    os.kill(old, signal.SIGKILL)
    # polled on the socket (control.py: no interpreter per poll); the CLI then once
    assert wait_until(lambda: (st := control.status_if_ok(side.sock)) is not None and st["worker"]["pid"] != old, 15)
    assert side.status(topo).returncode == 0
    after = side.status_json(topo)
    assert after["worker"]["restarts"] == 1
    # the SAs are back: the outbound sequence resumed past everything A reserved
    # before, so B's replay window never sees a number twice (B reserves past
    # the jump on the first packet); A's inbound SA counts all B may have sent
    # as seen, so B's replies get through once B passes A's persisted mark
    # (a small block at this rate)
    topo.run(topo.b, [sys.executable, "-c", BURST_SCRIPT, topo.b.inner4, topo.a.inner4, "300"], timeout=30)
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4), pair.logs()
    assert sa(side.status_json(topo), "out")["seq"] > sa(before, "out")["seq"] + 60000
    b = pair.b.status_json(topo)
    assert b["drops"]["replay"] == 0 and b["drops"]["unreserved"] >= 1
    assert "restarting" in side.log.read_text()


def test_second_instance_on_same_socket_is_refused(pair: TunsecPair) -> None:
    r = subprocess.run(
        ["ip", "netns", "exec", pair.topo.a.ns, sys.executable, "-m", "tunsec", "up", "-c", str(pair.a.conf)],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode != 0
    assert "another tunsec is running" in r.stderr
    assert pair.topo.ping(pair.topo.a, pair.topo.b.inner4, count=1, src=pair.topo.a.inner4)


def _parent(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text().split("PPid:")[1].split()[0]


def _uids(pid: int | str) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return set(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:])


def test_worker_runs_unprivileged_when_asked(topo: TwoHosts) -> None:
    """user = nobody and worker_user = daemon: each process becomes the one named."""
    extra = "  user = nobody\n  worker_user = daemon\n"
    pair = TunsecPair(topo, TunnelOptions(tunsec_extra=extra, inner6=False))
    pair.start_both()
    assert topo.wait_ping(topo.a, topo.b.inner4, src=topo.a.inner4)
    pid = pair.a.status_json(topo)["worker"]["pid"]
    # real, effective, saved and filesystem uid: daemon for the worker (and its spawner), nobody for control
    assert _uids(pid) == {"1"} and _uids(_parent(pid)) == {"1"}
    assert _uids(_parent(int(_parent(pid)))) == {"65534"}
    assert "running as nobody" in pair.a.log.read_text() and "running as daemon" in pair.a.log.read_text()
