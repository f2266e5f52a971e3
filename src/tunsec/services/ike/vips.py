"""A client's virtual IPs (RFC 7296 §3.15): put on the TUN as the source of the connection's routes.

Each address becomes a local address of this host, so only what the engine took from the CFG_REPLY
(one per family, none reserved or an IKE peer's: exchanges/ike_config.py) comes here, and one that
another interface of the host already has is refused: the gateway would take over its traffic; so is
one the host reaches outside the TUN (its router, an address on a LAN's link or its broadcast: as a
local address the host's own traffic to it would never leave, Tun.address_conflict).  Such an
address (the IKE SA's address of the other family then stays off the TUN too, unless another IKE SA
holds it: it is refused whole), one the kernel will not add or check, or none at all where the client
asked for some, ends the IKE SA and the connection is tried again later (vip_refused.py): up with no
address, it looked connected while its selectors matched nothing of the LAN.

Two connections may be given the same address (one gateway leasing one per identity, or a second
gateway's choice): it goes on the TUN once and is the source of the routes of each connection holding
it (else the second's traffic left from an address its selectors do not cover).  A route is only ever
moved to an address an IKE SA of its own connection holds, never to one of another's; one whose IKE SA
went keeps the address while another connection holds it (on the TUN still: its traffic goes into the
tunnel, never in clear) unless an IKE SA of its own holds another.

Going down, each route that has the address as its source is re-pointed before the address goes
(only an address it put on the TUN: a refused one may be a site-to-site tunnel's route's source):
the kernel deletes an IPv4 route whose preferred source disappears, and until it came back the
tunnel's remote network followed the host's other routes (a default route), in clear.  A route that
cannot be re-pointed is blocked (a prohibit route, as reroute.py does) and left to a reload to add.
The routes a reload adds or re-adds take their sources once they are in (source_routes); an IKE SA
of a connection the reload replaced or removed (being deleted) is no route's source from then on.
(The kernel also deletes every IPv4 route through the TUN with its last IPv4 address: Tun.remove_address
stands in for them meanwhile.)
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from tunsec.conf.connections import Connection
from tunsec.ike.events import IkeSaUp
from tunsec.loglimit import internal_error
from tunsec.services.ike.state import IPAddress, IPNetwork, ts_networks

log = logging.getLogger("tunsec.ike")

# a virtual IP's conflict check asked again after these (a kernel condition that passes), then refused
_PASSING = {errno.EINTR, errno.EAGAIN, errno.ENOBUFS, errno.EBUSY, errno.EIO}   # EIO: a dump interrupted
_CHECK_RETRIES = (0.05, 0.2)
_T = TypeVar("_T")


def one_per_family(addrs: Sequence[IPAddress]) -> tuple[IPAddress, ...]:
    """The first address of each family (the engine gives no more; a second would be a local address
    no traffic selector of ours covers)."""
    first: dict[int, IPAddress] = {}
    for a in addrs:
        first.setdefault(a.version, a)
    return tuple(first.values())


def _log_refusal(handle: int, conn: str, addr: IPAddress | None, why: str) -> None:
    log.error("%s: virtual IP %s refused: %s", conn, addr, why)


class VirtualIps:
    """Our virtual IPs by IKE SA (its handle), on the TUN while any IKE SA holds them."""

    def __init__(self, tun: Callable[[], Any], connection: Callable[[str], Connection | None],
                 spawn: Callable[[Coroutine[Any, Any, None]], object],
                 refused: Callable[[int, str, IPAddress | None, str], None] = _log_refusal,
                 applied: Callable[[int, str], None] = lambda handle, conn: None) -> None:
        # the daemon's TUN (add_address, remove_address, address_conflict, set_route_source, block, routes)
        self._tun = tun
        self._connection = connection    # by name, as configured now (its routes get the address as source)
        self._spawn = spawn
        self._vips: dict[int, tuple[str, tuple[IPAddress, ...]]] = {}   # IKE SA handle -> (connection, ours)
        self._vip_refs: collections.Counter[IPAddress] = collections.Counter()   # IKE SAs using each address
        # the addresses on the TUN now (added, not yet removed): only these may be a route's source (the
        # kernel refuses another; one refused as another interface's would give the route the LAN's)
        self._applied: set[IPAddress] = set()
        self._vip_lock = asyncio.Lock()     # netlink changes in the order the engine reported them
        # (IKE SA handle, connection, address or None, why): the IKE SA cannot use it (vip_refused.refused);
        # applied(IKE SA handle, connection): every address of the IKE SA went on the TUN
        self._refused, self._ok = refused, applied
        self._refusals: dict[IPAddress, str] = {}   # refused addresses IKE SAs still hold: why
        # held, not on the TUN: their IKE SA was refused for its other address (the next IKE SA to hold
        # one adds it)
        self._skipped: set[IPAddress] = set()
        # IKE SAs refused here (still held until down): none is given another's skipped address
        self._refused_sas: set[int] = set()
        # what each IKE SA (not refused at up) was set up under: its connection's networks then (its Child
        # SAs' selectors; review AD F4); and those a reload since replaced (being deleted): neither kind
        # is any route's source, another connection's by the new networks least of all
        self._set_up: dict[int, tuple[IPNetwork, ...]] = {}
        self._replaced: set[int] = set()

    def holding(self) -> bool:
        """An address is on the TUN or held by an IKE SA: taking it off needs CAP_NET_ADMIN still."""
        return bool(self._applied or self._vips)

    def up(self, handle: int, ev: IkeSaUp) -> None:
        """Put the addresses the gateway assigned on the TUN, as the source of the connection's routes
        (the IKE SA of a client that asked for some: none is a refusal too)."""
        ours = one_per_family(ev.own_vips)
        if not ours:
            self._spawn(self._refuse(handle, ev.name, None, "the gateway assigned none this client takes "
                                     "(the reason was logged as the IKE SA came up)"))
            return
        refused = [a for a in ours if a in self._refusals]
        if refused:   # refused as another IKE SA's: this one's too, whole (its other address stays off the TUN)
            self._vips[handle] = (ev.name, tuple(refused))   # held: the refusal lasts while an IKE SA has it
            self._vip_refs.update(refused)
            for addr in refused:
                self._spawn(self._refuse(handle, ev.name, addr, self._refusals[addr]))
            return
        self._vips[handle] = (ev.name, ours)
        self._set_up[handle] = tuple(self._nets(ev.name))
        log.info("%s: virtual IP %s assigned by the peer%s", ev.name, ", ".join(map(str, ours)),
                 f", DNS {', '.join(map(str, ev.dns))}" if ev.dns else "")
        fresh = [a for a in ours if self._vip_refs[a] == 0 or a in self._skipped]
        self._skipped.difference_update(fresh)
        self._vip_refs.update(ours)
        # a task even with none fresh: an address another IKE SA (of another connection: one gateway's
        # lease per identity, or a second gateway's choice) holds becomes this connection's routes'
        # source once on the TUN, else its traffic left from an address its selectors do not cover
        self._spawn(self._apply_up(handle, ev.name, fresh))

    async def _refuse(self, handle: int, conn: str, addr: IPAddress | None, why: str) -> None:
        self._refuse_sa(handle, conn, addr, why)   # a task: the engine's events are being handled now

    def _refuse_sa(self, handle: int, conn: str, addr: IPAddress | None, why: str) -> None:
        if handle in self._vips:   # gone while its task ran: nothing to remember (down() cleared it)
            self._refused_sas.add(handle)
        self._refused(handle, conn, addr, why)

    def _refuse_all(self, conn: str, addr: IPAddress, why: str) -> None:
        """Every IKE SA holding ``addr`` cannot use it (those that came up while it was checked too).
        Remembered only while one holds it: the last holder gone while the check or add ran, a later
        IKE SA (of any connection) is checked afresh, not refused for a reason that may have passed."""
        if self._vip_refs[addr] > 0:
            self._refusals[addr] = why
        for handle, (name, ours) in list(self._vips.items()):
            if addr in ours:
                self._refuse_sa(handle, name, addr, why)

    def down(self, handle: int | None) -> None:
        """The IKE SA is gone: its virtual IPs leave the TUN unless another IKE SA holds them too."""
        entry = self._vips.pop(handle, None) if handle is not None else None
        if handle is not None:
            self._refused_sas.discard(handle)
            self._set_up.pop(handle, None)
            self._replaced.discard(handle)
        if entry is None:
            return
        self._vip_refs.subtract(entry[1])
        gone = [a for a in entry[1] if self._vip_refs[a] <= 0]
        for a in gone:
            del self._vip_refs[a]
            self._refusals.pop(a, None)
            self._skipped.discard(a)
        if gone:
            self._spawn(self._apply_down(entry[0], gone))
        kept = [a for a in entry[1] if a not in gone]
        if kept:   # still held (another connection's IKE SA, or a sibling): this one's routes may move off it
            self._spawn(self._release(kept))

    async def _apply_up(self, handle: int, conn: str, addrs: Sequence[IPAddress], handing: bool = False) -> None:
        """Check and add ``addrs`` (fresh: no IKE SA had them on the TUN), then make every address of
        the IKE SA that is on the TUN (those another IKE SA's task added too) its routes' source.
        ``handing``: run by _handed, which tries the address's next holder itself if this one fails."""
        tun = self._tun()
        if tun is None:
            return
        refused = False
        async with self._vip_lock:
            usable = await self._usable(handle, tun, conn, addrs)
            if usable is None:   # the IKE SA is refused whole: its other family's address stays off the TUN
                if not handing:
                    self._hand_over(handle, [a for a in addrs if a not in self._refusals])
                return
            for addr in usable:
                if addr not in self._applied:   # else put on for another IKE SA meanwhile: no second add (EEXIST)
                    refused = not await self._add(handle, conn, tun, addr, handing) or refused
            await self._set_sources(handle, conn, tun)
        entry = self._vips.get(handle)
        # the count starts again only for an IKE SA none of whose addresses was refused: one refused
        # for another reason (another IKE SA's refusal) would otherwise undo its own refusal's count
        # (and only once all of them are on the TUN, whichever IKE SA's task added them: one still to
        # be added by another's task, or one that failed otherwise, leaves it up without traffic to match)
        if (not refused and entry is not None and handle not in self._refused_sas
                and all(a in self._applied and a not in self._refusals for a in entry[1])):
            self._ok(handle, conn)

    async def _add(self, handle: int, conn: str, tun: Any, addr: IPAddress, handing: bool = False) -> bool:
        """addr on the TUN; False if refused (a passing error that persists: this IKE SA only, and the
        address goes on for another IKE SA that relied on this add; else every IKE SA holding it)."""
        try:   # netlink in a thread: pyroute2's synchronous calls run an event loop of their own
            await self._asked(tun.add_address, addr)
        except OSError as err:   # tun.py's: the address, the TUN, the kernel's reason
            if err.errno in _PASSING:   # this IKE SA's; not held against the address
                self._refuse_sa(handle, conn, addr, f"cannot be added: {err.strerror or err}")
                if not handing:   # else _handed tries the next holder
                    self._hand_over(handle, [addr])
            else:
                self._refuse_all(conn, addr, err.strerror or str(err))
            return False
        except Exception as err:   # a bug: the other addresses are still applied
            log.error("%s: cannot add virtual IP %s on TUN %s: %s", conn, addr,
                      getattr(tun, "name", "?"), internal_error(err, True))
            return True   # as before: not a refusal (applied() waits for the address anyway)
        self._applied.add(addr)
        return True

    async def _set_sources(self, handle: int, conn: str, tun: Any) -> None:
        """The IKE SA's addresses that are on the TUN as the source of its connection's routes, unless
        it is refused or gone (its address would only take routes its siblings' addresses serve), or
        stale: a reload replaced its connection (by the new networks it would take another's routes)."""
        entry = self._vips.get(handle)
        if entry is None or handle in self._refused_sas or self._stale(handle, conn):
            return
        nets = self._nets(conn)
        for addr in (a for a in entry[1] if a in self._applied):
            for net in (n for n in nets if n.version == addr.version):   # each on its own: one refused
                await self._move(tun, net, addr, conn)                    # leaves the others set

    def replaced(self, conn: str) -> None:
        """A reload replaced or removed ``conn``: its IKE SAs up now are being deleted (reload.py); until
        they are down, their addresses are no route's source (Daemon._reload_routes then re-sources
        the routes: source_routes)."""
        self._replaced.update(h for h, (name, _) in self._vips.items() if name == conn)

    def _stale(self, handle: int, conn: str) -> bool:
        """The IKE SA was set up under another configuration of its connection than the one in force
        (its Child SAs' selectors need not cover the routes the connection has now)."""
        return handle in self._replaced or self._set_up.get(handle) != tuple(self._nets(conn))

    def _nets(self, conn: str) -> list[IPNetwork]:
        """The networks the connection routes through the TUN (its children's remote_ts), as configured now."""
        c = self._connection(conn)
        return [n for ch in c.ike.children for t in ch.remote_ts if not t.dynamic for n in ts_networks(t)] if c else []

    def _hand_over(self, handle: int, addrs: Sequence[IPAddress]) -> None:
        """The good addresses of an IKE SA refused whole: each goes on the TUN for the other IKE SAs that
        hold it and are not refused (they came up while this one's task ran, so relied on it: left off,
        they looked connected and matched nothing), else it waits for the next IKE SA to hold it."""
        for addr in addrs:
            if self._next_holder(addr, {handle}) is not None:   # a task: this one holds the lock
                self._spawn(self._handed(addr))
            elif self._vip_refs[addr] > 0:   # still held (by a refused IKE SA): the next holder adds it
                self._skipped.add(addr)

    async def _handed(self, addr: IPAddress) -> None:
        """``addr`` for every IKE SA that relied on a refused one's add (review AD F3: each holder's routes
        take it, not only the first's, and each one's count starts again): the first adds it (if that
        fails, the next one tries), the others' routes take it once it is on.  The holders are looked
        at again after each: one refused or gone meanwhile is passed over, one up meanwhile is served."""
        tried: set[int] = set()
        while (nxt := self._next_holder(addr, tried)) is not None:
            tried.add(nxt[0])
            await self._apply_up(nxt[0], nxt[1], [] if addr in self._applied else [addr], handing=True)
        # from the last check on, nothing awaited: no IKE SA came up in between that would add it
        if addr not in self._applied and self._vip_refs[addr] > 0:
            self._skipped.add(addr)

    def _next_holder(self, addr: IPAddress, passed: set[int]) -> tuple[int, str] | None:
        """An IKE SA (not in ``passed``) that holds ``addr``, none of whose addresses is refused."""
        return next(((h, name) for h, (name, ours) in self._vips.items() if h not in passed and addr in ours
                     and h not in self._refused_sas and not any(a in self._refusals for a in ours)), None)

    async def _usable(self, handle: int, tun: Any, conn: str, addrs: Sequence[IPAddress]
                      ) -> list[IPAddress] | None:
        """The addresses the host does not reach outside the TUN; None if one is refused so (every IKE
        SA holding it is: _refuse_all), or cannot be checked (this IKE SA is: kept up without it, it
        looked connected, and no later IKE SA added it while this one held it)."""
        usable: list[IPAddress] = []
        refused = False
        for addr in addrs:
            try:
                why = await self._asked(tun.address_conflict, addr)
            except OSError as err:   # tun.py's: what was refused, why (ENOBUFS, EINTR, the TUN gone)
                self._refuse_sa(handle, conn, addr, f"cannot be checked: {err.strerror or err}")
                return None
            except Exception as err:   # a bug: refused as above
                log.error("%s: cannot check virtual IP %s: %s", conn, addr, internal_error(err, True))
                self._refuse_sa(handle, conn, addr, "cannot be checked (an internal error, logged)")
                return None
            if why is None:
                usable.append(addr)
                continue
            refused = True
            self._refuse_all(conn, addr, f"{why} (as ours the host's traffic to it would stay on this host)")
        return None if refused else usable

    @staticmethod
    async def _asked(call: Callable[[str], _T], addr: IPAddress) -> _T:
        """A Tun call for addr (its conflict check, add, removal), asked again after a passing kernel
        condition (a full socket buffer, a dump interrupted by a change of the tables): refused on one
        such, a connection with the default keyingtries = 1 stayed down for good, and an address whose
        removal failed stayed on the TUN with no IKE SA."""
        for delay in _CHECK_RETRIES:
            try:
                return await asyncio.to_thread(call, str(addr))
            except OSError as err:
                if err.errno not in _PASSING:
                    raise
            await asyncio.sleep(delay)
        return await asyncio.to_thread(call, str(addr))

    async def _apply_down(self, conn: str, addrs: Sequence[IPAddress]) -> None:
        tun = self._tun()
        if tun is None:
            return
        async with self._vip_lock:
            for addr in addrs:
                if addr not in self._applied:   # never on the TUN (refused): a route with it as source is
                    continue                    # another's (a site-to-site tunnel's, the host's LAN address)
                self._applied.discard(addr)   # going: no route is re-pointed to it
                # the routes that have it as source, as the TUN has them (a reload may have removed the
                # connection, whose routes still name it); each on its own: one failing leaves the others
                # re-pointed and the address still goes (review AD F2: it stayed with no IKE SA)
                for net in [d for d, src in tun.routes if src == str(addr)]:
                    try:
                        await self._repoint(tun, conn, net, addr)
                    except Exception as err:   # a bug (OSError is _repoint's): Tun.remove_address guards it
                        log.error("%s: cannot re-point route %s off virtual IP %s on TUN %s: %s", conn, net,
                                  addr, getattr(tun, "name", "?"), internal_error(err, True))
                try:
                    await self._asked(tun.remove_address, addr)
                except OSError as err:
                    log.error("%s: virtual IP %s: %s", conn, addr, err.strerror or err)
                except Exception as err:   # a bug: the other addresses are still removed
                    log.error("%s: cannot remove virtual IP %s from TUN %s: %s", conn, addr,
                              getattr(tun, "name", "?"), internal_error(err, True))

    async def _release(self, addrs: Sequence[IPAddress]) -> None:
        """An IKE SA went whose addresses other IKE SAs still hold: a route with one as its source that
        no IKE SA of its own connections holds any longer takes the address one of them does hold (its
        selectors cover that one, not the other connection's); with none it keeps its source (still on
        the TUN: its traffic goes into the tunnel, never in clear)."""
        tun = self._tun()
        if tun is None:
            return
        async with self._vip_lock:
            for net, src in list(tun.routes):
                addr = next((a for a in addrs if str(a) == src and a in self._applied), None)
                held = self._owners_addresses(net, addr.version) if addr is not None else []
                if held and addr not in held:
                    await self._move(tun, net, held[0])

    async def _move(self, tun: Any, net: IPNetwork, addr: IPAddress, conn: str = "") -> None:
        """net's route takes addr (on the TUN) as its source; refused, it keeps its source (on the TUN)."""
        who = f"{conn}: " if conn else ""
        try:
            await asyncio.to_thread(tun.set_route_source, net, str(addr))
        except OSError as err:   # tun.py's: what was refused (route, TUN), why, what to do
            log.error("%svirtual IP %s: %s", who, addr, err.strerror or err)
        except Exception as err:   # a bug (review AD F2: it escaped _release's task): the other routes still move
            log.error("%scannot make virtual IP %s the source of route %s on TUN %s: %s", who, addr, net,
                      getattr(tun, "name", "?"), internal_error(err, True))

    async def source_routes(self) -> None:
        """Each route through the TUN without a source, or with a virtual IP as its source, takes one
        its connection's IKE SAs hold (one of them already: left as it is), as _set_sources gives it at
        up.  The daemon awaits it once a reload's routes are in (review AD F1: a route added or re-added
        after its IKE SA came up, a reload's after the IKE reload initiated the connection, one blocked
        by _repoint, kept no source and the kernel chose another connection's address, outside its
        selectors: dropped for the IKE SA's life).  Under the lock: after the changes reported before
        it, with the addresses on the TUN."""
        tun = self._tun()
        if tun is None:
            return
        async with self._vip_lock:
            ours = {str(a) for a in self._applied}   # not a refused one: the host's (a LAN address)
            for net, src in list(tun.routes):
                if src is not None and src not in ours:   # a tunnel's own local address (Daemon._add_route)
                    continue
                held = self._owners_addresses(net, net.version)
                if held and src not in {str(a) for a in held}:
                    await self._move(tun, net, held[0])

    def _owners_addresses(self, net: IPNetwork, version: int) -> list[IPAddress]:
        """The addresses on the TUN that IKE SAs (not refused) of the connections routing ``net`` hold,
        the latest IKE SA's first (the one whose up made it the route's source): whatever another
        connection's gateway assigned, a route is given only an address its own connection holds."""
        return [a for h, (name, ours) in reversed(self._vips.items()) if h not in self._refused_sas
                and not self._stale(h, name) and net in self._nets(name) for a in ours
                if a.version == version and a in self._applied and a not in self._refusals]

    async def _repoint(self, tun: Any, conn: str, net: IPNetwork, addr: IPAddress) -> None:
        """``net``'s route off ``addr`` (``conn``'s IKE SA, its last holder, went): to another virtual IP
        that an IKE SA of the connection owning the route holds and that is on the TUN (not one of the
        connection going down: the route may be another's, which held the same address), else without
        a source; if the kernel refuses, net is blocked until a reload adds it."""
        held = [a for a in self._owners_addresses(net, addr.version) if a != addr]
        src = str(held[0]) if held else None
        why = f"route {net} kept virtual IP {addr} as its source"
        try:   # the prohibit route takes the TUN route's place (and Tun.routes' entry): a reload adds it again
            refused = await asyncio.to_thread(tun.set_source_or_block, net, src, why)
        except OSError as err:
            log.error("%s: %s; blocking its traffic failed too: %s", conn, why, err.strerror or err)
            return
        if refused is not None:
            log.error("%s: %s; its traffic is refused (prohibit route) until a reload adds the route", conn, refused)
