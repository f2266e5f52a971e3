"""Review V of the record of prohibit routes (blockrecord.py, blockwatch.py), with real `tunsec up`
processes in a namespace whose IPv6 is disabled, so that a reload adding an IPv6 network gets a block:
F1 a nested record does not stop a start; F2 an IKE-only instance without state_dir makes it, so a block
a SIGKILL left goes at the next start; F3 after the drop to a user the record is still written; F4 a
block someone else removes is put back."""

from __future__ import annotations

import json
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_prohibit_record_forged as forged
import test_prohibit_two_instances as two
from conftest import netns_unavailable
from control import status
from reachable import scratch_dir
from test_prohibit_two_instances import Instance, instance, prohibits, tunnel

from tunsec.bench.netns import wait_until
from tunsec.dataplane.blockrecord import block_mark

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]


ns = two.ns   # the fixture: a namespace with IPv6 disabled, 192.0.2.1 and .11 on lo


def ike_conf(inst: Instance, state_dir: Path, user: str, *remote_ts: str) -> None:
    """An IKE-only configuration (no manual tunnel: nothing makes state_dir but the start), a child per
    remote network; the peer need not exist (nothing is initiated)."""
    children = "".join(f"      x{i} {{\n        local_ts = {'fd00:1::/64' if ':' in ts else '10.1.0.0/24'}\n"
                       f"        remote_ts = {ts}\n      }}\n" for i, ts in enumerate(remote_ts))
    (inst.dir / "tunsec.conf").write_text(
        f"tunsec {{\n  tun = {inst.tun}\n  state_dir = {state_dir}\n  control_socket = {inst.sock}\n"
        f"  user = {user}\n}}\n"
        f"connections {{\n  c {{\n    local_addrs = {inst.local}\n    remote_addrs = 192.0.2.2\n"
        "    local {\n      auth = psk\n      id = a\n    }\n    remote {\n      auth = psk\n      id = b\n    }\n"
        f"    children {{\n{children}    }}\n  }}\n}}\n"
        "secrets {\n  ike-1 {\n    id = b\n    secret = 0x" + "33" * 16 + "\n  }\n}\n")


def blocks_on_reload(inst: Instance, net: str) -> None:
    r = inst.reload()
    assert r.returncode == 1 and f"failed: adding route {net}" in r.stderr, (r.stdout, r.stderr, inst.log.read_text())


def test_a_nested_record_is_nobodys_and_the_start_completes(ns: str, tmp_path: Path) -> None:
    """F1: 10 KB of nested JSON in the record raised RecursionError out of the start (a traceback, every
    restart).  Now a warning, nothing taken for this instance's, tunsec up."""
    a = instance(ns, tmp_path, "a", "tsva0", "192.0.2.1")
    (a.dir / "state" / two.record_name(ns, a.tun)).write_text('{"networks": [], "x": ' + "[" * 5000 + "]" * 5000 + "}")
    a.write(tunnel("site-a", a.local, 2, "10.2.0.0/24"))
    try:
        a.up()
        text = a.log.read_text()
        assert text.count("unreadable (nested too deep to be a record)") == 1 and "Traceback" not in text, text
    finally:
        a.stop()


def test_an_ike_only_start_makes_state_dir_so_a_killed_runs_block_goes(ns: str, tmp_path: Path) -> None:
    """F2: IKE only, state_dir missing (prepare and init-state make it for manual tunnels only).  A reload's
    block, SIGKILL, a start whose configuration no longer has that network: its prohibit route is gone
    (it stayed for good, neither that start nor its clean stop removed it)."""
    tmp_path.chmod(0o700)
    a = Instance(ns, tmp_path / "a", "tsvb0", "192.0.2.1")
    a.dir.mkdir(mode=0o700)
    state = tmp_path / "a" / "state"
    try:
        ike_conf(a, state, "root", "10.2.0.0/24")
        a.up()
        assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o700
        ike_conf(a, state, "root", "10.2.0.0/24", "fd00:3::/64")
        blocks_on_reload(a, "fd00:3::/64")
        assert prohibits(ns) == ["fd00:3::/64"]
        a.kill()
        assert prohibits(ns) == ["fd00:3::/64"]
        ike_conf(a, state, "root", "10.2.0.0/24")
        a.up()
        assert prohibits(ns) == [], a.log.read_text()
        assert "prohibit route of fd00:3::/64, left by an earlier tunsec" in a.log.read_text()
    finally:
        a.stop()


