"""Two IKE-only tunsec instances in two network namespaces of one host, with the same TUN name and one
state_dir (the default one is shared by every instance on the host; manual tunnels lock theirs). The
record of prohibit routes was named by the TUN alone: the second instance's block overwrote the first's
record, so the first, killed (SIGKILL) and started again, left its own block in place for good. Now each
namespace has its own record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import netns_unavailable
from test_prohibit_record_netns import blocks_on_reload, ike_conf
from test_prohibit_two_instances import Instance, prohibits, record_name

from tunsec.bench.netns import NO_IPV6, scratch_netns
from tunsec.statedir import init_state_dir

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "tsrn0"


@pytest.fixture
def two_ns() -> Iterator[tuple[str, str]]:
    """Two namespaces with IPv6 disabled (an IPv6 network's TUN route is refused: it gets a block) and
    192.0.2.1 on lo."""
    with scratch_netns("tsrn", NO_IPV6, "ip addr add 192.0.2.1/32 dev lo") as one, \
            scratch_netns("tsrn", NO_IPV6, "ip addr add 192.0.2.1/32 dev lo") as two:
        yield one, two


def test_same_tun_name_in_two_namespaces_keeps_two_records(two_ns: tuple[str, str], tmp_path: Path) -> None:
    """A (namespace 1) blocks fd00:3::/64, B (namespace 2, same TUN name, same state_dir) fd00:5::/64: two
    records, each listing its own.  A killed and started without that network removes its leftover; B's
    block and record stay."""
    ns1, ns2 = two_ns
    state = tmp_path / "state"
    init_state_dir(state)
    a, b = Instance(ns1, tmp_path / "a", TUN, "192.0.2.1"), Instance(ns2, tmp_path / "b", TUN, "192.0.2.1")
    try:
        for inst, net in ((a, "fd00:3::/64"), (b, "fd00:5::/64")):
            inst.dir.mkdir(mode=0o700)
            ike_conf(inst, state, "root", "10.2.0.0/24")
            inst.up()
            ike_conf(inst, state, "root", "10.2.0.0/24", net)
            blocks_on_reload(inst, net)
        a_record, b_record = state / record_name(ns1, TUN), state / record_name(ns2, TUN)
        assert a_record != b_record
        assert json.loads(a_record.read_text())["networks"] == ["fd00:3::/64"]
        assert json.loads(b_record.read_text())["networks"] == ["fd00:5::/64"]

        a.kill()
        ike_conf(a, state, "root", "10.2.0.0/24")
        a.up()
        assert prohibits(ns1) == [], a.log.read_text()   # A's leftover went (it stayed: B had overwritten the record)
        assert prohibits(ns2) == ["fd00:5::/64"]
        assert not a_record.exists() and json.loads(b_record.read_text())["networks"] == ["fd00:5::/64"]
    finally:
        a.stop()
        b.stop()
