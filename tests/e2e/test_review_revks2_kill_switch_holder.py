"""Review revks2 (of h/fixks2): guards, no finding.  The kill switch's device is held by the control
process alone (tundev.hold: an O_CLOEXEC descriptor, never read); no spawner, worker or other process of
the namespace has a queue of it open, so a kill -9 of the control process leaves it a TUN nobody reads (no
carrier: its routes linkdown, what reaches them dropped, not read).

Real parts: tunsec in namespace a of RoutedHosts, /proc/PID/fdinfo (a TUN descriptor's ``iff:`` line names
its device), kill -9 by PID."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ike_peers import Conn, TunsecIke
from routed_hosts import RoutedHosts
from test_kill_switch_every_route import kill9

from tunsec.bench.netns import wait_until
from tunsec.dataplane.killswitch import device_name

DEVICE = device_name("tunsec0")


@pytest.fixture
def topo() -> Iterator[RoutedHosts]:
    t = RoutedHosts(prefix="rks2")
    with t:
        yield t


def net_of(pid: int) -> tuple[int, int]:
    """The network namespace of pid (its nsfs device and inode)."""
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def holders(device: str, net: tuple[int, int]) -> set[int]:
    """The pids of namespace net with a descriptor attached to the TUN device (fdinfo's ``iff:`` line): a
    tunsec of another namespace (another test's, someone else's) has a device of that name too."""
    found: set[int] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if net_of(int(pid)) != net:
                continue
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    if any(ln.split() == ["iff:", device] for ln in f):
                        found.add(int(pid))
        except OSError:   # gone, or not ours to read
            continue
    return found


def carrier(topo: RoutedHosts) -> bool:
    return "NO-CARRIER" not in topo.run(topo.a, ["ip", "link", "show", DEVICE]).stdout


def test_only_the_control_process_holds_the_kill_switch_and_a_kill9_drops_its_carrier(topo: RoutedHosts) -> None:
    conn = Conn(topo.a, topo.b, local_ts=topo.a.inner_net4, remote_ts=topo.b.inner_net4)
    client = TunsecIke(topo, conn)
    client.start()
    assert client.proc is not None
    net = net_of(client.proc.pid)
    assert holders(DEVICE, net) == {client.proc.pid}, (holders(DEVICE, net), client.proc.pid)
    assert carrier(topo)
    kill9(topo, client)
    assert holders(DEVICE, net) == set()
    assert wait_until(lambda: not carrier(topo), 15), topo.run(topo.a, ["ip", "link", "show", DEVICE]).stdout
