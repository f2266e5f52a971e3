"""Routes the kernel refuses (here: IPv6 routes on a host whose IPv6 is disabled, EACCES) in a real
network namespace, with the daemon's own start-up and reload code in this process: `tunsec up` stops
with one StartupError naming the route, the TUN and the fix (pyroute2's NetlinkError is no OSError:
it used to escape as a traceback); a reload still adds the other tunnels' routes, fails closed on the
refused one (a prohibit route: its traffic must not take the host's other routes in clear), says which
failed and why (`tunsec reload` exits 1, `tunsec status` lists it); once IPv6 is enabled, the next
reload adds it."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import PIPE
from typing import TypeVar

import pytest
from conftest import netns_unavailable
from test_ikeservice_peers import InProcessWorker

from tunsec.bench.netns import NO_IPV6, in_netns, scratch_netns
from tunsec.conf.config import load_config
from tunsec.daemon import Daemon, StartupError
from tunsec.dataplane import pipe
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
    with scratch_netns("tsnl", NO_IPV6, "ip addr add 192.0.2.1/32 dev lo") as name:
        init_state_dir(tmp_path / "state")
        yield name


def inside(ns: str, fn: Callable[[], T]) -> T:
    """fn in a thread of its own that is in ns: the TUN, sockets and netlink requests it makes, and
    those of the threads it starts (asyncio.to_thread's), are ns's."""
    def run() -> T:
        with in_netns(ns):
            return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def routes(ns: str, family: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", family, "route", "show", "dev", TUN, "table", "116"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_a_refused_ipv6_route_stops_the_start_naming_the_route_the_tun_and_the_fix(ns: str, tmp_path: Path) -> None:
    d = Daemon(load_config(write(tmp_path, SITE_C6), root_check=True))
    with pytest.raises(StartupError) as caught:
        inside(ns, d.prepare)
    msg = str(caught.value)
    assert msg.startswith(f"adding route fd00:3::/64 via TUN {TUN}: Permission denied"), msg
    assert f"sysctl -w net.ipv6.conf.{TUN}.disable_ipv6=0" in msg and "remote_ts" in msg, msg
    # prepare undid what it had set up: the TUN it made is gone
    gone = subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "show", TUN], capture_output=True)
    assert gone.returncode != 0 and d.tun is None


class StatusWorker(InProcessWorker):
    """InProcessWorker with what `tunsec status` reads of a WorkerClient besides its DUMP."""

    pid = None
    malformed = late = dump_overflows = stderr_dropped = 0


def leak_path(ns: str) -> None:
    """A veth with an IPv6 default route through it: without a route of its own through the TUN (or
    a prohibit route), the IPv6 tunnel's traffic would leave through it in clear."""
    for cmd in (["ip", "link", "add", "tsleak0", "type", "veth", "peer", "name", "tsleak1"],
                ["sysctl", "-qw", "net.ipv6.conf.tsleak0.disable_ipv6=0"],
                ["ip", "link", "set", "tsleak0", "up"], ["ip", "link", "set", "tsleak1", "up"],
                ["ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "tsleak0", "nodad"],
                ["ip", "-6", "route", "add", "default", "via", "fd00:99::2", "dev", "tsleak0"]):
        subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)


def route_get(ns: str, dst: str) -> tuple[int, str]:
    """`ip -6 route get dst` in ns: its exit status and what it said."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "route", "get", dst], capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


def prohibits(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "route", "show", "table", "all", "type", "prohibit"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[1] for line in out.splitlines() if line.strip()]


async def cli(*args: str) -> tuple[int, str, str]:
    """The tunsec CLI as a process of its own: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tunsec", *args, stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_a_refused_route_fails_closed_the_reload_says_so_and_a_later_reload_routes_it(
        ns: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reload adds the routes it can and answers; the one the kernel refuses (IPv6 disabled on the
    TUN) gets a prohibit route, so its traffic does not take the host's IPv6 default route in clear;
    `tunsec reload` exits 1 naming it, `tunsec status` lists it; a reload that drops its tunnel drops
    the prohibit route, and once IPv6 is enabled a reload adds the real route and no prohibit one."""
    leak_path(ns)
    path = write(tmp_path, SITE_B)
    d = Daemon(load_config(path, root_check=True))
    caplog.set_level(logging.INFO, logger="tunsec")
    sock = str(tmp_path / "ctl.sock")
    seen: dict[str, object] = {}

    async def scenario() -> None:
        worker = StatusWorker(asyncio.get_running_loop(), lambda m: None)
        d.worker = worker  # type: ignore[assignment]
        await d.manual.start()
        await d._open_control_socket()
        await d._start_serving()   # what _start_worker does once privilege is given up
        try:
            # the IPv6 tunnel's route comes before site-d's: its refusal used to end the reload there
            write(tmp_path, SITE_B, SITE_C6, SITE_D)
            seen["first"] = await cli("reload", "--socket", sock)
            seen["routes"] = routes(ns, "-4"), routes(ns, "-6")
            seen["get"] = route_get(ns, "fd00:3::7")
            seen["out_spis"] = {sa.spi for sa in worker.dp.sas() if sa.direction is Direction.OUT}
            seen["json"] = await cli("status", "--json", "--socket", sock)
            seen["text"] = await cli("status", "--socket", sock)
            # the tunnel goes: so does its prohibit route (its traffic takes the host's routes, as any
            # network no tunnel protects)
            write(tmp_path, SITE_B, SITE_D)
            seen["dropped"] = await cli("reload", "--socket", sock)
            seen["dropped_prohibits"], seen["dropped_get"] = prohibits(ns), route_get(ns, "fd00:3::7")
            write(tmp_path, SITE_B, SITE_C6, SITE_D)
            seen["again"] = await cli("reload", "--socket", sock)
            seen["again_prohibits"] = prohibits(ns)
            # the fix the answer names, then the same file again: the missing route is added now
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{TUN}.disable_ipv6=0"],
                           check=True)
            seen["fixed"] = await cli("reload", "--socket", sock)
            seen["routes6"], seen["fixed_prohibits"] = routes(ns, "-6"), prohibits(ns)
            seen["fixed_get"] = route_get(ns, "fd00:3::7")
            seen["fixed_json"] = await cli("status", "--json", "--socket", sock)
        finally:
            assert d._server is not None
            d._server.close()

    inside(ns, d.prepare)   # netlink's synchronous API: outside the event loop, as `tunsec up` does
    try:
        inside(ns, lambda: asyncio.run(scenario()))
    finally:
        inside(ns, d.close_network)
    code, out, err = seen["first"]  # type: ignore[misc]
    assert code == 1, (out, err)
    assert "routes added: 10.4.0.0/24" in out.splitlines(), out
    assert err.startswith(f"tunsec: failed: adding route fd00:3::/64 via TUN {TUN}: Permission denied"), err
    assert f"net.ipv6.conf.{TUN}.disable_ipv6=0" in err and "prohibit route" in err, err
    assert seen["routes"] == (["10.2.0.0/24", "10.4.0.0/24"], [])
    code, said = seen["get"]  # type: ignore[misc]
    assert code != 0 and "Permission denied" in said and "tsleak0" not in said, said   # not in clear
    assert seen["out_spis"] == {0xC0020002, 0xC0020003, 0xC0020004}
    assert f"reload of {path} done, 1 step(s) failed" in caplog.text
    code, out, _ = seen["json"]  # type: ignore[misc]
    (unrouted,) = json.loads(out)["tun"]["unrouted"]
    assert unrouted["network"] == "fd00:3::/64" and unrouted["blocked"] is True, unrouted
    assert unrouted["reason"].startswith(f"adding route fd00:3::/64 via TUN {TUN}: Permission denied"), unrouted
    code, out, _ = seen["text"]  # type: ignore[misc]
    assert "unrouted: fd00:3::/64, its traffic refused (prohibit route): adding route" in out, out
    code, out, err = seen["dropped"]  # type: ignore[misc]
    assert code == 0, (out, err)
    assert seen["dropped_prohibits"] == [], "the prohibit route outlived its tunnel"
    assert "tsleak0" in seen["dropped_get"][1]  # type: ignore[index]
    code, _, err = seen["again"]  # type: ignore[misc]
    assert code == 1 and "failed: adding route fd00:3::/64" in err, err
    assert seen["again_prohibits"] == ["fd00:3::/64"]
    code, out, err = seen["fixed"]  # type: ignore[misc]
    assert code == 0, (out, err)
    assert "routes added: fd00:3::/64" in out, out
    assert seen["routes6"] == ["fd00:3::/64"]
    assert seen["fixed_prohibits"] == []
    code, said = seen["fixed_get"]  # type: ignore[misc]
    assert code == 0 and f"dev {TUN}" in said, said
    assert json.loads(seen["fixed_json"][1])["tun"]["unrouted"] == []  # type: ignore[index]


def test_the_prohibit_route_goes_with_tunsec(ns: str, tmp_path: Path) -> None:
    """A prohibit route of tunsec's is not the TUN's: it is removed at exit, with the TUN it made."""
    write(tmp_path, SITE_B)
    d = Daemon(load_config(tmp_path / "tunsec.conf", root_check=True))

    async def scenario() -> None:
        d.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)  # type: ignore[assignment]
        await d.manual.start()
        write(tmp_path, SITE_B, SITE_C6)
        ok, lines = await d.reload()
        assert ok and any(line.startswith("failed: ") for line in lines), lines

    inside(ns, d.prepare)
    try:
        inside(ns, lambda: asyncio.run(scenario()))
        assert prohibits(ns) == ["fd00:3::/64"]
    finally:
        inside(ns, d.close_network)
    assert prohibits(ns) == []


def prohibits4(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "route", "show", "table", "all", "type", "prohibit"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[1] for line in out.splitlines() if line.strip())


def test_a_prohibit_route_a_killed_tunsec_left_goes_at_the_next_start_and_only_ours(ns: str, tmp_path: Path) -> None:
    """tunsec blocks a refused route's network, then dies without cleaning up (SIGKILL, OOM): its
    prohibit route stays.  The next start, whose configuration no longer routes that network, removes
    it (the host would stay cut off from it, and nothing would say why); prohibit routes it did not
    make stay, before and after its exit: another program's (without tunsec's proto, review M, F3) and
    another tunsec's (tunsec's proto, not in this instance's record: review Q3)."""
    write(tmp_path, SITE_B)
    d = Daemon(load_config(tmp_path / "tunsec.conf", root_check=True))

    async def scenario() -> None:
        d.worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)  # type: ignore[assignment]
        await d.manual.start()
        write(tmp_path, SITE_B, SITE_C6)
        ok, lines = await d.reload()
        assert ok and any(line.startswith("failed: ") for line in lines), lines

    inside(ns, d.prepare)
    inside(ns, lambda: asyncio.run(scenario()))
    assert d.tun is not None
    d.tun.unrouted.clear()   # killed: what it knew is gone; the kernel closes its files (the TUN it made goes)
    inside(ns, d.close_network)
    assert prohibits(ns) == ["fd00:3::/64"]

    def ip(*args: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "ip", *args], check=True)
    ip("-6", "route", "add", "prohibit", "fd00:7::/64")   # someone else's
    ip("route", "add", "prohibit", "10.7.0.0/24")          # someone else's
    ip("route", "add", "prohibit", "10.8.0.0/24", "proto", "116", "table", "116")   # another tunsec's in this namespace
    ip("route", "add", "prohibit", "10.2.0.0/24", "proto", "116", "table", "116")   # site-b's: its TUN route replaces
    write(tmp_path, SITE_B)
    again = Daemon(load_config(tmp_path / "tunsec.conf", root_check=True))
    inside(ns, again.prepare)
    try:
        assert prohibits(ns) == ["fd00:7::/64"]
        assert prohibits4(ns) == ["10.7.0.0/24", "10.8.0.0/24"]
        assert routes(ns, "-4") == ["10.2.0.0/24"]
        assert again.tun is not None and again.tun.unrouted == {}
        assert again.tun.record is not None and again.tun.record.fd >= 0
        assert not Path(again.tun.record.where).exists()   # nothing of this instance's left
    finally:
        inside(ns, again.close_network)
    assert prohibits(ns) == ["fd00:7::/64"] and prohibits4(ns) == ["10.7.0.0/24", "10.8.0.0/24"]


