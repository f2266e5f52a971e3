"""Review revks F1: a start that fails after it took a killed run's kill switch over removes it, and the
killed run's networks then leave in clear (until a start succeeds: never, if none does).

daemon.prepare() judges the device (KillSwitch.ensure: a killed run's is taken over, ``owned``) and only
then does the rest of the start (the control socket, the metrics listener, the worker) in Daemon.run();
any failure there ends in cli.cmd_up's ``finally: daemon.close_network()``, whose KillSwitch.close()
removes the device as at a clean stop.  killswitch.py's own rule ("a start that fails ... leaves it: it
may be a killed run's, failing closed") holds only for a failure before the device was looked at.

Real parts: tunsec in namespace a of RoutedHosts (b runs no IKE: only routes are looked at), kill -9 by
PID, a second `tunsec up` that fails on its metrics listener (an address the host does not have), the
kernel's route lookups."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from collections.abc import Iterator

import pytest
import tunsec_table
from ike_peers import Conn, TunsecIke
from reachable import python_argv
from routed_hosts import RoutedHosts
from test_kill_switch_every_route import kill9, links, path

from tunsec.bench.netns import wait_until
from tunsec.conf.tunsec_section import WORKER_USER
from tunsec.dataplane.killswitch import device_name

DEVICE = device_name("tunsec0")


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revks")
    with t:
        yield t


def test_a_failed_start_after_a_kill9_keeps_the_killed_runs_kill_switch(topo: RoutedHosts) -> None:
    """On main: the failed start removes the device, and the site's network takes the default route (veth0)."""
    conn = Conn(topo.a, topo.b, local_ts=topo.a.inner_net4, remote_ts=topo.b.inner_net4)
    client = TunsecIke(topo, conn)
    client.start()
    kill9(topo, client)
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)   # held: fails closed
    # the restart (systemd's Restart=on-failure) fails after prepare(): here its metrics listener
    client.tunsec_extra = "  metrics_listen = 203.0.113.250:9100\n"
    client.write()
    r = topo.run(topo.a, [*python_argv(), "-m", "tunsec", "up", "-c", str(client.conf)], check=False, timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "cannot start" in r.stdout + r.stderr + client.log_tail(), r.stdout + r.stderr
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), (path(topo, topo.b.inner4), links(topo))


def linkdown(topo: RoutedHosts) -> bool:
    """The kill switch's routes are marked linkdown (the kernel does it once the carrier is off: after the
    linkwatch's delay, not at the kill itself)."""
    return all("linkdown" in tunsec_table.show(fam, "dev", DEVICE, ns=topo.a.ns) for fam in ("-4", "-6"))


def test_a_killed_runs_network_is_held_where_routes_with_linkdown_are_ignored(topo: RoutedHosts) -> None:
    """Review revks F2: the kill switch's device is a TUN nobody reads once tunsec is killed, so it has no
    carrier and its routes are "linkdown"; where ignore_routes_with_linkdown is set (a routing host's
    setting, FRR's advice) the kernel's lookup skips them and the killed run's network takes the default
    route in clear.  On main: 10.2.0.1 via 192.0.2.1 dev veth0 after the kill, with no word at start.
    (fixks2: the review's net.ipv4.conf.all here became .default, and IPv6's all: for IPv4 the kernel
    asks `all` OR the device's own, so no device keeps its routes used under all = 1 (the next test: an
    error at start); under default = 1 (what a new device starts with) and IPv6's all = 1 (copied to
    every device, IPv6 asks the device's own alone) tunsec sets its device's own to 0.)"""
    topo.run(topo.a, ["sysctl", "-qw", "net.ipv4.conf.default.ignore_routes_with_linkdown=1"])
    topo.run(topo.a, ["sysctl", "-qw", "net.ipv6.conf.all.ignore_routes_with_linkdown=1"])
    conn = Conn(topo.a, topo.b, local_ts=f"{topo.a.inner_net4}, {topo.a.inner_net6}",
                remote_ts=f"{topo.b.inner_net4}, {topo.b.inner_net6}")
    client = TunsecIke(topo, conn)
    client.start()
    assert "dev tunsec0" in path(topo, topo.b.inner4), path(topo, topo.b.inner4)
    kill9(topo, client)
    assert DEVICE in links(topo)   # the device and its standing routes are there ...
    assert wait_until(lambda: linkdown(topo), 15), tunsec_table.show("-4", "dev", DEVICE, ns=topo.a.ns)
    for dst in (topo.b.inner4, topo.b.inner6):   # ... and used
        assert f"dev {DEVICE}" in path(topo, dst), (path(topo, dst), client.log_tail())


