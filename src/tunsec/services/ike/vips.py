"""A client's virtual IPs (RFC 7296 §3.15): put on the TUN as the source of the connection's routes."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tunsec.conf.connections import Connection
from tunsec.ike.events import IkeSaUp
from tunsec.loglimit import internal_error
from tunsec.services.ike.state import IPAddress, ts_networks

log = logging.getLogger("tunsec.ike")


class VirtualIps:
    """Our virtual IPs by IKE SA (its handle), on the TUN while any IKE SA holds them."""

    def __init__(self, tun: Callable[[], Any], connection: Callable[[str], Connection | None],
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self._tun = tun                  # the daemon's TUN (add_address, remove_address, set_route_source)
        self._connection = connection    # by name, as configured now (its routes get the address as source)
        self._spawn = spawn
        self._vips: dict[int, tuple[str, tuple[IPAddress, ...]]] = {}   # IKE SA handle -> (connection, ours)
        self._vip_refs: collections.Counter[IPAddress] = collections.Counter()   # IKE SAs using each address
        self._vip_lock = asyncio.Lock()     # netlink changes in the order the engine reported them

    def up(self, handle: int, ev: IkeSaUp) -> None:
        """Put the addresses the gateway assigned on the TUN, as the source of the connection's routes."""
        self._vips[handle] = (ev.name, ev.own_vips)
        log.info("%s: virtual IP %s assigned by the peer%s", ev.name, ", ".join(map(str, ev.own_vips)),
                 f", DNS {', '.join(map(str, ev.dns))}" if ev.dns else "")
        fresh = [a for a in ev.own_vips if self._vip_refs[a] == 0]
        self._vip_refs.update(ev.own_vips)
        if fresh:
            self._spawn(self._apply_vips(ev.name, fresh, up=True))

    def down(self, handle: int | None) -> None:
        """The IKE SA is gone: its virtual IPs leave the TUN unless another IKE SA holds them too."""
        entry = self._vips.pop(handle, None) if handle is not None else None
        if entry is None:
            return
        self._vip_refs.subtract(entry[1])
        gone = [a for a in entry[1] if self._vip_refs[a] <= 0]
        for a in gone:
            del self._vip_refs[a]
        if gone:
            self._spawn(self._apply_vips(entry[0], gone, up=False))

    async def _apply_vips(self, conn: str, addrs: Sequence[IPAddress], up: bool) -> None:
        tun = self._tun()
        if tun is None:
            return
        c = self._connection(conn)
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
                except OSError as err:   # tun.py's: what was refused (address, route, TUN), why, what to do
                    log.error("%s: virtual IP %s: %s", conn, addr, err.strerror or err)
                except Exception as err:   # a bug: the other addresses are still applied
                    log.error("%s: cannot %s virtual IP %s on TUN %s: %s", conn, "add" if up else "remove",
                              addr, getattr(tun, "name", "?"), internal_error(err, True))
