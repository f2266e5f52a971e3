"""wireguard-go (Debian's userspace WireGuard) on both sides."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tunsec.bench.netns import Host, TwoHosts, wait_until
from tunsec.bench.systems.base import System, Unavailable, log_tail, missing_commands

WG_PORT = 51820
WG_MTU = 1420
UAPI_DIR = Path("/run/wireguard")


@dataclass(frozen=True)
class WgSide:
    host: Host
    iface: str
    private_key: Path
    public_key: str


def _wg_key_pair(path: Path) -> str:
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    path.write_text(priv)
    path.chmod(0o600)
    return subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True).stdout.strip()


class WireguardGo(System):
    """Interface names carry the topology's random suffix: wireguard-go's
    UAPI sockets live in /run/wireguard, which all namespaces share."""

    name = "wireguard-go"
    description = "wireguard-go (userspace WireGuard over TUN), ChaCha20-Poly1305"

    def __init__(self) -> None:
        super().__init__()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sides: list[WgSide] = []

    def precheck(self) -> str | None:
        return missing_commands("wireguard-go", "wg")

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._procs)

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        for host, tag in ((topo.a, "a"), (topo.b, "b")):
            key = topo.workdir / f"wg-{tag}.key"
            self._sides.append(WgSide(host, f"wg{tag}-{topo.suffix}", key, _wg_key_pair(key)))
        for side in self._sides:
            self._start(topo, side)
        a, b = self._sides
        self._configure(topo, a, b)
        self._configure(topo, b, a)
        self._wait_inner_ping(topo)

    def _start(self, topo: TwoHosts, side: WgSide) -> None:
        env = {**os.environ, "LOG_LEVEL": "error"}
        log = topo.workdir / f"{side.iface}.log"
        proc = topo.popen(side.host, ["wireguard-go", "-f", side.iface], env=env, log=log)
        self._procs.append(proc)
        sock = UAPI_DIR / f"{side.iface}.sock"
        if not wait_until(lambda: sock.exists() or proc.poll() is not None, 10):
            raise Unavailable(f"wireguard-go {side.iface}: no UAPI socket after 10 s")
        if proc.poll() is not None:
            raise Unavailable(f"wireguard-go exited {proc.returncode}: {log_tail(log, 5)}")

    @staticmethod
    def _configure(topo: TwoHosts, me: WgSide, peer: WgSide) -> None:
        allowed = peer.host.inner_net4 + (f",{peer.host.inner_net6}" if topo.ipv6 else "")
        wg_set = (
            f"wg set {me.iface} private-key {me.private_key} listen-port {WG_PORT}"
            f" peer {peer.public_key} allowed-ips {allowed} endpoint {peer.host.outer4}:{WG_PORT}"
        )
        topo.run(me.host, wg_set.split())
        topo.run(me.host, f"ip link set {me.iface} mtu {WG_MTU} up".split())
        route = f"ip route replace {peer.host.inner_net4} dev {me.iface} src {me.host.inner4}"
        topo.run(me.host, route.split())
        if topo.ipv6:
            route6 = f"ip -6 route replace {peer.host.inner_net6} dev {me.iface} src {me.host.inner6}"
            topo.run(me.host, route6.split())

    def diagnostics(self) -> dict[str, str]:
        topo = self._require_topo()
        return {s.host.ns: topo.run(s.host, ["wg", "show", s.iface], check=False).stdout for s in self._sides}
