"""tunsec in A <-> strongSwan charon (kernel-libipsec) in B, keyed by IKEv2.

Both read the same swanctl.conf text (tunsec's config syntax is
swanctl.conf's), so the row measures the two dataplanes against each other
with exactly the same proposals: IKE aes128gcm16-prfsha256-x25519, ESP
aes128gcm16."""

from __future__ import annotations

import secrets
import subprocess
import sys

from tunsec.bench.netns import TwoHosts, wait_until
from tunsec.bench.systems.base import System, Unavailable, log_tail
from tunsec.bench.systems.strongswan import (
    Instance,
    StrongSwanLibipsec,
    start_charon,
    strongswan_conf,
    swanctl,
    swanctl_conf,
)
from tunsec.bench.systems.tunsec import READY_TIMEOUT, _tunsec_env, control_socket, tunsec_importable

# tunsec's loop threads share the SA's sequence numbers: give strongSwan's
# receiver a window wider than the reordering that causes (its default is 32)
REPLAY_WINDOW = 4096


class TunsecStrongSwan(System):
    name = "tunsec-strongswan"
    description = "tunsec (A) <-> strongSwan kernel-libipsec (B), IKEv2 PSK, AES-GCM-128"

    def __init__(self) -> None:
        super().__init__()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._charon: Instance | None = None

    def precheck(self) -> str | None:
        return tunsec_importable() or StrongSwanLibipsec().precheck()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._procs)

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        psk = secrets.token_hex(16)
        a, b = topo.a, topo.b
        windowed = f"        mode = tunnel\n        replay_window = {REPLAY_WINDOW}\n"

        inst = Instance(host=b, dir=topo.workdir / f"strongswan-{b.ns}")
        (inst.dir / "run").mkdir(parents=True)
        (inst.dir / "strongswan.conf").write_text(strongswan_conf(inst))
        conf = inst.dir / "swanctl.conf"
        conf.write_text(swanctl_conf(b, a, psk).replace("        mode = tunnel\n", windowed))
        conf.chmod(0o600)
        self._charon = inst
        self._procs.append(start_charon(topo, inst))
        self._check(swanctl(topo, inst, "--load-all", "--noprompt"), "--load-all")

        path = topo.workdir / f"tunsec-{a.ns}.conf"
        control_socket(a).parent.mkdir(parents=True, exist_ok=True)
        state = topo.workdir / f"tunsec-{a.ns}-state"   # not the host's /var/lib/tunsec
        state.mkdir(mode=0o700, exist_ok=True)
        path.write_text(f"tunsec {{\n  tun = tunsec0\n  control_socket = {control_socket(a)}\n"
                        f"  state_dir = {state}\n}}\n"
                        + swanctl_conf(a, b, psk).replace("        mode = tunnel\n", windowed))
        path.chmod(0o600)
        log = topo.workdir / f"tunsec-{a.ns}.log"
        argv = [sys.executable, "-m", "tunsec", "up", "-c", str(path)]
        proc = topo.popen(a, argv, env=_tunsec_env(), log=log)
        self._procs.append(proc)
        status = [sys.executable, "-m", "tunsec", "status", "-c", str(path)]
        ok = wait_until(lambda: proc.poll() is not None
                        or topo.run(a, status, env=_tunsec_env(), check=False).returncode == 0, READY_TIMEOUT)
        if not ok or proc.poll() is not None:
            raise Unavailable(f"tunsec in {a.ns} did not start: {log_tail(log, 8)}")
        self._check(swanctl(topo, inst, "--initiate", "--child", "net", "--timeout", "20"), "--initiate")
        self._wait_inner_ping(topo)

    def _check(self, res: subprocess.CompletedProcess[str], what: str) -> None:
        if res.returncode != 0:
            log = log_tail(self._charon.log, 10) if self._charon else ""
            raise Unavailable(f"swanctl {what} failed: {(res.stdout + res.stderr).strip()[-400:]}\n{log}")

    def diagnostics(self) -> dict[str, str]:
        out: dict[str, str] = {}
        topo = self._require_topo()
        if self._charon is not None:
            out[self._charon.host.ns] = swanctl(topo, self._charon, "--list-sas").stdout
        sock = control_socket(topo.a)
        res = topo.run(topo.a, [sys.executable, "-m", "tunsec", "status", "--socket", str(sock)],
                       env=_tunsec_env(), check=False)
        out[topo.a.ns] = (res.stdout + res.stderr).strip()
        return out
