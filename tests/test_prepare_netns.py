"""`tunsec prepare` in a network namespace of its own, as root: a refusal for a directory (one under
a parent another user may change) comes before the TUN is made, so it leaves no TUN behind; where
the directories are root's to give, it makes the TUN."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import netns_unavailable
from reachable import scratch_dir

from tunsec import privilege
from tunsec.bench.netns import scratch_netns
from tunsec.dataplane.localrules import LOCAL_PRIORITY
from tunsec.dataplane.markrule import MARK, MARK_PRIORITY

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change ownership"),
]

TUN = "tsprep0"
USER = "tunsec"


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("tsprep") as name:
        yield name


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("tunsec-prep-") as d:
        yield d


def prepare(ns: str, base: Path, run_dir: Path, state_dir: Path, remote_ts: str = "10.2.0.0/24",
            undo: bool = False, workers: int = 0) -> subprocess.CompletedProcess[str]:
    conf = base / "tunsec.conf"
    conf.write_text(f"tunsec {{\n  tun = {TUN}\n  control_socket = {run_dir}/t.sock\n  state_dir = {state_dir}\n"
                    + (f"  workers = {workers}\n" if workers else "")
                    + "  mtu = 1400\n}\nmanual {\n  site { local_addr = 192.0.2.1\n    remote_addr = 192.0.2.2\n"
                    f"    local_ts = 10.1.0.0/24\n    remote_ts = {remote_ts}\n    spi_in = 0xc0010001\n"
                    "    key_in = 0x0102030405060708090a0b0c0d0e0f1011121314\n    spi_out = 0xc0020001\n"
                    "    key_out = 0x1102030405060708090a0b0c0d0e0f1011121314 }\n}\n")
    how = ["--undo"] if undo else ["--user", USER]
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tunsec", "prepare", "-c", str(conf),
                           *how], capture_output=True, text=True, timeout=60)


def has_tun(ns: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", TUN], capture_output=True).returncode == 0


@pytest.mark.parametrize("which", ["control socket", "state_dir"])
def test_prepare_refused_for_a_directory_leaves_no_tun(ns: str, base: Path, which: str) -> None:
    user = privilege.target_for(USER)
    assert user is not None
    home = base / "home"
    home.mkdir()
    os.chown(home, user.uid, user.gid)
    run_dir, state_dir = (home / "run", base / "state") if which == "control socket" else (base / "run", home / "state")
    r = prepare(ns, base, run_dir, state_dir)
    assert r.returncode == 1, r
    assert f"users other than root may change {home}, so root changes no ownership there" in r.stderr, r.stderr
    assert not has_tun(ns)
    assert list(home.iterdir()) == []


def test_prepare_with_directories_in_roots_tree_makes_the_tun(ns: str, base: Path) -> None:
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode == 0, r.stderr
    assert f"TUN {TUN} created" in r.stdout, r.stdout
    assert has_tun(ns)


def test_prepare_refused_after_making_the_tun_removes_it_and_keeps_one_it_found(ns: str, base: Path) -> None:
    """A refusal that comes once the TUN is made (a route the kernel refuses: IPv6 disabled in the
    namespace, an IPv6 remote_ts) removes the TUN this run made; one that was there before stays."""
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"], check=True)
    r = prepare(ns, base, base / "run", base / "state", "10.2.0.0/24, fd00:2::/64")
    assert r.returncode == 1, r
    assert f"adding route fd00:2::/64 via TUN {TUN}: Permission denied" in r.stderr, r.stderr
    assert not has_tun(ns)

    r = prepare(ns, base, base / "run", base / "state")   # the TUN is made, and kept
    assert r.returncode == 0 and has_tun(ns), r.stderr
    r = prepare(ns, base, base / "run", base / "state", "10.2.0.0/24, fd00:2::/64")
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    assert has_tun(ns)   # not this run's: left as it was


def test_prepare_undo_removes_the_tun_and_leaves_a_device_that_is_not_one(ns: str, base: Path) -> None:
    """(h/prepare) `tunsec prepare --undo` removes the TUN prepare made (the directories stay); a device of
    that name that is not a TUN is refused, and left."""
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode == 0 and has_tun(ns), r.stderr
    r = prepare(ns, base, base / "run", base / "state", undo=True)
    assert r.returncode == 0, r.stderr
    assert f"TUN {TUN} removed" in r.stdout and "no exclude route" in r.stdout, r.stdout
    assert not has_tun(ns) and (base / "run").is_dir() and (base / "state").is_dir()
    subprocess.run(["ip", "-n", ns, "link", "add", TUN, "type", "veth", "peer", "name", f"{TUN}p"], check=True)
    r = prepare(ns, base, base / "run", base / "state", undo=True)
    assert r.returncode == 1 and f"{TUN} is not a TUN device: left as it is" in r.stderr, r.stderr
    assert has_tun(ns)   # has_tun: a link of that name


HOLD = """
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000 | 0x4000 | 0x0100))
print("attached", flush=True)
time.sleep(600)
"""


def test_prepare_and_undo_leave_a_multi_queue_tun_a_process_holds(ns: str, base: Path) -> None:
    """(review revprep F1, F2) a multi-queue TUN in use takes another attach: prepare again went on (its
    queues took a share of the running instance's flows) and `--undo` cleared its persist flag and removed
    its kill switch.  Both refuse now, before touching anything, while a process holds a queue (its
    carrier), whatever the control socket says."""
    r = prepare(ns, base, base / "run", base / "state", "0.0.0.0/0", workers=2)
    assert r.returncode == 0 and "multi_queue" in r.stdout and "(kill switch)" in r.stdout, r.stdout + r.stderr
    holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HOLD, TUN], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "attached\n"
        again = prepare(ns, base, base / "run", base / "state", "0.0.0.0/0", workers=2)
        undo = prepare(ns, base, base / "run", base / "state", "0.0.0.0/0", undo=True, workers=2)
    finally:
        holder.kill()
        holder.wait()
    assert again.returncode == 1 and f"TUN {TUN} is in use" in again.stderr, again.stdout + again.stderr
    assert undo.returncode == 1 and f"TUN {TUN} is in use" in undo.stderr, undo.stdout + undo.stderr
    assert has_tun(ns), "the TUN lost its persist flag: it went with the holder"
    standing = subprocess.run(["ip", "-n", ns, "route", "show", "proto", "116", "table", "116"], capture_output=True,
                              text=True).stdout
    assert "0.0.0.0/1 dev tsks" in standing and "128.0.0.0/1 dev tsks" in standing, standing
    r = prepare(ns, base, base / "run", base / "state", "0.0.0.0/0", undo=True, workers=2)   # nobody holds it
    assert r.returncode == 0 and f"TUN {TUN} removed" in r.stdout, r.stdout + r.stderr
    assert not has_tun(ns)


def test_prepare_gives_a_split_tunnels_network_its_standing_route_and_undo_takes_it(ns: str, base: Path) -> None:
    """(review revrestart F3) a manual tunnel's remote network: prepare adds its standing route into the kill
    switch for the unprivileged `tunsec up` (which may add none), and says so; `--undo` removes the device
    with it.  Before, only a full tunnel's halves had one: a killed unprivileged run sent 10.2.0.0/24 in
    clear."""
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode == 0 and "standing routes 10.2.0.0/24 dev tsks" in r.stdout, r.stdout + r.stderr
    standing = subprocess.run(["ip", "-n", ns, "route", "show", "proto", "116", "table", "116"], capture_output=True,
                              text=True).stdout
    assert "10.2.0.0/24 dev tsks" in standing and "metric 4294967294" in standing, standing
    assert "116:\tfrom all lookup 116" in rules(ns), rules(ns)   # tunsec's table before main (fixks5)
    # tunsec's own IKE and ESP (their sockets' mark) past it, to the main table (review revks4 F5)
    assert f"{MARK_PRIORITY}:\tfrom all fwmark {MARK:#x} lookup main" in rules(ns), rules(ns)
    r = prepare(ns, base, base / "run", base / "state", undo=True)
    assert r.returncode == 0 and "standing routes removed" in r.stdout, r.stdout + r.stderr
    left = subprocess.run(["ip", "-n", ns, "link"], capture_output=True, text=True).stdout
    assert "tsks" not in left and not has_tun(ns), left
    assert "lookup 116" not in rules(ns) and "its rules removed" in r.stdout, rules(ns) + r.stdout   # table empty
    assert "fwmark" not in rules(ns), rules(ns)


def test_prepare_adds_the_rule_of_a_covered_local_ts_and_undo_takes_it(ns: str, base: Path) -> None:
    """(h/fixlocal, review revlate14 F2) local_ts 10.1.0.0/24 under remote_ts 10.0.0.0/8: prepare adds its rule
    (`to 10.1.0.0/24 lookup main suppress_prefixlength 23`, not a throw route) for the unprivileged `tunsec up`,
    and says so; `--undo` removes it with the rest."""
    r = prepare(ns, base, base / "run", base / "state", "10.0.0.0/8")
    assert r.returncode == 0 and f"rules priority {LOCAL_PRIORITY} to 10.1.0.0/24" in r.stdout, r.stdout + r.stderr
    assert f"{LOCAL_PRIORITY}:\tfrom all to 10.1.0.0/24 lookup main suppress_prefixlength 23" in rules(ns), rules(ns)
    r = prepare(ns, base, base / "run", base / "state", "10.0.0.0/8", undo=True)
    assert r.returncode == 0 and "rules of local networks removed" in r.stdout, r.stdout + r.stderr
    assert f"{LOCAL_PRIORITY}:" not in rules(ns), rules(ns)


def rules(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "rule"], capture_output=True, text=True).stdout


def sysctl(ns: str, key: str, value: str | None = None) -> str:
    cmd = ["sysctl", "-n", key] if value is None else ["sysctl", "-qw", f"{key}={value}"]
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True).stdout.strip()


def test_prepare_refuses_where_ipv4_routes_with_linkdown_are_ignored(ns: str, base: Path) -> None:
    """(fixks2, review revks F2) net.ipv4.conf.all.ignore_routes_with_linkdown = 1: the kernel passes over the
    kill switch's routes once its device has no carrier (whatever the device's own says), and a killed
    `tunsec up` would send the network in clear.  prepare refuses, naming the sysctl, and leaves nothing it
    made.  On main it said the standing route was in place."""
    sysctl(ns, "net.ipv4.conf.all.ignore_routes_with_linkdown", "1")
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "net.ipv4.conf.all.ignore_routes_with_linkdown = 1" in r.stderr, r.stderr
    left = subprocess.run(["ip", "-n", ns, "link"], capture_output=True, text=True).stdout
    assert "tsks" not in left and not has_tun(ns), left


def test_prepare_makes_the_kill_switch_roots_and_keeps_its_routes_used(ns: str, base: Path) -> None:
    """(fixks2, review revks F2, F3) the device prepare makes is root's (a TUN with no owner is anyone's to
    attach to: a process of any user would read a killed run's traffic), and its own
    ignore_routes_with_linkdown is 0 where new devices start with 1: the kernel uses its routes without a
    carrier (looked at without the TUN's route above it).  On main: owner -1 (none), and 10.2.0.1 unreachable."""
    sysctl(ns, "net.ipv4.conf.default.ignore_routes_with_linkdown", "1")
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode == 0, r.stdout + r.stderr
    dev = next(w.rstrip(":") for w in subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                                                      text=True).stdout.split() if w.startswith("tsks"))
    owner = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/owner"], capture_output=True,
                           text=True).stdout.strip()
    assert owner == "0", owner
    subprocess.run(["ip", "-n", ns, "route", "del", "10.2.0.0/24", "dev", TUN, "table", "116"], check=True)   # TUN
    got = subprocess.run(["ip", "-n", ns, "route", "get", "10.2.0.1"], capture_output=True, text=True)
    assert f"dev {dev}" in got.stdout, got.stdout + got.stderr
    assert sysctl(ns, f"net.ipv4.conf.{dev}.ignore_routes_with_linkdown") == "0"
