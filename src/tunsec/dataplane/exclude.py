"""Full tunnels and exclude routes: the TUN's routes never take the host's default route, nor the path to
an IKE peer (strongSwan's kernel-libipsec does the same: its routes of a full tunnel are more specific
than a default route, and an "exclude route" keeps each peer's address on its old path).

A tunnel's network of length 0 (``0.0.0.0/0``, ``::/0``) goes into the TUN's routes as its two halves
(``0.0.0.0/1`` + ``128.0.0.0/1``, ``::/1`` + ``8000::/1``), in tunsec's own table (routetable.py), looked up
before the main table: the host's own default route is never replaced and may change while tunsec runs
(DHCP, NetworkManager, another daemon), and no main-table route of any length takes a tunnel's network
(review revks3 F1: an IPv6 router advertisement's on-link 2000::/3, a LAN's route: under a full tunnel the
host's LAN is tunnelled too, but for the peers).  ``ipaddress`` treats the halves as a full tunnel already
(ike/address_role.py).

A TUN route covering a peer's outer address (a full tunnel's halves cover every gateway and every neighbour;
a site-to-site remote_ts 192.0.2.0/24 covers a peer 192.0.2.1) would send our IKE and ESP to that peer into
the TUN: the tunnel would kill itself.  So for each such peer, with or without a path of the host's to it yet
(a peer without one gets its route all the same, which serves once the host has one: review revks4 F3), a
``throw`` route of its address (/32, /128) goes into tunsec's table first: there the lookup leaves the table
and goes on to the main table, the host's own path to the peer, whatever it is by then (a new default route,
another uplink: nothing to follow).  Each configured local_ts network a TUN route covers gets a rule instead
(review revks4 F2: a spoke's LAN under its remote_ts 10.0.0.0/8 stays on its connected route; review revlate14
F2: only what the main table routes other than by its default route: localrules.py).  The next hop of a
peer's path gets none (review revlate14 F1: whoever sets the host's routes, a LAN's DHCP server, would choose an
address that leaves the tunnel in clear); with rp_filter = 1 a full tunnel is the router's reverse path, which
the start warns of (rpfilter.py).  tunsec's own IKE and ESP sockets also carry a mark that
sends their packets past tunsec's table (markrule.py): the throw routes serve unprivileged starts, whose
sockets carry none.  The throw routes are tunsec's proto with the
TUN's mark as their metric, so a start after kill -9 knows and removes the ones this instance left
(clear_stale), and the host routes by the peer's path that tunsec of before h/fixks5 put in the main table too.

`tunsec prepare` (root) adds the configured peers' exclude routes for a later `tunsec up` that holds no
CAP_NET_ADMIN: a start finds one in place and uses it without writing to the kernel (and removes only the ones
of its mark it does not hold, after); on a TUN it did not make (``keep_found``) it leaves those it found at its
clean stop, as it leaves the TUN's routes it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any

from tunsec.dataplane import localrules
from tunsec.dataplane.blockrecord import block_mark
from tunsec.dataplane.netlink import IPRoute, NetlinkError, as_oserror, reason
from tunsec.dataplane.prohibitroute import RTPROT_TUNSEC
from tunsec.dataplane.routes import RTN_UNICAST, destination, in_main, next_hops
from tunsec.dataplane.routetable import TABLE, in_table
from tunsec.loglimit import LogLimiter, suffix
from tunsec.policy.full_tunnel import HALVES

log = logging.getLogger("tunsec.tun")

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
Route = tuple[IPNetwork, tuple[IPNetwork, ...]]   # a remote network, the tunnel's local networks

RTN_THROW = 9   # linux/rtnetlink.h
FOLLOW_INTERVAL = 10.0   # seconds between two looks at the host's paths for the exclude routes


def tun_networks(net: IPNetwork) -> tuple[IPNetwork, ...]:
    """What goes into the TUN's routes for a tunnel's network: a default route as its two halves."""
    return HALVES.get(net, (net,))


def is_half(net: IPNetwork) -> bool:
    """net is one half of a family's default route (a full tunnel's TUN route: killswitch.py)."""
    return any(net in halves for halves in HALVES.values())


def tun_routes(routes: Iterable[Route]) -> list[Route]:
    """The services' routes as the TUN gets them (tun_networks), each network once, first come first."""
    out: dict[IPNetwork, tuple[IPNetwork, ...]] = {}
    for net, local_nets in routes:
        for n in tun_networks(net):
            out.setdefault(n, local_nets)
    return list(out.items())


