"""Review revks2 F1 (of h/fixks2): `tunsec prepare` makes the kill switch's device root's only when it
creates it.  One it finds (a TUN nobody reads: a prepare or a root run of before h/fixks2, whose devices had
no owner, or one root added by hand without ``user``) is used as it is (KillSwitch(keep_found=True): found,
not owned, never held), so it stays anyone's to attach to: a process of any user attaches (TUNSETIFF), the
device then has a reader and a carrier, and what its standing routes take (a killed run's traffic, in clear)
is that process's to read or send on (review revks F3 again).  A later `tunsec up` on prepare's TUN does not
hold nor re-own it either (keep_found).

Real parts: a network namespace, `ip tuntap`, `tunsec prepare` as root, an unprivileged process
(setpriv, no capability) attaching to the device."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import python_argv, scratch_dir
from test_prepare_netns import TUN, prepare
from test_prepare_netns import pytestmark as pytestmark  # netns, root

from tunsec.bench.netns import scratch_netns
from tunsec.dataplane.killswitch import device_name

DEVICE = device_name(TUN)
ATTACH = ("import fcntl, os, struct, sys\nfd = os.open('/dev/net/tun', os.O_RDWR)\n"
          "fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH', sys.argv[1].encode(), 0x0001 | 0x1000))\n"
          "print('attached')\n")


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_netns("rks2prep") as name:
        yield name


@pytest.fixture
def base() -> Iterator[Path]:
    with scratch_dir("tunsec-rks2-") as d:
        yield d


def in_ns(name: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=30)


def test_prepare_makes_a_kill_switch_device_it_finds_roots(ns: str, base: Path) -> None:
    """On main: owner -1 (prepare left the found device as it was), and nobody's process attaches."""
    in_ns(ns, ["ip", "tuntap", "add", "dev", DEVICE, "mode", "tun"])   # as a prepare of before h/fixks2 left it
    r = prepare(ns, base, base / "run", base / "state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"dev {DEVICE}" in in_ns(ns, ["ip", "route", "show", "10.2.0.0/24", "table", "116"]).stdout   # kill switch
    owner = in_ns(ns, ["cat", f"/sys/class/net/{DEVICE}/owner"]).stdout.strip()
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all", "--"]
    attach = in_ns(ns, [*python_argv(nobody), "-c", ATTACH, DEVICE])   # an interpreter nobody may run
    assert "attached" not in attach.stdout, (owner, attach.stdout)
    assert owner == "0", owner
