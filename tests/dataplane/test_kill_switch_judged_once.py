"""Review revprep2: the kill switch's device that a run added itself must go at its clean stop, also on a
TUN made for it (keep_found: a root start on a TUN made by hand or by `tunsec prepare`) after a reload.

Every ensure() (the start's and each reload's, daemon._reload_routes) looks the device up again
(KillSwitch._device); on a TUN made for us it then finds the one this very run added and takes it for one
that was there at start (found, not owned), so close() leaves it: after the clean stop its standing routes
(0.0.0.0/1, 128.0.0.0/1, no TUN route above them any more) drop all of the host's traffic."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.killswitch import KillSwitch, device_name

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "rp2tun0"   # the TUN the kill switch serves: only its name matters here (the device's name comes from it)
DEVICE = device_name(TUN)
HALVES = [ip_network("0.0.0.0/1"), ip_network("128.0.0.0/1")]


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("revprep2ks") as name:
        yield name


def has_device(ns: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", DEVICE], capture_output=True).returncode == 0


def test_a_device_the_run_added_goes_at_its_clean_stop_after_a_reload(ns: str) -> None:
    with in_netns(ns):
        ks = KillSwitch(TUN, keep_found=True)   # a TUN made for us: a root start on a hand-made or prepared TUN
        assert ks.ensure(HALVES) == []   # the start: no device yet, this run adds it
        assert ks.ensure(HALVES) == []   # a reload that keeps the full tunnel (any reload: _reload_routes)
        ks.close()                       # the clean stop
    assert not has_device(ns), "a device this run added stays after its clean stop (taken for a found one)"
