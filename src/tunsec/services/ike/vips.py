"""A client's virtual IPs (RFC 7296 §3.15): put on the TUN as the source of the connection's routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunsec.ike.events import IkeSaUp
from tunsec.ike.sa import IkeSa
from tunsec.services.ike.state import IPAddress, ts_networks

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")


def _vips_up(self: IkeService, sa: IkeSa, ev: IkeSaUp) -> None:
    """Put the addresses the gateway assigned on the TUN, as the source of the connection's routes."""
    self._vips[self._ike_handle(sa)] = (ev.name, ev.own_vips)
    log.info("%s: virtual IP %s assigned by the peer%s", ev.name, ", ".join(map(str, ev.own_vips)),
             f", DNS {', '.join(map(str, ev.dns))}" if ev.dns else "")
    fresh = [a for a in ev.own_vips if self._vip_refs[a] == 0]
    self._vip_refs.update(ev.own_vips)
    if fresh:
        self._spawn(self._apply_vips(ev.name, fresh, up=True))


def _vips_down(self: IkeService, sa: IkeSa) -> None:
    """The IKE SA is gone: its virtual IPs leave the TUN unless another IKE SA holds them too."""
    handle = self._ike_handles.get(sa)
    entry = self._vips.pop(handle, None) if handle is not None else None
    if entry is None:
        return
    self._vip_refs.subtract(entry[1])
    gone = [a for a in entry[1] if self._vip_refs[a] <= 0]
    for a in gone:
        del self._vip_refs[a]
    if gone:
        self._spawn(self._apply_vips(entry[0], gone, up=False))


async def _apply_vips(self: IkeService, conn: str, addrs: Sequence[IPAddress], up: bool) -> None:
    tun = self.tun
    if tun is None:
        return
    c = self.connections.get(conn)
    nets = [n for ch in c.ike.children for t in ch.remote_ts if not t.dynamic for n in ts_networks(t)] if c else []
    async with self._vip_lock:
        for addr in addrs:
            try:   # netlink in a thread: pyroute2's synchronous calls run an event loop of their own
                if up:
                    await asyncio.to_thread(tun.add_address, str(addr))
                else:
                    await asyncio.to_thread(tun.remove_address, str(addr))
                for net in (n for n in nets if n.version == addr.version):
                    await asyncio.to_thread(tun.set_route_source, net, str(addr) if up else None)
            except Exception as exc:   # pyroute2's NetlinkError is an OSError with the kernel's errno
                log.error("%s: cannot %s virtual IP %s on TUN %s: %s", conn, "add" if up else "remove",
                          addr, getattr(tun, "name", "?"), exc)
