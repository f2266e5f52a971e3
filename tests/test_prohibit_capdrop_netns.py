"""Least privilege for a control process that kept CAP_NET_ADMIN at the drop only because it held blocks
(prohibit routes): once none is held and nothing else needs it (no route of its own on a TUN it did not
make, no virtual IPs), it gives CAP_NET_ADMIN up for good, in every thread, and from then on behaves as a
start without blocks (a reload's new route is the command for root).  Real `tunsec up` in a namespace;
the capability sets read from /proc/PID/task/*/status of the real control process and its worker."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_prohibit_two_instances as two
from conftest import netns_unavailable
from control import status
from reachable import scratch_dir
from test_prohibit_record_netns import ike_conf
from test_prohibit_two_instances import Instance, prohibits

from tunsec.bench.netns import scratch_netns

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

NET_ADMIN = 1 << 12


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("capdrop", "ip addr add 192.0.2.1/32 dev lo") as name:
        yield name


@pytest.fixture
def reachable() -> Iterator[Path]:
    with scratch_dir("tunsec-capdrop-") as d:
        yield d


def caps(pid: int) -> dict[str, tuple[int, int]]:
    """(CapEff, CapPrm) of every thread of pid."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except FileNotFoundError:   # a thread that ended meanwhile
            continue
        st = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        out[task] = (int(st["CapEff"], 16), int(st["CapPrm"], 16))
    return out


def worker_and_spawner(sock: Path) -> list[int]:
    worker = int(status(sock)["worker"]["pid"])
    ppid = int(next(line for line in Path(f"/proc/{worker}/status").read_text().splitlines()
                    if line.startswith("PPid:")).split()[1])
    spawner = "tunsec.dataplane.spawner" in Path(f"/proc/{ppid}/cmdline").read_text()
    return [worker, ppid] if spawner else [worker]


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ip", *args], check=True)


def test_cap_net_admin_kept_for_a_block_goes_with_the_last_block(ns: str, reachable: Path) -> None:
    """A TUN made beforehand with root's routes to 10.3.0.0/24 and 10.5.0.0/24 (metric 100: not tunsec's),
    and a block of 10.3.0.0/24 a killed run left, in its record.  The start keeps that block (wanted,
    no route of its own yet) and so CAP_NET_ADMIN, as before.  A reload to 10.5.0.0/24 lifts the block:
    CAP_NET_ADMIN goes from every thread's effective and permitted sets (it stayed for the process's
    life); a further reload adding 10.6.0.0/24 prints the command for root, as a start without blocks
    does (it was added with the capability); the stop is clean.  The worker holds none throughout."""
    pw = pwd.getpwnam("nobody")
    a = Instance(ns, reachable / "a", "capd0", "192.0.2.1")
    a.dir.mkdir()
    # root's, as the configuration in it: root acts on no file the user may change (review revctl F1)
    state = reachable / "state"
    subprocess.run(["install", "-d", "-o", "nobody", "-m", "0700", str(state)], check=True)
    ip(ns, "tuntap", "add", "dev", a.tun, "mode", "tun", "user", "nobody")
    ip(ns, "link", "set", a.tun, "up")
    for net in ("10.3.0.0/24", "10.5.0.0/24"):
        ip(ns, "route", "add", net, "dev", a.tun, "metric", "100", "table", "116")   # tunsec's table (fixks5)
    ip(ns, "route", "add", "prohibit", "10.3.0.0/24", "proto", "116", "table", "116")
    (state / two.record_name(ns, a.tun)).write_text(json.dumps({"networks": ["10.3.0.0/24"]}) + "\n")
    os.chown(state / two.record_name(ns, a.tun), pw.pw_uid, pw.pw_gid)
    try:
        ike_conf(a, state, "nobody", "10.3.0.0/24")
        a.up()
        assert a.proc is not None
        control = a.proc.pid
        assert prohibits(ns) == ["10.3.0.0/24"], a.log.read_text()
        assert set(caps(control).values()) == {(NET_ADMIN, NET_ADMIN)}, (caps(control), a.log.read_text())
        for pid in worker_and_spawner(a.sock):
            assert set(caps(pid).values()) == {(0, 0)}, (pid, caps(pid))

        ike_conf(a, state, "nobody", "10.5.0.0/24")
        r = a.reload()
        assert r.returncode == 0, (r.stdout, r.stderr, a.log.read_text())
        assert prohibits(ns) == []
        assert set(caps(control).values()) == {(0, 0)}, (caps(control), a.log.read_text())
        assert "gave up CAP_NET_ADMIN: it holds no prohibit route any more" in a.log.read_text()
        for pid in worker_and_spawner(a.sock):
            assert set(caps(pid).values()) == {(0, 0)}, (pid, caps(pid))

        ike_conf(a, state, "nobody", "10.5.0.0/24", "10.6.0.0/24")
        r = a.reload()
        assert r.returncode == 0, (r.stdout, r.stderr, a.log.read_text())
        out = r.stdout + r.stderr
        assert "routes not added (nobody may not change routes, no CAP_NET_ADMIN): as root run ip route add " \
               "10.6.0.0/24 dev capd0" in out, out
        assert prohibits(ns) == []
        a.stop()
        text = a.log.read_text()
        assert "Traceback" not in text and "at exit:" not in text, text
    finally:
        a.stop()


def test_a_route_added_on_the_kept_tun_while_it_was_held_keeps_it_for_the_exit(ns: str, reachable: Path) -> None:
    """As above, but the reload that lifts the block also routes 10.6.0.0/24, added by tunsec on the TUN it
    did not make while it still held CAP_NET_ADMIN: that route must go at exit (the TUN outlives it), so
    the capability stays and the stop removes the route."""
    pw = pwd.getpwnam("nobody")
    a = Instance(ns, reachable / "a", "capd1", "192.0.2.1")
    a.dir.mkdir()
    # root's, as the configuration in it: root acts on no file the user may change (review revctl F1)
    state = reachable / "state"
    subprocess.run(["install", "-d", "-o", "nobody", "-m", "0700", str(state)], check=True)
    ip(ns, "tuntap", "add", "dev", a.tun, "mode", "tun", "user", "nobody")
    ip(ns, "link", "set", a.tun, "up")
    ip(ns, "route", "add", "10.3.0.0/24", "dev", a.tun, "metric", "100", "table", "116")   # tunsec's table
    ip(ns, "route", "add", "prohibit", "10.3.0.0/24", "proto", "116", "table", "116")
    (state / two.record_name(ns, a.tun)).write_text(json.dumps({"networks": ["10.3.0.0/24"]}) + "\n")
    os.chown(state / two.record_name(ns, a.tun), pw.pw_uid, pw.pw_gid)
    try:
        ike_conf(a, state, "nobody", "10.3.0.0/24")
        a.up()
        assert a.proc is not None
        control = a.proc.pid
        ike_conf(a, state, "nobody", "10.6.0.0/24")
        r = a.reload()
        assert r.returncode == 0 and "routes added: 10.6.0.0/24" in r.stdout + r.stderr, (r.stdout, r.stderr)
        assert prohibits(ns) == []
        assert set(caps(control).values()) == {(NET_ADMIN, NET_ADMIN)}, (caps(control), a.log.read_text())
        a.stop()
        routes = subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "show", "dev", a.tun, "table", "116"],
                                capture_output=True, text=True, check=True).stdout
        assert "10.6.0.0/24" not in routes and "10.3.0.0/24" in routes, routes
    finally:
        a.stop()