@dataclass(frozen=True)
class Path:
    """A main-table route of the host towards an address: its network, next hop (None: on the link),
    device and metric."""

    net: IPNetwork
    gateway: str | None
    oif: int
    priority: int = 0


def best_path(paths: Iterable[Path], peer: IPAddress) -> Path | None:
    """The route the kernel's main table picks for peer among paths: longest prefix, then lowest metric."""
    found = [p for p in paths if p.net.version == peer.version and peer in p.net]
    return min(found, key=lambda p: (-p.net.prefixlen, p.priority), default=None)


def captured(peer: IPAddress, tun_nets: Iterable[IPNetwork]) -> bool:
    """A TUN route would take peer's traffic: one covers it (tunsec's table comes before the main table,
    whatever the length of the host's route).  With or without a path to it now: a throw route needs none (it
    sends the lookup on to the main table, whatever path that has once it has one: review revks4 F3)."""
    return any(n.version == peer.version and peer in n for n in tun_nets)


def local_throws(routes: Iterable[Route]) -> set[IPNetwork]:
    """The configured local networks a TUN route covers (hub and spoke: local_ts 10.1.0.0/24, remote_ts
    10.0.0.0/8): each gets a rule (localrules.py), so that the site's LAN stays on its connected route rather
    than going into the TUN (review revks4 F2; strongSwan's users add a passthrough policy for it).  Only the
    configuration's local_ts (routes' second half: never dynamic ones, nor an RA's prefix), strictly inside a TUN
    route and not one itself."""
    routes = list(routes)
    nets = {n for n, _ in routes}
    return {loc for _, local in routes for loc in local if loc not in nets
            and any(loc.version == n.version and loc.prefixlen > n.prefixlen and loc.subnet_of(n)  # type: ignore[arg-type]
                    for n in nets)}


def _iproute() -> Any:
    return IPRoute(ext_ack=True)


def _paths(ipr: Any, family: int, tun_idx: int | None) -> list[Path]:
    """The main table's unicast routes of family, but the TUN's and tunsec's own (the path before them)."""
    out: list[Path] = []
    for r in ipr.route("dump", family=family):
        if not in_main(r) or r["type"] != RTN_UNICAST or r["proto"] == RTPROT_TUNSEC:
            continue
        gateway, oif = next_hops(r)[0]   # a multipath route: its first next hop (the exclude route takes one)
        if oif is None or oif == tun_idx:
            continue
        out.append(Path(destination(r), gateway, int(oif), int(r.get_attr("RTA_PRIORITY") or 0)))
    return out


def _family(peer: IPAddress) -> int:
    return socket.AF_INET if peer.version == 4 else socket.AF_INET6


def _host(peer: IPAddress) -> str:
    return f"{peer}/{peer.max_prefixlen}"


def _host_net(peer: IPAddress) -> IPNetwork:
    return ip_network(_host(peer))


def _command(verb: str, dst: IPAddress | IPNetwork, mark: int) -> str:
    """Root's command that adds (or deletes) the throw route of dst (a peer: its exclude route) of mark."""
    net = dst if isinstance(dst, IPv4Network | IPv6Network) else _host_net(dst)
    ip = "ip -6" if net.version == 6 else "ip"
    return f"{ip} route {verb} throw {net} table {TABLE} proto {RTPROT_TUNSEC} metric {mark}"


