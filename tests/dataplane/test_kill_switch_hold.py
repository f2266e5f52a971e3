"""The kill switch's device held by the control process and kept at a failure (fixks2: review revks F1, F3;
dataplane/killswitch.py) in a namespace of the test's own, real netlink and TUN ioctls: the device is root's
and held, a second ensure (a reload) takes the descriptor it holds for its own, no other process attaches
meanwhile; at a failure a device taken over from a killed run, or whose networks were held while up, stays,
and one this start added and never served with goes."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import KillSwitch, device_name
from tunsec.dataplane.tundev import TUNSETIFF

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "fixks2h0"
DEVICE = device_name(TUN)
SITE, LAB = ip_network("10.2.0.0/24"), ip_network("10.7.0.0/24")
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("fixks2h") as name:
        yield name


def has_device(ns: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", DEVICE], capture_output=True).returncode == 0


def attach(ns: str) -> int:
    """Another process's attach to the device (here: root's, another descriptor): 0, or its errno."""
    with in_netns(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        return 0
    except OSError as err:
        return err.errno or -1
    finally:
        os.close(fd)


def test_the_device_is_roots_and_held_and_a_reload_takes_the_hold_for_its_own(ns: str) -> None:
    """The device has owner root (none: anyone may attach), the run's descriptor on it keeps any other
    process out, and the reload's ensure does not take the device for "a TUN a process has open"."""
    with in_netns(ns):
        ks = KillSwitch(TUN)
        assert ks.ensure([SITE]) == []
        assert attach(ns) == errno.EBUSY
        assert ks.ensure([LAB]) == [] and ks.held == {SITE, LAB}   # a reload that brings LAB
        owner = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{DEVICE}/owner"],
                               capture_output=True, text=True).stdout.strip()
        assert owner == "0", owner
        ks.close()
    assert not has_device(ns)


def test_a_failure_keeps_a_killed_runs_device_it_took_over(ns: str) -> None:
    with in_netns(ns):
        killed = KillSwitch(TUN)
        killed.ensure([SITE])
        killed.release()   # the run killed: the kernel closes its descriptor
        start = KillSwitch(TUN)
        assert start.ensure([SITE]) == [] and start.taken_over
        start.close(clean=False)   # the start fails (its metrics listener, say)
    assert has_device(ns)
    assert attach(ns) == 0   # released: a TUN nobody reads again (root may still attach)


def test_a_failure_after_the_run_was_up_keeps_its_device(ns: str) -> None:
    with in_netns(ns):
        ks = KillSwitch(TUN)
        assert ks.ensure([SITE]) == []
        ks.up = True
        ks.close(clean=False)   # it gives up on its worker
    assert has_device(ns)


def test_a_first_start_that_fails_removes_the_device_it_added(ns: str) -> None:
    with in_netns(ns):
        ks = KillSwitch(TUN)
        assert ks.ensure([SITE]) == []
        ks.close(clean=False)
    assert not has_device(ns)