def test_a_replaced_tunnel_the_worker_refuses_stays_routed_into_the_tun(ns: str, tmp_path: Path) -> None:
    """A key rotation whose new version the worker refuses (its inbound SPI taken): the old version is
    gone, and its network stays routed into the TUN, where nothing takes its traffic; it must not
    follow the host's other routes in clear (review M, F1)."""
    write(tmp_path, SITE_B)
    d = Daemon(load_config(tmp_path / "tunsec.conf", root_check=True))
    rotated = SITE_B.replace("0x0202030405", "0x0252030405").replace(f"{0xC0010002:#x}", f"{0xC0010099:#x}")
    seen: dict[str, object] = {}

    async def scenario() -> None:
        worker = InProcessWorker(asyncio.get_running_loop(), lambda m: None)
        d.worker = worker  # type: ignore[assignment]
        await d.manual.start()
        await worker.request(lambda r: pipe.GetSpi(r, 0xC0010099, 0xC0010099))   # another SA holds it
        write(tmp_path, rotated)
        seen["reload"] = await d.reload()
        seen["routes"], seen["get"] = routes(ns, "-4"), route_get4(ns, "10.2.0.7")

    inside(ns, d.prepare)
    try:
        inside(ns, lambda: asyncio.run(scenario()))
    finally:
        inside(ns, d.close_network)
    ok, lines = seen["reload"]  # type: ignore[misc]
    assert not ok and any("manual tunnels site-b not installed" in line for line in lines), lines
    assert seen["routes"] == ["10.2.0.0/24"]
    assert f"dev {TUN}" in seen["get"], seen["get"]   # type: ignore[operator]


def route_get4(ns: str, dst: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", dst], capture_output=True,
                          text=True).stdout