@dataclass
class ExcludeRoutes:
    """This instance's exclude routes (see the module), by peer address: the path each one takes."""

    tun: str
    keep_found: bool = False   # the routes found at start stay at the clean stop (the TUN was made for us)
    # the path each exclude route leads to (None: the host had none yet; the throw route serves once it has)
    held: dict[IPAddress, Path | None] = field(default_factory=dict)
    found: set[IPAddress] = field(default_factory=set)   # held, found in place, and keep_found: close() leaves
    lans: set[IPNetwork] = field(default_factory=set)    # rules of configured local_ts (local_throws, localrules.py)
    found_nets: set[IPNetwork] = field(default_factory=set)   # of lans: found in place, keep_found
    nets: list[IPNetwork] = field(default_factory=list)   # the TUN's routes as last given (ensure, keep_captured)
    # the host's own paths by family as last listed (ensure, refresh, follow): the interface IKE to an
    # unauthenticated captured address leaves by (services/ike/exclude_gate.py)
    paths: dict[int, list[Path]] = field(default_factory=dict)
    refused: int = 0          # exclude routes refused (status)
    denied: bool = False      # one was refused for want of CAP_NET_ADMIN: no table dump per address again
    _refused_log: LogLimiter = field(default_factory=LogLimiter, repr=False, compare=False)
    # held for a whole change: the IKE service's threads and a reload's add and remove at once
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def mark(self) -> int:
        """The metric of this instance's exclude routes: its TUN's mark (blockrecord.block_mark)."""
        return block_mark(self.tun)

    def ensure(self, peers: Iterable[IPAddress], tun_nets: Sequence[IPNetwork]) -> list[str]:
        """An exclude route for each of peers the TUN's routes (tun_nets: in, or about to go in) capture;
        what failed, one line each (logged)."""
        failed: list[str] = []
        peers = [p for p in peers if p not in self.held]
        if not peers:
            return failed
        if self.denied:   # refused for want of CAP_NET_ADMIN already: no dump per address (review revfull F6)
            for peer in peers:
                failed.append(self._refusal(f"exclude route {_host(peer)} not added: no CAP_NET_ADMIN (refused "
                                            f"before); IKE and ESP to peer {peer} go into TUN {self.tun}"))
            return failed
        with self._lock, _iproute() as ipr, as_oserror("listing routes for the exclude routes"):
            self.nets = list(tun_nets)
            idx = ipr.link_lookup(ifname=self.tun)
            tun_idx = idx[0] if idx else None
            paths: dict[int, list[Path]] = {}
            present: dict[int, set[IPNetwork]] = {}
            for peer in peers:
                family = _family(peer)
                if family not in paths:
                    paths[family] = self.paths[family] = _paths(ipr, family, tun_idx)
                    # on a TUN made for us (prepare's) look for its routes first: found, they stay at exit,
                    # and without CAP_NET_ADMIN nothing else would do; else add (or replace) makes it ours
                    present[family] = _present(ipr, family, self.mark) if self.keep_found else set()
                path = best_path(paths[family], peer)
                if not captured(peer, tun_nets):
                    continue
                if _host_net(peer) in present[family]:
                    self._found(peer, path)   # tunsec prepare's (or a killed run's): nothing to write
                    continue
                try:
                    self._add(ipr, peer, path)
                except NetlinkError as exc:
                    self.denied = self.denied or exc.code == errno.EPERM
                    # only configured or authenticated peers get here (exclude_gate.py): the command is theirs
                    failed.append(self._refusal(
                        f"exclude route {_host(peer)} refused: {reason(exc)}; IKE and ESP to peer "
                        f"{peer} go into TUN {self.tun} (as root: {_command('add', peer, self.mark)})"))
        return failed

    def keep_local(self, routes: Sequence[Route], drop: bool = True) -> list[str]:
        """The rules (localrules.py) of the configured local networks the TUN's routes (routes: in, or about to go in)
        cover (local_throws), added where missing; with drop, those no longer wanted go (a reload, after the TUN's
        routes changed: so that no moment sends the LAN into the TUN).  What failed, one line each (logged)."""
        failed: list[str] = []
        want = local_throws(routes)
        if want == self.lans or (not drop and want <= self.lans):
            return failed
        with self._lock, _iproute() as ipr, as_oserror("adding the rules of the local networks"):
            self._sync(ipr, self.lans, want if drop else self.lans | want, "a configured local_ts", failed)
        return failed

    def local_nets(self) -> set[IPNetwork]:
        """The local networks whose rules this instance holds now (the route keeper puts back a deleted one)."""
        with self._lock:
            return set(self.lans)

    def _sync(self, ipr: Any, have: set[IPNetwork], want: set[IPNetwork], what: str, failed: list[str]) -> None:
        """have (lans) made want: the rules of want - have added (localrules.py; those found in place on a TUN
        made for us taken as they are), those of have - want deleted (unless another tunsec's route needs one)."""
        add = sorted(want - have, key=str)
        present = localrules.present(ipr) if add and self.keep_found else set()
        for net in add:
            if net in present:
                self.found_nets.add(net)
            elif not self._rule(ipr, net, what, failed):
                continue
            have.add(net)
            log.info("rule to %s lookup main suppress_prefixlength %d (%s: the host's routes at least as "
                     "specific as it, not TUN %s)", net, localrules.suppressed(net), what, self.tun)
        for net in sorted(have - want, key=str):
            have.discard(net)
            self.found_nets.discard(net)
            localrules.delete(ipr, net, self._own())

    def _own(self) -> tuple[str, ...]:
        """This instance's devices in tunsec's table: its TUN and its standing routes' (killswitch.py)."""
        from tunsec.dataplane.killswitch import device_name  # killswitch.py imports this module
        return (self.tun, device_name(self.tun))

    def _rule(self, ipr: Any, net: IPNetwork, what: str, failed: list[str]) -> bool:
        """net's rule added (one already there is the shared one); False, said in failed, if refused."""
        command = localrules.local_rule_command(net)
        if self.denied:
            failed.append(self._refusal(f"rule to {net} ({what}) not added: no CAP_NET_ADMIN (refused before); "
                                        f"as root: {command}"))
            return False
        try:
            localrules.add(ipr, net)
        except NetlinkError as exc:
            self.denied = self.denied or exc.code == errno.EPERM
            failed.append(self._refusal(f"rule to {net} ({what}) refused: {reason(exc)}; it goes into TUN "
                                        f"{self.tun} (as root: {command})"))
            return False
        return True

    def _in_use(self, net: IPNetwork) -> bool:
        """net's throw route is a held peer's exclude route."""
        return net.prefixlen == net.max_prefixlen and net.network_address in self.held

    def _found(self, peer: IPAddress, path: Path | None) -> None:
        self.held[peer] = path
        if self.keep_found:
            self.found.add(peer)
        log.info("exclude route %s in place (%s: not into TUN %s)", _host(peer), _said(path), self.tun)

    def _refusal(self, line: str) -> str:
        """Counted, logged rate-limited (a hub's authenticating clients may be many)."""
        self.refused += 1
        if (held := self._refused_log.admit()) is not None:
            log.error("%s%s", line, suffix(held))
        return line

    def refresh(self) -> None:
        """The host's own paths listed again (paths), for IKE that leaves without an exclude route."""
        with self._lock, _iproute() as ipr, as_oserror("listing the host's paths for IKE"):
            idx = ipr.link_lookup(ifname=self.tun)
            tun_idx = idx[0] if idx else None
            for family in (socket.AF_INET, socket.AF_INET6):
                self.paths[family] = _paths(ipr, family, tun_idx)

    def _route(self, dst: IPAddress | IPNetwork) -> dict[str, object]:
        """pyroute2's arguments for a throw route of ours in tunsec's table (the lookup goes on to the main
        table): a peer's exclude route, or a network's (lans)."""
        net = dst if isinstance(dst, IPv4Network | IPv6Network) else _host_net(dst)
        return {"dst": str(net), "type": "throw", "table": TABLE, "proto": RTPROT_TUNSEC, "priority": self.mark,
                "family": _family(net.network_address)}

    def _add(self, ipr: Any, peer: IPAddress, path: Path | None) -> None:
        try:
            ipr.route("add", **self._route(peer))
        except NetlinkError as exc:   # one a killed run of ours left (clear_stale missed it): ours now
            if exc.code != errno.EEXIST:
                raise
        self.held[peer] = path
        log.info("exclude route %s (%s: not into TUN %s)", _host(peer), _said(path), self.tun)

    def follow(self) -> None:
        """The host's paths listed again (paths: its default route changed while tunsec runs, DHCP,
        NetworkManager, another uplink), and the one each peer's exclude route leads to now, for status and
        for IKE sent without an exclude route.  Nothing to write: a throw route leads to whatever path the main
        table has.  None found (the uplink gone for a moment): the last one known is kept."""
        with self._lock, _iproute() as ipr, as_oserror("following the host's paths for the exclude routes"):
            idx = ipr.link_lookup(ifname=self.tun)
            tun_idx = idx[0] if idx else None
            paths: dict[int, list[Path]] = {fam: _paths(ipr, fam, tun_idx) for fam in (socket.AF_INET, socket.AF_INET6)}
            self.paths.update(paths)
            for peer, had in list(self.held.items()):
                now = best_path(paths[_family(peer)], peer)
                if now is not None and (had is None or (now.gateway, now.oif) != (had.gateway, had.oif)):
                    self.held[peer] = now
                    log.info("exclude route %s: the host's path is now %s", _host(peer),
                             f"via {now.gateway}" if now.gateway else "on the link")

    def keep_only(self, peers: Iterable[IPAddress]) -> None:
        """The exclude routes of addresses not in peers go (no IKE SA nor connection has them any more)."""
        keep = set(peers)
        self.remove([p for p in list(self.held) if p not in keep])

    def keep_captured(self, tun_nets: Sequence[IPNetwork]) -> None:
        """The exclude routes of peers no TUN route (tun_nets, after a reload) covers any more go."""
        self.nets = list(tun_nets)
        self.remove([p for p in list(self.held) if not captured(p, tun_nets)], always=True)

    def close(self) -> None:
        """At exit, after the TUN's routes: every exclude route of ours goes, but those found at start on a
        TUN made for us (keep_found): they serve the next start, as the TUN's routes do."""
        if self.found or self.found_nets:
            kept = [*(_host(p) for p in sorted(self.found, key=str)), *map(str, sorted(self.found_nets, key=str))]
            log.info("exclude routes %s stay (they were there at start: tunsec prepare's)", ", ".join(kept))
        self.remove([p for p in self.held if p not in self.found])
        if self.lans:
            with self._lock, _iproute() as ipr:
                self._sync(ipr, self.lans, self.lans & self.found_nets, "", [])
        self.held.clear()
        self.found.clear()
        self.lans.clear()
        self.found_nets.clear()

    def remove(self, gone: list[IPAddress], always: bool = False) -> None:
        """The exclude routes of gone go (those held; always: the call is made even if none of gone was)."""
        gone = [p for p in gone if p in self.held]
        if not gone and not always:
            return
        with self._lock, _iproute() as ipr:
            for peer in gone:
                self.held.pop(peer)
                self.found.discard(peer)
                try:
                    ipr.route("del", **self._route(peer))
                except NetlinkError as exc:
                    if exc.code != errno.ESRCH:   # gone already: removed by someone else
                        log.warning("exclude route %s stays: %s (as root: %s)", _host(peer), reason(exc),
                                    _command("del", peer, self.mark))
                    continue
                log.info("exclude route %s removed", _host(peer))

    def clear_stale(self) -> None:
        """At start, after ensure() took those it found in place: the exclude routes of this instance's mark
        it does not hold, which a killed run (or a prepare for another configuration) left."""
        try:
            self.drop_unheld("an earlier tunsec left")
        except OSError as exc:
            log.warning("exclude routes an earlier tunsec may have left not checked: %s", exc.strerror or exc)
        try:   # a killed run's rules of local networks no longer configured (localrules.py)
            with _iproute() as ipr, as_oserror("listing the rules of the local networks"):
                for cmd in localrules.drop_unwanted(ipr, self.lans, self._own()):
                    log.info("rule an earlier tunsec left removed (%s)", cmd)
        except OSError as exc:
            log.warning("rules of local networks an earlier tunsec may have left not checked: %s", exc.strerror or exc)
        try:   # the host's own paths, before the TUN's routes go in: IKE to unauthenticated peers leaves by them
            self.refresh()
        except OSError as exc:
            log.warning("the host's paths not listed: %s", exc.strerror or exc)

    def drop_unheld(self, whose: str) -> list[str]:
        """The exclude routes of this instance's mark (tunsec's proto, host routes, its TUN's mark as their
        metric: _stale_of) it does not hold go; whose says who left them (logged).  Those removed; OSError if
        they cannot be listed."""
        removed: list[str] = []
        with _iproute() as ipr, as_oserror(f"listing the exclude routes {whose}"):
            for family in (socket.AF_INET, socket.AF_INET6):
                for r in ipr.route("dump", family=family):
                    if not _stale_of(r, self.mark) or (in_table(r) and self._in_use(_dst(r))):
                        continue
                    dst = f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                    kw = {"oif": r.get_attr("RTA_OIF")} if r.get_attr("RTA_OIF") is not None else {}
                    try:
                        ipr.route("del", dst=dst, type=r["type"], table=r.get_attr("RTA_TABLE") or r["table"],
                                  proto=RTPROT_TUNSEC, priority=self.mark, **kw)
                    except NetlinkError as exc:
                        log.warning("exclude route %s %s stays: %s", dst, whose, reason(exc))
                        continue
                    log.info("exclude route %s %s removed", dst, whose)
                    removed.append(dst)
        return removed


