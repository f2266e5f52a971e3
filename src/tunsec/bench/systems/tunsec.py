"""tunsec <-> tunsec (``tunsec up -c FILE`` in each namespace), keyed manually
(`Tunsec`) or by IKEv2 with a PSK (`TunsecIke`)."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.bench.systems.base import System, Unavailable, log_tail
from tunsec.statedir import init_state_dir

SPI_A_TO_B = 0xC0020001
SPI_B_TO_A = 0xC0010001
READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class ManualSa:
    """One side's view of the manually keyed pair of SAs."""

    me: Host
    peer: Host
    peer_name: str
    spi_in: int
    key_in: str
    spi_out: int
    key_out: str


def control_socket(host: Host) -> Path:
    return Path(f"/run/tunsec-{host.ns}/tunsec.sock")


def manual_config(sa: ManualSa, replay_window: int = 4096, extra: str = "") -> str:
    """The swanctl.conf-syntax config for one side (keys are key||salt hex)."""
    return f"""tunsec {{
  tun = tunsec0
  mtu = auto
  control_socket = {control_socket(sa.me)}
  state_dir = {control_socket(sa.me).parent / "state"}
{extra}}}
manual {{
  {sa.peer_name} {{
    local_addr = {sa.me.outer4}
    remote_addr = {sa.peer.outer4}
    local_ts = {sa.me.inner_net4}
    remote_ts = {sa.peer.inner_net4}
    esp = aes128gcm16
    spi_in = {sa.spi_in:#010x}
    key_in = 0x{sa.key_in}
    spi_out = {sa.spi_out:#010x}
    key_out = 0x{sa.key_out}
    replay_window = {replay_window}
  }}
}}
"""


def manual_pair(topo: TwoHosts) -> tuple[ManualSa, ManualSa]:
    """Fresh random AES-GCM-128 keys (16-byte key + 4-byte salt) both ways."""
    k_ab, k_ba = secrets.token_hex(20), secrets.token_hex(20)
    a = ManualSa(topo.a, topo.b, "b", SPI_B_TO_A, k_ba, SPI_A_TO_B, k_ab)
    b = ManualSa(topo.b, topo.a, "a", SPI_A_TO_B, k_ab, SPI_B_TO_A, k_ba)
    return a, b


def tunsec_importable() -> str | None:
    """Why ``python -m tunsec`` cannot run yet, or None."""
    try:
        spec = importlib.util.find_spec("tunsec.__main__")
    except (ImportError, ValueError) as exc:
        return f"tunsec module not importable: {exc}"
    if spec is None:
        return "the tunsec command does not exist yet (no tunsec.__main__)"
    return None


