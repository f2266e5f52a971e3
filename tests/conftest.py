"""Shared fixtures.  End-to-end and interop tests run two network namespaces
with a real tunsec in each (real TUN devices, real UDP sockets, real
processes).  They need root and `ip netns`: skipped, loudly, only where that
facility is absent, and never in CI (`CI` set, as `.ci/run` does), where a
missing facility fails the run instead of hiding behind a skip."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import control
import pytest
from hypothesis import settings
from reachable import python_argv

from tunsec.bench.netns import Host, TwoHosts
from tunsec.services.ike import IkeService
from tunsec.statedir import init_state_dir

# No timing threshold in a test: hypothesis's default 200 ms deadline per example failed property
# tests on a loaded CI machine (test_key_never_in_repr_for_any_sa) without anything being wrong.
settings.register_profile("tunsec", deadline=None)
settings.load_profile("tunsec")

# Bytecode caches on, whatever PYTHONDONTWRITEBYTECODE says (this machine's environment sets it): the suite
# starts hundreds of interpreters (daemons, `tunsec` CLI runs, IKE drivers) and each xdist worker imports
# every test module; without caches each of them compiled every module it imported, again (about 0.5
# CPU-s per daemon or CLI run, 8.5 CPU-s of assertion rewriting per worker).  The workers and every process
# a test starts inherit the environment; __pycache__ is in .gitignore.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) missing"
    probe = f"tsprobe-{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    return None


_WHY = netns_unavailable()
if _WHY:
    print(f"\n*** netns end-to-end tests SKIPPED: {_WHY} ***\n", file=sys.stderr)
NETNS_DIRS = ("/e2e/", "/interop/")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, which installs everything the suite needs, a skipped test is a failure:
    a skip there would be counted as coverage."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where the whole suite must run: {report.longrepr}"


@pytest.hookimpl(tryfirst=True)      # before xdist reads the xdist_group marks (it runs in every worker)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(d in str(item.fspath) for d in NETNS_DIRS):
            item.add_marker(pytest.mark.netns)
            if _WHY:
                item.add_marker(pytest.mark.skip(reason=f"NETNS UNAVAILABLE: {_WHY}"))
    # The slow tests (namespaces, charon, podman: mostly waiting) first, then the long unit tests
    # (hypothesis properties and those marked `slow`: tens of CPU-seconds each), so that under
    # `pytest -n N` the quick unit tests fill the workers' gaps at the end instead of one long test
    # starting last (the rekey memory test, ~50 s, used to start in the last two minutes and end the
    # run alone).  A stable sort: each module's tests stay together and in order.
    items.sort(key=_start_order)


def _start_order(item: pytest.Item) -> int:
    if item.get_closest_marker("netns"):
        return 0
    if item.get_closest_marker("slow") or getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        return 1
    return 2


@pytest.fixture(autouse=True)
def _serial_alone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under xdist (`make test` runs `pytest -n N`, tests/README.md) a test marked `serial` runs
    alone on the machine: it holds an exclusive lock that every other test holds shared.  The
    gate lock keeps new tests from starting while a serial one waits for the running ones."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    run_dir = tmp_path_factory.getbasetemp().parent        # one per pytest run, shared by its workers
    serial = request.node.get_closest_marker("serial") is not None
    with open(run_dir / "serial.gate", "a+b") as gate, open(run_dir / "serial.lock", "a+b") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _services_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What every IkeService a test started in this process holds of the host is let go after it: the
    in-process harnesses (test_ikeservice_peers.Gateway and the like) start services on fake sockets
    and leave them, and each one's address watch (a netlink socket) and host-address thread stayed
    until the collector found them, thousands per xdist worker, their ResourceWarnings raised
    wherever it ran (once inside a peer's certificate read: ike/test_peer_warnings_resource.py)."""
    started: list[IkeService] = []
    start = IkeService.start

    async def recorded(self: IkeService) -> None:
        started.append(self)
        await start(self)

    monkeypatch.setattr(IkeService, "start", recorded)
    yield
    for service in started:
        if service._addr_watch is not None:
            service._addr_watch.close()
        service.host_addresses.close()


@dataclass
class Side:
    """One tunsec instance: its host, config, process and log."""

    host: Host
    conf: Path
    log: Path
    sock: Path
    proc: subprocess.Popen[bytes] | None = None

    def status(self, topo: TwoHosts, *args: str) -> subprocess.CompletedProcess[str]:
        return topo.run(self.host, [sys.executable, "-m", "tunsec", "status", "-c", str(self.conf), *args],
                        check=False, timeout=20)

    def status_json(self, topo: TwoHosts) -> dict[str, Any]:
        """``tunsec status --json``, asked from this process (control.py: no interpreter per poll)."""
        return control.status(self.sock)


