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
from tunsec.services.ike import recreate, vip_refused

if TYPE_CHECKING:
    from tunsec.conf.config import Config
    from tunsec.conf.connections import Connection
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")

_AUTHENTICATED = frozenset({State.ESTABLISHED, State.DELETING, State.REKEYED})


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
    its credentials (PSK, EAP users, certificates, keys) keeps its SAs and negotiates anew with the
    new ones, but an EAP user no longer in the secrets is logged out (_removed_users), and so is a
    PSK user whose entry is (_removed_psk_users).

    The new connections are in force before anything is awaited: an ACQUIRE, a keying try or a
    peer's IKE_AUTH handled while the worker answers must never see the old ones.  IKE SAs being
    set up follow them: a peer's (IkeEndpoint.set_configs) as the engine can, ours are started
    anew (_stale_initiations)."""
    d = diff_by_name(list(self.connections.values()), cfg.connections)
    creds = {new.name for old, new in d.changed if credentials_only(old, new)}
    replaced = [new for _, new in d.changed if new.name not in creds]
    gone = {c.name for c in d.removed} | {c.name for c in replaced}
    # an untouched connection keeps the engine config its SAs (those being set up too) were made
    # with: the file read again gave an equal one, but what a reload did not change is known by
    # identity (sa_configs.py, _stale_initiations, ikesas._outdated); its file and line are the new ones
    running = {c.name: c.ike for c in d.kept}
    connections = [dataclasses.replace(c, ike=running[c.name]) if c.name in running else c
                   for c in cfg.connections]
    self.connections = {c.name: c for c in connections}
    dropped = self.endpoint.set_configs([c.ike for c in connections], creds)
    traps = self._forget_traps(gone)   # their ACQUIREs read from now on are no longer ours
    now = time.monotonic()
    restart = _stale_initiations(self, creds, now)
    for sa in self.endpoint.sas:
        if sa.name in gone and not sa.is_closed:
            with contextlib.suppress(Exception):
                sa.delete(now)
    logged_out = _removed_users(self, [new for _, new in d.changed if new.name in creds], now)
    psk_out = _removed_psk_users(self, [(old, new) for old, new in d.changed if new.name in creds], now)
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
        self._watch_addresses()   # a MOBIKE client connection may have been added
    close_unused_ports(self)   # not the ports of IKE SAs being deleted: their DELETEs go out there
    for name, child in restart:
        self.initiate(name, child)
    self._pump()   # the DELETEs go out (their Child SAs went down with sa.delete: sa_teardown.py)
    await self._remove_traps(traps)
    for conn in [*d.added, *replaced]:
        for ch in conn.children:
            if ch.start_action == "trap":
                await self.install_traps(only=(conn.name, ch.name))
            elif ch.start_action == "start":
                self.initiate(conn.name, ch.name)
    out = dataclasses.replace(d, changed=tuple((o, n) for o, n in d.changed if n.name not in creds)
                              ).summary("IKE connections")
    if creds:
        out.append(f"IKE connections with new credentials (for new negotiations): {', '.join(sorted(creds))}")
    if logged_out:
        out.append(f"EAP users no longer in the secrets, their IKE SAs deleted: {', '.join(logged_out)}")
    if psk_out:
        out.append(f"PSK users whose key left the secrets, their IKE SAs deleted: {', '.join(psk_out)}")
    if dropped:
        log.info("reload: %d IKE SAs peers were setting up under removed or changed connections dropped", dropped)
    return out


def forgotten(self: IkeService, spi: bytes) -> None:
    """The engine forgot an IKE SA (IkeEndpoint.on_forget): its SPI leaves the worker (trusted.py), and
    if it may have been the last on a port a reload left only to IKE SAs, _pump closes that port."""
    self.trusted.remove(spi)
    if self.sockets.draining:
        self._port_freed = True


def close_unused_ports(self: IkeService) -> None:
    """Close the IKE ports that neither a connection nor an authenticated IKE SA (one being deleted
    too) uses.  Not for a peer's half-open one: a port left to IKE SAs takes no new IKE_SA_INIT
    (IkeService._readable), and one that came in before the reload would not keep it open for its
    half_open_timeout."""
    self.sockets.close_unused(self.connections.values(), {sa.local_port for sa in self.endpoint.sas
                                                          if sa.state in _AUTHENTICATED})


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


def _removed_users(self: IkeService, renewed: list[Connection], now: float) -> list[str]:
    """Delete the established IKE SAs of EAP-MSCHAPv2 users the reload took out of the secrets
    (the same user's other connections, and other users, keep theirs): removing a user is how an
    operator revokes one, and its session would otherwise last until its next reauthentication.
    A changed password leaves the session alone, as a rotated PSK does.  "user (connection)", each once."""
    out: list[str] = []
    for conn in renewed:
        if conn.ike.remote.method != "eap-mschapv2":
            continue
        for sa in self.endpoint.sas:
            up = self.ike_up.get(sa.local_spi) if sa.name == conn.name else None
            if up is None or up.ev.peer_eap is None or sa.state is not State.ESTABLISHED:
                continue
            user = up.ev.peer_eap.user.decode("utf-8", "replace")   # as the EAP server looked it up
            if conn.ike.eap_password(user) is None:
                log.info("%s: EAP user %s is no longer in the secrets: deleting its IKE SA with %s", conn.name,
                         up.ev.peer_eap.user_text, sa.remote_addr[0])
                sa.delete(now)
                out.append(f"{up.ev.peer_eap.user_text} ({conn.name})")
    return list(dict.fromkeys(out))


def _removed_psk_users(self: IkeService, changed: list[tuple[Connection, Connection]], now: float) -> list[str]:
    """Delete the established IKE SAs of PSK users (a connection of %any, ike/psk.py) the reload took
    out of the secrets, as _removed_users does for EAP (review revpsk F2): the entry the peer's
    identity chose is gone by name, or another one or none is the identity's now (dave's own entry
    gone, a group key would not prove him; an entry added for someone the group key proved: it no
    longer does).  A key changed under the same entry name ends no session (a rotated PSK).  The
    entry an SA proved is the one the old configuration picks for its identity (the engine keeps no
    record of it); an SA for whose identity it picked none is left alone.  "identity (connection)"."""
    out: list[str] = []
    for old, new in changed:
        if not old.ike.peer_psks or not new.ike.peer_psks or new.ike.remote.method != "psk":
            continue
        for sa in self.endpoint.sas:
            up = self.ike_up.get(sa.local_spi) if sa.name == new.name else None
            # an SA we initiated proved config.psk both ways (ike_auth._verify_psk), not the IDr's pick
            if up is None or sa.state is not State.ESTABLISHED or sa.is_initiator:
                continue
            was, now_is = old.ike.psk_for(up.ev.remote_id), new.ike.psk_for(up.ev.remote_id)
            # the same entry (a rotated key), or another one holding the key it proved (a renamed one)
            if was is None or (now_is is not None and (now_is.name == was.name or now_is.secret == was.secret)):
                continue
            log.info("%s: secrets.%s, the pre-shared key of %s, is no longer its: deleting its IKE SA with %s",
                     new.name, was.name, up.ev.remote_id, sa.remote_addr[0])
            sa.delete(now)
            out.append(f"{up.ev.remote_id} ({new.name})")
    return list(dict.fromkeys(out))
