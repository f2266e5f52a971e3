"""Kernel XFRM ESP-in-UDP with AES-GCM-128, where the kernel has ESP."""

from __future__ import annotations

import secrets
import socket

from tunsec.bench.netns import CommandError, Host, TwoHosts
from tunsec.bench.systems.base import System, Unavailable, missing_commands
from tunsec.ike.constants import NATT_PORT

UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
AEAD = "rfc4106(gcm(aes))"


class KernelXfrm(System):
    """Static SAs and policies with ``ip xfrm`` (tunnel mode, encap espinudp).

    The kernel only decapsulates ESP-in-UDP arriving on a UDP socket with
    UDP_ENCAP_ESPINUDP set, so the harness holds one such socket on port 4500
    in each namespace for the system's lifetime.
    """

    name = "kernel-xfrm"
    description = "kernel XFRM ESP-in-UDP, AES-GCM-128"

    def __init__(self) -> None:
        super().__init__()
        self._sockets: list[socket.socket] = []

    def precheck(self) -> str | None:
        return missing_commands("ip")

    def setup(self, topo: TwoHosts) -> None:
        self.topo = topo
        a_to_b = (0xC0020001, "0x" + secrets.token_hex(20))
        b_to_a = (0xC0010001, "0x" + secrets.token_hex(20))
        try:
            # The first state doubles as the probe: on a kernel without ESP
            # it fails with "Requested AEAD algorithm not found".
            self._add_state(topo, topo.a, topo.a, topo.b, a_to_b)
        except CommandError as exc:
            raise Unavailable(f"kernel has no XFRM ESP/AES-GCM: {exc.stderr.strip()}") from exc
        self._add_state(topo, topo.b, topo.a, topo.b, a_to_b)
        self._add_state(topo, topo.a, topo.b, topo.a, b_to_a)
        self._add_state(topo, topo.b, topo.b, topo.a, b_to_a)
        for host in topo.hosts:
            self._add_policies(topo, host, topo.peer(host))
            self._sockets.append(self._encap_socket(topo, host))
        topo.route_inner_via_veth()
        self._wait_inner_ping(topo)

    @staticmethod
    def _add_state(topo: TwoHosts, where: Host, src: Host, dst: Host, sa: tuple[int, str]) -> None:
        spi, key = sa
        argv = (
            f"ip xfrm state add src {src.outer4} dst {dst.outer4} proto esp spi {spi:#x}"
            f" reqid {spi:#x} mode tunnel aead {AEAD} {key} 128"
            f" encap espinudp {NATT_PORT} {NATT_PORT} 0.0.0.0"
            f" sel src {src.inner_net4} dst {dst.inner_net4}"
        )
        topo.run(where, argv.split())

    @staticmethod
    def _add_policies(topo: TwoHosts, host: Host, peer: Host) -> None:
        out = (
            f"src {host.inner_net4} dst {peer.inner_net4} dir out"
            f" tmpl src {host.outer4} dst {peer.outer4} proto esp mode tunnel"
        )
        topo.run(host, ["ip", "xfrm", "policy", "add", *out.split()])
        for direction in ("in", "fwd"):
            inbound = (
                f"src {peer.inner_net4} dst {host.inner_net4} dir {direction}"
                f" tmpl src {peer.outer4} dst {host.outer4} proto esp mode tunnel"
            )
            topo.run(host, ["ip", "xfrm", "policy", "add", *inbound.split()])

    @staticmethod
    def _encap_socket(topo: TwoHosts, host: Host) -> socket.socket:
        sock = topo.socket(host, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        sock.bind((host.outer4, NATT_PORT))
        return sock

    def teardown(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def diagnostics(self) -> dict[str, str]:
        topo = self._require_topo()
        return {h.ns: self._state_without_keys(topo, h) for h in topo.hosts}

    @staticmethod
    def _state_without_keys(topo: TwoHosts, host: Host) -> str:
        out = topo.run(host, ["ip", "-s", "xfrm", "state"], check=False).stdout
        keyless = [ln for ln in out.splitlines() if not ln.strip().startswith(("aead", "enc", "auth"))]
        return "\n".join(keyless)
