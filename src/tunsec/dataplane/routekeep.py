"""The TUN's routes and the rules before tunsec's table kept in the kernel while tunsec runs (review revks3 F4).

The kernel deletes every route through a device that goes down (`ip link set tunsec0 down`, then up: the routes
stay gone) or loses its last IPv4 address (fib_disable_ip), and anyone with CAP_NET_ADMIN may delete a route or
the rule (routetable.py) by hand.  Tun.routes still lists the routes, so nothing added them again, not even a
reload (it adds only the networks Tun.routes does not list): the tunnels' traffic went to the kill switch
(dropped), or by the main table's routes where no standing route holds it, while `tunsec status` said up.

So at each reload, at once when the kernel tells of a rule or a route of tunsec's table deleted (routenotice.py:
without the rule nothing in the table holds the tunnels' traffic, not even the kill switch's standing routes),
and every INTERVAL seconds (blockwatch's, beside it: the kernel tells nothing of the routes it flushes with a
device), under the TUN's lock, Keeper.check compares Tun.routes with tunsec's table (one dump per family the
kernel filters to the table: no pass over the host's routes) and puts back, with add, what is missing; and the
rule of each family the TUN routes or blocks (the blocks' prohibit routes are looked up through it too), and the
rules of the local networks this instance holds (localrules.py, Keeper.local) of those families.
A round costs one netlink socket, and decides without a try what it already knows (review revlate13 F1): a TUN
that is down refuses every route, a place the dump shows another route in refuses ours, and after one EPERM so
does every other add.
- add, never replace: a route in the place (the same network and metric in tunsec's table) that is not ours is
  another tunsec's TUN route (its replace took ours), an operator's throw route, a block: theirs, left alone
  and said once; ours goes back once it goes.  So two instances never take a network back and forth.
- what the lock orders: a reload removing a tunnel's route (Tun.remove_route) takes it off Tun.routes in the
  same change, so a removed tunnel's route is never put back; remove_address's guards and source changes are
  whole changes too.
- without CAP_NET_ADMIN (given up at the drop where nothing kept it: docs/privileges.md) a route cannot be put
  back: an ERROR, once per loss, with root's command; `tunsec status` lists it as lost until it is back.
  Past FEW of one reason in a round, one ERROR names the count and the first few (all rate-limited).
  A TUN that is down refuses its routes (ENETDOWN): lost until it is up, then put back.
- a wanted route a start found in place (`tunsec prepare`'s: not listed, left at the exit) is watched too
  (Keeper.found, filled by Daemon._add_route, kept to the wanted networks by each reload), and put back as found.
Counted: routes and rules put back (status "tun", metric tunsec_tun_routes_put_back_total).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunsec.dataplane import localrules
from tunsec.dataplane.markrule import MARK, MARK_PRIORITY, ensure_mark_rules, has_mark_rule
from tunsec.dataplane.netlink import ForeignDrops, NetlinkError, reason, route_dump
from tunsec.dataplane.prohibitroute import Route, route_of
from tunsec.dataplane.routenotice import Deletions
from tunsec.dataplane.routes import RTN_UNICAST
from tunsec.dataplane.routetable import TABLE, ensure_rules, has_rule
from tunsec.dataplane.tun import IFF_UP, TUN_ROUTE, TUN_ROUTE_ARGS, IPNetwork, Tun, _iproute
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.tun")

INTERVAL = 2.0
FEW = 5   # lost routes of one reason said a line each in a round; past that, one line naming the first FEW
# datagrams another netlink socket unicast to the dump's socket: not the kernel's answer, dropped
FOREIGN = ForeignDrops("TUN route check", log)


async def watch(keeper: Keeper, stopping: asyncio.Event, interval: float = INTERVAL) -> None:
    """Until stopping: keeper.check (netlink in a thread) at once when the kernel tells of a rule or route of
    tunsec's table deleted (routenotice.py), and every interval seconds for the routes it flushes unsaid."""
    deleted = asyncio.Event()
    notices = Deletions.start(deleted.set)
    try:
        while not stopping.is_set():
            await _first(stopping, deleted, interval)
            if stopping.is_set():
                return
            deleted.clear()   # before the check: a deletion during it is checked again after it
            try:
                await asyncio.to_thread(keeper.check)
            except Exception as err:   # a bug: said, and the next round still runs
                keeper.say(logging.ERROR, "checking the TUN's routes failed: %s: %s", type(err).__name__, err)
    finally:
        if notices is not None:
            notices.close()


