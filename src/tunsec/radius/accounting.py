"""RADIUS accounting (RFC 2866) of the IKE SAs ``auth = eap-radius`` authenticated, as
strongSwan's eap-radius plugin does it with ``accounting = yes``.

The IKE service feeds it events; it owns no IKE state:

- :meth:`Accounting.open`: accounting begins (the service starts, or a reload turns it on): an
  Accounting-On (RFC 2866 §5.1) goes to every server (each may get sessions: the load is
  shared); a session's record to a server waits until that server's On is answered or given
  up, so a server never sees it after a Start (it may close the NAS's open sessions when it
  gets one), and a dead server's On holds no record to another. A run a reload turned on while
  the run an earlier reload turned off is still sending its Stops and Off
  (:meth:`Accounting.retire`) sends its On only once that one has ended (answered, or its
  deadline passed): an old Off after the new On would make the server close the sessions the
  new run just started.
- :meth:`Accounting.start`: an IKE SA is up (the EAP identity, our and the client's endpoints,
  the virtual IPs leased to it), or was up when a reload turned accounting on (``midway``: its
  usage counts from this Start, a new session with a new Acct-Session-Id, as RFC 2866 pairs a
  Start with its Stop: the old run's Stop, if any, closed the one before). An Accounting-Request
  Start goes out; an Interim-Update follows every ``accounting_interval`` seconds (none with
  0), or as often as the Access-Accept's Acct-Interim-Interval says (RFC 2869 §5.16;
  strongSwan takes it too, over the configured interval) but never more often than every
  MIN_SERVER_INTERVAL seconds: the value comes from the network,
  and one of 1 s would make every session flood the servers.
- :meth:`Accounting.child_down`: one of its Child SAs goes away (rekeyed, deleted); then
  :meth:`Accounting.deleted`, once for each of its two SAs: the worker's answer to the SA's
  DELETE carries its final counters (LIFETIME_CURRENT, read under the lock that removes it
  from the SAD, so no packet counts on it after; as Linux XFRM's delete notification carries
  the SA's current lifetime). Once both are in, the Child SA is carried into the session's
  total. A rekeyed Child SA's inbound SA lingers INBOUND_LINGER seconds for the packets in
  flight (services/ike/installs.py) and is counted when it goes.
- :meth:`Accounting.worker_restarted`: a new worker replaced one that died; the Child SAs it
  held are gone with their counters, so what was last read of them is carried.
- :meth:`Accounting.observe`: a DUMP someone else took (``tunsec status``, a Prometheus
  scrape) refreshes what is known of every session's Child SAs.
- :meth:`Accounting.expired`: an SA's EXPIRE with its counters (LIFETIME_CURRENT). A hard one
  after a failed rekey: the worker deleted the SA itself (time lifetime) or stopped counting on it
  (bytes, packets), so these are its final counters, and no DUMP may find it any more (its
  DELETE finds none either: ENOENT). They are taken as a DUMP's reading of that SA is: the
  highest seen, so a DUMP that read it before (or after: the SA is gone, 0) changes nothing and
  nothing counts twice; also when the EXPIRE comes while the Child SA is being deleted. An
  EXPIRE with counters always comes before the answer to the SA's DELETE (the worker sends
  both on the pipe, in order; after the SA is removed an EXPIRE carries none).
- :meth:`Accounting.usage`: a session's total as its next record would carry it (``tunsec
  status`` shows it with the IKE SA: ``ike_sas[].usage``).
- :meth:`Accounting.stop`: the IKE SA is gone. Once the final counters of its Child SAs
  are in (at most FINAL_WAIT seconds), an Accounting-Request Stop with Acct-Terminate-Cause
  and the totals goes out.
- :meth:`Accounting.shutdown` (tunsec stops) and :meth:`Accounting.retire` (a reload turns
  accounting off, or removes the servers): a Stop for every session still open, then an
  Accounting-Off to every server at once once they are answered or given up (one after the
  other, a server the Stops found silent would spend the deadline before the next got its
  Off); all of it within a deadline, so a dead server never
  holds the gateway up at shutdown, nor a later run's Accounting-On after a reload (records still
  unanswered then are given up before the Off goes, so none is retransmitted after it).
  A reload that turns accounting off closes the books rather
  than keeping on accounting sessions (strongSwan reads ``accounting`` only at start, tunsec
  applies a reload live): the Stops carry Acct-Terminate-Cause Admin-Reset (an administrator's
  action ended the accounting of a session still up) and the usage up to then, so the server
  holds no session open for ever; at shutdown the cause is NAS-Reboot. strongSwan defines
  Accounting-On/-Off but sends neither.

A session is one IKE SA and survives its rekeys (the service keys it by the handle the
successor inherits); its Acct-Session-Id is ``<start time>-<n>``, unique per IKE SA and
across restarts, as strongSwan's. Usage is summed over the Child SAs: Acct-Input-* is what
the client sent (our inbound SAs' inner bytes and packets), Acct-Output-* what we sent it.

Usage never goes down from one record to the next and keeps what Child SAs carried after
they are gone: a session's total is ``carried`` (Child SAs gone, or lost with a worker) plus,
for each Child SA of the worker running now, the highest counters any reading showed of it
(``seen``). A DUMP, an EXPIRE's counters and a DELETE's answer only raise ``seen``; a Child
SA's end (both its SAs' DELETEs answered: an SA whose DELETE failed keeps what was last seen of
it) or a worker's death moves its ``seen`` into ``carried``. A session's Stop waits for the ends
of its Child SAs reported gone (FINAL_WAIT at most), so it counts every packet they took in or
sent. Every
SAMPLE_EVERY seconds a DUMP refreshes ``seen`` for all sessions (the SAs still in the worker of
Child SAs being deleted too), and so does every DUMP ``tunsec status`` or a metrics scrape takes.
What is still lost:

- the traffic between the last DUMP and a worker's crash (a worker that dies takes its
  counters along; nothing can read them after), so at most SAMPLE_EVERY seconds' worth, less
  with Interim-Updates or scrapes more often. There is no planned worker restart to sample
  before: the daemon restarts the worker only after it exited, and a shutdown deletes the
  Child SAs (their DELETEs' answers carry their final counters) while the worker still runs.

When accounting ends while an IKE SA is still up (:meth:`Accounting.retire`: a reload turns it
off, or tunsec stops and the peer did not answer the IKE SA's DELETE in time), its Stop does not
wait for the DELETE answers of its Child SAs being deleted (a rekeyed one's inbound SA may linger
for seconds past the deadline): it reads their SAs still in the worker with its DUMP, as it reads
the installed ones. The traffic after that Stop is no longer accounted, as the IKE SA's own. So
does a Stop whose Child SAs' DELETE answers have not come within FINAL_WAIT seconds.

Each request goes to the servers' ``acct_port`` by preference and load (strongSwan's choice,
:mod:`tunsec.radius.health`), retransmitted as
Access-Requests are (``retransmit_timeout``/``_base``/``_tries``), the next server only if one
does not answer; an Accounting-Response counts only once its Response Authenticator verifies.
A server whose accounting port left a request unanswered is passed by for DEAD_HOLD seconds, as
the EAP relay passes a dead authentication port by (one model: :mod:`tunsec.radius.health`): new
records go to the next server at once instead of each waiting out a full retransmission round
first, the ones already sent to it keep their retransmissions, then one record probes it again;
with every server dead a record still tries them all (the dead last) rather than being lost at once.
A record no server takes is counted (``failed``) and logged; accounting never blocks or fails an
IKE SA, but with ``accounting_close_on_timeout`` (strongSwan's key, default yes) a session whose
Start or Interim-Update no server took has its IKE SA closed, its Stop saying NAS-Error, as
strongSwan's eap_radius_handle_timeout deletes it (strongSwan closes on a lost Start whatever
the key says, and sends User-Request). The records of one session go out one after the other,
so a server sees Start before Interim and Stop.

A session and its usage as they are kept: :mod:`tunsec.radius.acct_session`; the
Acct-Terminate-Cause an IKE SA's end maps to: :mod:`tunsec.radius.causes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from tunsec.dataplane.pipe import Direction, Endpoint, Lifetime, SaInfo
from tunsec.loglimit import LogLimiter, suffix

from .acct_session import Going, SaId, Session, sa_ids
from .causes import Cause
from .client import AccountingStats, Busy, NoAnswer, ServerLink
from .health import ServerHealth, in_order
from .links import LinkPool
from .messages import (
    ACCT_INTERIM,
    ACCT_OFF,
    ACCT_ON,
    ACCT_START,
    ACCT_STOP,
    AcctRecord,
    NasRecord,
    Station,
    accounting_onoff,
    accounting_request,
    read_acct_reply,
    verifies_acct,
)
from .settings import IDS, RadiusServer, RadiusSettings
from .usage import ChildRef, SaIndex, Usage, usage_of

log = logging.getLogger("tunsec.radius")
# Interim-Updates take the counters of a DUMP at most this old: with many sessions the worker
# is asked at most about once a second, not once per session (a Stop's are always fresh)
SAMPLE_REUSE = 1.0
# an Access-Accept's Acct-Interim-Interval is taken within these bounds: RFC 2869 §5.16 says it
# SHOULD NOT be below 60; the upper bound is the config's (conf.radius MAX_INTERVAL, 7 days)
MIN_SERVER_INTERVAL, MAX_SERVER_INTERVAL = 60, 7 * 86400
# the part of retire's timeout kept for the Accounting-Off after the Stops
OFF_SHARE = 1 / 3
# every so often a DUMP refreshes what accounting knows of all sessions' Child SAs: the usage a
# worker crash can take along is at most this much of the latest traffic (one DUMP a minute)
SAMPLE_EVERY = 60.0
# a Stop waits at most this long for the DELETE answers of its Child SAs being deleted: they come
# within a round trip of the service's queue of changes reaching them (a mass teardown's is
# seconds long), so this only bounds what would otherwise hold the Stop for ever
FINAL_WAIT = 30.0


_last_prefix = [0]   # the latest run's prefix in this process (_run_prefix)


def _run_prefix() -> int:
    """An accounting run's Acct-Session-Id prefix: its start time, but past the previous run's in
    this process (a reload that turns accounting off and on again within a second would otherwise
    repeat the old run's ids: another user's session, the old Accounting-On/-Off's)."""
    _last_prefix[0] = max(int(time.time()), _last_prefix[0] + 1)
    return _last_prefix[0]


Dump = Callable[[], Awaitable[Sequence[SaInfo]]]
Children = Callable[[Hashable], Sequence[ChildRef]]


class Accounting:
    """Sessions by the service's key, records to the servers; see the module docstring.

    ``dump`` reads the worker's SAs with their counters; ``children`` names the Child SAs a
    session's IKE SA has installed now (not the ones reported gone)."""

    def __init__(self, settings: RadiusSettings, dump: Dump, children: Children, *,
                 clock: Callable[[], float] = time.monotonic, prefix: int | None = None,
                 close: Callable[[Hashable], None] | None = None) -> None:
        self.settings = settings
        # deletes a session's IKE SA (accounting_close_on_timeout); None: nothing is closed
        self._close_session = close
        self.stats = AccountingStats()
        self._dump = dump
        self._children = children
        self._clock = clock
        self._prefix = _run_prefix() if prefix is None else prefix
        self._numbers = itertools.count(1)
        self._sessions: dict[Hashable, Session] = {}
        self._links: LinkPool[int] = LinkPool(settings, self._make_link)   # by server, as configured
        # a dead server fails every record: a line per failover and per lost record would be a
        # flood of thousands with many sessions; the counters (stats) keep the exact numbers
        self._failover_log = LogLimiter()
        self._lost_log = LogLimiter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sample: asyncio.Task[SaIndex] | None = None  # the next DUMP, not sent yet
        self._recent: tuple[float, SaIndex] | None = None  # the last DUMP's answer, and when it was asked
        self._epoch = 0   # the worker's: one more with each restart (a DUMP of an older one is stale)
        self._refresher: asyncio.TimerHandle | None = None   # the next DUMP for all sessions (SAMPLE_EVERY)
        # the Accounting-On goes out once the runs still retiring have ended: the first record of
        # each session waits for that; then, to each server, once its own On is answered or given up
        self._on: asyncio.Task[None] | None = None
        self._ons: dict[str, asyncio.Task[None]] = {}   # by server name
        self._nas_addresses: tuple[str, ...] = ()    # our IKE addresses, for the Accounting-On/-Off
        self._closed = False   # closed (shut down, retired, or the service closed it): sends nothing more
        self._ended = asyncio.Event()   # set by close(): a run opened after this one may send its On
        self._going: dict[SaId, Going] = {}   # the SAs of Child SAs being deleted (child_down, deleted)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each configured server's accounting port's health, by name (ServerHealth.status:
        ``passed_by`` says whether new records go past it now)."""
        return {server.name: self._health(server).status() for server in self.settings.servers}

    def count_drops(self) -> None:
        for link in self._links.values():
            link.count_drops()

    def usage(self, key: Hashable) -> Usage | None:
        """The session's usage so far, as its next record would carry it from what is known now
        (the Child SAs gone, and the last counters seen of those installed); None without a session."""
        s = self._sessions.get(key)
        return s.total() if s is not None else None

    def started(self, key: Hashable) -> tuple[str, Station] | None:
        """What a session's Start named it by: its Acct-Session-Id and its station attributes."""
        s = self._sessions.get(key)
        return (s.sid, s.station) if s is not None else None

    # --- events from the IKE service ---------------------------------------------------
    def open(self, nas_addresses: Sequence[str] = (), after: Sequence[Accounting] = ()) -> bool:
        """Accounting begins: the Accounting-On goes out (once: true then). ``nas_addresses``: our
        IKE addresses, named in the On and the Off; ``after``: runs still retiring, whose Off must
        reach the servers before this On (each ends within its retire deadline)."""
        if self._on is not None:
            return False
        self._nas_addresses = tuple(nas_addresses)

        async def on() -> None:
            for old in after:
                await old.ended()
            record = self._nas_record(ACCT_ON)
            for server in self.settings.servers:
                self._ons[server.name] = self._spawn(self._send_to(server, record))
        self._on = self._spawn(on())
        return True

    async def ended(self) -> None:
        """Returns once this run is closed (retired, shut down, or closed by the service)."""
        await self._ended.wait()

    def start(self, key: Hashable, user: str, station: Station, vips: Sequence[str],
              classes: Sequence[bytes] = (), interim_interval: int | None = None, midway: bool = False) -> None:
        """``classes``: the Class attributes of the Access-Accept, echoed in every record;
        ``interim_interval``: its Acct-Interim-Interval (0 or None: the configured interval);
        ``midway``: the IKE SA has been up for a while (a reload turned accounting on): the
        traffic its Child SAs carried before this Start is not this session's."""
        if key in self._sessions:
            return   # one Start per IKE SA (strongSwan's start_sent)
        s = self._sessions[key] = Session(f"{self._prefix}-{next(self._numbers)}", user, station,
                                           tuple(vips), self._clock(), tuple(classes),
                                           interval=self._server_interval(interim_interval, user))
        start = self._build(s, ACCT_START)

        async def record() -> AcctRecord:
            if midway:   # the counters as the Start goes out are the session's zero
                s.base = await self._usage(s, key, fresh=True)
            return start
        self._record(s, record, key)
        self._arm(key, s)
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().call_later(SAMPLE_EVERY, self._refresh)

    def child_down(self, key: Hashable, ref: ChildRef) -> None:
        """The Child SA is reported gone, before its SAs leave the worker: its final counters come
        with the answers to their DELETEs (:meth:`deleted`), then it is carried; until then its
        session's Stop waits for it."""
        s = self._sessions.get(key)
        if s is None or (Direction.IN, ref.spi_in, None) in self._going:   # (being deleted already)
            return
        going = Going(s, ref, asyncio.get_running_loop().create_future())
        for sa_id in sa_ids(ref):
            self._going[sa_id] = going
        s.going.append(going)

    def deleted(self, spi_in: int, direction: Direction, final: Lifetime | None) -> None:
        """One SA of a Child SA reported gone (named by the Child SA's inbound SPI, which the worker
        allocated: unique) has left the worker: ``final``, its counters as the answer to its DELETE
        carried them, None if it had none (the SA was not there: removed at its hard lifetime, whose
        EXPIRE carried them, or never installed; the worker failed or is gone: what was last seen of
        it stays)."""
        going = self._going.get((Direction.IN, spi_in, None))
        if going is None or direction not in going.left:
            return
        if final is not None:
            going.session.seen.setdefault(going.ref.key, Usage()).raise_to(usage_of(direction, final.bytes,
                                                                                      final.packets))
        going.left.discard(direction)
        if not going.left:
            self._carry(going)

    def _carry(self, going: Going) -> None:
        """Both of the Child SA's SAs are gone: it is carried, and its session's Stop may go."""
        for sa_id in sa_ids(going.ref):
            if self._going.get(sa_id) is going:
                del self._going[sa_id]
        s = going.session
        s.carry(going.ref.key)
        s.going.remove(going)
        if not going.done.done():
            going.done.set_result(None)

    def stop(self, key: Hashable, cause: Cause, wait: float | None = None) -> None:
        """The IKE SA is gone: the Stop, once the Child SAs reported gone are carried, or ``wait``
        seconds have passed (None: FINAL_WAIT; 0: accounting ends while the IKE SA is up, see the
        module docstring)."""
        s = self._sessions.pop(key, None)
        if s is None:
            return
        cause = s.ended_for or cause
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None
        wait = FINAL_WAIT if wait is None else wait
        pending = [going.done for going in s.going] if wait else []

        async def record() -> AcctRecord:
            if pending:
                await asyncio.wait(pending, timeout=wait)
            usage = await self._usage(s, key, fresh=True)
            return self._build(s, ACCT_STOP, usage, cause)
        self._record(s, record)

    def ending(self, key: Hashable, cause: Cause) -> None:
        """The service closes the session's IKE SA for ``cause`` (its Session-Timeout ran out): the Stop says so."""
        if (s := self._sessions.get(key)) is not None and s.ended_for is None:
            s.ended_for = cause

    def expired(self, direction: Direction, spi: int, remote: Endpoint | None, octets: int, packets: int,
                owner: tuple[Hashable, ChildRef] | None = None) -> None:
        """An SA's counters as its EXPIRE reported them (see the module docstring).  ``owner``: the
        session's key and the Child SA the SA belongs to, if the service still has it installed;
        else the Child SA being deleted it belongs to, if any."""
        u = usage_of(direction, octets, packets)
        if owner is not None:
            key, ref = owner
            if (s := self._sessions.get(key)) is not None:
                s.seen.setdefault(ref.key, Usage()).raise_to(u)
            return
        going = self._going.get((direction, spi, remote if direction is Direction.OUT else None))
        if going is not None and direction in going.left:   # being deleted: taken as its DELETE's answer is
            going.session.seen.setdefault(going.ref.key, Usage()).raise_to(u)

    def worker_restarted(self) -> None:
        """A new worker replaced one that died, before the IKE service installs anything in it:
        the Child SAs the old one held are gone with their counters (the service renegotiates
        them, with new SPIs), so what was last seen of them is carried; a DUMP of the old worker
        still under way counts no more."""
        self._epoch += 1
        self._recent = None
        # the Child SAs being deleted: their DELETEs went to the dead worker, or go to the new one,
        # whose SPIs are anyone's; what was seen of them is final
        for going in set(self._going.values()):
            self._carry(going)
        for s in self._sessions.values():
            s.carry_all()

    def observe(self, sas: Sequence[SaInfo]) -> None:
        """A DUMP of the worker running now, taken by someone else (status, metrics): what it
        shows of every session's Child SAs (fewer counters a crash of the worker takes along)."""
        self._absorb_all(SaIndex(sas, self._epoch))

    def reconfigure(self, settings: RadiusSettings) -> None:
        """New servers or timers for the records to come; a record under way finishes with the
        settings it began with (the servers, their secrets, the timers): its server's link stays
        open until it ends (:mod:`tunsec.radius.links`), so its answer is still taken. A server the
        reload leaves as it was keeps its link and what is known of its health; a changed one
        (another address, secret...) is another server, whose health is not known yet."""
        if settings == self.settings:
            return
        interval_changed = settings.accounting_interval != self.settings.accounting_interval
        self.settings = settings
        self._links.reconfigure(settings)
        if not interval_changed:
            return
        for key, s in self._sessions.items():
            if s.timer is not None:
                s.timer.cancel()
                s.timer = None
            self._arm(key, s)

    async def drain(self, timeout: float | None) -> None:
        """Wait (at most ``timeout`` seconds; None: until done) for the records under way."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def shutdown(self, timeout: float) -> None:
        """tunsec stops: :meth:`retire` with NAS-Reboot, within ``timeout`` seconds whatever the
        servers do; then closed."""
        await self.retire(Cause.NAS_REBOOT, timeout)

    async def retire(self, cause: Cause, timeout: float | None = None) -> None:
        """Accounting ends: a Stop with ``cause`` for each session still open (tunsec stops with
        IKE SAs whose DELETE the peer did not answer in time; a reload turned accounting off),
        then, once the records under way are answered or given up, the Accounting-Off; then
        closed. With a ``timeout`` the records get all but OFF_SHARE of it, the Off the rest: a
        record not answered by then is dropped (the Off tells the server the NAS is done)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        for key in list(self._sessions):
            self.stop(key, cause, wait=0)   # their IKE SAs are up: see the module docstring
        try:
            await self.drain(None if timeout is None else timeout * (1 - OFF_SHARE))
            for task in list(self._tasks):
                # given up: a retransmission of one (the On, a Stop) must not reach a server after the Off
                task.cancel()
            if self._on is not None and not self._closed:   # nothing to end if accounting never began
                # to every server at once: each may hold sessions of ours (the load is shared), and
                # one after the other a dead one would spend the deadline before the next was tried
                off = self._nas_record(ACCT_OFF)
                offs = [self._spawn(self._send_to(server, off)) for server in self.settings.servers]
                if offs:
                    await asyncio.wait(offs, timeout=None if timeout is None
                                       else max(0.0, began + timeout - loop.time()))
        finally:
            self.close()

    def close(self) -> None:
        """Timers, records under way and sockets: all gone (idempotent)."""
        self._closed = True
        self._ended.set()
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        for s in self._sessions.values():
            if s.timer is not None:
                s.timer.cancel()
        self._sessions.clear()
        for task in list(self._tasks):
            task.cancel()
        self._links.close()

    # --- records -------------------------------------------------------------------------
    def _build(self, s: Session, status: int, usage: Usage | None = None, cause: Cause | None = None) -> AcctRecord:
        u = usage if usage is not None else Usage()
        return AcctRecord(status, s.sid, s.user, s.station, s.vips, u.octets_in, u.octets_out, u.packets_in,
                          u.packets_out, None if status == ACCT_START else int(self._clock() - s.started),
                          None if cause is None else int(cause), s.classes)

    def _nas_record(self, status: int) -> NasRecord:
        # session number 0: sessions count from 1, so the id is unique and tells the NAS's run
        return NasRecord(status, f"{self._prefix}-0", self.settings.nas_identifier, self._nas_addresses)

    def _server_interval(self, value: int | None, user: str) -> float | None:
        """An Access-Accept's Acct-Interim-Interval, within MIN/MAX_SERVER_INTERVAL (0, None: none)."""
        if not value:
            return None
        bounded = min(max(value, MIN_SERVER_INTERVAL), MAX_SERVER_INTERVAL)
        if bounded != value:
            log.info("RADIUS accounting: Acct-Interim-Interval %d s for user %r taken as %d s (%d..%d s)",
                     value, user[:64], bounded, MIN_SERVER_INTERVAL, MAX_SERVER_INTERVAL)
        return float(bounded)

    def _record(self, s: Session, record: Callable[[], Awaitable[AcctRecord]], key: Hashable = None) -> None:
        """Make and send a record after the session's previous one (its first: the Accounting-On)
        is answered or given up. ``key``: the session's, for a Start or Interim-Update whose loss
        closes its IKE SA (accounting_close_on_timeout)."""
        before = s.last if s.last is not None else self._on

        async def send() -> None:
            if before is not None:
                await asyncio.wait([before])
            if not await self._send(await record()) and key is not None:
                self._lost_session(key, s)
        s.last = self._spawn(send())

    def _lost_session(self, key: Hashable, s: Session) -> None:
        """No server took the session's Start or Interim-Update: with accounting_close_on_timeout
        (strongSwan's, default yes) its IKE SA is deleted, as strongSwan's eap_radius_handle_timeout
        does: a session the servers do not account is not served. Its Stop says NAS-Error."""
        if (not self.settings.accounting_close_on_timeout or self._close_session is None or self._closed
                or self._sessions.get(key) is not s):
            return
        s.ended_for = Cause.NAS_ERROR
        log.warning("RADIUS accounting: no server took a record of session %s (user %r): its IKE SA is "
                    "closed (accounting_close_on_timeout)", s.sid, s.user[:64])
        self._close_session(key)

    def _arm(self, key: Hashable, s: Session) -> None:
        interval = s.interval or self.settings.accounting_interval
        if interval:
            s.timer = asyncio.get_running_loop().call_later(interval, self._interim, key, s)

    def _interim(self, key: Hashable, s: Session) -> None:
        s.timer = None
        if self._sessions.get(key) is not s:
            return
        if s.last is not None and not s.last.done():
            # the previous record is still being sent (no server answers): another Interim would
            # only queue behind it, one more task per session every interval, without bound
            log.debug("RADIUS accounting: Interim-Update of session %s skipped, its last record is under way", s.sid)
            self._arm(key, s)
            return

        async def record() -> AcctRecord:
            return self._build(s, ACCT_INTERIM, await self._usage(s, key, fresh=False))
        self._record(s, record, key)
        self._arm(key, s)

    async def _usage(self, s: Session, key: Hashable, fresh: bool) -> Usage:
        """The session's total: what its Child SAs carried, and the ones installed now (or being
        deleted) as a DUMP asked now shows them (with ``fresh`` false: one asked less than
        SAMPLE_REUSE seconds ago)."""
        if s.going or self._children(key):
            recent = self._recent
            if not fresh and recent is not None and self._clock() - recent[0] < SAMPLE_REUSE:
                index: SaIndex | None = self._current(recent[1])
            else:
                index = self._current(await self._await_sample(self._next_sample()))
            if index is not None:
                # the Child SAs installed now, not when the DUMP was asked: one reported gone
                # meanwhile is its DELETEs' answers' to carry
                s.absorb(self._children(key), index)
        return s.total()

    async def _send(self, record: AcctRecord) -> bool:
        """To the first server that answers, by preference and load, the dead ones last: whether
        one did (or there was nothing to send: closed); never raises."""
        if self._closed:
            return True
        why = "no RADIUS server configured"
        configured = self.settings.servers
        with contextlib.closing(in_order(configured, self._health, lambda s: self._link(s).under_way)) as servers:
            for tried, server in enumerate(servers, 1):
                health = self._health(server)
                was_passed_by = health.passed_by()
                on = self._ons.get(server.name)
                if on is not None and not on.done():
                    # this server's Accounting-On first (it may close the NAS's sessions on it)
                    await asyncio.wait([on])
                # it may be found dead while this record waits (not the last one: then try it anyway)
                may_skip = not was_passed_by and tried < len(configured)
                failed = await self._exchange(server, record, functools.partial(_found_dead, health, may_skip))
                if failed is None:
                    return True
                why = failed
                if (held := self._failover_log.admit()) is not None:
                    log.warning("RADIUS accounting: %s%s", why, suffix(held))
        self._lost(record, why)
        return False

    async def _send_to(self, server: RadiusServer, record: NasRecord) -> None:
        """An Accounting-On or -Off to one server (each server may hold sessions of this NAS:
        the load is shared); never raises."""
        if not self._closed and (why := await self._exchange(server, record)) is not None:
            self._lost(record, why)

    async def _exchange(self, server: RadiusServer, record: AcctRecord | NasRecord,
                        skip: Callable[[], bool] = lambda: False) -> str | None:
        """One record to one server: None once answered, else why not. ``skip``: asked once the
        record has a slot, whether to give this server up untried."""
        def build(ident: int) -> Any:
            if isinstance(record, NasRecord):
                return accounting_onoff(server.secret, ident, record)
            return accounting_request(server.secret, ident, record)
        # at most as many records per server under way as its sockets have identifiers, the rest
        # wait their turn here, without the link's bound: the link's queue refuses (Busy) beyond
        # MAX_WAITERS or its round, and a gateway's sessions send together (Interim timers armed
        # in the same burst of clients, the Stops of a mass disconnect): a record must not be lost
        with self._links.using(server) as link:
            try:
                async with self._links.slots(server, IDS * server.sockets):
                    if skip():
                        # it went down while this record waited for a slot (the records before it
                        # found it dead): the next server at once, as a record that came later;
                        # each of a burst would otherwise wait out a retransmission round there
                        return f"RADIUS server {link.label} found dead meanwhile"
                    await link.exchange(build)
            except (Busy, NoAnswer) as exc:   # the link took note of the NoAnswer in its health
                return str(exc)
            except OSError as exc:
                return f"cannot send to RADIUS server {link.label}: {exc.strerror or exc}"
        self.stats.responses += 1
        return None

    def _lost(self, record: AcctRecord | NasRecord, why: str) -> None:
        self.stats.failed += 1
        if (held := self._lost_log.admit()) is not None:
            whose = f"user {record.user[:64]!r}" if isinstance(record, AcctRecord) else "the NAS"
            log.error("RADIUS accounting: %s record of session %s (%s) lost: %s%s", _STATUS[record.status],
                      record.session_id, whose, why, suffix(held))

    def _health(self, server: RadiusServer) -> ServerHealth:
        return self._link(server).health

    def _link(self, server: RadiusServer) -> ServerLink[int]:
        return self._links.get(server)

    def _make_link(self, server: RadiusServer, settings: RadiusSettings) -> ServerLink[int]:
        return ServerLink(server, settings, self.stats, server.acct_port, read_acct_reply, verifies_acct,
                          "Accounting-Requests", self._clock)

    # --- counters ----------------------------------------------------------------------
    def _next_sample(self) -> asyncio.Task[SaIndex]:
        """The next DUMP: all who ask before it is sent share it (one per batch of events)."""
        if self._sample is None:
            self._sample = self._spawn(self._read_counters())
        return self._sample

    async def _read_counters(self) -> SaIndex:
        self._sample = None   # from now on, who asks wants counters newer than this DUMP's
        asked, epoch = self._clock(), self._epoch
        index = SaIndex(await self._dump(), epoch)
        if epoch == self._epoch:
            self._recent = (asked, index)
        return index

    def _current(self, index: SaIndex | None) -> SaIndex | None:
        """``index`` unless it shows a worker that has died since (its SPIs may be anyone's now)."""
        return index if index is not None and index.epoch == self._epoch else None

    def _absorb_all(self, index: SaIndex) -> None:
        for key, s in self._sessions.items():
            s.absorb(self._children(key), index)

    def _refresh(self) -> None:
        """Every SAMPLE_EVERY seconds while there are sessions: a DUMP for all of them."""
        self._refresher = None
        if self._closed or not self._sessions:
            return   # the next Start arms it again

        async def refresh() -> None:
            index = self._current(await self._await_sample(self._next_sample()))
            if index is not None:
                self._absorb_all(index)
        self._spawn(refresh())
        self._refresher = asyncio.get_running_loop().call_later(SAMPLE_EVERY, self._refresh)

    @staticmethod
    async def _await_sample(sample: asyncio.Task[SaIndex]) -> SaIndex | None:
        try:
            return await asyncio.shield(sample)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # the worker is restarting: the record goes without those counters
            log.warning("RADIUS accounting: cannot read SA counters from the worker: %s", exc)
            return None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _found_dead(health: ServerHealth, may_skip: bool) -> bool:
    return may_skip and health.passed_by()


_STATUS = {ACCT_START: "Start", ACCT_STOP: "Stop", ACCT_INTERIM: "Interim-Update", ACCT_ON: "Accounting-On",
           ACCT_OFF: "Accounting-Off"}
