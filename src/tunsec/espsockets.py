"""The ESP-in-UDP sockets the daemon binds for its services and hands to the worker."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from tunsec.ike.constants import NATT_PORT
from tunsec.services.base import EspEndpoint, StartupError, bind_udp

UDP_SEGMENT, UDP_GRO = 103, 104   # linux/udp.h; Python 3.11's socket module lacks them


@dataclass
class Sockets:
    """The ESP-in-UDP sockets: per queue, one per outer family (SO_REUSEPORT when several queues)."""

    queues: list[dict[int, socket.socket]] = field(default_factory=list)
    binds: dict[int, tuple[str, int]] = field(default_factory=dict)   # family -> (address, port) bound

    @property
    def by_family(self) -> dict[int, socket.socket]:
        return self.queues[0] if self.queues else {}

    @classmethod
    def for_endpoints(cls, endpoints: list[EspEndpoint], nqueues: int = 1) -> Sockets:
        """Bound to the local address when all tunnels of a family agree on one, else to any."""
        out = cls(binds=cls.binds_for(endpoints))
        try:
            for _ in range(nqueues):
                out.queues.append({fam: bind_udp(fam, a, p, purpose="ESP-in-UDP", reuseport=nqueues > 1,
                                                 big_buffers=True, mark=True)
                                   for fam, (a, p) in out.binds.items()})
        except BaseException:
            out.close()
            raise
        return out

    @staticmethod
    def binds_for(endpoints: list[EspEndpoint]) -> dict[int, tuple[str, int]]:
        """Per family, the one (address, port) the ESP socket binds: the address all agree on, else any."""
        families: dict[int, tuple[set[str], set[int]]] = {}
        for fam, addr, port in endpoints:
            addrs, ports = families.setdefault(fam, (set(), set()))
            addrs.add(addr)
            ports.add(port)
        if not families:
            families[4] = ({"0.0.0.0"}, {NATT_PORT})
        binds = {}
        for fam, (addrs, ports) in families.items():
            if len(ports) != 1:
                raise StartupError(f"IPv{fam} tunnels use different local ports {sorted(ports)}; "
                                   "tunsec listens on one ESP port per address family")
            binds[fam] = (addrs.pop() if len(addrs) == 1 else ("0.0.0.0" if fam == 4 else "::"), ports.pop())
        return binds

    def serves(self, endpoints: list[EspEndpoint]) -> list[str]:
        """What the bound sockets cannot carry of endpoints (a reload cannot bind new ones), one line each."""
        out = []
        for fam, addr, port in sorted(set(endpoints)):
            have = self.binds.get(fam)
            if have is None or have[1] != port or have[0] not in (addr, "0.0.0.0", "::"):
                bound = f"{have[0]} port {have[1]}" if have else f"no IPv{fam} address"
                out.append(f"needs a restart: ESP-in-UDP on IPv{fam} {addr} port {port} (tunsec listens on {bound})")
        return out

    def fd(self, family: int, queue: int = 0) -> int:
        s = self.queues[queue].get(family) if queue < len(self.queues) else None
        return s.fileno() if s else -1

    def offloads(self) -> list[str]:
        """UDP GSO/GRO as the worker's fast path finds them (the same sockets, the same probes)."""
        if not self.by_family:
            return []
        found = []
        for name, opt, value in (("udp-gso", UDP_SEGMENT, 0), ("udp-gro", UDP_GRO, 1)):
            try:
                for s in self.by_family.values():
                    s.setsockopt(socket.IPPROTO_UDP, opt, value)
            except OSError:
                continue
            found.append(name)
        return found

    def close(self) -> None:
        for q in self.queues:
            for s in q.values():
                s.close()
        self.queues.clear()
