"""A kill switch device found in place is made root's (fixks3: review revks2 F1; dataplane/killswitch.py), in a
namespace of the test's own, real netlink, TUN ioctls and an unprivileged process (setpriv, no capability).

A device `tunsec prepare` (or a start on prepare's TUN, keep_found) finds with no owner (a prepare of before
h/fixks2, or `ip tuntap add` without ``user``) was anyone's to attach to and read a killed run's traffic:
where the process may, it is made root's and left unheld (for the unprivileged `tunsec up`) and it stays at
the clean stop; where it may not, an ERROR gives root's fix.  A killed run's device taken over gets no IPv6
address of its own (addrgenmode none) before its hold gives it a carrier."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable
from ks_netns import NOBODY, ip
from ks_netns import owner as ks_owner
from reachable import python_argv

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import STANDING_PRIORITY, KillSwitch, device_name

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "fixks3o0"
DEVICE = device_name(TUN)
SITE = ip_network("10.2.0.0/24")
START = ("import logging, sys\nfrom ipaddress import ip_network\nfrom tunsec.dataplane.killswitch import KillSwitch\n"
         "logging.basicConfig(level=logging.INFO)\n"
         "print(KillSwitch(sys.argv[1], keep_found=True).ensure([ip_network('10.2.0.0/24')]))\n")


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("fixks3o") as name:
        yield name


def owner(ns: str) -> str:
    return ks_owner(ns, DEVICE)


def carrier(ns: str) -> bool:
    return "NO-CARRIER" not in ip(ns, "link", "show", DEVICE)


def ownerless_device(ns: str) -> None:
    """As a prepare of before h/fixks2 left it: no owner, up, its standing route in place."""
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun")
    ip(ns, "link", "set", DEVICE, "up")
    ip(ns, "route", "add", str(SITE), "dev", DEVICE, "proto", "254", "metric", str(STANDING_PRIORITY))


def test_a_root_start_makes_a_found_ownerless_device_roots_unheld_and_keeps_it(ns: str) -> None:
    ownerless_device(ns)
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=True)
        assert ks.ensure([SITE]) == [] and ks.held == {SITE}
        assert ks.fd == -1   # not held: the unprivileged tunsec up's to use as it is
        assert not carrier(ns)
        assert owner(ns) == "0"
        assert "addrgenmode none" in ip(ns, "-d", "link", "show", DEVICE)
        ks.close()
    assert owner(ns) == "0" and f"dev {DEVICE}" in ip(ns, "route", "show", str(SITE))   # stays, for the next start


def unprivileged_start(ns: str) -> subprocess.CompletedProcess[str]:
    """KillSwitch(keep_found=True).ensure as nobody with no capability (a tunsec up on prepare's TUN)."""
    return subprocess.run(["ip", "netns", "exec", ns, *python_argv(NOBODY), "-c", START, TUN], capture_output=True,
                          text=True, timeout=60)


def test_an_unprivileged_start_makes_a_found_ownerless_device_roots(ns: str) -> None:
    """With no owner and no group the kernel lets any process attach (and set the owner): so may this one."""
    ownerless_device(ns)
    r = unprivileged_start(ns)
    assert r.returncode == 0 and "[]" in r.stdout, r.stdout + r.stderr
    assert f"kill switch {DEVICE} made root's (it had owner none" in r.stderr, r.stderr
    assert owner(ns) == "0" and not carrier(ns)


def test_an_unprivileged_start_on_a_found_device_of_another_user_says_roots_fix(ns: str) -> None:
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun", "user", "daemon")   # its processes would read it
    ip(ns, "link", "set", DEVICE, "up")
    ip(ns, "route", "add", str(SITE), "dev", DEVICE, "proto", "254", "metric", str(STANDING_PRIORITY))
    r = unprivileged_start(ns)
    assert r.returncode == 0, r.stderr
    assert f"kill switch {DEVICE} is not root's (owner daemon) and nobody may not make it so" in r.stderr, r.stderr
    assert "As root, once: tunsec prepare -c FILE --user nobody" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert owner(ns) != "0"


def test_a_killed_runs_device_taken_over_gets_no_address_of_its_own(ns: str) -> None:
    ownerless_device(ns)   # a killed run's of before h/fixks2
    with in_netns(ns):
        ks = KillSwitch(TUN)
        assert ks.ensure([SITE]) == [] and ks.taken_over and ks.fd >= 0
        assert carrier(ns)
        assert "addrgenmode none" in ip(ns, "-d", "link", "show", DEVICE)
        assert "inet6" not in ip(ns, "-6", "addr", "show", "dev", DEVICE)
        ks.close()
