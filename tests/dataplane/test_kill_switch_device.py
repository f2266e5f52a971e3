"""The kill switch's device (dataplane/killswitch.py) in a namespace of the test's own, real netlink: only a
TUN nobody reads is taken for it or deleted as it, and a KillSwitch that never looked at its device leaves
it (review revprep F2, F4; remark 3: only tunsec's own standing routes count as in place)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
import tunsec_table
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import STANDING_PRIORITY, KillSwitch, _standing, device_name
from tunsec.dataplane.netlink import IPRoute

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "tsksx0"   # the TUN the kill switch serves: only its name matters here (the device's name comes from it)
DEVICE = device_name(TUN)
HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("tsksdev") as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def has_device(ns: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", DEVICE], capture_output=True).returncode == 0


def test_a_kill_switch_that_never_looked_at_its_device_leaves_it(ns: str) -> None:
    """A refusal before ensure (prepare's Tun.open, a start's MTU) closes a KillSwitch that never looked: the
    device of that name may be a running instance's, or a killed run's failing closed.  One it added goes."""
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun")
    with in_netns(ns):
        KillSwitch(TUN).close()
        KillSwitch(TUN, keep_found=True).close()
    assert has_device(ns), "close() deleted a device it never looked at"
    ip(ns, "link", "del", DEVICE)
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=True)
        assert ks.ensure(HALVES) == []
        ks.close()
    assert not has_device(ns)   # its own goes at the clean stop


def test_a_link_of_another_kind_is_not_taken_nor_deleted_as_the_kill_switch(ns: str) -> None:
    ip(ns, "link", "add", DEVICE, "type", "veth", "peer", "name", "tsksxp")
    with in_netns(ns):
        ks = KillSwitch(TUN)
        failed = ks.ensure(HALVES)
        ks.remove()
    assert len(failed) == 1 and "not a TUN nobody reads (kind veth)" in failed[0], failed
    assert tunsec_table.show("-4", "dev", DEVICE, ns=ns) == ""   # no half stands on the veth
    assert has_device(ns), "remove() deleted a veth"


def test_a_tun_a_process_has_open_is_not_taken_nor_deleted_as_the_kill_switch(ns: str) -> None:
    """What a process reads from a TUN of that name is not dropped: it is no kill switch (and not ours).  Root's
    (another tunsec's kill switch, held); one root does not own is deleted (test_kill_switch_reader.py)."""
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun", "user", "root")
    ip(ns, "link", "set", DEVICE, "up")
    with in_netns(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)   # opened here: its netns is the test's
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        with in_netns(ns):
            ks = KillSwitch(TUN)
            failed = ks.ensure(HALVES)
            ks.remove()
        assert len(failed) == 1 and "a TUN a process has open" in failed[0], failed
        assert has_device(ns) and tunsec_table.show("-4", "dev", DEVICE, ns=ns) == ""
    finally:
        os.close(fd)


def test_only_tunsecs_own_standing_routes_count_as_in_place(ns: str) -> None:
    """(review revprep remark 3) a route of another proto, or in another table, through the device with the
    standing routes' metric is not one of ours: an unprivileged start would take it as in place and the
    clean stop of a privileged one could not tell it from its own."""
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun")
    ip(ns, "link", "set", DEVICE, "up")
    ip(ns, "route", "add", "0.0.0.0/1", "dev", DEVICE, "proto", "static", "metric", str(STANDING_PRIORITY))
    ip(ns, "route", "add", "128.0.0.0/1", "dev", DEVICE, "proto", "116", "metric", str(STANDING_PRIORITY),
       "table", "100")
    with in_netns(ns), IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=DEVICE)[0]
        assert _standing(ipr, idx, {4}) == set()
    ip(ns, "route", "add", "128.0.0.0/1", "dev", DEVICE, "proto", "116", "metric", str(STANDING_PRIORITY))   # main
    with in_netns(ns), IPRoute() as ipr:
        assert _standing(ipr, idx, {4}) == set()
    ip(ns, "route", "add", "128.0.0.0/1", "dev", DEVICE, "proto", "116", "metric", str(STANDING_PRIORITY),
       "table", "116")
    with in_netns(ns), IPRoute() as ipr:
        assert _standing(ipr, idx, {4}) == {ip_network("128.0.0.0/1")}
