"""Routes the kernel refuses (here: IPv6 routes on a host whose IPv6 is disabled, EACCES) in a real
network namespace, with the daemon's own start-up and reload code in this process: `tunsec up` stops
with one StartupError naming the route, the TUN and the fix (pyroute2's NetlinkError is no OSError:
it used to escape as a traceback); a reload still adds the other tunnels' routes, answers, says which
route failed and why, and logs that it is done; once IPv6 is enabled, the next reload adds it."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import netns_unavailable
from test_ikeservice_peers import InProcessWorker

from tunsec.bench.netns import in_netns
from tunsec.conf.config import load_config
from tunsec.daemon import Daemon, StartupError
from tunsec.dataplane.pipe import Direction
from tunsec.statedir import init_state_dir

NETNS_PROBLEM = netns_unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"NETNS TESTS SKIPPED: {NETNS_PROBLEM}"),
]

TUN = "tsnl0"
T = TypeVar("T")


def tunnel(name: str, n: int, local_ts: str, remote_ts: str) -> str:
    return f"""  {name} {{
    local_addr = 192.0.2.1
    remote_addr = 192.0.2.{n}
    local_ts = {local_ts}
    remote_ts = {remote_ts}
    spi_in = {0xC0010000 + n:#x}
    key_in = 0x{n:02x}02030405060708090a0b0c0d0e0f1011121314
    spi_out = {0xC0020000 + n:#x}
    key_out = 0x{n:02x}12030405060708090a0b0c0d0e0f1011121314
  }}
"""


SITE_B = tunnel("site-b", 2, "10.1.0.0/24", "10.2.0.0/24")
SITE_C6 = tunnel("site-c", 3, "fd00:1::/64", "fd00:3::/64")
SITE_D = tunnel("site-d", 4, "10.1.0.0/24", "10.4.0.0/24")


def write(tmp: Path, *tunnels: str) -> Path:
    path = tmp / "tunsec.conf"
    path.write_text(f"tunsec {{\n  tun = {TUN}\n  state_dir = {tmp}/state\n  control_socket = {tmp}/ctl.sock\n"
                    "  user = root\n}\nmanual {\n" + "".join(tunnels) + "}\n")
    return path


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    """A namespace whose IPv6 is disabled (every device made in it starts with disable_ipv6=1), with
    the tunnels' local address on lo."""
    name = f"tsnl-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        init_state_dir(tmp_path / "state")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def inside(ns: str, fn: Callable[[], T]) -> T:
    """fn in a thread of its own that is in ns: the TUN, sockets and netlink requests it makes, and
    those of the threads it starts (asyncio.to_thread's), are ns's."""
    def run() -> T:
        with in_netns(ns):
            return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def routes(ns: str, family: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", family, "route", "show", "dev", TUN],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_a_refused_ipv6_route_stops_the_start_naming_the_route_the_tun_and_the_fix(ns: str, tmp_path: Path) -> None:
    d = Daemon(load_config(write(tmp_path, SITE_C6)))
    with pytest.raises(StartupError) as caught:
        inside(ns, d.prepare)
    msg = str(caught.value)
    assert msg.startswith(f"adding route fd00:3::/64 via TUN {TUN}: Permission denied"), msg
    assert f"sysctl -w net.ipv6.conf.{TUN}.disable_ipv6=0" in msg and "remote_ts" in msg, msg
    # prepare undid what it had set up: the TUN it made is gone
    gone = subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", TUN], capture_output=True)
    assert gone.returncode != 0 and d.tun is None


def test_a_reload_adds_the_routes_it_can_answers_and_names_the_one_refused(
        ns: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, SITE_B)
    d = Daemon(load_config(path))
    caplog.set_level(logging.INFO, logger="tunsec")
    seen: dict[str, object] = {}

    async def reload() -> dict[str, object]:
        return await d._command(json.dumps({"cmd": "reload"}).encode())

    async def scenario() -> None:
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        d.worker = worker  # type: ignore[assignment]
        await d.manual.start()
        # the IPv6 tunnel's route comes before site-d's: its refusal used to end the reload there
        write(tmp_path, SITE_B, SITE_C6, SITE_D)
        seen["first"] = await reload()
        seen["routes"] = routes(ns, "-4"), routes(ns, "-6")
        seen["out_spis"] = {sa.spi for sa in worker.dp.sas() if sa.direction is Direction.OUT}
        # the fix the answer names, then the same file again: the missing route is added now
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{TUN}.disable_ipv6=0"],
                       check=True)
        seen["second"] = await reload()
        seen["routes6"] = routes(ns, "-6")

    inside(ns, d.prepare)   # netlink's synchronous API: outside the event loop, as `tunsec up` does
    try:
        inside(ns, lambda: asyncio.run(scenario()))
    finally:
        inside(ns, d.close_network)
    first = seen["first"]
    assert isinstance(first, dict) and first["ok"] is True, first
    lines = str(first["message"]).splitlines()
    assert "routes added: 10.4.0.0/24" in lines, lines
    failed = [line for line in lines if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(
        f"failed: adding route fd00:3::/64 via TUN {TUN}: Permission denied"), lines
    assert f"net.ipv6.conf.{TUN}.disable_ipv6=0" in failed[0]
    assert seen["routes"] == (["10.2.0.0/24", "10.4.0.0/24"], [])
    assert seen["out_spis"] == {0xC0020002, 0xC0020003, 0xC0020004}
    assert f"reload of {path} done" in caplog.text
    second = seen["second"]
    assert isinstance(second, dict) and second["ok"] is True, second
    assert "routes added: fd00:3::/64" in str(second["message"]), second
    assert seen["routes6"] == ["fd00:3::/64"]
