"""IKE to a peer address the TUN's routes would capture waits for that address's exclude route
(dataplane/exclude.py): an address not known at start (a gateway by FQDN, a MOBIKE move, a REDIRECT's
target, a client a full-tunnel hub hears from) gets its host route before our first datagram to it, so
neither that datagram nor the Child SAs' ESP after it goes into the TUN.

The check is in memory (the address against the TUN's routes) for every datagram sent; only a captured
address without an exclude route goes to a thread (netlink), its datagrams held meanwhile (a few: IKE
retransmits the rest).  The exclude routes of addresses that no IKE SA nor connection has any more go
when an IKE SA closes (sweep).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tunsec.dataplane.exclude import ExcludeRoutes, IPAddress, IPNetwork
from tunsec.ike.endpoint import Datagram

log = logging.getLogger("tunsec.ike")

HELD_PER_PEER = 8   # datagrams held per address while its exclude route goes in


@dataclass
class ExcludeGate:
    """Holds the IKE datagrams to a captured address until its exclude route is in, then sends them."""

    routes: ExcludeRoutes
    tun_nets: Callable[[], list[IPNetwork]]   # the TUN's routes now
    send: Callable[[Datagram], None]            # sends a held datagram (IkeSockets.send)
    static: Callable[[], list[IPAddress]]     # the connections' peer addresses: never swept
    spawn: Callable[[object], object]         # runs a coroutine as a task the service awaits at shutdown
    clear: set[IPAddress] = field(default_factory=set)   # checked: not captured (or its route refused)
    waiting: dict[IPAddress, list[Datagram]] = field(default_factory=dict)

    def holds(self, ip: IPAddress, datagram: Datagram) -> bool:
        """True: the datagram waits for ip's exclude route (sent once it is in)."""
        if ip in self.routes.held or ip in self.clear:
            return False
        if not any(ip in n for n in self.tun_nets() if n.version == ip.version):
            return False   # not cached: a gateway's clients outside its tunnels would fill the set
        held = self.waiting.get(ip)
        if held is None:
            self.waiting[ip] = [datagram]
            self.spawn(self._exclude(ip))
        elif len(held) < HELD_PER_PEER:
            held.append(datagram)
        return True

    async def _exclude(self, ip: IPAddress) -> None:
        try:
            await asyncio.to_thread(self.routes.ensure, [ip], self.tun_nets())
        except OSError as err:   # the refusal is logged; the datagrams go as before (into the TUN)
            log.error("exclude route for IKE peer %s: %s", ip, err.strerror or err)
        if ip not in self.routes.held:
            self.clear.add(ip)   # not captured after all (a more specific route of the host's), or refused
        for datagram in self.waiting.pop(ip, []):
            self.send(datagram)

    def reset(self) -> None:
        """The TUN's routes changed (a reload): what was clear is checked again."""
        self.clear.clear()

    def sweep(self, live: Callable[[], Iterable[IPAddress]]) -> None:
        """The exclude routes of addresses no IKE SA (live(): a pass over them, only made when an exclude
        route or a checked address may be stale) nor connection has go, in a thread."""
        keep = {*self.static(), *self.waiting}
        if all(p in keep for p in self.routes.held) and not self.clear:
            return
        keep.update(live())
        self.clear &= keep
        if not all(p in keep for p in self.routes.held):
            self.spawn(asyncio.to_thread(self.routes.keep_only, keep))
