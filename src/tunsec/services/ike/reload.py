"""Reloading the IKE connections (as swanctl --load-conns) and what needs a restart instead."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from tunsec.conf.connections import ike_endpoints
from tunsec.conf.diff import credentials_only, diff_by_name
from tunsec.ike.sa import State
from tunsec.services.base import STOP_CUT, Failed
from tunsec.services.ike import recreate, vip_refused
from tunsec.services.ike.exclude_trust import kept_address
from tunsec.services.ike.reclaim import reclaim
from tunsec.services.ike.revoked import log_out_revoked

if TYPE_CHECKING:
    from tunsec.conf.config import Config
    from tunsec.conf.connections import Connection
    from tunsec.ike.sa import IkeSa
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

# the IKE SAs that keep a port no connection uses open: those on their way out (a DELETE under way,
# answered or given up on in bounded time; a rekeyed one lingering), never an established one
_LEAVING = frozenset({State.DELETING, State.REKEYED})


def check_reload(self: IkeService, cfg: Config) -> list[str]:
    """The IKE sockets were bound at start (port 500 needs a privilege given up since)."""
    out = []
    want = ike_endpoints(cfg.connections) if cfg.connections else {}
    for fam, addr in sorted(want.items()):
        have = self.local_addrs.get(fam)
        if have != addr:
            out.append(f"needs a restart: IKE on IPv{fam} address {addr} (tunsec listens on "
                       f"{have or f'no IPv{fam} address'})")
    ports = self.sockets.ports
    for c in cfg.connections:
        if c.local_port not in ports:
            out.append(f"needs a restart: connection {c.name}: IKE on local_port {c.local_port} "
                       f"(tunsec listens on {', '.join(map(str, sorted(ports)))})")
    return out


async def reload(self: IkeService, cfg: Config) -> list[str]:
    """As swanctl --load-conns: IKE SAs of removed and changed connections are deleted (the peer
    is told), the changed and added ones start as configured; a connection that differs only in
    its credentials (PSK, EAP users, certificates, keys, CAs) keeps its SAs and negotiates anew with
    the new ones, but a peer whose credential it took away (an EAP user, a PSK entry, the CA its
    certificate verified to) is logged out (revoked.py).  A Child SA of a peer of a connection of %any over
    a network the new configuration names (a named connection's new claim) is deleted (reclaim.py).

    The new connections are in force before anything is awaited: an ACQUIRE, a keying try or a
    peer's IKE_AUTH handled while the worker answers must never see the old ones.  IKE SAs being
    set up follow them: a peer's (IkeEndpoint.set_configs) as the engine can, ours are started
    anew (_stale_initiations).  Once the service shut down (a reload the stop did not wait for:
    review revlate11 F1) nothing changes, and nothing new goes in."""
    if self.closing:
        return [_failed(f"IKE connections: {STOP_CUT}, nothing changed")]
    d = diff_by_name(list(self.connections.values()), cfg.connections)
    creds = {new.name for old, new in d.changed if credentials_only(old, new)}
    self.trap_holds.forget(creds)   # new credentials: their old failures hold nothing back (review revtrap F4)
    replaced = [new for _, new in d.changed if new.name not in creds]
    gone = {c.name for c in d.removed} | {c.name for c in replaced}
    # an untouched connection keeps the engine config its SAs (those being set up too) were made
    # with: the file read again gave an equal one, but what a reload did not change is known by
    # identity (sa_configs.py, _stale_initiations, ikesas._outdated); its file and line are the new ones
    running = {c.name: c.ike for c in d.kept}
    connections = [dataclasses.replace(c, ike=running[c.name]) if c.name in running else c
                   for c in cfg.connections]
    self.connections = {c.name: c for c in connections}
    fresh = self.configured_claims.follow(connections)   # a named child's selectors, as configured now
    dropped = self.endpoint.set_configs([c.ike for c in connections], creds)
    traps = self._forget_traps(gone)   # their ACQUIREs read from now on are no longer ours
    now = time.monotonic()
    restart = _stale_initiations(self, creds, now)
    for sa in self.endpoint.sas:
        if sa.name in gone and not sa.is_closed:
            with contextlib.suppress(Exception):
                sa.delete(now)
    taken = reclaim(self, fresh)   # what %any peers hold of the networks it names anew (review revtrap F1)
    revoked = log_out_revoked(self, [(old, new) for old, new in d.changed if new.name in creds], now)
    for name in gone:
        self.attempts.pop(name, None)
        # a refused virtual IP's count, hold and scheduled try were the old connection's: the new one
        # starts as configured (the try added a Child SA beside it, the hold kept its traps quiet)
        vip_refused.cancel(self, name)
        stopped = self.tries.stop(name)   # its tries not sent yet: scheduled or waiting for an SPI (tries.py)
        self.acquiring -= {(t.conn, t.child) for t in stopped if t.child is not None}
        recreate.stop(self, name, why="its connection was removed or replaced by a reload")
        self.vips.replaced(name)   # its IKE SAs' virtual IPs no route's source (the daemon re-sources them)
    self.ke_refill.reconfigure(c.ike for c in connections)   # pooled groups follow the proposals
    self._reload_radius(cfg.radius)
    if self._addr_watch is None:
        self._watch_addresses()   # it failed at start: tried again
        if self._addr_watch is not None:
            self.host_addresses.resync()   # and what changed while nothing watched is listed
    close_unused_ports(self)   # not the ports of IKE SAs being deleted: their DELETEs go out there
    for name, child in restart:
        self.initiate(name, child)
    self._pump()   # the DELETEs go out (their Child SAs went down with sa.delete: sa_teardown.py)
    await self._remove_traps(traps)
    cut = await _start_new(self, [*d.added, *replaced])
    out = dataclasses.replace(d, changed=tuple((o, n) for o, n in d.changed if n.name not in creds)
                              ).summary("IKE connections")
    if cut:
        out.append(_failed(f"IKE connections {', '.join(cut)}: trap policies and initiations not set up: {STOP_CUT}"))
    if creds:
        out.append(f"IKE connections with new credentials (for new negotiations): {', '.join(sorted(creds))}")
    out += revoked + taken
    if dropped:
        log.info("reload: %d IKE SAs peers were setting up under removed or changed connections dropped", dropped)
    return out


def _failed(what: str) -> Failed:
    """A line of the reload's that makes its answer an error, said in the log (the daemon logs the others)."""
    log.error("reload: %s", what)
    return Failed(what)


async def _start_new(self: IkeService, conns: list[Connection]) -> list[str]:
    """The trap policies and initiations of the connections a reload added or replaced; those the stop
    left out (it shut the service down meanwhile: nothing new goes in), by name."""
    for i, conn in enumerate(conns):
        for ch in conn.children:
            if self.closing:   # one partly set up is named too
                return [c.name for c in conns[i:]]
            if ch.start_action == "trap":
                await self.install_traps(only=(conn.name, ch.name))
            elif ch.start_action == "start":
                self.initiate(conn.name, ch.name)
    return []


def forgotten(self: IkeService, spi: bytes, sa: IkeSa) -> None:
    """The engine forgot an IKE SA (IkeEndpoint.on_forget): its SPI leaves the worker (trusted.py), and
    if it may have been the last on a port a reload left only to IKE SAs, _pump closes that port.  The
    exclude routes are swept only if the address it kept (exclude_trust.kept_address) held one: after a
    float without MOBIKE where it authenticated, not where it floated (review revlast2 F2); or the address
    it authenticated from, which a MOBIKE SA keeps no more once it moved: its route stays if the move's own
    sweep (mobility._sweep_left) did not run, e.g. no Child SA to move (review revsweep2 F3).  A half-open
    SA kept none, also when its forged source is a live client's routed address: a flood of them would
    have bought a pass over all IKE SAs per turn (review revfull3, revlast2 R1).  Its IkeSaUp record is
    still in ike_up: the engine forgets an SA as it collects its events, the handlers of its IkeSaDown
    and PeerUnreachable, which pop the record, run after."""
    self.trusted.remove(spi)
    gate = self.sockets.gate
    record = self.ike_up.get(sa.local_spi)   # None for a half-open SA: it names nothing
    authenticated = record.ev.remote_addr[0] if record is not None else None
    named = {a for a in (kept_address(sa, self.ike_up), authenticated) if a is not None}
    self._sweep_due = self._sweep_due or (gate is not None and bool(named) and gate.may_sweep(named))
    if self.sockets.draining:
        self._port_freed = True


def close_unused_ports(self: IkeService) -> None:
    """Close the IKE ports that neither a connection nor an IKE SA being deleted uses.  Not for a peer's
    half-open one: a port left to IKE SAs takes no new IKE_SA_INIT (IkeService._readable), and one that
    came in before the reload would not keep it open for its half_open_timeout.  Nor for an established
    one of a connection still configured whose peer came in on another connection's port (a responder's
    connection is chosen by address and identity, not port): it would keep a port the operator removed
    open for as long as its peer keeps it up, i.e. for good (review revdelete F3).  That IKE SA stays,
    without its IKE path (as before the port was kept for DELETEs): logged, its peer reconnects to a
    port that is configured, or the IKE SA ends by DPD or its lifetime."""
    before = set(self.sockets.ports)
    self.sockets.close_unused(self.connections.values(), {sa.local_port for sa in self.endpoint.sas
                                                          if sa.state in _LEAVING})
    closed = before - self.sockets.ports
    stranded = [sa for sa in self.endpoint.sas if sa.state is State.ESTABLISHED and sa.local_port in closed]
    for port in sorted({sa.local_port for sa in stranded}):
        names = sorted({sa.name for sa in stranded if sa.local_port == port})
        log.warning("reload: IKE port %d is no longer configured: closed; established IKE SAs of %s ran on it "
                    "and have no IKE path until their peers reconnect to a configured port", port, ", ".join(names))


def _stale_initiations(self: IkeService, renewed: set[str], now: float) -> list[tuple[str, str | None]]:
    """Our IKE SAs still being set up with a connection the reload removed or changed: closed (an
    AUTH with the old credentials may be out, and the peer's would be checked against them).  Those
    of a connection with new credentials only are what to start again (a replaced connection
    starts as configured); the children they were creating, or the bare IKE SA."""
    restart: list[tuple[str, str | None]] = []
    for sa in self.endpoint.sas:
        if not sa.is_initiator or sa.state is not State.CONNECTING:
            continue
        conn = self.connections.get(sa.name)
        if conn is not None and conn.ike is sa.config:
            continue
        creating = [ch.name for ch in sa.config.children if sa.creating(ch.name)]
        sa.delete(now)
        if conn is not None and sa.name in renewed:
            names = {ch.name for ch in conn.children}
            restart += [(sa.name, c) for c in creating if c in names] or [(sa.name, None)]
            log.info("%s: IKE SA being set up with %s restarted with the new credentials", sa.name,
                     sa.remote_addr[0])
    return list(dict.fromkeys(restart))