def _said(path: Path | None) -> str:
    """How a log line names an exclude route's path."""
    if path is None:
        return "no path of the host's yet: the one it gets"
    return f"the host's path{f' via {path.gateway}' if path.gateway else ''}"


def _dst(r: Any) -> IPNetwork:
    return ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")


def _present(ipr: Any, family: int, mark: int) -> set[IPNetwork]:
    """This instance's throw routes in the kernel now (its mark's in tunsec's table): exclude routes, and a killed
    run's next hops and local_ts's (a tunsec of h/fixks7 made them)."""
    return {_dst(r) for r in ipr.route("dump", family=family) if _stale_of(r, mark) and in_table(r)}


def _stale_of(r: Any, mark: int) -> bool:
    """A route of tunsec's proto with mark as its metric: a throw route of ours in tunsec's table (an exclude
    route, a local_ts's or a next hop's), or a host route a tunsec of before h/fixks5 put in the main table (by
    the peer's path, unicast)."""
    host = 32 if r["family"] == socket.AF_INET else 128
    kind = (in_table(r) and r["type"] == RTN_THROW and r.get_attr("RTA_DST") is not None) or (
        in_main(r) and r["type"] == RTN_UNICAST and r["dst_len"] == host)
    return bool(kind and r["proto"] == RTPROT_TUNSEC and r.get_attr("RTA_PRIORITY") == mark)


async def follow(excludes: ExcludeRoutes, stopping: asyncio.Event, interval: float = FOLLOW_INTERVAL) -> None:
    """Until stopping: the exclude routes follow the host's paths (ExcludeRoutes.follow, in a thread)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            continue
        try:
            await asyncio.to_thread(excludes.follow)
        except OSError as err:   # said; the next round tries again
            log.warning("%s", err.strerror or err)
