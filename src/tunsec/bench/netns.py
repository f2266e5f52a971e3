"""Two network namespaces joined by a veth pair.

The topology shared by the end-to-end tests and the throughput benchmark::

    ns A (ts-a-XXXXXX)                          ns B (ts-b-XXXXXX)
    lo:    10.1.0.1/32  fd00:1::1/128           lo:    10.2.0.1/32  fd00:2::1/128
    veth0: 192.0.2.1/24 2001:db8::1/64  <---->  veth0: 192.0.2.2/24 2001:db8::2/64

The inner addresses live on ``lo`` (this kernel has no dummy interfaces) and
are not routed anywhere until a tunnel (or :meth:`TwoHosts.route_inner_via_veth`)
routes them. Usage::

    with TwoHosts() as topo:
        assert topo.ping(topo.a, topo.b.outer4)
        proc = topo.popen(topo.b, ["iperf3", "-s"])   # stopped on exit
        with topo.socket(topo.b, socket.AF_INET, socket.SOCK_DGRAM) as s: ...

Everything is torn down on exit, also when the body raises: tracked
processes first (SIGTERM, then SIGKILL, by PID), then the namespaces, then
the scratch directory. An ``atexit`` hook catches topologies that were never
closed; a SIGTERM to the Python process only runs it if the program turns
SIGTERM into SystemExit (the benchmark CLI does).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import secrets
import shutil
import signal
import socket as _socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tunsec.bench.procs import kill_if_same, read_proc, same_process, stop_process

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """Building or using the topology failed."""


class CommandError(subprocess.CalledProcessError):
    """A command in a namespace failed; its message includes stderr."""

    def __str__(self) -> str:
        err = self.stderr.strip() if isinstance(self.stderr, str) else ""
        return f"{' '.join(map(str, self.cmd))!r} exited {self.returncode}: {err}"


@dataclass(frozen=True)
class Host:
    """One side of the topology: its namespace name and addresses."""

    ns: str
    outer4: str
    outer6: str
    inner4: str
    inner6: str
    inner_net4: str
    inner_net6: str
    veth: str = "veth0"

    def __str__(self) -> str:
        return self.ns


NsLike = Host | str


def ns_name(ns: NsLike) -> str:
    return ns.ns if isinstance(ns, Host) else ns


def _netns_argv(ns: NsLike, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns_name(ns), *map(str, argv)]


def netns_run(
    ns: NsLike,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 60.0,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` and wait for it.

    Output is captured as text unless ``stdout``/``stderr`` are given. With
    ``check`` a failure raises :class:`CommandError` (message includes stderr).
    """
    if "stdout" not in kw and "stderr" not in kw:
        kw["capture_output"] = True
    kw["text"] = True
    kw.setdefault("stdin", subprocess.DEVNULL)
    full = _netns_argv(ns, argv)
    res: subprocess.CompletedProcess[str] = subprocess.run(full, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise CommandError(res.returncode, full, res.stdout, res.stderr)
    return res


def netns_popen(ns: NsLike, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``ns`` (untracked; see :meth:`TwoHosts.popen`).

    ``ip netns exec`` execs the command in place, so the PID of the returned
    Popen is the command itself.
    """
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(_netns_argv(ns, argv), **kw)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(ns: NsLike) -> Iterator[None]:
    """Move the calling OS thread into ``ns`` for the block, then back.

    Only this thread changes namespace; sockets created inside the block stay
    in ``ns`` for their whole life. Don't hand the thread to other work
    (asyncio, thread pools) inside the block.
    """
    with open("/proc/thread-self/ns/net", "rb") as orig:
        with open(NETNS_DIR / ns_name(ns), "rb") as target:
            _setns(target.fileno())
        try:
            yield
        finally:
            _setns(orig.fileno())


def netns_socket(
    ns: NsLike,
    family: int = _socket.AF_INET,
    type: int = _socket.SOCK_DGRAM,
    proto: int = 0,
) -> _socket.socket:
    """A socket created inside namespace ``ns``; usable from any thread."""
    with in_netns(ns):
        return _socket.socket(family, type, proto)


def read_netns_file(ns: NsLike, relpath: str) -> str:
    """Read ``/proc/thread-self/net/<relpath>`` (e.g. ``snmp``) as seen in ``ns``."""
    with in_netns(ns), open(f"/proc/thread-self/net/{relpath}", encoding="ascii") as f:
        return f.read()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


Command = str | Sequence[str]
# every device of the namespace without IPv6, those made later too (an IPv6 TUN route is then refused)
NO_IPV6 = "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


def make_netns(prefix: str, *commands: Command) -> str:
    """A namespace PREFIX-xxxxxx of a test's own, its loopback up, then ``commands`` run in it in order
    (a string is split on blanks); the caller deletes it (:func:`delete_netns`).  A command that fails
    raises with its stderr, the namespace deleted first."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        for cmd in ("ip link set lo up", *commands):
            argv = cmd.split() if isinstance(cmd, str) else list(cmd)
            res = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                raise NetnsError(f"in {name}: {' '.join(argv)}: {res.stderr.strip()}")
    except BaseException:
        delete_netns(name)
        raise
    return name


def delete_netns(name: str) -> None:
    """Namespace ``name`` gone with what still runs in it (SIGTERM, then SIGKILL, by PID); never raises:
    a test's teardown must go on (what failed is printed)."""
    try:
        if netns_exists(name):
            _reap_namespace(name)
            _ip("netns", "del", name)
    except Exception as exc:
        print(f"tunsec.bench.netns: deleting {name}: {exc}", file=sys.stderr)


@contextmanager
def scratch_netns(prefix: str, *commands: Command) -> Iterator[str]:
    """:func:`make_netns`'s namespace for the body, deleted after it, also when it raises."""
    name = make_netns(prefix, *commands)
    try:
        yield name
    finally:
        delete_netns(name)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes living in namespace ``name``."""
    res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
    return [int(x) for x in res.stdout.split() if x.isdigit()]


def _reap_namespace(name: str) -> None:
    """End stragglers in a namespace this module created (e.g. a daemon that
    forked away from a tracked process): SIGTERM, then SIGKILL, by PID."""
    stragglers = [p for p in (read_proc(pid) for pid in netns_pids(name)) if p is not None]
    if not stragglers:
        return
    print(f"tunsec.bench.netns: ending {len(stragglers)} leftover process(es) in {name}", file=sys.stderr)
    for info in stragglers:
        kill_if_same(info, signal.SIGTERM)
    wait_until(lambda: not any(same_process(i) for i in stragglers), 3.0)
    for info in stragglers:
        kill_if_same(info, signal.SIGKILL)


_LIVE: set[TwoHosts] = set()


@atexit.register
def _close_leftovers() -> None:
    for topo in list(_LIVE):
        topo.close()


class TwoHosts:
    """Namespaces A and B joined by a veth pair; a context manager.

    Attributes: ``a`` and ``b`` (:class:`Host`: ``ns``, ``outer4``,
    ``outer6``, ``inner4``, ``inner6``, ``inner_net4``, ``inner_net6``,
    ``veth``), ``suffix`` (the random part of the names), ``workdir`` (a
    scratch directory removed on close), ``ipv6``.
    """

    def __init__(
        self,
        *,
        ipv6: bool = True,
        prefix: str = "ts",
        veth_mtu: int | None = None,
        keep_workdir: bool = False,
    ) -> None:
        self.suffix = secrets.token_hex(3)
        self.ipv6 = ipv6
        self.veth_mtu = veth_mtu
        self.keep_workdir = keep_workdir
        self.a = Host(
            ns=f"{prefix}-a-{self.suffix}",
            outer4="192.0.2.1",
            outer6="2001:db8::1",
            inner4="10.1.0.1",
            inner6="fd00:1::1",
            inner_net4="10.1.0.0/24",
            inner_net6="fd00:1::/64",
        )
        self.b = Host(
            ns=f"{prefix}-b-{self.suffix}",
            outer4="192.0.2.2",
            outer6="2001:db8::2",
            inner4="10.2.0.1",
            inner6="fd00:2::1",
            inner_net4="10.2.0.0/24",
            inner_net6="fd00:2::/64",
        )
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.suffix}-"))
        # searchable by the unprivileged users tunsec drops to (its control socket, state_dir live here)
        self.workdir.chmod(0o755)
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> TwoHosts:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def hosts(self) -> tuple[Host, Host]:
        return (self.a, self.b)

    def peer(self, host: NsLike) -> Host:
        return self.b if ns_name(host) == self.a.ns else self.a

    def create(self) -> None:
        """Build the namespaces, the veth pair and the addresses."""
        _LIVE.add(self)
        try:
            for host in self.hosts:
                _ip("netns", "add", host.ns)
                self._namespaces.append(host.ns)
                self._no_dad(host)
            veth = f"link add veth0 netns {self.a.ns} type veth peer name veth0 netns {self.b.ns}"
            _ip(*veth.split())
            for host in self.hosts:
                self._links_up(host)
            for host in self.hosts:
                self._add_addresses(host)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _no_dad(self, host: Host) -> None:
        """No IPv6 duplicate address detection in the namespace: link-local
        addresses usable at once, so neighbour discovery works from the start."""
        if self.ipv6:
            sysctls = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
            netns_run(host, ["sysctl", "-q", "-w", *sysctls])

    def _wait_ready(self) -> None:
        """Wait until the veth carries traffic both ways (v4, and v6 if on)."""
        dsts = [self.b.outer4] + ([self.b.outer6] if self.ipv6 else [])
        for dst in dsts:
            if not self.wait_ping(self.a, dst, timeout=10.0):
                raise NetnsError(f"{self.a.ns} cannot ping {dst} over the veth")

    def _links_up(self, host: Host) -> None:
        # Links up before addresses: IPv6 neighbour discovery then works at once.
        n = host.ns
        if self.veth_mtu is not None:
            _ip("-n", n, "link", "set", host.veth, "mtu", str(self.veth_mtu))
        _ip("-n", n, "link", "set", "lo", "up")
        _ip("-n", n, "link", "set", host.veth, "up")

    def _add_addresses(self, host: Host) -> None:
        n = host.ns
        _ip("-n", n, "addr", "add", f"{host.inner4}/32", "dev", "lo")
        _ip("-n", n, "addr", "add", f"{host.outer4}/24", "dev", host.veth)
        if self.ipv6:
            _ip("-n", n, "-6", "addr", "add", f"{host.inner6}/128", "dev", "lo")
            _ip("-n", n, "-6", "addr", "add", f"{host.outer6}/64", "dev", host.veth, "nodad")

    def close(self) -> None:
        """Stop tracked processes, delete the namespaces and the workdir.
        Idempotent; never raises for cleanup failures (it reports them)."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            self._safe(functools.partial(stop_process, proc))
        for name in reversed(self._namespaces):
            self._safe(functools.partial(self._delete_ns, name))
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _LIVE.discard(self)

    @staticmethod
    def _safe(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # keep tearing down the rest
            print(f"tunsec.bench.netns: cleanup: {exc}", file=sys.stderr)

    @staticmethod
    def _delete_ns(name: str) -> None:
        if netns_exists(name):
            _reap_namespace(name)
            _ip("netns", "del", name)

    # -- commands and processes -------------------------------------------

    def run(self, ns: NsLike, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """:func:`netns_run` (check=True, captured text output by default)."""
        return netns_run(ns, argv, **kw)

    def popen(
        self,
        ns: NsLike,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        **kw: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``ns``; it is stopped (by PID) on close.

        ``log``: append stdout and stderr to this file.
        """
        if log is not None:
            with open(log, "ab") as f:
                proc = netns_popen(ns, argv, stdout=f, stderr=subprocess.STDOUT, **kw)
        else:
            proc = netns_popen(ns, argv, **kw)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
        """Stop a tracked process now (SIGTERM, then SIGKILL); its status."""
        status = stop_process(proc, timeout)
        if proc in self._procs:
            self._procs.remove(proc)
        return status

    def ping(
        self,
        ns: NsLike,
        dst: str,
        count: int = 1,
        *,
        src: str | None = None,
        timeout: float = 2.0,
    ) -> bool:
        """True if ``count`` echo requests from ``ns`` to ``dst`` all got answers."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout)]
        if src is not None:
            argv += ["-I", src]
        res = netns_run(ns, [*argv, dst], check=False, timeout=count * 0.2 + timeout + 10)
        return res.returncode == 0

    def wait_ping(self, ns: NsLike, dst: str, *, src: str | None = None, timeout: float = 10.0) -> bool:
        """Retry a single ping until it succeeds or ``timeout`` passes."""
        return wait_until(lambda: self.ping(ns, dst, src=src, timeout=1.0), timeout, interval=0.2)

    # -- Python-side access to the namespaces ------------------------------

    def netns(self, ns: NsLike) -> AbstractContextManager[None]:
        """Context manager: the calling thread inside ``ns`` (:func:`in_netns`)."""
        return in_netns(ns)

    def socket(
        self,
        ns: NsLike,
        family: int = _socket.AF_INET,
        type: int = _socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> _socket.socket:
        """A socket created inside ``ns`` (:func:`netns_socket`)."""
        return netns_socket(ns, family, type, proto)

    # -- routing -----------------------------------------------------------

    def route_inner_via_veth(self) -> None:
        """Route each side's inner networks to the peer over the bare veth
        (no tunnel): the plain-veth ceiling, and the base for kernel XFRM."""
        for host in self.hosts:
            peer = self.peer(host)
            route = f"ip route replace {peer.inner_net4} via {peer.outer4} src {host.inner4}"
            self.run(host, route.split())
            if self.ipv6:
                route6 = f"ip -6 route replace {peer.inner_net6} via {peer.outer6} src {host.inner6}"
                self.run(host, route6.split())


class StarHosts(TwoHosts):
    """A gateway namespace ``g`` and two site namespaces ``a`` and ``b``, each joined to the
    gateway by its own veth pair (no bridge): a gateway with several peers.  IPv4 only.

    ``g`` is the gateway as site A sees it (outer address on the A link); :meth:`gateway_for`
    gives it as seen from either site.  Inner networks: gateway 10.1.0.0/24, sites
    10.2.1.0/24 and 10.2.2.0/24.
    """

    def __init__(self, *, prefix: str = "st", keep_workdir: bool = False) -> None:
        super().__init__(ipv6=False, prefix=prefix, keep_workdir=keep_workdir)
        self.g = Host(ns=f"{prefix}-g-{self.suffix}", outer4="192.0.2.1", outer6="", inner4="10.1.0.1",
                      inner6="", inner_net4="10.1.0.0/24", inner_net6="", veth="va")
        self.g_b = Host(ns=self.g.ns, outer4="198.51.100.1", outer6="", inner4="10.1.0.1",
                        inner6="", inner_net4="10.1.0.0/24", inner_net6="", veth="vb")
        self.a = Host(ns=f"{prefix}-a-{self.suffix}", outer4="192.0.2.2", outer6="", inner4="10.2.1.1",
                      inner6="", inner_net4="10.2.1.0/24", inner_net6="")
        self.b = Host(ns=f"{prefix}-b-{self.suffix}", outer4="198.51.100.2", outer6="", inner4="10.2.2.1",
                      inner6="", inner_net4="10.2.2.0/24", inner_net6="")

    @property
    def hosts(self) -> tuple[Host, Host]:
        return (self.a, self.b)

    def gateway_for(self, site: NsLike) -> Host:
        return self.g if ns_name(site) == self.a.ns else self.g_b

    def peer(self, host: NsLike) -> Host:
        return self.gateway_for(host)

    def create(self) -> None:
        _LIVE.add(self)
        try:
            for name in (self.g.ns, self.a.ns, self.b.ns):
                _ip("netns", "add", name)
                self._namespaces.append(name)
            for gw, site in ((self.g, self.a), (self.g_b, self.b)):
                _ip("link", "add", gw.veth, "netns", gw.ns, "type", "veth", "peer", "name", site.veth, "netns", site.ns)
            _ip("-n", self.g.ns, "link", "set", "lo", "up")
            _ip("-n", self.g.ns, "addr", "add", f"{self.g.inner4}/32", "dev", "lo")
            for gw, site in ((self.g, self.a), (self.g_b, self.b)):
                _ip("-n", gw.ns, "link", "set", gw.veth, "up")
                _ip("-n", gw.ns, "addr", "add", f"{gw.outer4}/24", "dev", gw.veth)
                self._links_up(site)
                self._add_addresses(site)
            for gw, site in ((self.g, self.a), (self.g_b, self.b)):
                if not self.wait_ping(site, gw.outer4, timeout=10.0):
                    raise NetnsError(f"{site.ns} cannot ping {gw.outer4} over the veth")
        except BaseException:
            self.close()
            raise