def test_a_start_where_ipv4_routes_with_linkdown_are_ignored_says_so(topo: RoutedHosts) -> None:
    """fixks2 (review revks F2): with net.ipv4.conf.all.ignore_routes_with_linkdown = 1 no device's own
    setting keeps the kill switch's IPv4 routes used once it has no carrier: the start says so, as an error
    naming the sysctl and root's fix (the host's setting is not tunsec's to change).  On main: no word."""
    topo.run(topo.a, ["sysctl", "-qw", "net.ipv4.conf.all.ignore_routes_with_linkdown=1"])
    conn = Conn(topo.a, topo.b, local_ts=topo.a.inner_net4, remote_ts=topo.b.inner_net4)
    client = TunsecIke(topo, conn)
    client.start()
    errors = [ln for ln in client.log_tail().splitlines() if " ERROR " in ln]
    assert any("net.ipv4.conf.all.ignore_routes_with_linkdown = 1" in ln and f"kill switch {DEVICE}" in ln
               and "sysctl -w net.ipv4.conf.all.ignore_routes_with_linkdown=0" in ln for ln in errors), errors


# as the service user, no capability: attach to the kill switch's device and print the destination of the
# first packet routed into it (what a process of that user, an updown script's leftover job say, can do)
READER = """
import fcntl, os, select, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))
print("attached", flush=True)
while select.select([fd], [], [], 30)[0]:
    pkt = os.read(fd, 65535)
    if pkt[0] >> 4 == 4:   # IPv4 (the device, up with a reader, sends IPv6 of its own)
        print("read", ".".join(str(b) for b in pkt[16:20]), flush=True)
        break
"""


def test_the_service_user_cannot_take_the_kill_switchs_traffic(topo: RoutedHosts) -> None:
    """Review revks F3: the device is made owned by the user the control process becomes (h/fixks), so any
    process of that user may attach to it (TUNSETIFF): it then has a reader, its standing routes carry, and
    after a kill -9 the killed run's traffic (in clear) is that process's to read or send on; the next start
    finds "a TUN a process has open" and adds no standing route at all.  On main: attached, and the reader
    gets the ping to the remote network."""
    conn = Conn(topo.a, topo.b, local_ts=topo.a.inner_net4, remote_ts=topo.b.inner_net4)
    client = TunsecIke(topo, conn)   # as root, dropping to the user tunsec (the default)
    client.start()
    pw = pwd.getpwnam(WORKER_USER)
    setpriv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "--"]
    reader = subprocess.Popen(["ip", "netns", "exec", topo.a.ns, *python_argv(setpriv), "-c", READER, DEVICE],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert reader.stdout is not None
        first = reader.stdout.readline()
        kill9(topo, client)
        topo.run(topo.a, ["ping", "-c1", "-W1", topo.b.inner4], check=False)
        out = first + (reader.communicate(timeout=40)[0] if first.startswith("attached") else "")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert not out.startswith("attached"), out
    assert f"read {topo.b.inner4}" not in out, out


def worker_pid(client: TunsecIke) -> int | None:
    try:
        return int(client.status()["worker"]["pid"])
    except Exception:   # restarting, or gone
        return None


def test_a_run_that_gives_up_on_its_worker_keeps_its_kill_switch(topo: RoutedHosts) -> None:
    """Review revks F1, the other way there: a worker that dies MAX_RESTARTS + 1 times within RESTART_WINDOW
    makes tunsec give up (exit 1, "Restart=on-failure brings tunsec back"): not a clean stop, yet its
    close_network() removes the kill switch, and the network leaves in clear until a start succeeds.
    On main: 10.2.0.1 via 192.0.2.1 dev veth0 once tunsec exited 1."""
    conn = Conn(topo.a, topo.b, local_ts=topo.a.inner_net4, remote_ts=topo.b.inner_net4)
    client = TunsecIke(topo, conn)
    client.start()
    assert client.proc is not None
    killed: list[int] = []
    while client.proc.poll() is None and len(killed) < 10:
        assert wait_until(lambda: client.proc is not None and (client.proc.poll() is not None or (
            (pid := worker_pid(client)) is not None and pid not in killed)), 30), client.log_tail()
        if client.proc.poll() is not None:
            break
        pid = worker_pid(client)
        assert pid is not None
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)
    assert client.proc.wait(timeout=30) == 1, client.log_tail()
    client.proc = None
    assert "giving up" in client.log_tail(), client.log_tail()
    assert f"dev {DEVICE}" in path(topo, topo.b.inner4), (path(topo, topo.b.inner4), links(topo))
