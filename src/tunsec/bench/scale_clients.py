"""The scale benchmark's clients: one charon in namespace B holding N road warriors (RoadWarriors),
and what its log says about them (each client's IKE_SA_INIT and IKE SA up, retransmissions)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.bench.scale_conf import CONN, TERMINATE_PARALLEL, charon_tuning, client_addresses, client_swanctl
from tunsec.bench.systems.base import log_tail
from tunsec.bench.systems.strongswan import (
    Instance,
    start_charon,
    strongswan_conf,
    swanctl,
    swanctl_ok,
)

_STATS = re.compile(r"IKE_SAs: (\d+) total, (\d+) half-open")
_LOG_INIT = re.compile(rf"^(\d\d):(\d\d):(\d\d\.\d{{3}}) \d+\[IKE\] initiating IKE_SA {CONN}(\d+)\[")
_LOG_UP = re.compile(rf"^(\d\d):(\d\d):(\d\d\.\d{{3}}) \d+\[IKE\] IKE_SA {CONN}(\d+)\[\d+\] established ")
_LOG_RETRANSMIT = re.compile(r"^\S+ \d+\[IKE\] retransmit \d+ of request with message ID (\d+)")
_SA_LINE = re.compile(r"^list-sa event \{(\S+) \{(.*)$")


@dataclass
class RoadWarriors:
    """One charon in namespace B holding ``clients`` road-warrior connections to the gateway in A."""

    topo: TwoHosts
    psk: str
    clients: int
    own_session: bool = True        # see tunsec.bench.scale.run_one
    addresses: int = 1              # source addresses the clients spread over (scale_conf.client_addresses)
    inst: Instance = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.inst = Instance(host=self.topo.b, dir=self.topo.workdir / "strongswan-clients")
        (self.inst.dir / "run").mkdir(parents=True, exist_ok=True)
        (self.inst.dir / "strongswan.conf").write_text(
            strongswan_conf(self.inst, level=1, extra=charon_tuning(self.clients, gateway=False), timestamps=True))
        path = self.inst.dir / "swanctl.conf"
        path.write_text(client_swanctl(self.topo.b, self.topo.a, self.psk, self.clients,
                                       client_addresses(self.topo.b, self.addresses)))
        path.chmod(0o600)

    def start(self) -> None:
        """Start charon with no connections loaded yet (they start when :meth:`load` loads them)."""
        for extra in client_addresses(self.topo.b, self.addresses)[1:]:
            self.topo.run(self.topo.b, ["ip", "addr", "add", f"{extra}/24", "dev", self.topo.b.veth])
        self.proc = start_charon(self.topo, self.inst, self.own_session)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def load(self) -> None:
        """Load the connections and the PSK: every connection starts at once."""
        swanctl_ok(self.topo, self.inst, "--load-creds", "--noprompt")
        swanctl_ok(self.topo, self.inst, "--load-conns")

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
    return sum(retransmissions_by_message(log_lines).values())


def retransmissions_by_message(log_lines: Sequence[str]) -> dict[int, int]:
    """The same by message ID: 0 the IKE_SA_INIT (to port 500: the request or its answer lost), 1 the
    IKE_AUTH (to port 4500: through the gateway's worker), more a later exchange's."""
    counts: dict[int, int] = {}
    for line in log_lines:
        if (m := _LOG_RETRANSMIT.match(line)) is not None:
            counts[int(m[1])] = counts.get(int(m[1]), 0) + 1
    return counts


def burst_seconds(log_lines: Sequence[str], clients: int) -> float | None:
    """See :meth:`RoadWarriors.burst_seconds`; None unless all ``clients`` came up."""
    up = client_times(log_lines).up
    return max(up.values()) if len(up) >= clients else None
