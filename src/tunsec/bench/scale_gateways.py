"""The scale benchmark's gateways: tunsec (``tunsec up``) and strongSwan's charon, with the road-warrior
connection of scale_conf.py, in namespace A."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.bench.scale_conf import POOL4, charon_tuning, dos_settings, gateway_swanctl
from tunsec.bench.systems.base import Unavailable, log_tail
from tunsec.bench.systems.strongswan import (
    Instance,
    start_charon,
    strongswan_conf,
    swanctl_ok,
)
from tunsec.bench.systems.tunsec import _tunsec_env


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
    own_session: bool = True        # see tunsec.bench.scale.run_one
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
        self.proc = proc = self.topo.popen(self.topo.a, argv, env=_tunsec_env(), log=self.log,
                                           start_new_session=self.own_session)
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
    own_session: bool = True        # see tunsec.bench.scale.run_one
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
        self.proc = start_charon(self.topo, self.inst, self.own_session)
        swanctl_ok(self.topo, self.inst, "--load-all", "--noprompt")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def diagnostics(self) -> str:
        return log_tail(self.inst.log, 20)
