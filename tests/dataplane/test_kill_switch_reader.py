"""A kill switch device found that a process reads and root does not own (review revlate10 F1, fixks4;
dataplane/ksreader.py): a start with CAP_NET_ADMIN deletes it (its reader cut off) and makes its own, root's and
held; one without says where the standing routes' traffic goes and root's fix.  A root-owned one a process
holds (another tunsec's kill switch) is left (tests/dataplane/test_kill_switch_device.py).

Real parts: a namespace of the test's own, real netlink and TUN ioctls, the reader an unprivileged process
(setpriv, uid 65534, no capability)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable
from ks_netns import NOBODY, ip
from ks_netns import owner as ks_owner
from reachable import python_argv

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane import killswitch
from tunsec.dataplane.killswitch import STANDING_PRIORITY, KillSwitch, device_name
from tunsec.dataplane.tundev import LinkState

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "fixks4r0"
DEVICE = device_name(TUN)
SITE = ip_network("10.2.0.0/24")
# attaches to the TUN (TUNSETIFF, IFF_TUN | IFF_NO_PI), says so, then reads (what the device is given, its own
# router solicitations): "detached" once the device goes (EOF or an error)
READER = ("import fcntl, os, struct, sys\nfd = os.open('/dev/net/tun', os.O_RDWR)\n"
          "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', sys.argv[1].encode(), 0x0001 | 0x1000))\n"
          "print('attached', flush=True)\n"
          "try:\n    while os.read(fd, 2048):\n        pass\nexcept OSError:\n    pass\n"
          "print('detached', flush=True)\n")
START = ("import logging, sys\nfrom ipaddress import ip_network\nfrom tunsec.dataplane.killswitch import KillSwitch\n"
         "logging.basicConfig(level=logging.INFO)\n"
         "print(KillSwitch(sys.argv[1], keep_found=True).ensure([ip_network('10.2.0.0/24')]))\n")


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("fixks4r") as name:
        yield name


def owner(ns: str) -> str:
    return ks_owner(ns, DEVICE)


def ownerless_device(ns: str) -> None:
    """As a prepare of before h/fixks2 left it: no owner, up, its standing route in place."""
    ip(ns, "tuntap", "add", "dev", DEVICE, "mode", "tun")
    ip(ns, "link", "set", DEVICE, "up")
    ip(ns, "route", "add", str(SITE), "dev", DEVICE, "proto", "254", "metric", str(STANDING_PRIORITY))


@pytest.fixture
def reader(ns: str) -> Iterator[subprocess.Popen[str]]:
    """uid 65534 attached to the ownerless device (it may: no owner, no group)."""
    ownerless_device(ns)
    p = subprocess.Popen(["ip", "netns", "exec", ns, *NOBODY, sys.executable, "-c", READER, DEVICE],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "attached"
    yield p
    p.kill()
    p.wait()


def detached(p: subprocess.Popen[str]) -> bool:
    assert p.stdout is not None
    return p.stdout.readline().startswith("detached")


def test_a_root_start_cuts_the_reader_off_and_makes_the_device_roots_and_held(
        ns: str, reader: subprocess.Popen[str], caplog: pytest.LogCaptureFixture) -> None:
    """On a TUN tunsec made itself (not keep_found): a killed run's device, say, remade as this run's own."""
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=False)
        assert ks.ensure([SITE]) == []
        assert ks.fd >= 0 and ks.owned and not ks.found   # made again as a new device: held, removed at the stop
        assert owner(ns) == "0" and f"dev {DEVICE}" in ip(ns, "route", "show", str(SITE), "table", "116")
        assert detached(reader)
        assert f"kill switch {DEVICE} was a TUN a process had open and root does not own (owner none" in caplog.text
        ks.close()
        assert DEVICE not in ip(ns, "link", "show")   # its own: removed at the clean stop


def test_a_prepared_device_made_again_after_its_reader_was_cut_off_stays_at_the_clean_stop(
        ns: str, reader: subprocess.Popen[str]) -> None:
    """On tunsec prepare's TUN (keep_found) the device made again stands for prepare's (review revlate11 R1):
    held while tunsec runs, released, not removed, at the clean stop, its standing route with it, for a later
    unprivileged `tunsec up`.  Before the fix it was taken for this run's own and deleted with its routes."""
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=True)
        assert ks.ensure([SITE]) == []
        assert detached(reader)
        assert ks.fd >= 0 and ks.found and not ks.owned, (ks.fd, ks.found, ks.owned)
        ks.close()
        assert ks.fd == -1   # released
    assert DEVICE in ip(ns, "link", "show") and owner(ns) == "0"
    assert f"dev {DEVICE}" in ip(ns, "route", "show", str(SITE), "table", "116")
    with in_netns(ns):   # unheld: a later start finds it a TUN nobody reads, its route in place
        again = KillSwitch(TUN, keep_found=True)
        assert again.ensure([SITE]) == []
        assert again.found and not again.owned and again.fd == -1 and again.held == {SITE}
        again.close()


def test_a_reader_attached_between_the_look_and_the_make_roots_is_cut_off_too(
        ns: str, reader: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The EBUSY race of _make_roots: the first look found the device unread (faked: the reader is attached
    already, as it would be a moment later), the attach that makes it root's finds it busy."""
    looks: list[int] = []
    real = killswitch.link_state

    def first_look_unread(ipr: object, idx: int) -> LinkState:
        looks.append(idx)
        return LinkState("tun", False) if len(looks) == 1 else real(ipr, idx)

    monkeypatch.setattr(killswitch, "link_state", first_look_unread)
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=True)
        assert ks.ensure([SITE]) == []
        assert len(looks) == 2 and ks.fd >= 0 and owner(ns) == "0"
        assert detached(reader)
        ks.close()


def test_an_unprivileged_start_says_where_the_standing_routes_traffic_goes_and_roots_fix(
        ns: str, reader: subprocess.Popen[str]) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, *python_argv(NOBODY), "-c", START, TUN], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"{DEVICE} is a TUN a process has open and root does not own (owner none" in r.stdout, r.stdout + r.stderr
    assert f"its standing routes {SITE} send the tunnels' traffic, in clear, to whoever reads it" in r.stdout, r.stderr
    assert f"As root: ip link del {DEVICE}" in r.stdout
    assert reader.poll() is None   # still attached: nobody may not delete it