@pytest.fixture
def reachable() -> Iterator[Path]:
    with scratch_dir("tunsec-q3fix-") as d:
        yield d


def test_after_the_drop_to_a_user_a_block_is_still_recorded(ns: str, reachable: Path) -> None:
    """F3: IKE only, root's state_dir (0700), user = nobody, on a TUN made beforehand (so the control
    process keeps CAP_NET_ADMIN for its routes).  A reload's block after the drop is in the record (the
    write failed with EACCES, logged only: that block outlived a kill -9)."""
    pw = pwd.getpwnam("nobody")
    a = Instance(ns, reachable / "a", "tsvc0", "192.0.2.1")
    a.dir.mkdir()
    # root's, as the configuration in it: root acts on no file the user may change (review revctl F1)
    state = reachable / "state"
    state.mkdir(mode=0o700)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", a.tun, "mode", "tun", "user", "nobody"],
                   check=True)
    try:
        ike_conf(a, state, "nobody", "10.2.0.0/24")
        a.up()
        ike_conf(a, state, "nobody", "10.2.0.0/24", "fd00:3::/64")
        blocks_on_reload(a, "fd00:3::/64")
        record = state / two.record_name(ns, a.tun)
        assert json.loads(record.read_text())["networks"] == ["fd00:3::/64"], a.log.read_text()
        assert record.stat().st_uid == pw.pw_uid and state.stat().st_uid == pw.pw_uid
        a.stop()
        assert prohibits(ns) == [] and not record.exists()
    finally:
        a.stop()


def test_a_block_someone_else_removes_is_put_back(ns: str, tmp_path: Path) -> None:
    """F4: A's service user (or anyone) writes B's blocked network into A's record; A's next start leaves
    B's prohibit route (B's mark, not A's: test_prohibit_record_forged.py).  A plain `ip route del` of it:
    B, still running, puts it back, marked, and says so.  Until then B's traffic to it took the host's
    routes in clear."""
    a = instance(ns, tmp_path, "a", "tsvd0", "192.0.2.1")
    b = instance(ns, tmp_path, "b", "tsve0", "192.0.2.11")
    b_site = tunnel("site-b", b.local, 4, "10.4.0.0/24")
    try:
        b.write(b_site)
        b.up()
        b.write(b_site, tunnel("site-b6", b.local, 5, "fd00:5::/64"))
        blocks_on_reload(b, "fd00:5::/64")
        assert prohibits(ns) == ["fd00:5::/64"]

        (a.dir / "state" / two.record_name(ns, a.tun)).write_text(json.dumps({"networks": ["fd00:5::/64"]}))
        a.write(tunnel("site-a", a.local, 2, "10.2.0.0/24"))
        a.up()
        assert "prohibit route of fd00:5::/64 (tunsec's, proto 116) is not this instance's" in a.log.read_text()
        assert prohibits(ns) == ["fd00:5::/64"], a.log.read_text()

        subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "route", "del", "prohibit", "fd00:5::/64", "table",
                        "116"], check=True)
        assert wait_until(lambda: prohibits(ns) == ["fd00:5::/64"], 30), b.log.read_text()
        assert wait_until(lambda: "prohibit route of fd00:5::/64 removed by someone else: put back"
                          in b.log.read_text(), 10)
        assert forged.marks(ns) == {"fd00:5::/64": block_mark(b.tun)}
        (unrouted,) = status(b.sock)["tun"]["unrouted"]
        assert unrouted["network"] == "fd00:5::/64" and unrouted["blocked"] is True, unrouted
        b.stop()
        assert prohibits(ns) == []
    finally:
        a.stop()
        b.stop()
