"""(review revprep F1, F2) `tunsec prepare --undo`, and `tunsec prepare` again, against a running tunsec.

F1: `tunsec prepare --undo` takes a running tunsec for a stopped one.

undo.py's `_not_running` asks one thing: does a connect to the configuration's control socket path
succeed.  With `control_socket` left to its default that path is resolved from the environment of the
process that asks (runtime.default_control_socket: RUNTIME_DIRECTORY, then XDG_RUNTIME_DIR, then
/run/tunsec): the service (systemd's RuntimeDirectory=, for ExecStartPre=+tunsec prepare too) listens
on one path, root's login shell (XDG_RUNTIME_DIR=/run/user/0) probes another, finds nothing and goes
on.  The TUN is the only other guard: a single-queue TUN in use refuses the attach (EBUSY), but a
multi-queue one (workers > 1; the default is one per CPU) takes undo's queue, so undo clears its
persist flag, says "TUN ... removed" while it is still there, then deletes the running instance's kill
switch device and its gateway's exclude route: the full tunnel's IKE and ESP go into the TUN (the tunnel
dies at its next rekey or DPD) and a kill -9 then leaves everything in clear.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts
from test_full_tunnel_kill9_fails_closed import PreparedIke, path

from tunsec.conf.tunsec_section import WORKER_USER
from tunsec.dataplane.killswitch import device_name


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="revprep")
    with t:
        yield t


class ServiceIke(PreparedIke):
    """PreparedIke with `control_socket` left to its default, run as the systemd unit runs it: with
    RUNTIME_DIRECTORY set (prepare as ExecStartPre=+ gets it too)."""

    def write(self, **changes: Any) -> None:
        super().write(**changes)
        lines = self.conf.read_text().splitlines()
        self.conf.write_text("".join(f"{ln}\n" for ln in lines if not ln.strip().startswith("control_socket")))

    def env(self) -> list[str]:
        return ["env", "-u", "XDG_RUNTIME_DIR", f"RUNTIME_DIRECTORY={self.sock.parent}"]


def test_undo_from_a_root_shell_leaves_a_running_multi_queue_tunsec_alone(topo: RoutedHosts) -> None:
    gateway = TunsecIke(topo, Conn(topo.b, topo.a, local_ts="0.0.0.0/0"))
    gateway.start()
    client = ServiceIke(topo, Conn(topo.a, topo.b, remote_ts="0.0.0.0/0", start_action="start"),
                        tunsec_extra="  workers = 2\n")   # a multi-queue TUN, as on any host of 2 CPUs or more
    uplink = f"via {topo.links[0][1]} dev {topo.a.veth}"
    device = device_name("tunsec0")
    said = client.prepare()
    assert f"dev {device} (kill switch)" in said and "multi_queue" in said, said
    client.start()
    client.wait_established(20)
    assert client.sock.is_socket()   # the service's socket, at RUNTIME_DIRECTORY's path

    # root's shell: its own XDG_RUNTIME_DIR (an ssh login's /run/user/0), no RUNTIME_DIRECTORY
    shell = ["env", "-u", "RUNTIME_DIRECTORY", f"XDG_RUNTIME_DIR={topo.workdir / 'root-session'}"]
    r = topo.run(topo.a, [*shell, sys.executable, "-m", "tunsec", "prepare", "--undo", "-c", str(client.conf)],
                 check=False, timeout=60)
    links = topo.run(topo.a, ["ip", "link"]).stdout
    to_gateway = path(topo, topo.b.outer4)
    seen = f"undo said: {r.stdout.strip()} {r.stderr.strip()[-300:]}\nlinks:\n{links}\nto the gateway: {to_gateway}"
    assert r.returncode == 1 and "running" in r.stderr, f"undo went on while tunsec runs on the TUN: {seen}"
    assert f"{device}:" in links, seen   # the running instance's kill switch stays
    assert uplink in to_gateway, seen   # its gateway's IKE and ESP still leave by the uplink


def test_prepare_again_while_tunsec_runs_keeps_its_kill_switch(topo: RoutedHosts) -> None:
    """(review revprep F2) an admin runs `tunsec prepare` again while the unprivileged tunsec runs (the docs
    say to, for an exclude route on an old path).  Its single-queue TUN refuses prepare's attach (EBUSY, an
    OSError: a traceback), and prepare's clean-up closes a KillSwitch that never looked for its device
    (found unset): close() is remove(), the running full tunnel's kill switch device is deleted."""
    gateway = TunsecIke(topo, Conn(topo.b, topo.a, local_ts="0.0.0.0/0"))
    gateway.start()
    client = PreparedIke(topo, Conn(topo.a, topo.b, remote_ts="0.0.0.0/0", start_action="start"),
                         tunsec_extra="  workers = 1\n")
    device = device_name("tunsec0")
    assert f"dev {device} (kill switch)" in client.prepare()
    client.start()
    client.wait_established(20)
    r = topo.run(topo.a, [sys.executable, "-m", "tunsec", "prepare", "-c", str(client.conf), "--user", WORKER_USER],
                 check=False, timeout=60)
    links = topo.run(topo.a, ["ip", "link"]).stdout
    tail = "\n".join(ln for ln in r.stderr.splitlines() if "DEBUG" not in ln)[-1500:]
    assert f"{device}:" in links, f"prepare deleted the running tunsec's kill switch:\n{links}\nprepare said:\n{tail}"
    assert r.returncode == 1 and "Traceback" not in r.stderr, tail
