"""The TUN's routes and the rules before tunsec's table kept in the kernel while tunsec runs (review revks3 F4).

The kernel deletes every route through a device that goes down (`ip link set tunsec0 down`, then up: the routes
stay gone) or loses its last IPv4 address (fib_disable_ip), and anyone with CAP_NET_ADMIN may delete a route or
the rule (routetable.py) by hand.  Tun.routes still lists the routes, so nothing added them again, not even a
reload (it adds only the networks Tun.routes does not list): the tunnels' traffic went to the kill switch
(dropped), or by the main table's routes where no standing route holds it, while `tunsec status` said up.

So every INTERVAL seconds (blockwatch's, beside it) and at each reload, under the TUN's lock, Keeper.check
compares Tun.routes with tunsec's table (one dump per family the kernel filters to the table: no pass over the
host's routes) and puts back, with add, what is missing; and the rule of each family the TUN routes.
- add, never replace: a route in the place (the same network and metric in tunsec's table) that is not ours is
  another tunsec's TUN route (its replace took ours), an operator's throw route, a block: theirs, left alone
  and said once; ours goes back once it goes.  So two instances never take a network back and forth.
- what the lock orders: a reload removing a tunnel's route (Tun.remove_route) takes it off Tun.routes in the
  same change, so a removed tunnel's route is never put back; remove_address's guards and source changes are
  whole changes too.
- without CAP_NET_ADMIN (given up at the drop where nothing kept it: docs/privileges.md) a route cannot be put
  back: an ERROR, once per loss, with root's command; `tunsec status` lists it as lost until it is back.
  A TUN that is down refuses its routes (ENETDOWN): lost until it is up, then put back.
- a wanted route a start found in place (`tunsec prepare`'s: not listed, left at the exit) is watched too
  (Keeper.found, filled by Daemon._add_route, kept to the wanted networks by each reload), and put back as found.
Counted: routes and rules put back (status "tun", metric tunsec_tun_routes_put_back_total).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from tunsec.dataplane.netlink import ForeignDrops, NetlinkError, reason, route_dump
from tunsec.dataplane.prohibitroute import route_of
from tunsec.dataplane.routes import RTN_UNICAST
from tunsec.dataplane.routetable import TABLE, ensure_rules, has_rule
from tunsec.dataplane.tun import TUN_ROUTE, TUN_ROUTE_ARGS, IPNetwork, Tun, _iproute
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.tun")

INTERVAL = 2.0
# datagrams another netlink socket unicast to the dump's socket: not the kernel's answer, dropped
FOREIGN = ForeignDrops("TUN route check", log)


async def watch(keeper: Keeper, stopping: asyncio.Event, interval: float = INTERVAL) -> None:
    """Until stopping: keeper.check every interval seconds (netlink in a thread)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            return
        try:
            await asyncio.to_thread(keeper.check)
        except Exception as err:   # a bug: said, and the next round still runs
            keeper.say(logging.ERROR, "checking the TUN's routes failed: %s: %s", type(err).__name__, err)


@dataclass
class Check:
    """What one check did: the networks put back, the rules put back (their IP versions), and what it could not
    put back (a line each, root's command in it for want of CAP_NET_ADMIN)."""

    put_back: list[IPNetwork] = field(default_factory=list)
    rules: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass
