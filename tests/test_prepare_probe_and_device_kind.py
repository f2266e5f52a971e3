"""(review revprep F3, F4) `tunsec prepare` and `--undo` as root, in a network namespace of the test's own.

F3: undo's check that no tunsec runs (unprepare._not_running) is a blocking connect to the control
socket's path, in the directory prepare gave the service user.  That user (or a control process taken
over) may put any socket there: one that listens and never accepts fills its backlog with one
connection, and root's `tunsec prepare --undo` then waits in connect() for ever.

F4: the kill switch is whatever link has the device's name (killswitch.KillSwitch._device): prepare (and
any start) routes a full tunnel's halves into it without asking what it is, keeps it at the clean stop
(found), and `--undo` deletes it, where the TUN of the same configuration is refused when it is not a
TUN.  A veth of that name, its peer in another namespace (a container's), takes the full tunnel's
traffic in clear once the TUN is gone: the opposite of a kill switch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import netns_unavailable
from reachable import scratch_dir

from tunsec.bench.netns import scratch_netns
from tunsec.dataplane.killswitch import device_name

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="prepare runs as root"),
]

TUN = "revprep0"
USER = "tunsec"
HANG = 60   # seconds: far beyond what undo takes (it refuses or answers in about one), not a timing threshold


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("revprep") as name:
        yield name


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("revprep-") as d:
        yield d


def conf(base: Path, remote_ts: str = "10.2.0.0/24") -> Path:
    path = base / "tunsec.conf"
    path.write_text(f"tunsec {{\n  tun = {TUN}\n  control_socket = {base}/run/t.sock\n  state_dir = {base}/state\n"
                    "  mtu = 1400\n  workers = 1\n}\nmanual {\n  site { local_addr = 192.0.2.1\n"
                    "    remote_addr = 192.0.2.2\n"
                    f"    local_ts = 10.1.0.0/24\n    remote_ts = {remote_ts}\n    spi_in = 0xc0010001\n"
                    "    key_in = 0x0102030405060708090a0b0c0d0e0f1011121314\n    spi_out = 0xc0020001\n"
                    "    key_out = 0x1102030405060708090a0b0c0d0e0f1011121314 }\n}\n")
    return path


def tunsec(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tunsec", *args], capture_output=True,
                          text=True, timeout=HANG)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout


def test_undo_does_not_wait_for_ever_on_a_socket_that_never_accepts(ns: str, base: Path) -> None:
    path = conf(base)
    (base / "run").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as planted, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as filler:
        planted.bind(str(base / "run" / "t.sock"))
        planted.listen(0)   # never accepted: one connection fills the backlog
        filler.setblocking(False)
        filler.connect(str(base / "run" / "t.sock"))
        try:
            r = tunsec(ns, "prepare", "--undo", "-c", str(path))
        except subprocess.TimeoutExpired:
            pytest.fail(f"tunsec prepare --undo still waits in connect() after {HANG} s")
    assert r.returncode == 1, r.stdout + r.stderr[-500:]


def test_prepare_makes_no_kill_switch_of_a_link_that_is_not_a_tun(ns: str, base: Path) -> None:
    device = device_name(TUN)
    other = scratch_netns("revprep")   # the other end: a container's namespace, say
    with other as far:
        subprocess.run(["ip", "-n", ns, "link", "add", device, "type", "veth", "peer", "name", "revprepx",
                        "netns", far], check=True)
        r = tunsec(ns, "prepare", "-c", str(conf(base, "0.0.0.0/0")), "--user", USER)
        standing = ip(ns, "route", "show", "dev", device)
        assert "0.0.0.0/1" not in standing and "128.0.0.0/1" not in standing, \
            f"the full tunnel's halves stand on a veth:\n{standing}\nprepare said: {r.stdout}"
        assert r.returncode == 1 and "not a TUN" in r.stderr, r.stdout + r.stderr[-500:]
        r = tunsec(ns, "prepare", "--undo", "-c", str(conf(base, "0.0.0.0/0")))
        has_link = subprocess.run(["ip", "-n", ns, "link", "show", device], capture_output=True).returncode == 0
        assert has_link, f"undo deleted a veth: {r.stdout}"
