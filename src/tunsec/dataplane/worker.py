"""The dataplane worker process.

It owns the SAD (so it alone allocates inbound SPIs) and holds Child SA keys
only, never the long-term secrets.  Its threads:

- one C packet loop per TUN queue (``tunsec { workers = N }``: queue 0 from
  ``--tun-fd``, one more per ``--queue``), each a Python thread that makes one
  long ``Dataplane.run(queue)`` call (cffi releases the GIL); the loop names
  itself ``tunsec-q<N>`` (the per-queue CPU metric reads that name) and
  serves its own TUN queue and ``SO_REUSEPORT`` UDP sockets (csrc/loop.c);
- the main thread's asyncio loop: answers the control process's pipe requests
  (SAD/SPD changes, DUMP, SEND_IKE from port 4500), drains the fast path's
  event queue (eventfd) into ACQUIRE/EXPIRE/INVALID_SPI/IKE/... events upward,
  and runs the larval and time-lifetime timers.

Python here runs per SA change, per event and per timer, never per packet.

Started by the control process (client.worker_command: ``python -I`` from
"/", so nothing on the daemon's path is imported as root) with
``--pipe-fd P --tun-fd T [--udp4-fd U] [--udp6-fd U6] [--queue T,U,U6]...
[--vnet-hdr] [--mtu N] [--larval-timeout S] [--ipv6-source-prefix B] [--user U]`` (and the log
options)
and those descriptors inherited; or by the spawner (spawner.py), as the worker's
own user already, without --user.  It drops to U (or, not started as root, stays
who it is) with no capabilities and no-new-privs before reading anything from
the network.  It exits when the pipe closes; the control process starts a new
one if it dies.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import enum
import functools
import heapq
import itertools
import logging
import math
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tunsec import gctune, logs, memtrace, memtrim, pktinfo, privilege
from tunsec.dataplane import pipe, sandbox
from tunsec.dataplane.fastpath import Dataplane, DataplaneError, Event, EventType, gcm_open, gcm_seal
from tunsec.dataplane.pipe import HEADER_LEN, Direction, Endpoint, Errno, ExpireReason, MsgType, PipeError
from tunsec.dataplane.pipe.quick import SaFields, SpdAddFields, endpoint_of, sa_fields, spdadd_fields
from tunsec.dataplane.pipe.wire import _SA_FIRST_USE
from tunsec.dataplane.pipeio import MAX_DATAGRAM as MAX_DATAGRAM
from tunsec.dataplane.pipeio import PipeReader as PipeReader
from tunsec.dataplane.pipeio import PipeWriter as PipeWriter
from tunsec.dataplane.sandbox import SandboxError
from tunsec.ike.constants import NON_ESP_MARKER
from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX, ipv6_source_prefix

log = logging.getLogger("tunsec.worker")
EVENTS_PER_WAKE = 1024   # the fast path's event queue holds as many (csrc/internal.h TS_EVENT_CAP)

Request = (
    pipe.GetSpi | pipe.Update | pipe.Add | pipe.Delete | pipe.Flush
    | pipe.SpdAdd | pipe.SpdDelete | pipe.SpdFlush | pipe.Dump | pipe.SendIke | pipe.Reserve
    | pipe.Migrate | pipe.IkeSpiAdd | pipe.IkeSpiDelete | pipe.IkeSpiKey
)


# An SA's identity: inbound (spi, IN, None); outbound (spi, OUT, peer), since
# peers choose outbound SPIs and two of them may choose the same one.
SaKey = tuple[int, Direction, Endpoint | None]

# The enum members a client's set-up names, read once: reading one off its class goes through the
# enum metaclass's attribute hook, which builds a method wrapper each time (~1k instructions, and
# garbage for the collector); a dozen reads per client.
_IN, _OUT, _OK, _EV_IKE = Direction.IN, Direction.OUT, Errno.OK, EventType.IKE


# an address's text, for the socket calls of every SEND_IKE (twice each): str() of an ipaddress
# object runs ~7k instructions of Python; the pipe decoder hands out the same object for the same
# address (its cache), and a hit here costs the address's hash
_addr_text = functools.lru_cache(maxsize=1024)(str)


def sa_key(sa: pipe.SaSpec) -> SaKey:
    return (sa.spi, sa.direction, sa.remote if sa.direction is _OUT else None)


class TimerKind(enum.IntEnum):
    LARVAL = 0    # GETSPI's SA never completed
    SOFT = 1      # time lifetime: tell the control process
    HARD = 2      # time lifetime: delete the SA, tell the control process


class Timers:
    """Time-based lifetimes and larval expiry, keyed by SA (see SaKey).

    A gateway keeps two or three of these per client; an asyncio TimerHandle
    with its argument tuple and the list that held it cost ~0.5 KiB a timer.
    So one asyncio timer, armed for the earliest deadline, serves a heap of
    (deadline, tag, key, then) entries: one per SA, for its earliest deadline,
    ``then`` the (deadline, kind) that follows it (a soft lifetime's hard one),
    pushed when the first fired.  tag = serial * 4 + kind; ``epoch[key]`` is
    the serial (times 4) the key was registered with, so a cancelled key's
    entries (tag below its epoch, or the key gone) are skipped when they come
    due, even if the same key was registered again meanwhile.  Skipped entries
    are dropped in one pass once they outnumber the live ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[SaKey, TimerKind], None]) -> None:
        self.loop = loop
        self.fire = fire
        self.epoch: dict[SaKey, int] = {}
        self.heap: list[tuple[float, int, SaKey, tuple[float, TimerKind] | None]] = []
        self._serial = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def add(self, key: SaKey, seconds: float, kind: TimerKind,
            then: tuple[float, TimerKind] | None = None) -> None:
        """kind fires for key in seconds; then[1] (if any) in then[0] seconds from now, which
        must not be before the first: it goes into the heap when the first fired."""
        self._serial = serial = self._serial + 4
        # a key registered already keeps its epoch; one lookup: an outbound SA's key hashes its
        # peer, an Endpoint, whose address hashes in Python (~3k instructions)
        self.epoch.setdefault(key, serial)
        now = self.loop.time()
        heap = self.heap
        heapq.heappush(heap, (now + seconds, serial + kind, key,
                              None if then is None else (now + then[0], then[1])))
        if len(heap) > 4 * len(self.epoch) + 64:
            self._compact()
        if heap[0][0] < self._armed_for:
            self._arm()

    def cancel(self, key: SaKey) -> None:
        self.epoch.pop(key, None)

    def cancel_all(self) -> None:
        self.epoch.clear()
        self.heap.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_for = math.inf

    def pending(self, key: SaKey) -> list[TimerKind]:
        """The kinds still to fire for key (for tests)."""
        kinds = []
        for _, tag, k, then in self.heap:
            if k == key and self._live(k, tag):
                kinds.append(TimerKind(tag & 3))
                if then is not None:
                    kinds.append(then[1])
        return sorted(kinds)

    def _live(self, key: SaKey, tag: int) -> bool:
        epoch = self.epoch.get(key)
        return epoch is not None and tag >= epoch

    def _compact(self) -> None:
        self.heap = [e for e in self.heap if self._live(e[2], e[1])]
        heapq.heapify(self.heap)

    def _arm(self) -> None:
        if not self.heap or self.heap[0][0] >= self._armed_for:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = self.heap[0][0]
        self._handle = self.loop.call_at(self._armed_for, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_for = math.inf
        now = self.loop.time()
        while self.heap and self.heap[0][0] <= now:
            _, tag, key, then = heapq.heappop(self.heap)
            if self._live(key, tag):
                if then is not None:
                    # the same serial: live as long as the key is not cancelled (as fire may do)
                    heapq.heappush(self.heap, (then[0], tag - (tag & 3) + then[1], key, None))
                self.fire(key, TimerKind(tag & 3))
        self._arm()


_SOFT, _HARD = TimerKind.SOFT, TimerKind.HARD   # read once (see _IN)


class Worker:
    """Pipe requests -> fast path calls; fast path events -> pipe messages."""

    def __init__(
        self,
        dp: Dataplane,
        send: Callable[[bytes], None],
        udp: dict[int, socket.socket],
        loop: asyncio.AbstractEventLoop,
        larval_timeout: float = 30.0,
    ) -> None:
        self.dp = dp
        self.send = send
        # an IKE event of an established IKE SA (the writer's reserve); by default as any other
        self.send_known_ike: Callable[[bytes, int], None] = lambda data, peer: send(data)
        # ... and one whose SPI of ours carries our tag for its sender (the writer's proven shares)
        self.send_proven_ike: Callable[[bytes], None] = send
        self.udp = udp
        self.loop = loop
        self.larval_timeout = larval_timeout
        self.timers = Timers(loop, self._timer_fired)
        self.calm = memtrim.CalmTrim(loop)   # a burst of requests over: its heap pages go back
        self.sandbox = 0   # the parts of its sandbox put on (sandbox.Outcome.gauge), for DUMP
        # the pipe writer's drops (events the control process did not read in time), for DUMP
        self.pipe_drops: Callable[[], tuple[tuple[str, int], ...]] = tuple

    # --- requests --------------------------------------------------------------
    def handle_datagram(self, data: bytes) -> list[bytes]:
        """Answers to one pipe datagram (a malformed one gets an error, nothing changes)."""
        self.calm.note()
        # a client's install (UPDATE, ADD, SPDADD) as encode lays it out: its checked fields straight
        # to the fast path (_RAW_WAYS); anything else, or anything amiss, the general way below
        if len(data) > HEADER_LEN and (raw := _RAW_WAYS.get(data[1])) is not None:
            answer = raw(self, data)
            if answer is not None:
                return answer
        return self.handle_decoded(data)

    def handle_decoded(self, data: bytes) -> list[bytes]:
        """handle_datagram without the raw ways: every request decoded to its message first (what
        the raw ways must answer alike: tests/dataplane/test_worker_raw_install.py)."""
        try:
            msg = pipe.decode(data)
        except PipeError as err:
            log.warning("malformed pipe message: %s", err)
            reply = pipe.error_reply(err)
            return [reply] if reply else []
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            log.warning("unexpected %s on the pipe", type(msg).__name__)
            return []
        return self._answer(handler, msg, msg.req_id, msg.TYPE)   # type: ignore[union-attr]

    def _answer(self, handler: Callable[[Worker, Any], list[bytes]], arg: Any, req_id: int,
                msg_type: MsgType) -> list[bytes]:
        """handler's answers, or the error reply for what the fast path or the system refused."""
        try:
            return handler(self, arg)
        except DataplaneError as err:
            return [pipe.encode(pipe.Reply(req_id, msg_type, err.errno))]
        except OSError as err:
            log.warning("%s failed: %s", _MSG_NAME[msg_type], err)
            return [pipe.encode(pipe.Reply(req_id, msg_type, Errno.EIO))]

    # --- the raw ways: fields checked as the quick decoder checks them (pipe.quick), no message built
    def _raw_sa(self, data: bytes) -> list[bytes] | None:
        fields = _checked(sa_fields, data)
        if fields is None:
            return None
        update = fields[0] == _T_UPDATE
        return self._answer(Worker._raw_update if update else Worker._raw_add, fields, fields[1],
                            _UPDATE if update else _ADD)

    def _raw_update(self, fields: SaFields) -> list[bytes]:
        self.dp.update_fields(fields)
        (_, req_id, spi, raw_dir, _, _, sa_flags, _, _, _, _, _, _, remote_family, remote_raw, remote_port,
         _, _, soft_seconds, _, _, hard_seconds, _) = fields  # fmt: skip
        self.timers.cancel((spi, _IN, None))
        # as _update keys the timers (an OUT SA's UPDATE is refused by the fast path before this)
        remote = endpoint_of(remote_family, remote_raw, remote_port) if raw_dir == _OUT else None
        self._lifetime_timers((spi, _DIRECTION[raw_dir], remote), soft_seconds, hard_seconds)
        log.debug("SA in %08x installed%s", spi, ", first use reported" if sa_flags & _SA_FIRST_USE else "")
        return [pipe.encode_ok(req_id, _UPDATE)]

    def _raw_add(self, fields: SaFields) -> list[bytes]:
        self.dp.add_fields(fields)
        (_, req_id, spi, raw_dir, _, _, _, _, _, _, _, _, _, remote_family, remote_raw, remote_port,
         _, _, soft_seconds, _, _, hard_seconds, _) = fields  # fmt: skip
        remote = endpoint_of(remote_family, remote_raw, remote_port)
        # as _add keys the timers (an IN SA's ADD is refused by the fast path before this)
        self._lifetime_timers((spi, _DIRECTION[raw_dir], remote if raw_dir == _OUT else None),
                              soft_seconds, hard_seconds)
        log.debug("SA out %08x to %s installed", spi, remote.addr)
        return [pipe.encode_ok(req_id, _ADD)]

    def _raw_spdadd(self, data: bytes) -> list[bytes] | None:
        fields = _checked(spdadd_fields, data)
        if fields is None:
            return None
        return self._answer(Worker._raw_spd_add, fields, fields[0], _SPDADD)

    def _raw_spd_add(self, fields: SpdAddFields) -> list[bytes]:
        self.dp.spd_add_fields(fields)
        return [pipe.encode_ok(fields[0], _SPDADD)]

    def _ok(self, msg: Request, spi: int | None = None) -> list[bytes]:
        if spi is None:
            return [pipe.encode_ok(msg.req_id, msg.TYPE)]
        return [pipe.encode_spi(msg.req_id, spi)]

    # one method per request, found by the message's exact type (_HANDLERS): a match tested
    # them in turn, ten isinstance checks for a SEND_IKE
    def _getspi(self, msg: pipe.GetSpi) -> list[bytes]:
        spi = self.dp.getspi(msg.lo, msg.hi)
        larval = self.larval_timeout if msg.larval_seconds is None else msg.larval_seconds
        if larval:   # 0: the requester completes or deletes it; never expired under it
            self._larval_timer(spi, larval)
        return self._ok(msg, spi=spi)

    def _update(self, msg: pipe.Update) -> list[bytes]:
        self.dp.update(msg.sa)
        self.timers.cancel((msg.sa.spi, _IN, None))
        self._lifetime_timers(sa_key(msg.sa), msg.sa.soft.seconds, msg.sa.hard.seconds)
        # DEBUG: the control process logs each install (CHILD_SA ... up, manual tunnel installed)
        log.debug("SA in %08x installed%s", msg.sa.spi,
                  ", first use reported" if msg.sa.report_first_use else "")
        return self._ok(msg)

    def _add(self, msg: pipe.Add) -> list[bytes]:
        self.dp.add(msg.sa)
        self._lifetime_timers(sa_key(msg.sa), msg.sa.soft.seconds, msg.sa.hard.seconds)
        log.debug("SA out %08x to %s installed", msg.sa.spi, msg.sa.remote.addr)
        return self._ok(msg)

    def _delete(self, msg: pipe.Delete) -> list[bytes]:
        key = (msg.spi, msg.direction, msg.remote)
        # the timers go even if the SA is gone already (ENOENT): nothing else would remove them; not
        # those of an SA of another reqid (ENOENT too): another owner's, it stays (review revlate9 F1)
        if msg.reqid is None or self.dp.reqid_of(*key) in (None, msg.reqid):
            self.timers.cancel(key)
        # the answer carries the SA's final counters, read under the lock that removes it: no packet
        # a loop thread takes in or sends between a DUMP and this DELETE goes uncounted (accounting)
        final = self.dp.remove(msg.spi, msg.direction, msg.remote, msg.reqid)
        return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.OK, current=_current(final)))]

    def _flush(self, msg: pipe.Flush) -> list[bytes]:
        self.dp.flush()
        self.timers.cancel_all()
        return self._ok(msg)

    def _spd_add(self, msg: pipe.SpdAdd) -> list[bytes]:
        self.dp.spd_add(msg.policy)
        return self._ok(msg)

    def _spd_delete(self, msg: pipe.SpdDelete) -> list[bytes]:
        self.dp.spd_delete(msg.id)
        return self._ok(msg)

    def _spd_flush(self, msg: pipe.SpdFlush) -> list[bytes]:
        self.dp.spd_flush()
        return self._ok(msg)

    def _dump(self, msg: pipe.Dump) -> list[bytes]:
        drops = (*self.dp.drops().items(), *self.pipe_drops())
        gauges = (*self.dp.gauges().items(), ("malloc_trims", self.calm.trims), ("sandbox", self.sandbox))
        sas = self.dp.sas()
        self.calm.note(len(sas))   # a burst of its own: every SA's state built and encoded at once
        return pipe.encode_dump_replies(msg.req_id, sas, self.dp.policies(), drops, gauges)

    def _reserve(self, msg: pipe.Reserve) -> list[bytes]:
        self.dp.reserve(msg.spi, msg.direction, msg.limit, msg.notify, msg.remote)
        return self._ok(msg)

    def _ike_spi_add(self, msg: pipe.IkeSpiAdd) -> list[bytes]:
        self.dp.ike_spi_add(msg.spi, msg.peer)
        return self._ok(msg)

    def _ike_spi_key(self, msg: pipe.IkeSpiKey) -> list[bytes]:
        self.dp.ike_spi_key(msg.key)
        return self._ok(msg)

    def _addr_added(self, msg: pipe.AddrAdded) -> list[bytes]:
        """A notice: no answer (the control process watches the host's addresses, csrc/addrwatch.c)."""
        for addr in msg.addrs or (None,):
            self.dp.addr_added(addr)
        return []

    def _ike_spi_delete(self, msg: pipe.IkeSpiDelete) -> list[bytes]:
        self.dp.ike_spi_delete(msg.spi)
        return self._ok(msg)

    def _migrate(self, msg: pipe.Migrate) -> list[bytes]:
        self.dp.migrate(msg.spi, msg.direction, msg.new_remote, msg.remote, msg.new_local)
        return self._ok(msg)

    def _send_ike(self, msg: pipe.SendIke) -> list[bytes]:
        sock = self.udp.get(msg.remote.addr.version)
        if sock is None:
            return [pipe.encode(pipe.Reply(msg.req_id, msg.TYPE, Errno.EINVAL))]
        # marked, but where the control process says (an IKE_SA_INIT answer to an unmarked request)
        marker = b"" if msg.unmarked else NON_ESP_MARKER
        # from the address the peer talked to (the IKE event's), on a socket bound to the wildcard
        source = _addr_text(msg.local.addr) if msg.local is not None else None
        pktinfo.sendto(sock, marker + msg.data, (_addr_text(msg.remote.addr), msg.remote.port), source, msg.oif)
        return self._ok(msg)

    # --- timers ------------------------------------------------------------------
    def _larval_timer(self, spi: int, seconds: float) -> None:
        self.timers.add((spi, Direction.IN, None), seconds, TimerKind.LARVAL)

    def _timer_fired(self, key: SaKey, kind: TimerKind) -> None:
        if kind is TimerKind.LARVAL:
            self._larval_expired(key[0])
        else:
            self._time_expired(key, kind is TimerKind.HARD)

    def _larval_expired(self, spi: int) -> None:
        try:
            if self.dp.get(spi, Direction.IN).state != "larval":
                return
            self.dp.delete(spi, Direction.IN)
        except DataplaneError:
            return
        self.timers.cancel((spi, Direction.IN, None))
        log.info("larval SA %08x never completed; removed", spi)
        self._emit(pipe.Expire(spi=spi, direction=Direction.IN, hard=True, reason=ExpireReason.LARVAL_TIMEOUT))

    def _lifetime_timers(self, key: SaKey, soft: int, hard: int) -> None:
        """The time lifetimes (seconds, 0 = none) of the SA key names."""
        if not (soft or hard):
            return
        if not hard:
            self.timers.add(key, soft, _SOFT)
        elif not soft:
            self.timers.add(key, hard, _HARD)
        else:   # one heap entry for both (SaSpec has soft <= hard; at the same time, soft first)
            self.timers.add(key, soft, _SOFT, (hard, _HARD))

    def _time_expired(self, key: SaKey, hard: bool) -> None:
        spi, direction, remote = key
        expire = pipe.Expire(spi=spi, direction=direction, hard=hard, reason=ExpireReason.TIME, remote=remote)
        if hard:
            # the SA goes here, not by the control process's DELETE, so nothing could read its
            # counters after: the EXPIRE carries them (read as it is removed), for accounting
            try:
                final = self.dp.remove(spi, direction, remote)
            except DataplaneError:
                return
            self.timers.cancel(key)
            self._emit(dataclasses.replace(expire, current=_current(final)))
            return
        self._emit(self._with_current(expire))

    # --- events ------------------------------------------------------------------
    def drain_events(self) -> None:
        # at most a queue's worth a wake-up (review revpipe2 F2: a flood refilled it as fast as it was read,
        # and the pipe's requests and the timers waited); the eventfd stays readable while events remain
        for ev in itertools.islice(self.dp.events_encoding_ike(pipe.encode_ike_event), EVENTS_PER_WAKE):
            if isinstance(ev, tuple):   # an IKE message, encoded already (the events' bulk: every IKE_AUTH)
                self._send_event(*ev)
                continue
            msg = self._event_message(ev)
            if isinstance(msg, pipe.Expire):
                msg = self._remove_dead(msg) if msg.hard else self._with_current(msg)
            if msg is not None:
                self._emit(msg)

    def _remove_dead(self, expire: pipe.Expire) -> pipe.Expire | None:
        """A hard byte/packet/sequence limit left the SA dead: the worker removes it now, as the
        kernel removes an SA at its hard lifetime (and as the hard time lifetime does here).  No
        Child SA may claim the EXPIRE (control restarted, manual keys, a DELETE under way), and
        a dead SA kept its entry, cipher contexts and SPI for ever.  The EXPIRE carries the
        counters read as it goes; the control process's DELETE of it after is ENOENT, a no-op.

        None if the SA under that name is not dead: the one the EXPIRE named was deleted and its
        SPI taken again (a newer SA dies only by its own EXPIRE), so the EXPIRE is stale."""
        key = (expire.spi, expire.direction, expire.remote)
        try:
            if self.dp.get(*key).state != "dead":
                return None
            # only this thread changes the SAD: nothing comes between the check and the removal
            final = self.dp.remove(*key)
        except DataplaneError:
            return expire   # DELETEd before its EXPIRE was read: nothing to remove, no counters
        self.timers.cancel(key)
        log.debug("SA %s %08x reached its hard %s limit; removed", expire.direction.name.lower(), expire.spi,
                  expire.reason.name.lower())
        return dataclasses.replace(expire, current=_current(final))

    def _with_current(self, expire: pipe.Expire) -> pipe.Expire:
        """A soft EXPIRE with the SA's counters now (the SA goes on); an SA deleted meanwhile: none."""
        try:
            info = self.dp.get(expire.spi, expire.direction, expire.remote)
        except DataplaneError:
            return expire
        return dataclasses.replace(expire, current=_current(info))

    @staticmethod
    def _event_message(ev: Event) -> pipe.Message | None:
        # IKE first: every client's IKE_AUTH (and every later IKE message) comes so
        if ev.type is _EV_IKE and ev.remote is not None and 1 <= len(ev.data) <= pipe.MAX_IKE_DATA:
            # our address of the other family (no socket of ours makes one) would make Ike raise in
            # the event callback: the message goes up without it, the control process then assumes
            local = ev.local if ev.local is None or ev.local.addr.version == ev.remote.addr.version else None
            return pipe.Ike(data=ev.data, remote=ev.remote, local=local, unmarked=ev.unmarked)
        if ev.type is EventType.ACQUIRE and ev.selector is not None:
            return pipe.Acquire(policy_id=ev.policy_id, selector=ev.selector)
        if ev.type is EventType.EXPIRE:
            remote = ev.remote if ev.direction is Direction.OUT else None
            if ev.direction is Direction.OUT and remote is None:
                return None
            return pipe.Expire(spi=ev.spi, direction=ev.direction, hard=ev.hard, reason=ExpireReason(ev.reason),
                               remote=remote)
        if ev.type is EventType.INVALID_SPI and ev.remote is not None:
            return pipe.InvalidSpi(spi=ev.spi, remote=ev.remote)
        if ev.type is EventType.RESERVE:
            remote = ev.remote if ev.direction is Direction.OUT else None
            if ev.direction is Direction.OUT and remote is None:
                return None
            return pipe.ReserveLow(spi=ev.spi, direction=ev.direction, needed=ev.seq, remote=remote)
        if ev.type is EventType.FIRST_USE:
            return pipe.FirstUse(spi=ev.spi)
        return None

    def _emit(self, msg: pipe.Message) -> None:
        self._send_event(pipe.encode(msg), False, what=type(msg).__name__)

    def _send_event(self, data: bytes, known: bool, peer: int = 0, proven: bool = False, what: str = "Ike") -> None:
        try:
            if known:
                self.send_known_ike(data, peer)
            elif proven:
                self.send_proven_ike(data)
            else:
                self.send(data)
        except OSError as err:
            log.warning("could not report %s: %s", what, err)


