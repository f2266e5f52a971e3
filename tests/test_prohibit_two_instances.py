"""Two tunsec instances in one network namespace (two TUNs, two configurations, two state_dirs), each
with a network whose TUN route the kernel refuses (IPv6 disabled in the namespace) and which it
therefore blocks with a prohibit route of tunsec's (proto 116).  Review Q3: each start took the
other's prohibit routes for leftovers of its own and removed them, so the other's blocked traffic
took the host's routes in clear.  Real `tunsec up` processes; one is killed with SIGKILL (control
process and worker) and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import netns_unavailable
from control import log_size, status, wait_up

from tunsec.bench.netns import NO_IPV6, make_netns, wait_until
from tunsec.statedir import init_state_dir

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]


def tunnel(name: str, local: str, n: int, remote_ts: str) -> str:
    local_ts = "fd00:1::/64" if ":" in remote_ts else "10.1.0.0/24"
    return f"""  {name} {{
    local_addr = {local}
    remote_addr = 192.0.2.{n}
    local_ts = {local_ts}
    remote_ts = {remote_ts}
    spi_in = {0xC0010000 + n:#x}
    key_in = 0x{n:02x}02030405060708090a0b0c0d0e0f1011121314
    spi_out = {0xC0020000 + n:#x}
    key_out = 0x{n:02x}12030405060708090a0b0c0d0e0f1011121314
  }}
"""


@dataclass
class Instance:
    """One tunsec: its TUN, local address (its ESP socket's), directory, and the process while it runs."""

    ns: str
    dir: Path
    tun: str
    local: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.dir / "ctl.sock"

    @property
    def log(self) -> Path:
        return self.dir / "tunsec.log"

    def write(self, *tunnels: str) -> None:
        (self.dir / "tunsec.conf").write_text(
            f"tunsec {{\n  tun = {self.tun}\n  state_dir = {self.dir}/state\n  control_socket = {self.sock}\n"
            "  user = root\n}\nmanual {\n" + "".join(tunnels) + "}\n")

    def up(self) -> None:
        offset = log_size(self.log)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m", "tunsec", "up", "-c",
                                          str(self.dir / "tunsec.conf")], stdout=log, stderr=log)
        assert wait_up(self.proc, self.log, offset, self.sock, 30), self.log.read_text()

    def reload(self) -> subprocess.CompletedProcess[str]:
        # -c: root's CLI asks only root or the configured user's server (ctlpeer.py), and this file names it
        return subprocess.run([sys.executable, "-m", "tunsec", "reload", "-c", str(self.dir / "tunsec.conf"),
                               "--socket", str(self.sock)], capture_output=True, text=True, timeout=60)

    def kill(self) -> None:
        """SIGKILL to the control process and its worker, by PID: nothing of tunsec's runs to clean up."""
        assert self.proc is not None
        worker = status(self.sock)["worker"]["pid"]
        os.kill(self.proc.pid, signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)
        self.proc.wait(10)
        assert wait_until(lambda: not Path(f"/proc/{worker}").exists(), 10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@pytest.fixture
def ns() -> Iterator[str]:
    name = two_instances_ns("tsq3")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def two_instances_ns(prefix: str) -> str:
    """A namespace PREFIX-xxxxxx whose IPv6 is disabled (a TUN route of an IPv6 network is refused),
    with both instances' local addresses on lo; the caller deletes it."""
    return make_netns(prefix, NO_IPV6, "ip addr add 192.0.2.1/32 dev lo", "ip addr add 192.0.2.11/32 dev lo")


def instance(ns: str, tmp: Path, name: str, tun: str, local: str) -> Instance:
    d = tmp / name
    d.mkdir(mode=0o700)
    init_state_dir(d / "state")
    return Instance(ns, d, tun, local)


def record_name(ns: str, tun: str) -> str:
    """The name of tun's record of its prohibit routes in ns (not the initial namespace: :ns<inode>)."""
    inode = subprocess.run(["ip", "netns", "exec", ns, "stat", "-L", "-c", "%i", "/proc/self/ns/net"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return f"prohibit-routes.{tun}:ns{inode}"


def prohibits(ns: str) -> list[str]:
    """tunsec's prohibit routes in ns (IPv6 and IPv4)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                          "ip -6 route show table all type prohibit proto 116; "
                          "ip -4 route show table all type prohibit proto 116"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[1] for line in out.splitlines() if line.strip())


def test_each_instance_removes_only_its_own_prohibit_routes_a_kill_left(ns: str, tmp_path: Path) -> None:
    """B blocks fd00:5::/64 (a reload adding a tunnel whose route is refused).  A starts: B's block
    survives.  A blocks fd00:3::/64 and is killed (SIGKILL): its block stays.  A starts again with that
    tunnel gone: its leftover goes, B's stays (and B still lists it, blocked).  B stops: its block goes."""
    a = instance(ns, tmp_path, "a", "tsqa0", "192.0.2.1")
    b = instance(ns, tmp_path, "b", "tsqb0", "192.0.2.11")
    a_site = tunnel("site-a", a.local, 2, "10.2.0.0/24")
    b_site = tunnel("site-b", b.local, 4, "10.4.0.0/24")
    try:
        b.write(b_site)
        b.up()
        b.write(b_site, tunnel("site-b6", b.local, 5, "fd00:5::/64"))
        r = b.reload()
        assert r.returncode == 1 and "failed: adding route fd00:5::/64" in r.stderr, (r.stdout, r.stderr)
        assert prohibits(ns) == ["fd00:5::/64"]

        a.write(a_site)
        a.up()
        assert prohibits(ns) == ["fd00:5::/64"], a.log.read_text()   # B's: not A's to remove
        a.write(a_site, tunnel("site-a6", a.local, 3, "fd00:3::/64"))
        r = a.reload()
        assert r.returncode == 1 and "failed: adding route fd00:3::/64" in r.stderr, (r.stdout, r.stderr)
        assert prohibits(ns) == ["fd00:3::/64", "fd00:5::/64"]
        a.kill()
        assert prohibits(ns) == ["fd00:3::/64", "fd00:5::/64"]   # nothing of A's ran to remove its block

        a.write(a_site)   # the IPv6 tunnel gone: A's leftover blocks a network nothing routes
        a.up()
        assert prohibits(ns) == ["fd00:5::/64"], a.log.read_text()
        assert "prohibit route of fd00:3::/64, left by an earlier tunsec" in a.log.read_text()
        (unrouted,) = status(b.sock)["tun"]["unrouted"]
        assert unrouted["network"] == "fd00:5::/64" and unrouted["blocked"] is True, unrouted
        b_record = b.dir / "state" / record_name(ns, b.tun)
        assert json.loads(b_record.read_text())["networks"] == ["fd00:5::/64"]
        b.stop()
        assert prohibits(ns) == []
        assert not b_record.exists()
    finally:
        a.stop()
        b.stop()
