"""IKE to a peer address the TUN's routes would capture (a full tunnel's halves, a remote_ts or pool
covering it): an exclude route (dataplane/exclude.py) only for an address something vouches for, the
uplink's interface for the rest.

Trusted, so routed around the TUN (an exclude route before our first datagram to it, so neither that
datagram nor the Child SAs' ESP after it goes into the TUN): a connection's remote_addrs (``static``),
the peer of an IKE SA once it is authenticated (the responder's IKE_AUTH answer leaves after its
IkeSaUp; the initiator's next message after the answer), a MOBIKE move of such an SA once its return
routability check succeeded (``expect``: no datagram of ours is left to hold then), and the target
of a REDIRECT in IKE_AUTH (``trusted``: services/ike/exclude_trust.py).  Everything else tunsec sends
IKE to is unauthenticated (an IKE_SA_INIT answer, a COOKIE, a REDIRECT in IKE_SA_INIT: to anyone who
can send one datagram with a made-up source): it gets no route (review revfull F1: one spoofed
datagram would have routed an address of the attacker's choice around the full tunnel, in clear) and
leaves by the interface of the host's own path to it (IP_PKTINFO's ipi_ifindex, pktinfo.sendto: the
kernel's lookup then skips the TUN's routes; on port 4500 the worker's SEND_IKE carries it as OIF, review
revfull3 F1), or, where no path is known, into the TUN as the routes say, counted.  Never as routed when
that interface is refused (gone: a recreated uplink's stale ifindex): counted (uplink_failed), and the
host's paths listed again for the retransmit (review revfull4 F1).  IKE of an up IKE SA without MOBIKE to
where its peer floated (exclude_trust.Trust.UNPROVEN) is dropped, counted (unproven_float): answered by the
uplink its DPD would succeed while its ESP goes into the TUN; unanswered, the peer reconnects (review
revfull4 F2).

The check is in memory for every datagram sent; only a trusted captured address without an exclude
route waits, its datagrams held (a few: IKE retransmits the rest), at most WAITING_MAX addresses at once
(beyond: dropped, counted), all of them added by one task in one netlink job (review revfull F4).  The
exclude routes of addresses that no connection has nor any live IKE SA keeps (the address its peer
proved: exclude_trust.kept_address; a half-open SA keeps none) go when an IKE SA that kept one is
forgotten (sweep), when a MOBIKE SA's Child SAs left one (mobility._sweep_left), and at a reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tunsec.dataplane.exclude import ExcludeRoutes, IPAddress, IPNetwork, best_path, captured
from tunsec.ike.endpoint import Datagram
from tunsec.pktinfo import GONE
from tunsec.policy.selector import parse_ip
from tunsec.services.ike.exclude_trust import Trust

log = logging.getLogger("tunsec.ike")

HELD_PER_PEER = 8   # datagrams held per address while its exclude route goes in
WAITING_MAX = 64    # addresses waiting for their exclude route at once (a burst of clients authenticating)
REFRESH_MIN = 1.0   # seconds between two listings of the host's paths after sends by a refused interface


@dataclass
class GateStats:
    """What the gate did besides routing (status: exclude_gate)."""

    uplink: int = 0     # IKE to an unauthenticated captured address sent by the uplink's interface, no route
    into_tun: int = 0   # such IKE that could not be (no path known): into the TUN, as routed
    # datagrams dropped: WAITING_MAX addresses waited already (or an expect()ed route not asked), or HELD_PER_PEER
    dropped: int = 0
    uplink_failed: int = 0   # IKE by the uplink's interface the kernel refused (gone: a recreated uplink)
    unproven_float: int = 0  # IKE of an up IKE SA without MOBIKE to where it floated: dropped


# no TUN: the counters all 0, built once (dataclasses.asdict per status request kept memory behind:
# test_ike_memory)
_NO_GATE = {"held": 0, "refused": 0, **dataclasses.asdict(GateStats())}


def exclude_counters(gate: ExcludeGate | None) -> dict[str, int]:
    """The status document's ``exclude_routes`` (all 0 without a TUN)."""
    if gate is None:
        return dict(_NO_GATE)
    return {"held": len(gate.routes.held), "refused": gate.routes.refused, **dataclasses.asdict(gate.stats)}


