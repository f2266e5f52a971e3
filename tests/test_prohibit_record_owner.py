"""A block made after the privilege drop is recorded in a state_dir made as the record's own warning
says (`install -d -o USER -m 0700 DIR`: the user's, group root) (review AC F2: the record file was
given the directory's (uid, gid), noted as root before the drop; after it the fchown to gid 0 was
refused, "not written", and every block made after the drop went unrecorded, left for good by a
kill -9).  Real `tunsec up` in a namespace with IPv6 disabled (the reload's IPv6 network is blocked),
on a TUN made beforehand (CAP_NET_ADMIN is kept)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_prohibit_two_instances as two
from reachable import scratch_dir
from test_prohibit_record_netns import blocks_on_reload, ike_conf
from test_prohibit_two_instances import Instance

ns = two.ns


@pytest.fixture
def reachable() -> Iterator[Path]:
    with scratch_dir("tunsec-recowner-") as d:
        yield d


def test_a_block_after_the_drop_is_recorded_in_a_state_dir_of_group_root(ns: str, reachable: Path) -> None:
    a = Instance(ns, reachable / "a", "tsac1", "192.0.2.1")
    a.dir.mkdir()
    # root's, as the configuration in it: root acts on no file the user may change (review revctl F1)
    state = reachable / "state"
    subprocess.run(["install", "-d", "-o", "nobody", "-m", "0700", str(state)], check=True)   # group root
    subprocess.run(["ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", a.tun, "mode", "tun", "user", "nobody"],
                   check=True)
    try:
        ike_conf(a, state, "nobody", "10.2.0.0/24")
        a.up()
        ike_conf(a, state, "nobody", "10.2.0.0/24", "fd00:3::/64")
        blocks_on_reload(a, "fd00:3::/64")
        record = state / two.record_name(ns, a.tun)
        assert "not written" not in a.log.read_text(), a.log.read_text()
        assert json.loads(record.read_text())["networks"] == ["fd00:3::/64"], a.log.read_text()
    finally:
        a.stop()
