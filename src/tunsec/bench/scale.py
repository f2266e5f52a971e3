"""The scale benchmark: N strongSwan road warriors against a tunsec gateway and a strongSwan gateway.

``python3 bench/scale.py --clients 1000`` -> :func:`main`. For each gateway, in a fresh
:class:`~tunsec.bench.netns.TwoHosts` (A: the gateway, B: the clients):

- the gateway serves one connection ``rw`` with a pool (``remote_ts = dynamic``,
  ``remote.id = %any``, one wildcard PSK), the same swanctl.conf text for both;
- one charon in B (kernel-libipsec) holds N connections ``rw1..rwN`` with the identities
  ``rwK@example.org``, each asking for a virtual IP (``vips = 0.0.0.0``); all start at
  once when they are loaded (``start_action = start``): a burst of N IKE_SA_INITs from one
  address;
- measured from the load: the time until all N IKE SAs are established (charon's
  ``swanctl --stats``, cheap to poll), and the time until every client's virtual IP has
  answered a ping to the gateway's inner address with that virtual IP as its source
  (:func:`ping_from`: one raw socket, IP_PKTINFO picks the source, retried until answered);
- the gateway's RSS (its process and its descendants: tunsec's control process and worker,
  charon) before the load and after the pings, and its CPU time (user+system) in between.

The DoS protection of both gateways is set explicitly so that the burst from one address
is neither answered with COOKIEs nor dropped (:func:`dos_settings`): this measures setup,
not the cookie round trip. strongSwan's gateway and client get a hashed IKE SA table of
sensible size (``ikesa_table_size``; its default is a single list), as strongSwan's docs
advise for many SAs. Fair to both: strongSwan's per-address COOKIE threshold is raised too (real
road warriors come from many addresses), the clients' charon does not reuse IKE SAs (each
connection is its own road warrior), and the namespaces have no IPv6 (:func:`no_ipv6`). The
burst is also timed by the clients' charon's log (:func:`burst_seconds`), without the swanctl
calls and the polling around it.  The same log tells whether a run measured the gateway or the
clients (:class:`ClientTimes`): the clients' own pace (first to last IKE_SA_INIT; a gateway that
keeps up is done a few ms after it) and each client's IKE_SA_INIT to IKE SA up (milliseconds
when the gateway keeps up, its queue when it does not).  And the gateway's main process's share
of the set-up on a CPU and waiting for one (:func:`~tunsec.bench.procs.sched_seconds`): the rest
it slept, i.e. waited on a socket, a timer or the worker.

The tests reuse the pieces (:class:`RoadWarriors`, :class:`TunsecGateway`).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from tunsec.bench import timeline
from tunsec.bench.netns import Host, TwoHosts, netns_socket, wait_until
from tunsec.bench.procs import (
    cpu_seconds,
    rss_bytes,
    sched_seconds,
    threads_cpu_seconds,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from tunsec.bench.systems.base import Unavailable, log_tail, missing_commands
from tunsec.bench.systems.strongswan import CHARON, LIBIPSEC_PLUGIN, Instance, start_charon, strongswan_conf, swanctl
from tunsec.bench.systems.tunsec import _tunsec_env, tunsec_importable

CONN, CHILD, POOL = "rw", "net", "rw"
POOL4 = "10.3.0.0/16"            # 65534 addresses: room for any N the benchmark runs
GATEWAY_ID = "gw.example.org"
PROPOSALS, ESP_PROPOSALS = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
IP_PKTINFO = 8                   # <linux/in.h>; the socket module does not export it
LOOP_THREAD = "tunsec-q"         # the worker's C packet loops name their threads tunsec-q<N> (csrc/loop.c)


def client_id(k: int) -> str:
    return f"rw{k}@example.org"


def dos_settings(clients: int) -> tuple[int, int]:
    """(cookie threshold, half-open limit) for both gateways: above the burst, so no COOKIE and no drop."""
    return 2 * clients + 10, 4 * clients + 10


# --------------------------------------------------------------------------
# Configurations (swanctl.conf syntax, shared by tunsec and charon)
# --------------------------------------------------------------------------


def gateway_swanctl(gw: Host, psk: str, pool: str = POOL4) -> str:
    """The road-warrior gateway: any address, any identity with the PSK, a pool, remote_ts = dynamic."""
    return f"""pools {{
  {POOL} {{
    addrs = {pool}
  }}
}}
connections {{
  {CONN} {{
    version = 2
    local_addrs = {gw.outer4}
    remote_addrs = %any
    encap = yes
    proposals = {PROPOSALS}
    pools = {POOL}
    unique = no
    local {{
      auth = psk
      id = {GATEWAY_ID}
    }}
    remote {{
      auth = psk
      id = %any
    }}
    children {{
      {CHILD} {{
        local_ts = {gw.inner_net4}
        remote_ts = dynamic
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
}}
secrets {{
  ike-rw {{
    secret = "{psk}"
  }}
}}
"""


def client_swanctl(me: Host, gw: Host, psk: str, clients: int) -> str:
    """N connections ``rw1..rwN`` in one charon, each its own identity and virtual IP, started on load."""
    conns = "".join(f"""  {CONN}{k} {{
    version = 2
    local_addrs = {me.outer4}
    remote_addrs = {gw.outer4}
    encap = yes
    vips = 0.0.0.0
    proposals = {PROPOSALS}
    local {{
      auth = psk
      id = {client_id(k)}
    }}
    remote {{
      auth = psk
      id = {GATEWAY_ID}
    }}
    children {{
      {CHILD} {{
        local_ts = dynamic
        remote_ts = {gw.inner_net4}
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
        start_action = start
      }}
    }}
  }}
""" for k in range(1, clients + 1))
    return f"connections {{\n{conns}}}\nsecrets {{\n  ike-rw {{\n    secret = \"{psk}\"\n  }}\n}}\n"


# parallel `swanctl --terminate` calls of RoadWarriors.terminate_all
TERMINATE_PARALLEL = 8
# charon's worker threads that long-running jobs hold for good with kernel-libipsec: receiver,
# sender, scheduler, watcher and libipsec's four (seen in a thread dump of the client charon)
CHARON_RESIDENT_THREADS = 8


def charon_tuning(clients: int, *, gateway: bool) -> str:
    """strongswan.conf lines for many IKE SAs: a hashed SA table; on the gateway the DoS limits.

    The clients' charon gets more worker threads than its default 16: a `swanctl --terminate`
    holds one thread while it waits for the DELETE's answer, and the DELETE (and the answer)
    need another.  16 minus the 8 resident ones left exactly 8, so 8 parallel terminates that
    came in before charon had run any of their DELETE jobs took every thread: nothing was sent
    until the first terminate's own timeout freed one (all 8 took the full timeout)."""
    lines = "  ikesa_table_size = 1024\n  ikesa_table_segments = 16\n"
    if gateway:
        # cookie_threshold_ip too: strongSwan 5.9's per-IP cookie threshold (default 3) sent COOKIEs
        # to this one-address burst, and the clients' charon drops an IKE_SA_INIT answer that comes
        # back while it still holds the SA it sent the cookie retry from ("ignoring request with
        # ID 0, already processing"): that client retransmitted after 4 s, so strongSwan's N = 100
        # took 0.4 s or 4.4 s.  Real road warriors come from many addresses and never reach it.
        cookies, half_open = dos_settings(clients)
        lines += (f"  cookie_threshold = {cookies}\n  cookie_threshold_ip = {cookies}\n"
                  f"  block_threshold = {half_open}\n")
    else:
        # reuse_ikesa = no: each connection is its own road warrior, so nothing to reuse, and with
        # reuse on every initiation walks all the IKE SAs charon holds, waiting for each one another
        # thread has checked out (answers being processed): the faster the gateway answered, the
        # slower the clients started (1000 took 7.8 s to initiate against strongSwan's gateway, 3.2 s
        # without), which capped the faster gateway's figure at the clients' rate.
        threads = CHARON_RESIDENT_THREADS + 2 * TERMINATE_PARALLEL + 8
        lines += f"  install_virtual_ip = yes\n  threads = {threads}\n  reuse_ikesa = no\n"
    return lines


# --------------------------------------------------------------------------
# The gateways
# --------------------------------------------------------------------------


class Gateway(Protocol):
    name: str

    def start(self) -> None: ...

    def pids(self) -> list[int]: ...

    def diagnostics(self) -> str: ...


@dataclass
class TunsecGateway:
    """``tunsec up`` in the gateway namespace with the road-warrior connection."""

    topo: TwoHosts
    psk: str
    clients: int
    log_level: str = "info"
    pool: str = POOL4
    name: str = "tunsec"
    timeline: Path | None = None    # record a per-client timeline here (tunsec.bench.timeline)
    dir: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.dir = self.topo.workdir / "tunsec-gateway"
        self.dir.mkdir(parents=True, exist_ok=True)
        cookies, half_open = dos_settings(self.clients)
        self.conf.write_text(f"""tunsec {{
  tun = tunsec0
  control_socket = {self.dir / "tunsec.sock"}
  state_dir = {self.dir / "state"}
  log_level = {self.log_level}
  cookie_threshold = {cookies}
  half_open_limit = {half_open}
  cookie_threshold_ip = {cookies}
  block_threshold = {half_open}
}}
{gateway_swanctl(self.topo.a, self.psk, self.pool)}""")
        self.conf.chmod(0o600)

    @property
    def conf(self) -> Path:
        return self.dir / "tunsec.conf"

    @property
    def log(self) -> Path:
        return self.dir / "tunsec.log"

    def start(self, argv0: Sequence[str] = ()) -> None:
        """Start it (``argv0``: the interpreter command; default this one) and wait for its control socket."""
        if not argv0 and self.timeline is not None:
            argv0 = [sys.executable, "-m", "tunsec.bench.timeline", "--out", str(self.timeline)]
        argv = [*(argv0 or [sys.executable]), "-m", "tunsec", "up", "-c", str(self.conf)]
        self.proc = proc = self.topo.popen(self.topo.a, argv, env=_tunsec_env(), log=self.log)
        ok = wait_until(lambda: proc.poll() is not None or self.cli("status").returncode == 0, 30, 0.25)
        if proc.poll() is not None or not ok:
            raise Unavailable(f"tunsec gateway did not start: {log_tail(self.log, 10)}")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tunsec", *args, "-c", str(self.conf)]
        return self.topo.run(self.topo.a, argv, env=_tunsec_env(), check=False, timeout=timeout)

    def status(self) -> dict[str, Any]:
        r = self.cli("status", "--json")
        if r.returncode != 0:
            raise Unavailable(f"tunsec status: {r.stderr.strip()}")
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def diagnostics(self) -> str:
        return log_tail(self.log, 20)


@dataclass
class CharonGateway:
    """charon (kernel-libipsec) in the gateway namespace with the same road-warrior connection."""

    topo: TwoHosts
    psk: str
    clients: int
    name: str = "strongswan"
    inst: Instance = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.inst = Instance(host=self.topo.a, dir=self.topo.workdir / "strongswan-gateway")
        (self.inst.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.inst.dir / "strongswan.conf").write_text(
            strongswan_conf(self.inst, level=1, extra=charon_tuning(self.clients, gateway=True), timestamps=True))
        path = self.inst.dir / "swanctl.conf"
        path.write_text(gateway_swanctl(self.topo.a, self.psk))
        path.chmod(0o600)

    def start(self) -> None:
        self.proc = start_charon(self.topo, self.inst)
        _swanctl_ok(self.topo, self.inst, "--load-all", "--noprompt")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def diagnostics(self) -> str:
        return log_tail(self.inst.log, 20)


def _swanctl_ok(topo: TwoHosts, inst: Instance, *args: str, timeout: float = 120) -> str:
    r = swanctl(topo, inst, *args, timeout=timeout)
    if r.returncode != 0:
        raise Unavailable(f"swanctl {args[0]} in {inst.host.ns}: {(r.stdout + r.stderr).strip()[-400:]}\n"
                          f"{log_tail(inst.log, 10)}")
    return r.stdout


# --------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------


_STATS = re.compile(r"IKE_SAs: (\d+) total, (\d+) half-open")
_LOG_INIT = re.compile(rf"^(\d\d):(\d\d):(\d\d\.\d{{3}}) \d+\[IKE\] initiating IKE_SA {CONN}(\d+)\[")
_LOG_UP = re.compile(rf"^(\d\d):(\d\d):(\d\d\.\d{{3}}) \d+\[IKE\] IKE_SA {CONN}(\d+)\[\d+\] established ")
_LOG_RETRANSMIT = re.compile(r"^\S+ \d+\[IKE\] retransmit \d+ of request with message ID \d+")
_SA_LINE = re.compile(r"^list-sa event \{(\S+) \{(.*)$")


@dataclass
class RoadWarriors:
    """One charon in namespace B holding ``clients`` road-warrior connections to the gateway in A."""

    topo: TwoHosts
    psk: str
    clients: int
    inst: Instance = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.inst = Instance(host=self.topo.b, dir=self.topo.workdir / "strongswan-clients")
        (self.inst.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.inst.dir / "strongswan.conf").write_text(
            strongswan_conf(self.inst, level=1, extra=charon_tuning(self.clients, gateway=False), timestamps=True))
        path = self.inst.dir / "swanctl.conf"
        path.write_text(client_swanctl(self.topo.b, self.topo.a, self.psk, self.clients))
        path.chmod(0o600)

    def start(self) -> None:
        """Start charon with no connections loaded yet (they start when :meth:`load` loads them)."""
        self.proc = start_charon(self.topo, self.inst)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def load(self) -> None:
        """Load the connections and the PSK: every connection starts at once."""
        _swanctl_ok(self.topo, self.inst, "--load-creds", "--noprompt")
        _swanctl_ok(self.topo, self.inst, "--load-conns")

    def swanctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return swanctl(self.topo, self.inst, *args, timeout=timeout)

    def established(self) -> int:
        """IKE SAs charon has established (total minus half-open; cheap for charon to answer)."""
        m = _STATS.search(self.swanctl("--stats", timeout=30).stdout)
        return int(m.group(1)) - int(m.group(2)) if m else 0

    def wait_established(self, timeout: float, interval: float = 0.02) -> float | None:
        """Until every client's IKE SA is up: by charon's log, read as it grows, then confirmed by
        swanctl's count (a client whose IKE SA went down again is waited for by that count).  The
        time.monotonic() when the log had them all (the confirmation not counted); None if not.

        Not by polling ``swanctl --stats``: each call cost ~24 ms of CPU (swanctl starting up in
        the namespace), 2-3 of them inside an N = 100 burst of 0.2-0.5 s took CPU from the gateway
        and the clients on this 2-vCPU host, and a 0.1 s poll of a call taking up to 0.2 s under
        load added up to 0.3 s to the time it reports."""
        deadline = time.monotonic() + timeout
        up: set[str] = set()
        seen, rest = 0, b""
        while len(up) < self.clients:
            try:
                with open(self.inst.log, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
            except OSError:
                chunk = b""
            seen += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if b" established " in line and (m := _LOG_UP.match(line.decode(errors="replace"))):
                    up.add(m.group(4))
            if len(up) >= self.clients or time.monotonic() >= deadline:
                break
            time.sleep(interval)
        done = time.monotonic()
        if wait_until(lambda: self.established() >= self.clients, max(1.0, deadline - done), interval=0.1):
            return done if len(up) >= self.clients else time.monotonic()
        return None

    def vips(self) -> dict[str, str]:
        """{connection: its virtual IP} of the established IKE SAs with an installed child."""
        out = self.swanctl("--list-sas", "--raw", timeout=120).stdout
        found: dict[str, str] = {}
        for line in out.splitlines():
            m = _SA_LINE.match(line)
            if not m or "state=ESTABLISHED" not in m.group(2) or "state=INSTALLED" not in m.group(2):
                continue
            vip = re.search(r"local-vips=\[([^\]\s]+)", m.group(2))
            if vip:
                found[m.group(1)] = vip.group(1)
        return found

    def wait_vips(self, timeout: float) -> dict[str, str]:
        """Every connection's virtual IP, once all have one (or what there is after ``timeout``)."""
        seen: dict[str, str] = {}

        def done() -> bool:
            seen.clear()
            seen.update(self.vips())
            return len(seen) >= self.clients

        wait_until(done, timeout, interval=0.5)
        return dict(seen)

    def terminate_all(self, parallel: int = TERMINATE_PARALLEL) -> list[str]:
        """Delete every IKE SA from the client side (swanctl waits for each DELETE's answer, so a few
        at a time; each wait holds one of charon's threads, see charon_tuning); the connections whose
        termination failed, with swanctl's output."""
        def terminate(k: int) -> str:
            r = self.swanctl("--terminate", "--ike", f"{CONN}{k}", "--timeout", "10", timeout=60)
            return "" if r.returncode == 0 else f"{CONN}{k}: {(r.stdout + r.stderr).strip()[-200:]}"

        with ThreadPoolExecutor(parallel) as pool:
            return [err for err in pool.map(terminate, range(1, self.clients + 1)) if err]

    def diagnostics(self) -> str:
        return log_tail(self.inst.log, 20)

    def burst_seconds(self) -> float | None:
        """Seconds from the first IKE_SA_INIT charon sent to the moment every client's IKE SA was up,
        by the timestamps of its log: what the gateway took, without the swanctl calls and the
        polling around it (which add a few tenths of a second to both gateways' times)."""
        return burst_seconds(self.log_lines(), self.clients)

    def log_lines(self) -> list[str]:
        return self.inst.log.read_text(errors="replace").splitlines()


@dataclass(frozen=True)
class ClientTimes:
    """Each client's first IKE_SA_INIT and its IKE SA up, seconds after the first client's
    IKE_SA_INIT, by the client charon's log (across midnight too)."""

    initiated: dict[str, float]
    up: dict[str, float]
    start: float | None = None      # the first IKE_SA_INIT's time of day (seconds since local midnight)

    def wall(self, offset: float) -> float:
        """``offset`` seconds after the first IKE_SA_INIT as a time.time() value (the log's day is
        today's, or yesterday's when that puts it in the future)."""
        assert self.start is not None
        midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
        at = midnight + self.start + offset
        return at - 86400 if at > time.time() + 3600 else at

    def pace(self) -> float | None:
        """First to last IKE_SA_INIT: how fast the clients' charon started them.  A gateway that keeps
        up with it (answers within milliseconds) is done a few ms after this; the clients cannot be
        set up faster than they start."""
        return max(self.initiated.values()) if self.initiated else None

    def setup_seconds(self) -> list[float]:
        """Per client, its IKE_SA_INIT to its IKE SA up: the gateway's answers plus its queue."""
        return sorted(self.up[k] - self.initiated[k] for k in self.up if k in self.initiated)


def client_times(log_lines: Sequence[str]) -> ClientTimes:
    def seconds(m: re.Match[str]) -> float:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

    first: float | None = None
    initiated: dict[str, float] = {}
    up: dict[str, float] = {}
    for line in log_lines:
        if m := _LOG_INIT.match(line):
            first = seconds(m) if first is None else first
            initiated.setdefault(m.group(4), (seconds(m) - first) % 86400)
        elif first is not None and (m := _LOG_UP.match(line)):
            up.setdefault(m.group(4), (seconds(m) - first) % 86400)
    return ClientTimes(initiated, up, first)


def retransmissions(log_lines: Sequence[str]) -> int:
    """Requests charon sent again (its log): answers that took longer than its 4 s, or were lost."""
    return sum(1 for line in log_lines if _LOG_RETRANSMIT.match(line))


def burst_seconds(log_lines: Sequence[str], clients: int) -> float | None:
    """See :meth:`RoadWarriors.burst_seconds`; None unless all ``clients`` came up."""
    up = client_times(log_lines).up
    return max(up.values()) if len(up) >= clients else None


# --------------------------------------------------------------------------
# Pinging through every tunnel
# --------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tunsec-scale"
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def ping_from(host: Host, sources: Sequence[str], dst: str, timeout: float, batch: int = 64) -> set[str]:
    """Ping ``dst`` from ``host`` once with each of ``sources`` as the source address (IP_PKTINFO on one
    raw socket), at most ``batch`` requests in flight, resending the unanswered ones each round;
    the sources that got an echo reply within ``timeout`` seconds."""
    by_ident = {(i + 1) & 0xFFFF: src for i, src in enumerate(sources)}
    if len(by_ident) != len(sources):
        raise ValueError("at most 65535 sources")
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    with netns_socket(host, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        seq = 0
        while len(answered) < len(sources) and time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            pending = [(i, s) for i, s in by_ident.items() if s not in answered]
            for start in range(0, len(pending), batch):
                for ident, src in pending[start:start + batch]:
                    info = struct.pack("=I4s4s", 0, socket.inet_aton(src), bytes(4))
                    try:
                        sock.sendmsg([_echo(ident, seq)], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (dst, 0))
                    except OSError:
                        continue      # no route yet for this source: the next round tries again
                _collect(sock, by_ident, dst, answered, min(deadline, time.monotonic() + 0.05))
            _collect(sock, by_ident, dst, answered, min(deadline, time.monotonic() + 0.5))
    return answered


def _collect(sock: socket.socket, by_ident: dict[int, str], dst: str, answered: set[str], until: float) -> None:
    """Echo replies from ``dst`` to one of the sources, until ``until`` or all are answered."""
    import select

    while len(answered) < len(by_ident):
        left = until - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        while True:
            try:
                pkt = sock.recv(2048)
            except BlockingIOError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            if len(pkt) < ihl + 8 or pkt[ihl] != 0 or socket.inet_ntoa(pkt[12:16]) != dst:
                continue
            ident = struct.unpack("!H", pkt[ihl + 4:ihl + 6])[0]
            src = by_ident.get(ident)
            if src is not None and socket.inet_ntoa(pkt[16:20]) == src:
                answered.add(src)


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


@dataclass
class ScaleResult:
    gateway: str
    clients: int
    established: int = 0            # IKE SAs charon counted established
    pinged: int = 0                 # virtual IPs that answered
    distinct_vips: int = 0
    t_established: float | None = None    # seconds from the load until all IKE SAs were established
    t_pinged: float | None = None         # ... until every virtual IP answered a ping
    t_burst: float | None = None          # first IKE_SA_INIT to all IKE SAs up, by the client charon's log
    t_pace: float | None = None           # first to last IKE_SA_INIT, by the same log (ClientTimes.pace)
    setup_median: float | None = None     # per client, IKE_SA_INIT to IKE SA up (ClientTimes.setup_seconds) ...
    setup_max: float | None = None        # ... and the slowest
    retransmits: int = 0            # requests the clients sent again (their log): answers later than 4 s, or lost
    main_run: float | None = None   # share of t_burst the gateway's main process (threads summed) was on a CPU
    main_wait: float | None = None  # ... runnable but waiting for one (the rest it slept: SchedSampler)
    rss_before: int = 0
    rss_after: int = 0
    rss_main_before: int = 0        # of these, the gateway's main process (tunsec: the control process)
    rss_main_after: int = 0
    cpu_gateway: float = 0.0        # user+system seconds of the gateway's processes, load to last ping
    cpu_clients: float = 0.0        # ... of the client charon (is it the bottleneck?)
    cpu_main: float = 0.0           # of cpu_gateway, the main process (tunsec: the control process; charon)
    cpu_loops: float = 0.0          # of cpu_gateway, tunsec's C packet loop threads (tunsec-q<N>, in the worker)
    install_holds: int = 0          # tunsec: IKE SAs whose answers waited for their Child SA installs ...
    install_hold_mean: float | None = None   # ... seconds on average (the pipe round trip as the answer sees it)
    install_hold_max: float | None = None    # ... and at most
    spi_waits: int = 0              # tunsec: IKE_AUTHs that waited for an inbound SPI (ike_held.spi_waits)
    reason: str = ""

    @property
    def ike_sas_per_s(self) -> float | None:
        return self.clients / self.t_established if self.t_established else None

    @property
    def cpu_worker(self) -> float:
        """The gateway's other processes (tunsec: the worker, its packet loops too)."""
        return self.cpu_gateway - self.cpu_main

    @property
    def kib_per_client(self) -> float:
        return (self.rss_after - self.rss_before) / 1024 / self.clients


class SchedSampler:
    """The gateway's main process's schedstat (on a CPU, waiting for one) every ``interval`` seconds
    in a thread, so that its share of the burst (first IKE_SA_INIT to last IKE SA up, by the
    clients' log) can be taken afterwards: what it was neither, it slept (on a socket, a timer,
    the worker), i.e. idle time on the critical path if the gateway was behind."""

    # a sample reads every thread's schedstat: ~0.5 ms of CPU for charon's ~25 threads, so not more often
    def __init__(self, pids: Sequence[int], interval: float = 0.025) -> None:
        self.pids, self.interval = list(pids), interval
        self.samples: list[tuple[float, float, float]] = []    # (time.time(), run s, wait s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sched-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now, stats = time.time(), [sched_seconds(p) for p in self.pids]
            self.samples.append((now, sum(r for r, _ in stats), sum(w for _, w in stats)))
            if self._stop.wait(self.interval):
                return

    def shares(self, t0: float, t1: float) -> tuple[float, float] | None:
        """(on a CPU, waiting for one) as shares of [t0, t1], interpolated between the samples
        around its ends; None unless the samples cover it."""
        if t1 <= t0 or not self.samples or not self.samples[0][0] <= t0 < t1 <= self.samples[-1][0]:
            return None
        (r0, w0), (r1, w1) = self._at(t0), self._at(t1)
        return (r1 - r0) / (t1 - t0), (w1 - w0) / (t1 - t0)

    def _at(self, t: float) -> tuple[float, float]:
        i = bisect.bisect_left(self.samples, t, key=lambda s: s[0])
        if self.samples[i][0] == t:
            return self.samples[i][1], self.samples[i][2]
        (ta, ra, wa), (tb, rb, wb) = self.samples[i - 1], self.samples[i]
        f = (t - ta) / (tb - ta)
        return ra + f * (rb - ra), wa + f * (wb - wa)


def no_ipv6(topo: TwoHosts) -> None:
    """No IPv6 in the namespaces (the benchmark is IPv4 only), before any daemon starts: otherwise the
    veths' link-local addresses finish duplicate address detection a second or two after the link came
    up, often during the burst, and each charon takes the address change for a roam and sends a MOBIKE
    address update to every IKE SA it holds (100 extra exchanges in half the runs at N = 100)."""
    for host in topo.hosts:
        topo.run(host, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"])


def run_clients(topo: TwoHosts, gateway: Gateway, clients: RoadWarriors, timeout: float) -> ScaleResult:
    """Start ``gateway`` and the client charon, load the clients, measure until all pinged."""
    res = ScaleResult(gateway.name, clients.clients)
    no_ipv6(topo)
    gateway.start()
    clients.start()
    time.sleep(1.0)                         # let both settle before the "before" sample
    res.rss_before = tree_rss_bytes(gateway.pids())
    res.rss_main_before = sum(rss_bytes(p) for p in gateway.pids())
    cpu0 = tree_cpu_seconds(gateway.pids())
    main0 = sum(cpu_seconds(p) for p in gateway.pids())
    loops0 = threads_cpu_seconds(gateway.pids(), LOOP_THREAD)
    ccpu0 = tree_cpu_seconds(clients.pids())
    sampler = SchedSampler(gateway.pids())
    sampler.start()
    t0 = time.monotonic()
    clients.load()
    if (done := clients.wait_established(timeout)) is not None:
        res.t_established = done - t0
    sampler.stop()
    vips = clients.wait_vips(max(5.0, timeout - (time.monotonic() - t0)))
    res.established = clients.established()
    res.distinct_vips = len(set(vips.values()))
    lines = clients.log_lines()
    res.t_burst = burst_seconds(lines, clients.clients)
    times = client_times(lines)
    res.t_pace = times.pace()
    res.retransmits = retransmissions(lines)
    if setups := times.setup_seconds():
        res.setup_median, res.setup_max = statistics.median(setups), setups[-1]
    if res.t_burst is not None:
        shares = sampler.shares(times.wall(0.0), times.wall(res.t_burst))
        if shares is not None:
            res.main_run, res.main_wait = shares
    answered = ping_from(topo.b, sorted(vips.values()), topo.a.inner4,
                         max(5.0, timeout - (time.monotonic() - t0)))
    res.pinged = len(answered)
    if res.pinged == clients.clients:
        res.t_pinged = time.monotonic() - t0
    res.cpu_gateway = tree_cpu_seconds(gateway.pids()) - cpu0
    res.cpu_main = sum(cpu_seconds(p) for p in gateway.pids()) - main0
    res.cpu_loops = threads_cpu_seconds(gateway.pids(), LOOP_THREAD) - loops0
    res.cpu_clients = tree_cpu_seconds(clients.pids()) - ccpu0
    res.rss_after = tree_rss_bytes(gateway.pids())
    res.rss_main_after = sum(rss_bytes(p) for p in gateway.pids())
    if isinstance(gateway, TunsecGateway):
        _install_holds(gateway, res)
    if res.pinged < clients.clients:
        res.reason = (f"{res.established} established, {len(vips)} with a virtual IP, {res.pinged} pinged\n"
                      f"gateway:\n{gateway.diagnostics()}\nclients:\n{clients.diagnostics()}")
    return res


def _install_holds(gateway: TunsecGateway, res: ScaleResult) -> None:
    """How long the clients' IKE answers waited for their Child SA installs (tunsec status)."""
    try:
        held = gateway.status().get("ike_held", {})
    except (Unavailable, ValueError):
        return
    res.install_holds = int(held.get("install_holds", 0))
    res.spi_waits = int(held.get("spi_waits", 0))
    if res.install_holds:
        res.install_hold_mean = float(held.get("install_hold_seconds", 0.0)) / res.install_holds
        res.install_hold_max = float(held.get("install_hold_max", 0.0))


def run_one(kind: str, n: int, timeout: float, keep_workdir: bool = False,
            timeline: Path | None = None) -> ScaleResult:
    with TwoHosts(ipv6=False, prefix="sc", keep_workdir=keep_workdir) as topo:
        psk = secrets.token_hex(16)
        gateway: Gateway = (TunsecGateway(topo, psk, n, timeline=timeline) if kind == "tunsec"
                            else CharonGateway(topo, psk, n))
        try:
            return run_clients(topo, gateway, RoadWarriors(topo, psk, n), timeout)
        except Unavailable as exc:
            return ScaleResult(kind, n, reason=str(exc))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _tunsec_only(r: ScaleResult, value: float) -> float | None:
    return value if r.gateway == "tunsec" else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _pct(share: float | None) -> float | None:
    """A share in percent (threads summed: a multi-threaded process can pass 100)."""
    return None if share is None else 100 * share


def format_table(results: Sequence[ScaleResult]) -> str:
    """Metrics as rows, gateways as columns, and tunsec / strongSwan as the last column."""
    by = {r.gateway: r for r in results}
    t, s = by.get("tunsec"), by.get("strongswan")
    names = [r.gateway for r in results]
    rows: list[tuple[str, list[float | None], int]] = [
        ("clients up (VIP + ping)", [float(r.pinged) for r in results], 0),
        ("distinct virtual IPs", [float(r.distinct_vips) for r in results], 0),
        ("s until all IKE SAs up", [r.t_established for r in results], 2),
        ("IKE SAs established / s", [r.ike_sas_per_s for r in results], 1),
        ("s until all VIPs pinged", [r.t_pinged for r in results], 2),
        ("s first INIT to all up (client log)", [r.t_burst for r in results], 3),
        ("s first INIT to last INIT (client log)", [r.t_pace for r in results], 3),
        ("ms INIT to up per client, median", [_ms(r.setup_median) for r in results], 0),
        ("ms INIT to up per client, max", [_ms(r.setup_max) for r in results], 0),
        ("client retransmissions (client log)", [float(r.retransmits) for r in results], 0),
        ("gateway RSS before, MiB", [r.rss_before / 2**20 for r in results], 1),
        ("gateway RSS after, MiB", [r.rss_after / 2**20 for r in results], 1),
        ("gateway KiB per client", [r.kib_per_client for r in results], 1),
        ("  of which main process", [(r.rss_main_after - r.rss_main_before) / 1024 / r.clients for r in results], 1),
        ("gateway CPU s (user+sys)", [r.cpu_gateway for r in results], 2),
        ("gateway CPU ms per client", [r.cpu_gateway * 1000 / r.clients for r in results], 2),
        ("  main process (control; charon)", [r.cpu_main * 1000 / r.clients for r in results], 2),
        ("main process on a CPU, % of burst", [_pct(r.main_run) for r in results], 0),
        ("main process waiting for a CPU, %", [_pct(r.main_wait) for r in results], 0),
        ("  worker: Python", [_tunsec_only(r, (r.cpu_worker - r.cpu_loops) * 1000 / r.clients) for r in results], 2),
        ("  worker: packet loops", [_tunsec_only(r, r.cpu_loops * 1000 / r.clients) for r in results], 2),
        ("install hold ms, mean", [_ms(r.install_hold_mean) for r in results], 1),
        ("install hold ms, max", [_ms(r.install_hold_max) for r in results], 1),
        ("IKE_AUTHs that waited for an SPI", [_tunsec_only(r, r.spi_waits) for r in results], 0),
        ("client charon CPU s", [r.cpu_clients for r in results], 2),
    ]
    ti, si = (names.index("tunsec") if t else -1), (names.index("strongswan") if s else -1)
    header = [f"N = {results[0].clients}" if results else "", *names] + (["tunsec / strongSwan"] if t and s else [])
    table = [header]
    for label, values, digits in rows:
        cells = [label, *(_fmt(v, digits) for v in values)]
        if t and s:
            cells.append(_ratio(values[ti], values[si]))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        if r.reason:
            lines.append(f"\n{r.gateway}: {r.reason}")
    return "\n".join(lines)


def format_marginal(runs: Sequence[ScaleResult]) -> str:
    """Memory an additional client costs, per gateway, between the smallest and largest N run:
    (RSS after at N2 - RSS after at N1) / (N2 - N1). Unlike "KiB per client" (RSS after - RSS
    before, over N) it leaves out what a gateway allocates once when clients start to arrive
    (buffers of the first packets, allocator arenas), which dominates at small N."""
    lines = []
    for name in dict.fromkeys(r.gateway for r in runs):
        mine = sorted((r for r in runs if r.gateway == name and not r.reason), key=lambda r: r.clients)
        if len(mine) >= 2 and mine[-1].clients > mine[0].clients:
            lo, hi = mine[0], mine[-1]
            kib = (hi.rss_after - lo.rss_after) / 1024 / (hi.clients - lo.clients)
            lines.append(f"{name}: {kib:.1f} KiB per additional client (N = {lo.clients} -> {hi.clients})")
    return "\n".join(lines)


def precheck() -> str | None:
    missing = missing_commands(CHARON, "swanctl", "unshare") or tunsec_importable()
    if missing:
        return missing
    if not Path(LIBIPSEC_PLUGIN).is_file():
        return "kernel-libipsec plugin missing (apt install libcharon-extra-plugins)"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    return None


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)     # so the namespaces are torn down


def main(argv: Sequence[str] | None = None, prog: str = "bench/scale.py") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, nargs="+", default=[100], help="N (several: one table each)")
    ap.add_argument("--gateways", nargs="+", default=["tunsec", "strongswan"], choices=["tunsec", "strongswan"])
    ap.add_argument("--timeout", type=float, default=0.0, help="seconds per run (default: 30 + N / 10)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs and logs (printed)")
    ap.add_argument("--timeline", type=Path, metavar="FILE",
                    help="record the tunsec gateway's per-client timeline in FILE.N and print its summary "
                         "(tunsec.bench.timeline; costs the control process some CPU)")
    args = ap.parse_args(argv)
    reason = precheck()
    if reason:
        print(f"scale benchmark cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    everything: list[dict[str, Any]] = []
    runs: list[ScaleResult] = []
    for n in args.clients:
        if not 1 <= n <= ipaddress.ip_network(POOL4).num_addresses - 2:
            ap.error(f"--clients {n}: 1 to {ipaddress.ip_network(POOL4).num_addresses - 2}")
        results = []
        for kind in args.gateways:
            print(f"{kind}: {n} clients ...", file=sys.stderr, flush=True)
            trace = args.timeline.with_name(f"{args.timeline.name}.{n}") if args.timeline and kind == "tunsec" \
                else None
            results.append(run_one(kind, n, args.timeout or 30 + n / 10, args.keep_workdir, trace))
            if trace is not None and trace.is_file():
                print(timeline.summarize(timeline.load(trace)), flush=True)
        print(format_table(results), flush=True)
        print()
        runs += results
        everything += [{**dataclasses.asdict(r), "ike_sas_per_s": r.ike_sas_per_s,
                        "kib_per_client": r.kib_per_client, "cpu_worker": r.cpu_worker} for r in results]
    if marginal := format_marginal(runs):
        print(marginal, flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2) + "\n")
    return 0 if all(not r["reason"] for r in everything) else 1
