"""auth = eap-radius: EAP relayed between the engine and the RADIUS client (one round per IKE SA)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from tunsec import worker_distrust
from tunsec.dataplane import pipe
from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.events import Accepted, DownReason, EapRelayRequest, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.sa import IkeSa
from tunsec.ike.state import State
from tunsec.radius.accounting import Accounting
from tunsec.radius.causes import Cause, cause_of
from tunsec.radius.dae import DaeServer, SessionQuery
from tunsec.radius.messages import Station
from tunsec.radius.relay import RadiusRelay
from tunsec.radius.settings import DaeSettings, RadiusSettings
from tunsec.radius.usage import ChildRef
from tunsec.services.base import StartupError, bind_udp
from tunsec.services.ike.state import ChildState

if TYPE_CHECKING:
    from tunsec.services.ike.service import IkeService

log = logging.getLogger("tunsec.ike")
# seconds a run a reload turned off gets for its Stops and Off, as at shutdown (ACCT_SHUTDOWN_WAIT):
# a server that answers does so within a round trip, and one that does not would keep them
# retransmitting for a full round per server (22 s each by default) while a run a later reload
# turns on holds its Accounting-On, and so every new Start, until this one has ended
ACCT_RETIRE_WAIT = 3.0
# an Access-Accept's Session-Timeout is taken as at least this many seconds: a shorter one would end
# the IKE SA before its client has used it, and have it log in again in a loop
MIN_SESSION_TIMEOUT = 10


def _reload_radius(self: IkeService, settings: RadiusSettings | None) -> None:
    """New RADIUS servers or timers serve new rounds and records; those under way finish with the
    settings they began with (RadiusRelay.reconfigure, Accounting.reconfigure)."""
    old = self.radius.settings if self.radius is not None else None
    if old == settings:
        return
    if self.radius is not None and settings is not None:
        self.radius.reconfigure(settings)
    else:
        if self.radius is not None:
            self.radius.close()
        self.radius = RadiusRelay(settings) if settings is not None else None
    if old is not None and settings is not None and _rest(old) == _rest(settings):
        # only dae { }, where groups come from or trust_eap_identity changed: accounting goes on untouched
        _dae_reload(self, settings)
        return
    self._acct_configure(settings)
    _acct_open(self)   # a reload that turned accounting on
    _dae_reload(self, settings)


def _rest(settings: RadiusSettings) -> RadiusSettings:
    """The settings but for those a reload changes without a new RADIUS client (Dynamic
    Authorization's, and how an Access-Accept gives groups)."""
    return dataclasses.replace(settings, dae=None, class_group=False, filter_id=False, trust_eap_identity=False)


# --- Dynamic Authorization (RFC 5176): tunsec.radius.dae ------------------------------------------
def _dae_open(self: IkeService) -> None:
    """prepare(): the listener's socket, bound before the privilege drop (a port below 1024
    needs it); read from start() on."""
    settings = self.radius.settings if self.radius is not None else None
    if settings is not None and settings.dae is not None:
        self.dae = _dae_server(self, settings, _dae_bind(settings.dae))


def _dae_bind(dae: DaeSettings) -> socket.socket:
    """The listener's socket on ``listen``:``port`` (that address only); raises StartupError."""
    return bind_udp(dae.listen.version, str(dae.listen), dae.port, purpose="RADIUS Dynamic Authorization, radius.dae")


def _dae_server(self: IkeService, settings: RadiusSettings, sock: socket.socket) -> DaeServer:
    assert settings.dae is not None
    return DaeServer(settings.dae, settings.nas_identifier, functools.partial(_dae_find, self),
                     functools.partial(_dae_disconnect, self), functools.partial(_dae_ours, self), sock=sock)


async def _dae_serve(self: IkeService) -> None:
    if self.dae is not None:
        await self.dae.serve()


def _dae_reload(self: IkeService, settings: RadiusSettings | None) -> None:
    """A reload: a listener whose settings changed is closed, a new one bound (as tunsec's own
    user now: a port below 1024 fails, and is logged) with the old one's answer cache if the
    secret is the same; one that stays keeps its socket and counters."""
    dae = settings.dae if settings is not None else None
    if self.dae is not None and dae == self.dae.settings:
        assert settings is not None
        self.dae.nas_identifier = settings.nas_identifier
        return
    old, self.dae = self.dae, None
    if old is not None:
        old.close()
    if dae is None or settings is None:
        return
    try:
        sock = _dae_bind(dae)
    except StartupError as err:
        log.error("reload: RADIUS Dynamic Authorization stays off: %s", err)
        return
    self.dae = _dae_server(self, settings, sock)
    if old is not None:
        self.dae.adopt(old)   # with the same secret, what it answered is no news to the new one
    self._spawn(self.dae.serve())


def _dae_find(self: IkeService, query: SessionQuery) -> list[Hashable]:
    """The IKE SAs eap-radius authenticated (established) that ``query`` names: by their EAP
    identity (accounting's User-Name), accounting's Acct-Session-Id, a virtual IP leased, the station
    attributes accounting sent for it (without accounting: those the IKE SA has now, as a Start
    would say them); by handle, one per IKE SA (a rekeyed one and its successor share it)."""
    found: list[Hashable] = []
    for sa, handle in self._ike_handles.items():
        if sa.state is not State.ESTABLISHED or sa.peer_id is None:
            continue
        conn = self.connections.get(sa.name)
        if conn is None or conn.ike.remote.method != "eap-radius":
            continue   # not the RADIUS server's session to end
        if query.users and not _names(sa.peer_id, query.users):
            continue
        if query.session_ids:
            started = self.accounting.started(handle) if self.accounting is not None else None
            if started is None or started[0] not in query.session_ids:
                continue
        if query.vips:
            up = self.ike_up.get(sa.local_spi)
            if up is None or not set(query.vips) & set(up.ev.peer_vips):
                continue
        if (query.nas_ports or query.nas_port_ids or query.called or query.calling) and \
                not query.station_matches(_dae_station(self, sa, handle)):
            continue
        found.append(handle)
    return found


def _dae_station(self: IkeService, sa: IkeSa, handle: Hashable) -> Station:
    """The station attributes a DAE request is matched against: those accounting's Start sent (the
    server copies them from it), else the IKE SA's own."""
    started = self.accounting.started(handle) if self.accounting is not None else None
    if started is not None:
        return started[1]
    nas_identifier = self.radius.settings.nas_identifier if self.radius is not None else ""
    return _station_of(self, nas_identifier, sa, sa.remote_addr, sa.local_port, sa.name)


def _dae_ours(self: IkeService, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a request's NAS-IP-Address names this gateway: one of its configured IKE addresses
    (accounting's NAS-IP-Address) or one an IKE SA's peer talks to."""
    texts = [*self.local_addrs.values(), *(sa.local_ip for sa in self._ike_handles if sa.local_ip)]
    for text in texts:
        with contextlib.suppress(ValueError):   # a name, not an address
            if ipaddress.ip_address(text) == addr:
                return True
    return False


def _dae_disconnect(self: IkeService, handles: Sequence[Hashable]) -> None:
    """Delete the IKE SAs (the peer is told) as ``tunsec terminate`` does: their accounting Stop
    says Admin-Reset."""
    now = time.monotonic()
    for handle in handles:
        sa = self._ike_sa(handle) if isinstance(handle, int) else None
        if sa is not None and not sa.is_closed:
            sa.delete(now)
    self._pump()


def _relay_round(self: IkeService, sa: IkeSa, ev: EapRelayRequest) -> None:
    """The engine holds the client's IKE_AUTH request until RADIUS answers (or gives up)."""
    if self.radius is None:   # the config check refuses eap-radius without servers; a reload might not
        self.endpoint.relay_reply(sa, RelayReply(RelayOutcome.FAILED, reason="no RADIUS server configured"),
                                  time.monotonic())
        return
    self._relay_rounds[sa] = self._spawn(self._relay(sa, ev, self.radius))


async def _relay(self: IkeService, sa: IkeSa, ev: EapRelayRequest, radius: RadiusRelay) -> None:
    try:
        reply = await radius.round(sa, ev, self._station(sa, ev))
    except Exception as err:   # answer anyway: the client's request must not wait for the half-open timeout
        log.error("%s: RADIUS round failed: %s: %s", ev.name, type(err).__name__, err)
        reply = RelayReply(RelayOutcome.FAILED, reason=f"RADIUS round failed ({type(err).__name__})")
    self._relay_rounds.pop(sa, None)
    if not self.endpoint.relay_reply(sa, reply, time.monotonic()):
        radius.stats.late += 1   # the IKE SA went away in the meantime
    self._pump()


def _end_relay(self: IkeService, sa: IkeSa) -> None:
    task = self._relay_rounds.pop(sa, None)
    if task is not None:
        task.cancel()   # gives its RADIUS identifier (or its place in the queue for one) back; an
                        # answer still to come is dropped as late
    if self.radius is not None:
        self.radius.abandon(sa)


def _station(self: IkeService, sa: IkeSa, ev: EapRelayRequest) -> Station:
    """The attributes strongSwan's eap-radius sends: our IKE address, both endpoints as addr[port]."""
    assert self.radius is not None
    return _station_of(self, self.radius.settings.nas_identifier, sa, ev.peer, sa.local_port)


def _station_of(self: IkeService, nas_identifier: str, sa: IkeSa, peer: tuple[str, int], local_port: int,
                port_id: str = "") -> Station:
    me = self._endpoint(ipaddress.ip_address(peer[0]).version, local_port)
    return Station(nas_identifier, None if me.addr.is_unspecified else str(me.addr), f"{me.addr}[{me.port}]",
                   f"{peer[0]}[{peer[1]}]", int.from_bytes(sa.local_spi[:4]), port_id)


def _radius_close(self: IkeService) -> None:
    """The service closes: the RADIUS client's sockets, accounting's, and those of an accounting a
    reload turned off that is still sending its last records (they would stay open until exit)."""
    if self.radius is not None:
        self.radius.close()
    if self.dae is not None:
        self.dae.close()
        self.dae = None
    if self.accounting is not None:
        self.accounting.close()
    for retiring in list(self.acct_retiring):
        retiring.close()
    self.acct_retiring.clear()
    for limit in self.session_limits.values():
        limit.cancel()
    self.session_limits.clear()


def _acct_configure(self: IkeService, settings: RadiusSettings | None) -> None:
    if settings is None or not settings.accounting:
        if self.accounting is not None:
            # a reload turned accounting off (or removed the servers): Stops with Admin-Reset for
            # the sessions still up, then the Accounting-Off, to the old servers (see Accounting.retire);
            # kept until then, for close() to close it if the service stops first
            retiring = self.accounting
            self.acct_retiring.add(retiring)
            self._spawn(retiring.retire(Cause.ADMIN_RESET, ACCT_RETIRE_WAIT)).add_done_callback(
                lambda _: self.acct_retiring.discard(retiring))
        self.accounting = None
    elif self.accounting is not None:
        self.accounting.reconfigure(settings)
    else:
        self.accounting = Accounting(settings, self._acct_dump, self._acct_children,
                                     close=functools.partial(_acct_close, self))


def _acct_close(self: IkeService, handle: Hashable) -> None:
    """accounting_close_on_timeout: no RADIUS server took the session's Start or Interim-Update;
    its IKE SA is deleted (the peer is told), as strongSwan does."""
    sa = self._ike_sa(handle) if isinstance(handle, int) else None
    if sa is not None and not sa.is_closed:
        sa.delete(time.monotonic())
        self._pump()


def _acct_open(self: IkeService) -> None:
    """Accounting begins (the service starts, a reload turns it on): the Accounting-On, naming our
    IKE addresses, once the runs earlier reloads turned off have sent their Off; then a Start for
    each IKE SA eap-radius authenticated that is up already (a reload: they would never be
    accounted otherwise), its usage counted from there. Idempotent."""
    if self.accounting is not None:
        addrs = []
        for text in self.local_addrs.values():
            with contextlib.suppress(ValueError):   # a name, not an address: the NAS-Identifier names us
                if not ipaddress.ip_address(text).is_unspecified:
                    addrs.append(text)
        if self.accounting.open(addrs, after=list(self.acct_retiring)):
            for sa in list(self._ike_handles):
                if (up := self.ike_up.get(sa.local_spi)) is not None and not sa.is_closed:
                    _acct_start(self, sa, up.ev, midway=True)


async def _acct_dump(self: IkeService) -> Sequence[pipe.SaInfo]:
    """The worker's SAs for accounting's counters: bounded and checked as `tunsec status`'s DUMP
    (the daemon's dump_cap; review revpipe F1)."""
    return (await worker_distrust.dump(self.worker(), self.dump_cap())).sas


def _acct_children(self: IkeService, handle: Hashable) -> list[ChildRef]:
    # its own Child SAs only (_by_ike), not a pass over all: accounting asks for every session at once
    mine = self._by_ike.get(handle, ()) if isinstance(handle, int) else ()
    return [ChildRef(c.spi_in, c.spi_out, c.remote) for h in mine if (c := self.children.get(h)) is not None]


def _acct_worker_restarted(self: IkeService) -> None:
    """Before the service forgets the old worker's Child SAs: accounting carries what it last saw
    of them (their counters died with the worker)."""
    if self.accounting is not None:
        self.accounting.worker_restarted()


def _acct_observe(self: IkeService, dump: pipe.Reply) -> None:
    """A DUMP the daemon took (status, metrics): accounting keeps the counters it shows."""
    if self.accounting is not None:
        self.accounting.observe(dump.sas)


def _acct_start(self: IkeService, sa: IkeSa, ev: IkeSaUp, midway: bool = False) -> None:
    """An IKE SA eap-radius authenticated is up: its Session-Timeout runs, and a Start goes out with
    the user's name and the leased VIPs.  What its Access-Accept said comes with the event, which
    the service keeps as long as the IKE SA (IkeService.ike_up, across its rekeys): a run a later
    reload turns on (``midway``, see _acct_open) echoes its Class too.  The User-Name is the name as
    the Access-Request carried it (the EAP identity, or the Accept's User-Name; Identity.user),
    never the log form str() gives a name that is not ASCII (review revradius F1)."""
    conn = self.connections.get(ev.name)
    if conn is None or conn.ike.remote.method != "eap-radius":
        return
    handle = self._ike_handle(sa)
    accepted = ev.accepted or Accepted()
    if not midway:
        _limit_session(self, handle, accepted.session_timeout, ev)
    if self.accounting is None or (self.accounting.settings.accounting_requires_vip and not ev.peer_vips):
        return   # (strongSwan's accounting_requires_vip: no Start, so no Stop either)
    station = _station_of(self, self.accounting.settings.nas_identifier, sa, ev.remote_addr, ev.local_port, ev.name)
    self.accounting.start(handle, ev.remote_id.user, station, [str(a) for a in ev.peer_vips],
                          accepted.classes, accepted.interim_interval, midway)


def _acct_child_down(self: IkeService, state: ChildState) -> None:
    """Before the service forgets it: its SAs' DELETEs (installs._remove; a rekeyed Child SA's inbound
    SA INBOUND_LINGER seconds later, or when its lineage ends) report their final counters to
    accounting (_acct_deleted)."""
    if self.accounting is not None:
        self.accounting.child_down(state.ike, ChildRef(state.spi_in, state.spi_out, state.remote))


def _acct_deleted(self: IkeService, spi_in: int, direction: pipe.Direction, final: pipe.Lifetime | None) -> None:
    """One SA of a Child SA reported gone (_acct_child_down) left the worker: its final counters, as
    the DELETE's answer carried them (None: it had none to give)."""
    if self.accounting is not None:
        self.accounting.deleted(spi_in, direction, final)


def _acct_expired(self: IkeService, msg: pipe.Expire) -> None:
    """An EXPIRE with the SA's counters (the worker's LIFETIME_CURRENT), before the service acts on it:
    a hard one's are final (the worker deleted the SA, or counts nothing more on it), and reach
    the session as a DUMP's reading of the SA does (Accounting.expired)."""
    if self.accounting is None or msg.current is None:
        return
    state = self._child_of_sa(msg.spi, msg.direction, msg.remote)
    owner = None if state is None else (state.ike, ChildRef(state.spi_in, state.spi_out, state.remote))
    self.accounting.expired(msg.direction, msg.spi, msg.remote, msg.current.bytes, msg.current.packets, owner)


def _acct_usage(self: IkeService, handle: int | None) -> dict[str, int] | None:
    """The IKE SA's accounted usage for ``tunsec status`` (as its next record carries it), if accounted."""
    usage = self.accounting.usage(handle) if self.accounting is not None and handle is not None else None
    if usage is None:
        return None
    # by hand, not dataclasses.asdict: see the note on tuple free lists in dataplane/pipe/decoding.py
    return {"octets_in": usage.octets_in, "octets_out": usage.octets_out, "packets_in": usage.packets_in,
            "packets_out": usage.packets_out}


def _limit_session(self: IkeService, handle: int, timeout: int | None, ev: IkeSaUp) -> None:
    """The Access-Accept's Session-Timeout (RFC 2865 §5.27): the IKE SA is deleted when it runs out,
    as strongSwan's eap-radius has it (there, a reauthentication time; tunsec does not
    reauthenticate). Counted from the IKE SA's IKE_AUTH, across its rekeys (they keep the handle)."""
    if not timeout or handle in self.session_limits:
        return
    seconds = max(timeout, MIN_SESSION_TIMEOUT)
    log.info("%s: IKE SA of %s ends in %d s: its RADIUS Session-Timeout%s", ev.name, ev.remote_id, seconds,
             "" if seconds == timeout else f" ({timeout} s, taken as at least {MIN_SESSION_TIMEOUT} s)")
    self.session_limits[handle] = asyncio.get_running_loop().call_later(seconds, _session_timed_out, self, handle)


def _session_timed_out(self: IkeService, handle: int) -> None:
    """The Session-Timeout ran out: the IKE SA is deleted (the peer is told), its accounting Stop
    says Session-Timeout."""
    self.session_limits.pop(handle, None)
    sa = self._ike_sa(handle)
    if sa is None or sa.is_closed:
        return
    log.info("%s: IKE SA with %s deleted: its RADIUS Session-Timeout ran out", sa.name, sa.peer_id)
    if self.accounting is not None:
        self.accounting.ending(handle, Cause.SESSION_TIMEOUT)
    sa.delete(time.monotonic())
    self._pump()


def _acct_stop(self: IkeService, sa: IkeSa, reason: DownReason) -> None:
    handle = self._ike_handles.get(sa)
    if handle is not None and (limit := self.session_limits.pop(handle, None)) is not None:
        limit.cancel()
    if self.accounting is not None and handle is not None:
        self.accounting.stop(handle, cause_of(reason, self.closing))


def _names(peer: Identity, users: Sequence[str]) -> bool:
    """Whether a DAE User-Name names the IKE SA's peer: as identities compare (without regard to
    case, as strongSwan's), the User-Name as the user name it is (Identity.of_user: the peer of an
    IKE SA eap-radius authenticated is always one).  A User-Name is any octets (dae.py decodes it
    with surrogateescape): compared as the bytes it was.  Never by the peer's log form (str()): that
    of a name that is not ASCII ("2:#6ac3...") is another, ASCII, user's name (review revradius F1)."""
    named = peer.named   # the server names the user, whether or not it vouched for the name
    return any(named == Identity.of_user(u.encode("utf-8", "surrogateescape")) for u in users)