@dataclass
class TunnelOptions:
    esp: str = "aes128gcm16"
    esn: bool = False
    replay_window: int = 4096
    outer6: bool = False          # outer addresses IPv6 instead of IPv4
    inner6: bool = True           # also protect the IPv6 inner networks
    tun: str = "tunsec0"
    extra_manual: str = ""
    wrong_key_on_b: bool = False
    tunsec_extra: str = ""          # more lines in the tunsec { } section
    keys: dict[str, str] = field(default_factory=dict)


def state_dir_of(me: Host, sock: Path) -> Path:
    """Next to the control socket's directory, not in it: that one is made by tunsec (it hands it to the
    user it drops to), while the state directory is initialised before the first start."""
    return sock.parent.parent / (me.ns + "-state")


def manual_conf(me: Host, peer: Host, sock: Path, spi_in: int, key_in: str, spi_out: int, key_out: str,
                o: TunnelOptions) -> str:
    local_ts = me.inner_net4 + (f", {me.inner_net6}" if o.inner6 else "")
    remote_ts = peer.inner_net4 + (f", {peer.inner_net6}" if o.inner6 else "")
    local = me.outer6 if o.outer6 else me.outer4
    remote = peer.outer6 if o.outer6 else peer.outer4
    return f"""# tunsec end-to-end test, {me.ns}
tunsec {{
  tun = {o.tun}
  mtu = auto
  control_socket = {sock}
  state_dir = {state_dir_of(me, sock)}
{o.tunsec_extra}}}
manual {{
  peer {{
    local_addr = {local}
    remote_addr = {remote}
    local_ts = {local_ts}
    remote_ts = {remote_ts}
    esp = {o.esp}
    spi_in = {spi_in:#010x}
    key_in = 0x{key_in}
    spi_out = {spi_out:#010x}
    key_out = 0x{key_out}
    esn = {"yes" if o.esn else "no"}
    replay_window = {o.replay_window}
{o.extra_manual}  }}
}}
"""


class TunsecPair:
    """tunsec in namespace A and B, manually keyed to each other."""

    def __init__(self, topo: TwoHosts, o: TunnelOptions | None = None) -> None:
        self.topo = topo
        self.o = o or TunnelOptions()
        n = 20 if self.o.esp == "aes128gcm16" else 36
        k_ab, k_ba = secrets.token_hex(n), secrets.token_hex(n)
        self.o.keys = {"ab": k_ab, "ba": k_ba}
        self.a = self._side(topo.a, topo.b, 0xC0010001, k_ba, 0xC0020001, k_ab)
        k_ab_b = secrets.token_hex(n) if self.o.wrong_key_on_b else k_ab
        self.b = self._side(topo.b, topo.a, 0xC0020001, k_ab_b, 0xC0010001, k_ba)

    def _side(self, me: Host, peer: Host, spi_in: int, key_in: str, spi_out: int, key_out: str) -> Side:
        d = self.topo.workdir
        # in a directory tunsec makes: it hands it to the user it drops to, so it can remove the socket at exit
        sock = d / me.ns / "tunsec.sock"
        conf = d / f"{me.ns}.conf"
        conf.write_text(manual_conf(me, peer, sock, spi_in, key_in, spi_out, key_out, self.o))
        conf.chmod(0o600)
        init_state_dir(state_dir_of(me, sock))   # a new installation: `tunsec init-state`, once
        return Side(me, conf, d / f"{me.ns}.log", sock)

    def start(self, side: Side, **popen: Any) -> None:
        argv = [*python_argv(), "-m", "tunsec", "up", "-c", str(side.conf)]
        offset = control.log_size(side.log)
        side.proc = self.topo.popen(side.host, argv, log=side.log, **popen)
        assert control.wait_up(side.proc, side.log, offset, side.sock), \
            f"tunsec in {side.host.ns} did not start:\n{side.log.read_text()}"

    def start_both(self) -> None:
        self.start(self.a)
        self.start(self.b)

    def logs(self) -> str:
        return "\n".join(s.log.read_text() for s in (self.a, self.b) if s.log.exists())


@pytest.fixture
def topo() -> Iterator[TwoHosts]:
    with TwoHosts(ipv6=True) as t:
        yield t


@pytest.fixture
def pair(topo: TwoHosts) -> Iterator[TunsecPair]:
    p = TunsecPair(topo)
    p.start_both()
    yield p


@pytest.fixture
def root_logger() -> Iterator[None]:
    """logs.configure replaces the root logger's handlers and a few logging flags: put them back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, (logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved[2]