class Keeper:
    """The check, what it put back since the start, and what it found lost and could not put back."""

    tun: Tun
    routes_put_back: int = 0
    rules_put_back: int = 0
    lost: dict[IPNetwork, str] = field(default_factory=dict)   # listed, missing from the kernel: why
    lost_rules: dict[int, str] = field(default_factory=dict)   # IP version: why its rule is not back
    # wanted routes a start or reload found in place, not its own (tunsec prepare's: Tun.routes does not list them,
    # the exit leaves them): their source as the daemon would give it.  Watched all the same (Daemon._add_route)
    found: dict[IPNetwork, str | None] = field(default_factory=dict)
    limit: LogLimiter = field(default_factory=lambda: LogLimiter(burst=5, period=60.0))

    def check(self) -> Check:
        """Under the TUN's lock: its listed routes and the rules before them in the kernel again."""
        done = Check()
        tun = self.tun
        with tun._lock:
            listed = {d for d, _s in tun.routes}
            watched = [*tun.routes, *((d, s) for d, s in dict(self.found).items()
                                      if d not in listed and d not in tun.unrouted)]
            if not watched:
                self.lost.clear()
                self.lost_rules.clear()
                return done
            try:
                idx = socket.if_nametoindex(tun.name)
                present = {net for family in {_family(d.version) for d, _s in watched}
                           for net in _tun_routes(family, idx)}
            except OSError as err:   # the TUN gone (a stop under way) or netlink refused: the next round
                log.debug("TUN %s routes not checked: %s", tun.name, err.strerror or err)
                return done
            versions: set[int] = {d.version for d, _s in watched}
            self._rules(done, versions & tun.ruled)
            missing = [(d, s) for d, s in watched if d not in present]
            self.lost = {d: w for d, w in self.lost.items() if any(d == m for m, _s in missing)}   # back: not lost
            for dst, src in missing:
                self._put_back(done, idx, dst, src)
        return done

    def _rules(self, done: Check, versions: set[int]) -> None:
        for version in sorted(versions):
            try:
                with _iproute() as ipr:
                    if has_rule(ipr, version):
                        self.lost_rules.pop(version, None)
                        continue
                    cmds = ensure_rules(ipr, [version])
            except (NetlinkError, OSError) as exc:
                why = reason(exc) if isinstance(exc, NetlinkError) else str(exc.strerror or exc)
                self._rule_lost(done, version, f"it cannot be put back: {why}")
                continue
            if cmds:   # EPERM
                self._rule_lost(done, version,
                                f"this process may not put it back (no CAP_NET_ADMIN): as root, {cmds[0]}")
                continue
            self.lost_rules.pop(version, None)
            self.rules_put_back += 1
            done.rules.append(version)
            self.say(logging.WARNING, "the rule that looks up table %d before the main table (IPv%d) was removed "
                     "by someone else: put back", TABLE, version)

    def _rule_lost(self, done: Check, version: int, why: str) -> None:
        line = (f"the rule that looks up table {TABLE} (the tunnels' routes) before the main table (IPv{version}) "
                f"was removed and {why}")
        done.failed.append(line)
        if self.lost_rules.get(version) != why:   # said once, not every round
            self.lost_rules[version] = why
            log.error("%s; the tunnels' traffic follows the main table's routes", line)

    def _put_back(self, done: Check, idx: int, dst: IPNetwork, src: str | None) -> None:
        """dst through the TUN again, with src; one whose source is no longer an address of the host's (EINVAL)
        without it, as remove_address's restore does."""
        tun = self.tun
        try:
            with _iproute() as ipr:
                try:
                    ipr.route("add", **_route(dst, idx, src))
                except NetlinkError as exc:
                    if not (src and exc.code == errno.EINVAL):
                        raise
                    ipr.route("add", **_route(dst, idx, None))
                    tun.routes = [(d, None if d == dst else s) for d, s in tun.routes]
                    src = None
        except NetlinkError as exc:
            self._lost(done, dst, src, exc)
            return
        self.lost.pop(dst, None)
        self.routes_put_back += 1
        done.put_back.append(dst)
        self.say(logging.WARNING, "route %s via TUN %s was removed (the TUN went down, or lost its last IPv4 "
                 "address, or someone deleted it): put back", dst, tun.name)

    def _lost(self, done: Check, dst: IPNetwork, src: str | None, exc: NetlinkError) -> None:
        tun = self.tun
        cmd = f"ip route add {dst} dev {tun.name}" + (f" src {src}" if src else "") + TUN_ROUTE_ARGS
        if exc.code == errno.EEXIST:
            why = (f"its place in table {TABLE} is taken by a route not this instance's (another tunsec's, root's): "
                   "left alone, put back once it goes")
        elif exc.code == errno.EPERM:
            why = f"this process may not put it back (no CAP_NET_ADMIN): as root, {cmd}"
        elif exc.code == errno.ENETDOWN:
            why = f"TUN {tun.name} is down: put back once it is up (as root: ip link set dev {tun.name} up)"
        else:
            why = f"it cannot be put back: {reason(exc)}"
        line = f"route {dst} via TUN {tun.name} was removed and {why}"
        done.failed.append(line)
        if self.lost.get(dst) != why:   # said once per loss (and reason), not every round
            self.lost[dst] = why
            log.error("%s; its traffic is held by the kill switch, or follows the host's other routes", line)

    def say(self, level: int, fmt: str, *args: object) -> None:
        held = self.limit.admit()
        if held is not None:
            log.log(level, fmt + "%s", *args, suffix(held))

    def status(self) -> dict[str, object]:
        """`tunsec status`'s part: the counts, and what is lost now (network or rule, why)."""
        return {"routes_put_back": self.routes_put_back, "rules_put_back": self.rules_put_back,
                "routes_lost": [{"network": str(d), "reason": w} for d, w in self.lost.items()]
                + [{"network": f"rule (IPv{v})", "reason": w} for v, w in self.lost_rules.items()]}


def reload_lines(done: Check, failed: str) -> list[str]:
    """A reload's answer of a check: what it put back, and each failure as a failed line (failed: its prefix)."""
    lines = [f"routes put back (removed from the kernel while listed): {', '.join(map(str, done.put_back))}"
             ] if done.put_back else []
    lines += [f"rule before table {TABLE} put back (IPv{v})" for v in done.rules]
    lines += [f"{failed}{line}" for line in done.failed]
    return lines


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _route(dst: IPNetwork, idx: int, src: str | None) -> dict[str, object]:
    kw: dict[str, object] = {"dst": str(dst), "oif": idx, **TUN_ROUTE}
    if src:
        kw["prefsrc"] = src
    return kw


def _tun_routes(family: int, idx: int) -> Iterator[IPNetwork]:
    """The destinations of the unicast routes through device idx in tunsec's table (none: ENOENT, the table holds
    no route of family)."""
    try:
        found = route_dump(family, FOREIGN, table=TABLE, kind=RTN_UNICAST)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return
        raise
    for msg in found:
        net = _through(msg, idx)
        if net is not None:
            yield net


def _through(msg: bytes, idx: int) -> IPNetwork | None:
    """The destination of one route message if it is a unicast route of tunsec's table through device idx."""
    r = route_of(msg)
    return r.net if r is not None and r.kind == RTN_UNICAST and r.table == TABLE and r.oif == idx else None