# the requests the worker answers (and the notices it takes), by exact type (the pipe's message classes are final)
_HANDLERS: dict[type, Callable[[Worker, Any], list[bytes]]] = {
    pipe.GetSpi: Worker._getspi, pipe.Update: Worker._update, pipe.Add: Worker._add,
    pipe.Delete: Worker._delete, pipe.Flush: Worker._flush, pipe.SpdAdd: Worker._spd_add,
    pipe.SpdDelete: Worker._spd_delete, pipe.SpdFlush: Worker._spd_flush, pipe.Dump: Worker._dump,
    pipe.SendIke: Worker._send_ike, pipe.Reserve: Worker._reserve, pipe.Migrate: Worker._migrate,
    pipe.IkeSpiAdd: Worker._ike_spi_add, pipe.IkeSpiDelete: Worker._ike_spi_delete,
    pipe.IkeSpiKey: Worker._ike_spi_key, pipe.AddrAdded: Worker._addr_added,
}


# the raw ways, by the request's type byte (pipe.quick's sa_fields and spdadd_fields)
_RAW_WAYS: dict[int, Callable[[Worker, bytes], list[bytes] | None]] = {
    int(MsgType.UPDATE): Worker._raw_sa, int(MsgType.ADD): Worker._raw_sa, int(MsgType.SPDADD): Worker._raw_spdadd,
}
_UPDATE, _ADD, _SPDADD = MsgType.UPDATE, MsgType.ADD, MsgType.SPDADD
_T_UPDATE = int(MsgType.UPDATE)
_DIRECTION = {int(d): d for d in Direction}
# a message's class name by its type, as the general way's warning names it (type(msg).__name__)
_MSG_NAME = {t: cls.__name__ for cls, t in ((c, getattr(c, "TYPE", None)) for c in _HANDLERS) if t is not None}