def _tunsec_env() -> dict[str, str]:
    """The environment for ``python -m tunsec``: the same tunsec tree as ours."""
    import tunsec

    roots = {str(Path(p).resolve().parent) for p in tunsec.__path__}
    path = os.pathsep.join([*sorted(roots), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


class Tunsec(System):
    name = "tunsec"
    description = "tunsec <-> tunsec, manual keys, AES-GCM-128"

    def __init__(self, replay_window: int = 4096, extra_tunsec: str = "") -> None:
        super().__init__()
        self.replay_window = replay_window
        self.extra_tunsec = extra_tunsec
        self._procs: list[subprocess.Popen[bytes]] = []
        self._configs: list[tuple[Host, Path]] = []

    def precheck(self) -> str | None:
        return tunsec_importable()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._procs)

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        for sa in manual_pair(topo):
            path = topo.workdir / f"tunsec-{sa.me.ns}.conf"
            path.write_text(manual_config(sa, self.replay_window, self.extra_tunsec))
            path.chmod(0o600)
            control_socket(sa.me).parent.mkdir(parents=True, exist_ok=True)
            # fresh keys (manual_pair), so a new installation: `tunsec init-state`; teardown removes it
            init_state_dir(control_socket(sa.me).parent / "state")
            self._configs.append((sa.me, path))
        for host, path in self._configs:
            self._start(topo, host, path)
        for host, path in self._configs:
            self._wait_ready(topo, host, path)
        try:
            self._wait_inner_ping(topo)
        except Unavailable as exc:
            raise Unavailable(f"{exc}\n{self._failure_details()}") from exc

    def _failure_details(self) -> str:
        """Both sides' `tunsec status` and log tails, for the reason text."""
        parts = []
        for host, path in self._configs:
            status = self._status(host, path)
            parts.append(
                f"--- {host.ns}: tunsec status (exit {status.returncode})\n"
                f"{(status.stdout + status.stderr).strip()}\n"
                f"--- {host.ns}: log\n{log_tail(self._log(host), 8)}"
            )
        return "\n".join(parts)

    def _log(self, host: Host) -> Path:
        return self._require_topo().workdir / f"tunsec-{host.ns}.log"

    def _start(self, topo: TwoHosts, host: Host, path: Path) -> None:
        argv = [sys.executable, "-m", "tunsec", "up", "-c", str(path)]
        self._procs.append(topo.popen(host, argv, env=_tunsec_env(), log=self._log(host)))

    def _status(self, host: Host, path: Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tunsec", "status", "-c", str(path)]
        return self._require_topo().run(host, argv, env=_tunsec_env(), check=False, timeout=20)

    def _wait_ready(self, topo: TwoHosts, host: Host, path: Path) -> None:
        proc = self._procs[[h for h, _ in self._configs].index(host)]
        ok = wait_until(
            lambda: proc.poll() is not None or self._status(host, path).returncode == 0,
            READY_TIMEOUT,
            interval=0.25,
        )
        if proc.poll() is not None or not ok:
            state = (
                f"exited {proc.returncode}"
                if proc.poll() is not None
                else (f"`tunsec status` not ready after {READY_TIMEOUT:.0f} s")
            )
            raise Unavailable(f"tunsec in {host.ns} {state}: {log_tail(self._log(host), 8)}")

    def teardown(self) -> None:
        super().teardown()
        for host, _ in self._configs:
            shutil.rmtree(control_socket(host).parent, ignore_errors=True)

    def diagnostics(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for host, path in self._configs:
            res = self._status(host, path)
            out[host.ns] = (res.stdout + res.stderr).strip()
        return out


class TunsecIke(Tunsec):
    """The same pair keyed by IKEv2: A initiates, both run the IKE service.

    The manual row's SAs reserve sequence numbers in persisted blocks (RFC
    4106 forbids GCM with static keys otherwise); IKE-keyed SAs do not, so
    this row shows what production tunnels get and the difference between
    the two shows what the reservation costs."""

    name = "tunsec-ike"
    description = "tunsec <-> tunsec, IKEv2 PSK, AES-GCM-128"

    def setup(self, topo: TwoHosts) -> None:
        from tunsec.bench.systems.strongswan import swanctl_conf

        self.topo = topo
        psk = secrets.token_hex(16)
        windowed = f"        mode = tunnel\n        replay_window = {self.replay_window}\n"
        for me, peer in ((topo.a, topo.b), (topo.b, topo.a)):
            path = topo.workdir / f"tunsec-{me.ns}.conf"
            sock = control_socket(me)
            path.write_text(
                f"tunsec {{\n  tun = tunsec0\n  mtu = auto\n  control_socket = {sock}\n"
                f"  state_dir = {sock.parent / 'state'}\n{self.extra_tunsec}}}\n"
                + swanctl_conf(me, peer, psk).replace("        mode = tunnel\n", windowed)
            )
            path.chmod(0o600)
            sock.parent.mkdir(parents=True, exist_ok=True)
            self._configs.append((me, path))
        for host, path in self._configs:
            self._start(topo, host, path)
        for host, path in self._configs:
            self._wait_ready(topo, host, path)
        host, path = self._configs[0]
        argv = [sys.executable, "-m", "tunsec", "initiate", "--child", "net", "-c", str(path)]
        res = topo.run(host, argv, env=_tunsec_env(), check=False, timeout=30)
        if res.returncode != 0:
            raise Unavailable(f"tunsec initiate in {host.ns} failed: {(res.stdout + res.stderr).strip()}\n"
                              f"{self._failure_details()}")
        try:
            self._wait_inner_ping(topo)
        except Unavailable as exc:
            raise Unavailable(f"{exc}\n{self._failure_details()}") from exc