async def _first(stopping: asyncio.Event, deleted: asyncio.Event, interval: float) -> None:
    """Until either event is set, or interval seconds."""
    waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(deleted.wait())]
    try:
        await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@dataclass
class Check:
    """What one check did: the networks put back, the rules put back (their IP versions), and what it could not
    put back (a line each, root's command in it for want of CAP_NET_ADMIN)."""

    put_back: list[IPNetwork] = field(default_factory=list)
    rules: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Loss:
    """A route found lost this round: why (its line's), what a line of several such says, and its kind (the errno
    and the kernel's words: those of a kind are said in one line)."""

    dst: IPNetwork
    why: str
    many: str
    kind: tuple[int, str]


@dataclass
class Round:
    """What one check knows of the kernel's answer to an add before it is tried (review revlate13 F1): the TUN
    down (every route: ENETDOWN), the places other routes hold (EEXIST), an EPERM already (the rest too)."""

    up: bool
    held: set[IPNetwork]
    eperm: bool = False
    said: list[Loss] = field(default_factory=list)   # new losses, said together at the round's end

    def refusal(self, dst: IPNetwork) -> int:
        """The errno the kernel would answer an add of dst with; 0: unknown, try."""
        if not self.up:
            return errno.ENETDOWN
        if dst in self.held:
            return errno.EEXIST
        return errno.EPERM if self.eperm else 0


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
    lost_said: LogLimiter = field(default_factory=lambda: LogLimiter(burst=5, period=60.0))   # the losses' ERRORs
    # the local networks whose rules (localrules.py) this instance holds: ExcludeRoutes.local_nets
    local: Callable[[], set[IPNetwork]] = field(default=set)
    lost_local: dict[IPNetwork, str] = field(default_factory=dict)   # of local: missing, not put back: why

    def check(self) -> Check:
        """Under the TUN's lock: its listed routes and the rules before them in the kernel again.  One netlink
        socket a round (review revlate13 F1: one per lost route made a round of 1,000 take seconds)."""
        done = Check()
        tun = self.tun
        with tun._lock:
            listed = {d for d, _s in tun.routes}
            watched = [*tun.routes, *((d, s) for d, s in dict(self.found).items()
                                      if d not in listed and d not in tun.unrouted)]
            # the blocks' prohibit routes are looked up through the rule too (Tun.block adds it for them): their
            # families with the routes', also when no route is left to watch (review revlate13 F3)
            blocked: set[int] = {d.version for d, u in tun.unrouted.items() if u.blocked}
            versions: set[int] = ({d.version for d, _s in watched} | blocked) & tun.ruled
            self.lost_rules = {v: w for v, w in self.lost_rules.items() if v in versions}
            if not watched:
                self.lost.clear()
            if not watched and not versions:
                return done
            try:
                with _iproute() as ipr:
                    self._rules(ipr, done, versions)
                    self._mark_rules(ipr, done, versions & tun.marked)
                    self._local_rules(ipr, done, versions)
                    if watched:
                        self._routes(ipr, done, watched)
            except (NetlinkError, OSError) as err:   # the TUN gone (a stop under way), netlink refused: the next round
                log.debug("TUN %s routes not checked: %s", tun.name, getattr(err, "strerror", None) or err)
        return done

    def _routes(self, ipr: Any, done: Check, watched: list[tuple[IPNetwork, str | None]]) -> None:
        """The watched routes missing from tunsec's table put back; what the round knows decides the rest without
        a try (Round)."""
        idx = socket.if_nametoindex(self.tun.name)
        table = [r for family in sorted({_family(d.version) for d, _s in watched}) for r in _table(family)]
        present = {r.net for r in table if r.kind == RTN_UNICAST and r.oif == idx}
        missing = [(d, s) for d, s in watched if d not in present]
        gone = {d for d, _s in missing}
        self.lost = {d: w for d, w in self.lost.items() if d in gone}   # back: not lost
        if not missing:
            return
        # a place another route holds (another tunsec's TUN route, a block, an operator's throw route): the add
        # would be refused (EEXIST); the dump says so, and says when it goes (ours is tried again then)
        held = {r.net for r in table if _in_place(r) and not (r.kind == RTN_UNICAST and r.oif == idx)}
        rnd = Round(up=_is_up(ipr, idx), held=held)
        for dst, src in missing:
            self._put_back(ipr, rnd, done, idx, dst, src)
        self._say_lost(rnd.said)

    def _rules(self, ipr: Any, done: Check, versions: set[int]) -> None:
        for version in sorted(versions):
            try:
                if has_rule(ipr, version):
                    self.lost_rules.pop(version, None)
                    continue
                cmds = ensure_rules(ipr, [version])
            except NetlinkError as exc:
                self._rule_lost(done, version, f"it cannot be put back: {reason(exc)}")
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

    def _mark_rules(self, ipr: Any, done: Check, versions: set[int]) -> None:
        """The mark's rule (markrule.py) of each version this run put in place, put back if someone removed it:
        without it tunsec's own IKE and ESP are looked up in table 116, and a host-to-host tunnel's TUN route (the
        peer's own address) takes them (review revlate15 F1)."""
        for version in sorted(versions):
            try:
                if has_mark_rule(ipr, version):
                    continue
                cmds = ensure_mark_rules(ipr, [version])
            except NetlinkError as exc:
                done.failed.append(f"the rule priority {MARK_PRIORITY} fwmark {MARK:#x} lookup main (IPv{version}) "
                                   f"was removed and cannot be put back: {reason(exc)}")
                continue
            if cmds:   # EPERM: the sockets were marked by a start that could add it; root's command then
                done.failed.append(f"the rule priority {MARK_PRIORITY} fwmark {MARK:#x} lookup main (IPv{version}) "
                                   f"was removed and this process may not put it back: as root, {cmds[0]}")
                continue
            self.rules_put_back += 1   # counted with the table's rules; done.rules names those (a reload's answer)
            self.say(logging.WARNING, "the rule priority %d fwmark %#x lookup main (IPv%d: tunsec's own IKE and ESP) "
                     "was removed by someone else: put back", MARK_PRIORITY, MARK, version)

    def _local_rules(self, ipr: Any, done: Check, versions: set[int]) -> None:
        """The local networks' rules of versions (those a TUN route of ours needs) put back where missing."""
        want = {n for n in self.local() if n.version in versions}
        self.lost_local = {n: w for n, w in self.lost_local.items() if n in want}
        for net in sorted(want - localrules.present(ipr, {_family(n.version) for n in want}), key=str):
            try:
                localrules.add(ipr, net)
            except NetlinkError as exc:
                self._local_lost(done, net, "this process may not put it back (no CAP_NET_ADMIN): as root, "
                                 f"{localrules.local_rule_command(net)}" if exc.code == errno.EPERM
                                 else f"it cannot be put back: {reason(exc)}")
                continue
            self.lost_local.pop(net, None)
            self.rules_put_back += 1
            done.rules.append(net.version)
            self.say(logging.WARNING, "the rule to %s lookup main (a local network) was removed by someone else: "
                     "put back", net)

    def _local_lost(self, done: Check, net: IPNetwork, why: str) -> None:
        line = f"the rule that keeps local network {net} on the host's own routes was removed and {why}"
        done.failed.append(line)
        if self.lost_local.get(net) != why:   # said once, not every round
            self.lost_local[net] = why
            log.error("%s; its traffic goes into TUN %s", line, self.tun.name)

    def _rule_lost(self, done: Check, version: int, why: str) -> None:
        line = (f"the rule that looks up table {TABLE} (the tunnels' routes) before the main table (IPv{version}) "
                f"was removed and {why}")
        done.failed.append(line)
        if self.lost_rules.get(version) != why:   # said once, not every round
            self.lost_rules[version] = why
            log.error("%s; the tunnels' traffic follows the main table's routes", line)

    def _put_back(self, ipr: Any, rnd: Round, done: Check, idx: int, dst: IPNetwork, src: str | None) -> None:
        """dst through the TUN again, with src; one whose source is no longer an address of the host's (EINVAL)
        without it, as remove_address's restore does."""
        tun = self.tun
        known = rnd.refusal(dst)
        if known:
            self._lost(rnd, done, dst, src, known, os.strerror(known))
            return
        try:
            try:
                ipr.route("add", **_route(dst, idx, src))
            except NetlinkError as exc:
                if not (src and exc.code == errno.EINVAL):
                    raise
                ipr.route("add", **_route(dst, idx, None))
                tun.routes = [(d, None if d == dst else s) for d, s in tun.routes]
                src = None
        except NetlinkError as exc:
            rnd.eperm = rnd.eperm or exc.code == errno.EPERM
            self._lost(rnd, done, dst, src, exc.code, reason(exc))
            return
        self.lost.pop(dst, None)
        self.routes_put_back += 1
        done.put_back.append(dst)
        self.say(logging.WARNING, "route %s via TUN %s was removed (the TUN went down, or lost its last IPv4 "
                 "address, or someone deleted it): put back", dst, tun.name)

    def _lost(self, rnd: Round, done: Check, dst: IPNetwork, src: str | None, code: int, why_text: str) -> None:
        name = self.tun.name
        cmd = f"ip route add {dst} dev {name}" + (f" src {src}" if src else "") + TUN_ROUTE_ARGS
        if code == errno.EEXIST:
            why = (f"its place in table {TABLE} is taken by a route not this instance's (another tunsec's, root's): "
                   "left alone, put back once it goes")
            many = (f"their places in table {TABLE} are taken by routes not this instance's (another tunsec's, "
                    "root's): left alone, each put back once its place is free")
        elif code == errno.EPERM:
            why = f"this process may not put it back (no CAP_NET_ADMIN): as root, {cmd}"
            many = (f"this process may not put them back (no CAP_NET_ADMIN): as root, one `ip route add` each "
                    f"(`tunsec status` lists them; the first: {cmd})")
        elif code == errno.ENETDOWN:
            why = many = f"TUN {name} is down: put back once it is up (as root: ip link set dev {name} up)"
        else:
            why, many = f"it cannot be put back: {why_text}", f"they cannot be put back: {why_text}"
        done.failed.append(f"route {dst} via TUN {name} was removed and {why}")
        if self.lost.get(dst) != why:   # said once per loss (and reason), not every round
            self.lost[dst] = why
            # one line for each errno; the kernel's words only where the line says them
            kind = (code, "" if code in (errno.EEXIST, errno.EPERM, errno.ENETDOWN) else why_text)
            rnd.said.append(Loss(dst, why, many, kind))

    def _say_lost(self, said: list[Loss]) -> None:
        """The round's new losses, rate-limited: a line each, with its own root's command, up to FEW of a reason;
        past that one line naming the count and the first few (review revlate13 R1: a TUN down at 1,000 routes
        wrote 1,000 lines at once)."""
        groups: dict[tuple[int, str], list[Loss]] = {}
        for loss in said:
            groups.setdefault(loss.kind, []).append(loss)
        name = self.tun.name
        lines: list[str] = []
        for losses in groups.values():
            if len(losses) <= FEW:
                lines += [f"route {x.dst} via TUN {name} was removed and {x.why}; its traffic" for x in losses]
                continue
            nets = ", ".join(str(x.dst) for x in losses[:FEW])
            lines.append(f"{len(losses)} routes via TUN {name} were removed ({nets} and {len(losses) - FEW} more) "
                         f"and {losses[0].many}; their traffic")
        for line in lines:
            held = self.lost_said.admit()
            if held is not None:
                log.error("%s is held by the kill switch, or follows the host's other routes%s", line, suffix(held))

    def say(self, level: int, fmt: str, *args: object) -> None:
        held = self.limit.admit()
        if held is not None:
            log.log(level, fmt + "%s", *args, suffix(held))

    def status(self) -> dict[str, object]:
        """`tunsec status`'s part: the counts, and what is lost now (network or rule, why)."""
        return {"routes_put_back": self.routes_put_back, "rules_put_back": self.rules_put_back,
                "routes_lost": [{"network": str(d), "reason": w} for d, w in self.lost.items()]
                + [{"network": f"rule (IPv{v})", "reason": w} for v, w in self.lost_rules.items()]
                + [{"network": f"rule to {n}", "reason": w} for n, w in self.lost_local.items()]}


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


def _table(family: int) -> list[Route]:
    """The routes of family in tunsec's table, of every kind and device (none: ENOENT, the table holds no route
    of family)."""
    try:
        found = route_dump(family, FOREIGN, table=TABLE)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return []
        raise
    # a kernel without dump filtering sends every table's: ours only
    return [r for r in map(route_of, found) if r is not None and r.table == TABLE]


def _in_place(r: Route) -> bool:
    """The route holds the key a TUN route of its network would have: the family's default metric (TUN_ROUTE has
    none; IPv6's 0 is 1024).  The kill switch's standing routes (a metric of their own) do not."""
    return (r.priority or 0) in ((0, 1024) if r.net.version == 6 else (0,))


def _is_up(ipr: Any, idx: int) -> bool:
    """The TUN is up (IFF_UP): the kernel refuses a route through a device that is down (ENETDOWN), both families.
    Not known: taken as up (each add says)."""
    try:
        return bool(ipr.link("get", index=idx)[0]["flags"] & IFF_UP)
    except (NetlinkError, IndexError, KeyError, TypeError):
        return True