_F = TypeVar("_F")


def _checked(check: Callable[[bytes], _F | None], data: bytes) -> _F | None:
    """A raw way's field check; one that raises (none does today) sends the request the general way,
    which names what is wrong, as decode's quick ways fall back to the general decoder."""
    try:
        return check(data)
    except (struct.error, ValueError, TypeError, IndexError):
        return None


def _current(info: pipe.SaInfo) -> pipe.Lifetime:
    """An SA's counters as EXPIRE's LIFETIME_CURRENT carries them (PF_KEY's current lifetime)."""
    return pipe.Lifetime(bytes=info.counters.get("bytes", 0), packets=info.counters.get("packets", 0),
                         seconds=info.age_seconds)


# McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 4 (AES-128) and 16
# (AES-256): key, IV, AAD, plaintext, ciphertext || tag (tests/dataplane/test_gcm_kat.py has them all)
_KAT_IV = bytes.fromhex("cafebabefacedbaddecaf888")
_KAT_AAD = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
_KAT_PLAIN = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
_KAT_K128 = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
GCM_KATS = (
    ("AES-128-GCM", _KAT_K128, bytes.fromhex(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        "5bc94fbc3221a5db94fae95ae7121a47")),
    ("AES-256-GCM", _KAT_K128 * 2, bytes.fromhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b")),
)


def self_test(kats: tuple[tuple[str, bytes, bytes], ...] = GCM_KATS) -> str | None:
    """Known answers of the fast path's AES-GCM (the ESP ciphers), once at start-up; what failed or None.

    The C path seals and opens through the same OpenSSL EVP ciphers as ESP.  A libcrypto that
    gets them wrong stops the worker before it carries a packet.  Run before the loop threads
    start, it also pages in the cipher code and does OpenSSL's one-time algorithm fetches
    (~0.5 MiB of the worker's RSS), which would otherwise land on the first client's first packet."""
    for name, key, sealed in kats:
        if gcm_seal(key, _KAT_IV, _KAT_AAD, _KAT_PLAIN) != sealed:
            return f"{name} sealed a known-answer test vector wrong"
        if gcm_open(key, _KAT_IV, _KAT_AAD, sealed) != _KAT_PLAIN:
            return f"{name} did not open a known-answer test vector"
        if gcm_open(key, _KAT_IV, _KAT_AAD, sealed[:-1] + bytes([sealed[-1] ^ 1])) is not None:
            return f"{name} opened a vector with a corrupted tag"
    return None


def _die_with_parent() -> None:
    # the worker must not outlive the control process that owns the routes: SIGKILL, which one taken over can
    # neither handle nor clear (seccomp; review revpipe F2); its clean stop comes over the pipe, parents wait
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def serve(args: argparse.Namespace) -> int:
    failed = self_test()
    if failed:
        log.error("start-up self-test of the ESP cipher failed: %s; this libcrypto cannot carry ESP", failed)
        return 1
    # SEND_IKE's sendto parses its address with libc's inet_pton: its code (the kernel maps 64 KiB
    # of a library around the first instruction used) paged in now, not by the first IKE_AUTH answer
    socket.inet_pton(socket.AF_INET6, "::1")
    socket.inet_pton(socket.AF_INET, "127.0.0.1")
    loop = asyncio.get_running_loop()
    chan = socket.socket(fileno=args.pipe_fd)
    chan.setblocking(False)
    udp: dict[int, socket.socket] = {}
    if args.udp4_fd >= 0:
        udp[4] = socket.socket(fileno=args.udp4_fd)
    if args.udp6_fd >= 0:
        udp[6] = socket.socket(fileno=args.udp6_fd)
    _nonblocking(args)
    dp = Dataplane()
    dp.set_fds(args.tun_fd, args.udp4_fd, args.udp6_fd)
    queues = [0] + [dp.add_queue(*q) for q in args.queue]
    # to the user the daemon names, or as we are (user = root keeps uid 0): no capability either way, the
    # descriptors are open; no-new-privs (review revlate4 F1 (a): a root worker kept CAP_NET_ADMIN and more)
    log.info("%s", privilege.drop(privilege.target_for(args.user)))
    _die_with_parent()   # a change of credentials clears the parent-death signal
    log.info("offloads: %s", ", ".join(dp.set_offloads(args.vnet_hdr)) or "none")
    if args.mtu:
        dp.set_tunnel_mtu(args.mtu)
    dp.set_ipv6_source_prefix(args.ipv6_source_prefix)   # the per-source limits' IPv6 source (dos_source.py)
    done: asyncio.Future[None] = loop.create_future()

    def eof() -> None:
        if not done.done():
            done.set_result(None)

    reader: PipeReader
    worker = Worker(dp, lambda data: reader.writer.send(data, is_event=True), udp, loop, args.larval_timeout)
    worker.send_known_ike = lambda data, peer: reader.writer.send(data, is_event=True, known=True, peer=peer)
    worker.send_proven_ike = lambda data: reader.writer.send(data, is_event=True, proven=True)
    reader = PipeReader(chan, loop, worker.handle_datagram, eof, args.ipv6_source_prefix)
    worker.pipe_drops = reader.writer.drops
    reader.start()
    loop.add_reader(dp.event_fd, reader.writer.holding(worker.drain_events))   # a drain's events together
    def finish() -> None:
        if not done.done():
            done.set_result(None)

    parent = os.getppid()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_stop_signal, loop, parent, finish)
    if (trace := memtrace.trace_dir()) is not None:   # opt-in diagnostic (bench/soak.py --trace)
        loop.add_signal_handler(signal.SIGUSR2, _memory_snapshot, memtrace.dumper(trace))
    gctune.settle()   # set up: what exists now lives as long as the worker
    # every descriptor open, OpenSSL loaded (self_test), the loop threads not started yet: Landlock
    # binds this thread and those it starts, so the packet threads are confined from their first packet
    confined = _confine(args.sandbox, trace, args.early_filter)
    if confined is None:
        return 1
    worker.sandbox = confined
    threads = [threading.Thread(target=dp.run, args=(q,), name=f"tunsec-fastpath-{q}", daemon=True)
               for q in queues]
    for t in threads:
        t.start()
    log.info("worker ready, %d queue(s)", len(threads))
    await done
    dp.stop()
    for t in threads:
        t.join(timeout=5)
    worker.timers.cancel_all()
    dp.flush()   # wipes the keys held in C before the process ends
    return 0


