"""Review revlate10 F1 (of h/fixks3): a kill switch device found with no owner and a local user's
process already attached to it keeps its standing routes into that reader, even on a root start.

h/fixks3 makes a found keep_found device (prepare's of before h/fixks2, or `ip tuntap add` without
``user``) root's by attaching to it (tundev.hold, TUNSETOWNER 0).  With no owner and no group the kernel
lets ANY process attach, so an unprivileged local user may be attached first (before the upgrade, or
before the start).  KillSwitch._device then refuses the device ("a TUN a process has open: not ours,
left as it is") and logs "its traffic leaves in clear", but prepare's standing route into it stays: what
it routes (before tunsec's TUN route is up, and after a kill -9) goes to that user's process in clear,
not out in clear.  A root start has CAP_NET_ADMIN: deleting the device detaches the reader, and the
device made again is root's.

Real parts: a namespace of the test's own, real netlink and TUN ioctls, the reader an unprivileged
process (setpriv, uid 65534, no capability)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable
from ks_netns import NOBODY, ip
from ks_netns import owner as ks_owner

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import STANDING_PRIORITY, KillSwitch, device_name

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "revl10k0"
DEVICE = device_name(TUN)
SITE = ip_network("10.2.0.0/24")
# attaches to the TUN (TUNSETIFF, IFF_TUN | IFF_NO_PI) and holds it: a local user reading the device
READER = ("import fcntl, os, struct, sys, time\nfd = os.open('/dev/net/tun', os.O_RDWR)\n"
          "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', sys.argv[1].encode(), 0x0001 | 0x1000))\n"
          "print('attached', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("revl10k") as name:
        yield name


def owner(ns: str) -> str:
    return ks_owner(ns, DEVICE)


def test_a_root_start_leaves_no_standing_route_into_a_device_a_local_user_reads(ns: str) -> None:
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun")   # as a prepare of before h/fixks2 left it
    ip(ns, "link", "set", DEVICE, "up")
    ip(ns, "route", "add", str(SITE), "dev", DEVICE, "proto", "254", "metric", str(STANDING_PRIORITY))
    reader = subprocess.Popen(["ip", "netns", "exec", ns, *NOBODY, sys.executable, "-c", READER, DEVICE],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "attached"
        with in_netns(ns):
            ks = KillSwitch(TUN, keep_found=True)
            ks.ensure([SITE])   # as root: CAP_NET_ADMIN
            ks.close()
        into_device = f"dev {DEVICE}" in ip(ns, "route", "show", str(SITE))
        assert not into_device or owner(ns) == "0", (
            f"after a root start, {SITE}'s standing route still goes into {DEVICE} (owner {owner(ns)}), which "
            "uid 65534 has open: what it routes (before the TUN's route, after a kill -9) is that user's to read")
    finally:
        reader.kill()
        reader.wait()