def _never(ip: IPAddress, data: bytes) -> Trust | bool:
    return Trust.NONE


@dataclass
class ExcludeGate:
    """Holds the IKE datagrams to a trusted captured address until its exclude route is in, then sends them;
    tells the interface the others leave by."""

    routes: ExcludeRoutes
    tun_nets: Callable[[], list[IPNetwork]]   # the TUN's routes now
    send: Callable[[Datagram], None]            # sends a held datagram (IkeSockets.send)
    static: Callable[[], list[IPAddress]]     # the connections' peer addresses: trusted, never swept
    spawn: Callable[[object], object]         # runs a coroutine as a task the service awaits at shutdown
    trusted: Callable[[IPAddress, bytes], Trust | bool] = _never   # an authenticated IKE SA's peer (exclude_trust.py)
    clear: set[IPAddress] = field(default_factory=set)   # trusted, checked: not captured (or its route refused)
    waiting: dict[IPAddress, list[Datagram]] = field(default_factory=dict)
    stats: GateStats = field(default_factory=GateStats)
    # waiting addresses a sweep found no IKE SA keeps, nothing trusted since: their route goes once it is in
    # (a sweep keeps what waits, revfull R1; the job ending later must not leave the route: review revsweep3 R1)
    owed: set[IPAddress] = field(default_factory=set)
    _busy: bool = False   # the one task adding the waiting addresses' routes runs
    _refreshed: float = float("-inf")   # when the host's paths were last listed after a refused send

    def check(self, ip: IPAddress, datagram: Datagram) -> int | None:
        """None: the datagram waits for ip's exclude route (sent once it is in), or is dropped.  Else it is
        sent now: 0 as the routes say, another number by that interface (ip is captured and untrusted)."""
        if ip in self.routes.held or ip in self.clear:
            return 0
        nets = self.tun_nets()
        if not any(ip in n for n in nets if n.version == ip.version):
            return 0   # not cached: a gateway's clients outside its tunnels would fill the set
        if ip not in self.static():
            trust = self.trusted(ip, datagram.data)
            if trust is Trust.UNPROVEN:
                self.stats.unproven_float += 1
                return None
            if not trust:
                return self._uplink(ip, nets)
        self.owed.discard(ip)   # trusted again since a sweep found it unkept
        held = self.waiting.get(ip)
        if held is None:
            if len(self.waiting) >= WAITING_MAX:
                self.stats.dropped += 1   # IKE retransmits it
                return None
            self.waiting[ip] = [datagram]
            self._start()
        elif len(held) < HELD_PER_PEER:
            held.append(datagram)
        else:
            self.stats.dropped += 1
        return None

    def expect(self, ip: IPAddress) -> None:
        """ip was proven with no datagram of ours to it to hold (a MOBIKE move's return routability check
        answered: its request and the update's answer went by the uplink, unproven then): its exclude route
        goes in now if the TUN's routes capture it, and mobility._route_ready holds the Child SAs' MIGRATE
        while it waits, so that their ESP never follows the TUN's routes (review revsweep2 F2).  As check
        bounds it: WAITING_MAX addresses at once (beyond: counted; no IKE may go there next, so _route_ready
        asks again, ``unrouted``, while the Child SAs wait: review revsweep3 F1)."""
        self.owed.discard(ip)
        if self._unrouted(ip) and not self._queue(ip):
            self.stats.dropped += 1

    def unrouted(self, ip: IPAddress) -> bool:
        """Whether proven ip (``expect``) still needs its exclude route: waiting for it, or dropped at
        WAITING_MAX, in which case it is queued now if there is room (not counted again: mobility._route_ready
        asks at every poll).  False once its route is in, or it turned out clear, static or not captured."""
        if not self._unrouted(ip):
            return False
        self._queue(ip)
        return True

    def _unrouted(self, ip: IPAddress) -> bool:
        """ip is captured by the TUN's routes and has no exclude route, nor needs one asked here (a connection's
        peer, ``static``, is trusted by check: its route goes in before our first IKE to it)."""
        if ip in self.routes.held or ip in self.clear or ip in self.static():
            return False
        return any(ip in n for n in self.tun_nets() if n.version == ip.version)

    def _queue(self, ip: IPAddress) -> bool:
        """ip waits for its exclude route (no datagram held: expect's); False if WAITING_MAX wait already."""
        if ip not in self.waiting:
            if len(self.waiting) >= WAITING_MAX:
                return False
            self.waiting[ip] = []
            self._start()
        return True

    def _start(self) -> None:
        """The one task adding the waiting addresses' routes, unless it runs."""
        if not self._busy:
            self._busy = True
            self.spawn(self._exclude())

    def _uplink(self, ip: IPAddress, nets: list[IPNetwork]) -> int:
        """The interface of the host's own path to ip (the last one the exclude routes saw), if the TUN's
        routes capture it; 0 (as routed) if they do not after all, or no path is known (counted)."""
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        path = best_path(self.routes.paths.get(family, ()), ip)
        if path is None:
            self.stats.into_tun += 1
            return 0
        return path.oif if captured(ip, nets) else 0

    def sent(self, err: int | None) -> None:
        """A datagram given an interface by _uplink was sent (err None) or refused (err: its errno, 0 if
        unknown: the worker's).  A gone interface, or an unknown error, has the host's paths listed again
        (at most every REFRESH_MIN s, in a thread), so that the retransmit leaves by the new one."""
        if err is None:
            self.stats.uplink += 1
            return
        self.stats.uplink_failed += 1
        if err and err not in GONE:
            return
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_MIN:
            self._refreshed = now
            self.spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self.routes.refresh)
        except OSError as err:
            log.warning("the host's paths for IKE by the uplink not listed again: %s", err.strerror or err)

    async def _exclude(self) -> None:
        """The waiting addresses' exclude routes, all in one netlink job, until none waits."""
        try:
            while self.waiting:
                batch = list(self.waiting)
                try:
                    await asyncio.to_thread(self.routes.ensure, batch, self.tun_nets())
                except OSError as err:   # the datagrams go as before (into the TUN)
                    log.error("exclude routes for IKE peers %s: %s", ", ".join(map(str, batch[:4])),
                              err.strerror or err)
                for ip in batch:
                    if ip not in self.routes.held:
                        self.clear.add(ip)   # not captured after all (a more specific route of the host's), or refused
                    for datagram in self.waiting.pop(ip, []):
                        self.send(datagram)
                self._drop_owed(batch)
        finally:
            self._busy = False

    def _drop_owed(self, batch: list[IPAddress]) -> None:
        """The routes just added for addresses a sweep found unkept while they waited go again."""
        done = self.owed.intersection(batch)
        if done:
            self.owed -= done
            stale = [ip for ip in batch if ip in done and ip in self.routes.held]
            if stale:
                self.spawn(asyncio.to_thread(self.routes.remove, stale))

    def reset(self) -> None:
        """The TUN's routes changed (a reload): what was clear is checked again."""
        self.clear.clear()

    def may_sweep(self, gone: Iterable[str] | None = None) -> bool:
        """An exclude route, or a checked address, may be stale: one not a connection's peer is held (of
        ``gone``, a forgotten IKE SA's addresses, if given: only those can have become stale), or one waits
        for its route (it may be unkept once that is in: ``owed``)."""
        static = set(self.static())
        if gone is None:
            return bool(self.clear) or any(p not in static for p in (*self.routes.held, *self.waiting))
        for text in gone:
            try:
                ip = parse_ip(text)
            except ValueError:
                continue
            if ip not in static and (ip in self.routes.held or ip in self.clear or ip in self.waiting):
                return True
        return False

    def sweep(self, live: Callable[[], Iterable[IPAddress]]) -> None:
        """The exclude routes of addresses no IKE SA keeps (live(): a pass over them, only made when an
        exclude route or a checked address may be stale) nor connection has go, in a thread."""
        static = set(self.static())
        keep = static | set(self.waiting)
        pending = [p for p in self.waiting if p not in static]
        if all(p in keep for p in self.routes.held) and not self.clear and not pending:
            return
        alive = set(live())
        keep |= alive
        self.clear &= keep
        self.owed.update(p for p in pending if p not in alive)
        # decided now: an address that starts waiting after this, its route added before the thread runs,
        # stays (review revfull R1)
        stale = [p for p in self.routes.held if p not in keep]
        if stale:
            self.spawn(asyncio.to_thread(self.routes.remove, stale))
