"""The kill switch under every TUN route (review revrestart F3, dataplane/killswitch.py) in a namespace of the
test's own, real netlink: a network's standing route goes with it (keep_only) and the device with the last;
a network another instance's device already holds is said, not taken; IPv6 standing routes go in where
new links start with IPv6 disabled; the device is root's, held by the control process through a descriptor
it took before the drop, through which it removes it at the clean stop with no CAP_NET_ADMIN."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
import tunsec_table
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import STANDING_PRIORITY, KillSwitch, device_name

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN, OTHER_TUN = "fixksa0", "fixksb0"   # two instances' TUNs: only their names matter (the devices' come from them)
SITE, LAB, SITE6 = ip_network("10.2.0.0/24"), ip_network("10.7.0.0/24"), ip_network("fd00:2::/64")
NOBODY = 65534


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("fixksnet", "sysctl -qw net.ipv6.conf.default.disable_ipv6=1") as name:
        yield name


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def standing(ns: str, tun: str = TUN) -> set[str]:
    dev = device_name(tun)
    if subprocess.run(["ip", "-n", ns, "link", "show", dev], capture_output=True).returncode:
        return set()
    return {ln.split()[0] for fam in ("-4", "-6") for ln in tunsec_table.show(fam, "dev", dev, ns=ns).splitlines()
            if f"metric {STANDING_PRIORITY}" in ln}


def test_a_networks_standing_route_goes_with_it_and_the_device_with_the_last(ns: str) -> None:
    """A reload that drops LAB (keep_only after the TUN's routes went): LAB's standing route goes, SITE's
    stays; a configuration without routes takes the device.  On main keep_only looked at halves only."""
    with in_netns(ns):
        ks = KillSwitch(TUN)
        assert ks.ensure([SITE, LAB, SITE6]) == []
        assert standing(ns) == {str(SITE), str(LAB), str(SITE6)}   # IPv6 too, though new links start without
        assert ks.keep_only([SITE, SITE6]) == []
        assert standing(ns) == {str(SITE), str(SITE6)} and ks.held == {SITE, SITE6}
        assert ks.keep_only([]) == []
    assert standing(ns) == set() and device_name(TUN) not in ip(ns, "link")


def test_a_start_removes_a_killed_runs_standing_route_of_a_network_it_no_longer_has(ns: str) -> None:
    with in_netns(ns):
        killed = KillSwitch(TUN)
        killed.ensure([SITE, LAB])
        killed.release()   # the run killed: the kernel closes its descriptor, its device and routes stay
        start = KillSwitch(TUN)
        assert start.ensure([SITE]) == [] and start.keep_only([SITE]) == []
        assert standing(ns) == {str(SITE)}
        start.close()
    assert standing(ns) == set() and device_name(TUN) not in ip(ns, "link")


def test_another_instances_network_is_neither_taken_nor_removed(ns: str) -> None:
    """Two instances routing SITE: the kernel keeps one standing route per network and metric, the first
    one's.  The second says so (its traffic leaves in clear if the first goes and it is killed) and does not
    hold it; its clean stop leaves the first's."""
    with in_netns(ns):
        first, second = KillSwitch(OTHER_TUN), KillSwitch(TUN)
        assert first.ensure([SITE]) == []
        failed = second.ensure([SITE, LAB])
        assert len(failed) == 1 and f"goes to {device_name(OTHER_TUN)}" in failed[0], failed
        assert second.held == {LAB}
        second.close()
    assert standing(ns, OTHER_TUN) == {str(SITE)} and standing(ns) == set()


# as the daemon does it: the device added (and held) as root, the drop (no capability left), the clean stop; in
# a process of its own (a uid change is the whole process's)
STOP_AS_USER = """
import os, sys
from ipaddress import ip_network
from tunsec.dataplane.killswitch import KillSwitch
ks = KillSwitch(sys.argv[1])
assert ks.ensure([ip_network(sys.argv[3])]) == [], "refused as root"
os.setgroups([])
os.setresgid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))
os.setresuid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))   # every capability goes with root's uid
ks.close()
"""


def test_the_user_tunsec_becomes_removes_its_device_with_no_cap_net_admin(ns: str) -> None:
    """The control process drops to its user before its clean stop: its netlink delete would be refused (EPERM)
    and the device goes through the descriptor it holds (TUNSETPERSIST 0; review revks F3: no longer as its
    owner, the device is root's).  On main it stayed, with every standing route: the
    tunnels' networks dropped with no tunsec running."""
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", STOP_AS_USER, TUN, str(NOBODY), str(SITE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert standing(ns) == set() and device_name(TUN) not in ip(ns, "link"), r.stderr


UNPRIVILEGED_START = """
import logging, os, sys
from ipaddress import ip_network
from tunsec.dataplane.killswitch import KillSwitch
logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
os.setgroups([])
os.setresgid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))
os.setresuid(int(sys.argv[2]), int(sys.argv[2]), int(sys.argv[2]))
ks = KillSwitch(sys.argv[1], keep_found=True)
print(ks.ensure([ip_network(sys.argv[3])]), ks.keep_only([ip_network(sys.argv[3])]))
ks.report_unapplied("tunsec.conf")
"""


def test_an_unprivileged_start_without_the_kill_switch_says_what_root_runs(ns: str) -> None:
    """A start with no capability on a TUN made by hand (no tunsec prepare): the device cannot be added; one
    error says that a kill -9 sends the traffic in clear, with root's commands (not a failure per route)."""
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", UNPRIVILEGED_START, TUN, str(NOBODY),
                        str(SITE)], capture_output=True, text=True, timeout=60)
    dev = device_name(TUN)
    assert r.returncode == 0 and r.stdout == "[] []\n", r.stdout + r.stderr
    errors = r.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"ERROR kill switch {dev} not set up"), r.stderr
    assert (f"the tunnels' traffic leaves in clear. As root run: ip tuntap add dev {dev} mode tun user root; ip link "
            f"set {dev} up; ip route add {SITE} dev {dev} table 116 proto 116 metric {STANDING_PRIORITY} (or once: "
            "tunsec prepare -c tunsec.conf --user nobody)") in errors[0], errors[0]


def test_an_operators_route_of_no_device_at_the_standing_metric_is_not_taken_for_ours(ns: str) -> None:
    """(review revks remark) root's blackhole route of SITE at the standing routes' metric (no output device):
    the kernel refuses ours (EEXIST) and SITE is not held by our device, which the start says.  On main it
    was taken as ours (held, "standing route ... in place" in prepare's summary)."""
    ip(ns, "route", "add", "blackhole", str(SITE), "metric", str(STANDING_PRIORITY), "table", "116")
    with in_netns(ns):
        ks = KillSwitch(TUN)
        failed = ks.ensure([SITE, LAB])
        assert len(failed) == 1 and "goes to no device" in failed[0], failed
        assert ks.held == {LAB}
        ks.close()
