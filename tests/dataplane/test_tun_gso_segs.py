"""A TUN with offloads takes super-packets of no more segments than the fast path cuts one read into
(review revcpath R1): the loop drops a TSO/USO read of more than TS_VNET_MAX_SEGS segments whole as
malformed, and the kernel's default gso_max_segs (65535) would let a TCP sender with a small MSS
(a remote end may advertise 48) build 64 KiB reads of more.  Tun.configure caps the TUN's
gso_max_segs; a TUN without the virtio header gets only whole packets, and is left as it is.

A real TUN in a namespace of the test's own, real netlink."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from conftest import netns_unavailable

from tunsec.bench.netns import in_netns, scratch_netns
from tunsec.dataplane.fastpath import lib
from tunsec.dataplane.tun import VNET_MAX_SEGS, Tun

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("tsgsosegs") as name:
        yield name


def gso_max_segs(ns: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show", dev], check=True, capture_output=True,
                         text=True).stdout
    return int(json.loads(out)[0]["gso_max_segs"])


def test_the_tun_limit_is_the_fast_paths() -> None:
    assert VNET_MAX_SEGS == lib.TS_VNET_MAX_SEGS


@pytest.mark.parametrize("offload", [True, False])
def test_a_tun_with_offloads_takes_no_more_segments_per_read_than_the_loop_cuts(ns: str, offload: bool) -> None:
    with in_netns(ns):
        tun = Tun.open("tsgsosegs0", offload=offload)
        try:
            tun.configure(1400)
            segs = gso_max_segs(ns, tun.name)
        finally:
            tun.close()
    if offload and tun.offloads:
        assert segs == VNET_MAX_SEGS
    else:   # no super-packets come: the device keeps the kernel's default
        assert segs > VNET_MAX_SEGS