def _nonblocking(args: argparse.Namespace) -> None:
    """O_NONBLOCK on the TUN and UDP descriptors, again: they are shared with the spawner and every
    worker before, one of which (taken over, its sandbox allows FIONBIO) may have cleared it, and
    the packet loop reads until EAGAIN."""
    for fd in (args.tun_fd, args.udp4_fd, args.udp6_fd, *(fd for q in args.queue for fd in q)):
        if fd >= 0:
            os.set_blocking(fd, False)


# how long a signalled worker waits for the control process to close the pipe
STOP_SIGNAL_GRACE = 5.0


def _on_stop_signal(loop: asyncio.AbstractEventLoop, parent: int, finish: Callable[[], None]) -> None:
    """SIGTERM/SIGINT: stop now only if the control process is gone.

    A signal sent to the whole group or unit (Ctrl-C, systemd's stop) reaches the
    worker together with the control process, which still sends its IKE DELETEs
    through our sockets and then closes the pipe (EOF ends us); stopping at once
    would fail them with EIO.  If the control process never closes the pipe (the
    signal was for the worker alone), the worker stops after a grace period.
    """
    if os.getppid() != parent:   # its parent is gone (the parent-death signal kills): nobody will close the pipe
        finish()
        return
    log.info("stop signal: waiting for the control process to close the pipe (at most %.0f s)",
             STOP_SIGNAL_GRACE)
    loop.call_later(STOP_SIGNAL_GRACE, finish)


