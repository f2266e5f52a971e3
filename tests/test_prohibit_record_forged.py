"""Review AC F4: the service user may write any network into its instance's record of prohibit routes
(STATE_DIR/prohibit-routes.TUN, its own file).  Listing the network of another instance in this network
namespace, stopped with its block left in place, made this instance's start remove that block: the
other's traffic then took the host's routes in clear until it started again.  Each block now carries its
TUN's mark (blockrecord.block_mark, RTAX_REORDERING), which only a process with CAP_NET_ADMIN can put on a
route: a start removes a block with its own mark, never one with another's, whatever its record says.
Real `tunsec up` processes (test_prohibit_two_instances.py's), one killed with SIGKILL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_prohibit_two_instances import NETNS_PROBLEM, instance, prohibits, record_name, tunnel, two_instances_ns

from tunsec.dataplane.blockrecord import block_mark

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]


@pytest.fixture
def ns() -> Iterator[str]:
    """As test_prohibit_two_instances's: IPv6 disabled (a TUN route of an IPv6 network is refused)."""
    name = two_instances_ns("records")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def marks(ns: str) -> dict[str, int | None]:
    """tunsec's prohibit routes in ns and the mark each carries (reordering N), None for none."""
    out = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                          "ip -6 route show table all type prohibit proto 116; "
                          "ip -4 route show table all type prohibit proto 116"],
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, int | None] = {}
    for line in out.splitlines():
        words = line.split()
        found[words[1]] = int(words[words.index("reordering") + 1]) if "reordering" in words else None
    return found


def test_a_forged_record_does_not_make_a_start_remove_another_instances_block(ns: str, tmp_path: Path) -> None:
    """B blocks fd00:5::/64 and is killed: its block stays, with B's mark.  A's record is made to list
    fd00:5::/64 (and A's own leftover fd00:3::/64, unmarked, as an older tunsec left it).  A starts: B's
    block stays (not A's mark), A's unmarked recorded leftover goes as before."""
    a = instance(ns, tmp_path, "a", "tsfa0", "192.0.2.1")
    b = instance(ns, tmp_path, "b", "tsfb0", "192.0.2.11")
    a_site = tunnel("site-a", a.local, 2, "10.2.0.0/24")
    b_site = tunnel("site-b", b.local, 4, "10.4.0.0/24")
    try:
        b.write(b_site)
        b.up()
        b.write(b_site, tunnel("site-b6", b.local, 5, "fd00:5::/64"))
        r = b.reload()
        assert r.returncode == 1 and "failed: adding route fd00:5::/64" in r.stderr, (r.stdout, r.stderr)
        assert marks(ns) == {"fd00:5::/64": block_mark(b.tun)}
        b.kill()

        subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "route", "add", "prohibit", "fd00:3::/64", "proto",
                        "116"], check=True)   # an older tunsec's block: no mark
        # what the service user can write: its own file, listing B's network
        (a.dir / "state" / record_name(ns, a.tun)).write_text(
            json.dumps({"tun": a.tun, "networks": ["fd00:3::/64", "fd00:5::/64"]}) + "\n")
        a.write(a_site)
        a.up()
        assert prohibits(ns) == ["fd00:5::/64"], a.log.read_text()
        log = a.log.read_text()
        assert "prohibit route of fd00:3::/64, left by an earlier tunsec" in log
        assert "prohibit route of fd00:5::/64 (tunsec's, proto 116) is not this instance's" in log

        b.write(b_site)   # B again, its IPv6 tunnel gone: its own leftover goes
        b.up()
        assert prohibits(ns) == [], b.log.read_text()
    finally:
        a.stop()
        b.stop()
