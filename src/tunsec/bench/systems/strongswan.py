"""strongSwan charon with kernel-libipsec (userspace ESP over a TUN) on both sides.

One charon per namespace, each in a private mount namespace with its own
/run and strongswan.conf (see shared/notes/strongswan-in-netns.md).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.bench.systems.base import System, Unavailable, log_tail, missing_commands

CHARON = "/usr/lib/ipsec/charon"
LIBIPSEC_PLUGIN = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"
PLUGINS = (
    "random nonce openssl aes sha2 sha1 hmac gcm pem pkcs1 x509 pubkey kdf "
    "curve25519 kernel-libipsec kernel-netlink socket-default vici updown"
)
# Run charon with /run bound to the instance's own directory ($0).
CHARON_SH = 'mount --bind "$0/run" /run && exec "$1"'


@dataclass(frozen=True)
class Instance:
    host: Host
    dir: Path

    @property
    def uri(self) -> str:
        return f"unix://{self.dir}/run/charon.vici"

    @property
    def log(self) -> Path:
        return self.dir / "charon.log"


def strongswan_conf(inst: Instance, level: int = 1, extra: str = "", timestamps: bool = False) -> str:
    """charon's strongswan.conf for one instance; ``level`` is the ike/cfg log level
    (2 shows payloads and proposals), ``extra`` more lines in ``charon { }``; ``timestamps``
    starts each log line with the time of day in milliseconds (``HH:MM:SS.mmm``)."""
    stamp = "      time_format = %T\n      time_add_ms = yes\n" if timestamps else ""
    return f"""charon {{
  load_modular = no
  load = {PLUGINS}
  install_routes = yes
  install_virtual_ip = no
  plugins {{
    vici {{ socket = {inst.uri} }}
  }}
  filelog {{
    main {{
      path = {inst.log}
      default = 1
      ike = {level}
      cfg = {level}
      knl = 1
      esp = 1
      flush_line = yes
{stamp}    }}
  }}
  syslog {{ daemon {{ default = -1 }} auth {{ default = -1 }} }}
{extra}}}
"""


def swanctl_conf(me: Host, peer: Host, psk: str) -> str:
    return f"""connections {{
  tun {{
    version = 2
    local_addrs = {me.outer4}
    remote_addrs = {peer.outer4}
    encap = yes
    proposals = aes128gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {me.ns}
    }}
    remote {{
      auth = psk
      id = {peer.ns}
    }}
    children {{
      net {{
        local_ts = {me.inner_net4}
        remote_ts = {peer.inner_net4}
        esp_proposals = aes128gcm16
        mode = tunnel
      }}
    }}
  }}
}}
secrets {{
  ike-peers {{
    id-me = {me.ns}
    id-peer = {peer.ns}
    secret = "{psk}"
  }}
}}
"""


def start_charon(topo: TwoHosts, inst: Instance, own_session: bool = False) -> subprocess.Popen[bytes]:
    """Start charon in ``inst.host``'s namespace with its own /run (tracked by
    ``topo``, stopped by PID on close); returns once its vici socket exists.
    ``own_session``: in a session of its own, as a daemon started by an init system is (see
    :func:`tunsec.bench.scale.run_one`). Raises :class:`Unavailable` if it does not come up."""
    env = {**os.environ, "STRONGSWAN_CONF": str(inst.dir / "strongswan.conf")}
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", CHARON_SH, str(inst.dir), CHARON]
    proc = topo.popen(inst.host, argv, env=env, log=inst.dir / "charon.out", start_new_session=own_session)
    sock = inst.dir / "run" / "charon.vici"
    if not wait_until(lambda: sock.exists() or proc.poll() is not None, 15):
        topo.stop(proc)
        raise Unavailable(f"charon in {inst.host.ns}: no vici socket after 15 s")
    if proc.poll() is not None:
        raise Unavailable(
            f"charon in {inst.host.ns} exited {proc.returncode}: {log_tail(inst.dir / 'charon.out', 5)}"
        )
    return proc


def swanctl(topo: TwoHosts, inst: Instance, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``swanctl <args> --uri <inst's vici>`` in its namespace (SWANCTL_DIR = ``inst.dir``)."""
    env = {**os.environ, "SWANCTL_DIR": str(inst.dir)}
    return topo.run(inst.host, ["swanctl", *args, "--uri", inst.uri], env=env, check=False, timeout=timeout)


def swanctl_ok(topo: TwoHosts, inst: Instance, *args: str, timeout: float = 120) -> str:
    r = swanctl(topo, inst, *args, timeout=timeout)
    if r.returncode != 0:
        raise Unavailable(f"swanctl {args[0]} in {inst.host.ns}: {(r.stdout + r.stderr).strip()[-400:]}\n"
                          f"{log_tail(inst.log, 10)}")
    return r.stdout


class StrongSwanLibipsec(System):
    name = "strongswan"
    description = "strongSwan charon, kernel-libipsec (userspace ESP over TUN), AES-GCM-128"

    def __init__(self) -> None:
        super().__init__()
        self._instances: list[Instance] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def precheck(self) -> str | None:
        missing = missing_commands(CHARON, "swanctl", "unshare")
        if missing:
            return missing
        if not Path(LIBIPSEC_PLUGIN).is_file():
            return "kernel-libipsec plugin missing (apt install libcharon-extra-plugins)"
        return None

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._procs)

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        psk = secrets.token_hex(16)
        for host in topo.hosts:
            inst = self._write_instance(topo, host, psk)
            self._instances.append(inst)
            self._start_charon(topo, inst)
        for inst in self._instances:
            self._swanctl(inst, "--load-all", "--noprompt")
        self._swanctl(self._instances[0], "--initiate", "--child", "net", "--timeout", "20")
        self._wait_inner_ping(topo)

    def _write_instance(self, topo: TwoHosts, host: Host, psk: str) -> Instance:
        inst = Instance(host=host, dir=topo.workdir / f"strongswan-{host.ns}")
        (inst.dir / "run").mkdir(parents=True)
        (inst.dir / "strongswan.conf").write_text(strongswan_conf(inst))
        conf = inst.dir / "swanctl.conf"
        conf.write_text(swanctl_conf(host, topo.peer(host), psk))
        conf.chmod(0o600)
        return inst

    def _start_charon(self, topo: TwoHosts, inst: Instance) -> None:
        self._procs.append(start_charon(topo, inst))

    def _swanctl(self, inst: Instance, *args: str) -> str:
        res = swanctl(self._require_topo(), inst, *args)
        if res.returncode != 0:
            raise Unavailable(
                f"swanctl {args[0]} in {inst.host.ns} failed: "
                f"{(res.stdout + res.stderr).strip()[-400:]}\n{log_tail(inst.log, 10)}"
            )
        return res.stdout

    def diagnostics(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for inst in self._instances:
            try:
                out[inst.host.ns] = self._swanctl(inst, "--list-sas")
            except Unavailable as exc:
                out[inst.host.ns] = str(exc)
        return out