def _confine(on: bool, trace: str | None, early: int) -> int | None:
    """The sandbox (tunsec.dataplane.sandbox), its outcome logged once; its gauge, or None if it
    failed where the kernel has it (the worker then stops: the operator reads why, and may turn it off)."""
    if not on:
        log.warning("worker not sandboxed (tunsec { worker_sandbox = no }): taken over, it could read what "
                    "its user may, connect out and execute programs")
        return 0
    # the memory snapshots (opt-in) write to their directory and read /proc/self/status
    read_only, read_write = sandbox.python_path(), []
    if trace is not None:
        read_only.append("/proc/self")
        read_write.append(trace)
    try:
        outcome = sandbox.apply(read_only, read_write, early)
    except (SandboxError, OSError) as err:
        log.error("cannot sandbox the worker: %s; tunsec { worker_sandbox = no } runs it without", err)
        return None
    if outcome.missing:
        log.warning("worker %s", outcome.line())
    else:
        log.info("worker %s", outcome.line())
    return outcome.gauge


def _memory_snapshot(dump: Callable[[], str]) -> None:
    try:
        log.info("memory snapshot %s", dump())
    except OSError as err:
        log.warning("memory snapshot: %s", err)


def _queue_fds(text: str) -> tuple[int, int, int]:
    tun, udp4, udp6 = (int(x) for x in text.split(","))
    return tun, udp4, udp6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tunsec-worker")
    ap.add_argument("--pipe-fd", type=int, required=True)
    ap.add_argument("--tun-fd", type=int, required=True)
    ap.add_argument("--udp4-fd", type=int, default=-1)
    ap.add_argument("--udp6-fd", type=int, default=-1)
    ap.add_argument("--queue", type=_queue_fds, action="append", default=[],
                    help="TUN,UDP4,UDP6 fds of one more queue (one more loop thread)")
    ap.add_argument("--mtu", type=int, default=0)
    ap.add_argument("--vnet-hdr", action="store_true", help="the TUN was opened with IFF_VNET_HDR")
    ap.add_argument("--larval-timeout", type=float, default=30.0)
    ap.add_argument("--ipv6-source-prefix", type=ipv6_source_prefix, default=DEFAULT_IPV6_SOURCE_PREFIX,
                    help="the IPv6 prefix a sender counts under in the per-source limits (dos.ipv6_source_prefix)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--log-format", choices=["text", "json"], default="text")
    ap.add_argument("--user", help="drop to this user once the descriptors are set up")
    ap.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                    help="no Landlock or seccomp once set up (tunsec { worker_sandbox = no })")
    args = ap.parse_args(argv)
    # before any key arrives: started by a control process that already dropped, exec made us dumpable
    privilege.harden()
    logs.configure(args.log_level, args.log_format, "tunsec-worker")
    _die_with_parent()
    # before the event loop exists: libuv makes no io_uring ring (see sandbox.refuse_io_uring)
    args.early_filter = sandbox.refuse_io_uring() if args.sandbox else 0
    try:
        import uvloop

        return uvloop.run(serve(args))
    except ImportError:
        return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
