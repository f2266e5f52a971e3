"""The worker's end of the pipe: PipeWriter (what leaves, in which order, what waits or is dropped
when the control process does not keep up) and PipeReader (requests in, in batches, with
backpressure).  The worker's other parts only call ``send``; docs/pipe.md ("When the control
process does not keep up") describes the rules."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import socket
from collections.abc import Callable

from tunsec.dataplane.pipe import MsgType, batch, ike_event_own_spi, ike_event_sender
from tunsec.ike.constants import MAX_IKE_MESSAGE
from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX, ipv6_prefix_mask
from tunsec.loglimit import LogLimiter, suffix

log = logging.getLogger("tunsec.worker")

MAX_DATAGRAM = 65536

_IKE_TYPE = int(MsgType.IKE)   # the pipe header's byte 1 (docs/pipe.md, Framing)
_BATCH = bytes([batch.BATCH_TYPE])   # a batch's type byte, as data[1:2] reads it
# items held (a turn of the pipe reader, a drain of the fast path's events) passed on at once: a batch's worth
HELD_MAX = 64
# what PipeWriter.hold keeps: an answer as bare bytes, anything else as send's arguments
_Held = bytes | tuple[bytes, bool, bool, int, bool]


@dataclasses.dataclass(slots=True, eq=False)
class _WaitingIke:
    """An IKE event waiting and whose shares it is in: key, its sender's (ike_event_sender), or for one
    of an established IKE SA its peer's (the identity IKE_SPI_ADD named, else our SPI); sender, for
    those, also its sender's.  None: only the global bounds hold it.  eq=False: deque.remove finds
    one by identity, never comparing datagrams byte by byte."""

    data: bytes
    key: bytes | None
    sender: bytes | None = None
    seq: int = 0   # the order it came in (the known queue's: which of the biggest keys' oldest is older)


def _forget(index: dict[bytes, collections.deque[_WaitingIke]], key: bytes | None, waiting: _WaitingIke) -> None:
    if key is None:
        return
    mine = index[key]
    if mine[0] is waiting:
        mine.popleft()
    else:
        mine.remove(waiting)
    if not mine:
        del index[key]


class _IkeWaiting:
    """One of the writer's two IKE queues: the events in order, and the same by share key and by
    sender (the known ones'), oldest first."""

    def __init__(self) -> None:
        self.events: collections.deque[_WaitingIke] = collections.deque()
        self.by_key: dict[bytes, collections.deque[_WaitingIke]] = {}   # a key with none has no entry
        self.by_sender: dict[bytes, collections.deque[_WaitingIke]] = {}
        self.seq = 0

    def __len__(self) -> int:
        return len(self.events)

    def share(self, key: bytes | None) -> int:
        mine = self.by_key.get(key) if key is not None else None
        return len(mine) if mine is not None else 0

    def senders_share(self, sender: bytes | None) -> int:
        mine = self.by_sender.get(sender) if sender is not None else None
        return len(mine) if mine is not None else 0

    def append(self, waiting: _WaitingIke) -> None:
        self.seq += 1
        waiting.seq = self.seq
        self.events.append(waiting)
        if waiting.key is not None:
            self.by_key.setdefault(waiting.key, collections.deque()).append(waiting)
        if waiting.sender is not None:
            self.by_sender.setdefault(waiting.sender, collections.deque()).append(waiting)

    def pop_oldest(self) -> _WaitingIke:
        """The oldest event goes (sent or dropped); it is also its key's and its sender's oldest."""
        old = self.events.popleft()
        _forget(self.by_key, old.key, old)
        _forget(self.by_sender, old.sender, old)
        return old

    def pop(self, old: _WaitingIke) -> _WaitingIke:
        # a scan of at most MAX_IKE pointers, in C; a flooder's oldest is mostly near the front
        self.events.remove(old)
        _forget(self.by_key, old.key, old)
        _forget(self.by_sender, old.sender, old)
        return old

    def pop_keys_oldest(self, key: bytes) -> _WaitingIke:
        return self.pop(self.by_key[key][0])

    def pop_biggest(self, sender: bytes | None = None) -> _WaitingIke:
        """The oldest event of the key with the most waiting (of those from sender, if not None): who
        holds the most pays, not whoever waits longest (a flooder's events are most of the oldest).
        A look at each key's oldest (or at the sender's at most MAX_IKE_KNOWN_PER_SENDER), not at
        every event: a peer may flood while it is full."""
        if sender is not None:
            among = self.by_sender[sender]
            most = max(self.share(w.key) for w in among)
            return self.pop(next(w for w in among if self.share(w.key) == most))
        most = max(map(len, self.by_key.values()))
        return self.pop(min((q[0] for q in self.by_key.values() if len(q) == most), key=lambda w: w.seq))

    def clear(self) -> None:
        self.events.clear()
        self.by_key.clear()
        self.by_sender.clear()


def _source_key(sender: bytes | None, mask: int) -> bytes | None:
    """An unknown or tagged IKE event's sender as its shares count it, as the fast path's do (csrc/dp.c
    source_hash): an IPv6 sender's prefix under mask (dos.ipv6_source_prefix, /64 by default: a host
    holds it all and may send from any address of it, each of which may earn a tag; review revfast
    F1), an IPv4 one's address.  A known one's counts by its whole address (_wait_known)."""
    if sender is not None and sender[0] == 6:
        return sender[:1] + (int.from_bytes(sender[1:17], "big") & mask).to_bytes(16, "big")
    return sender


class PipeWriter:
    """Sends on the non-blocking pipe; what does not fit waits here until it does.

    Two queues.  Answers and the non-IKE events (EXPIRE, ACQUIRE, INVALID_SPI, RESERVE_LOW,
    FIRST_USE) share one, in the order they were made, and go first: the control process's
    requests and every peer's SA lifetimes depend on them, and only authenticated SAs, policies
    and rate limits make them.  IKE events (any sender's datagram to port 4500, up to
    MAX_IKE_MESSAGE bytes, unauthenticated) wait in their own bounded queue and leave only when the
    first is empty, so no flood of them delays or pushes out the rest.  Those of established IKE
    SAs (the fast path found our SPI in them: ``known``) wait apart and leave first: a reserve of
    MAX_IKE_RESERVED that the others cannot take, each peer's (all its IKE SAs) to a share
    (MAX_IKE_PER_PEER), each sender's too (MAX_IKE_KNOWN_PER_SENDER); when it is full, the peer
    with the most waiting loses its oldest.  Those whose SPI of ours carries our tag for their
    sender (``proven``: a client's IKE_AUTH to the SA our IKE_SA_INIT answer made) wait apart too
    and leave next: a reserve of MAX_IKE_PROVEN_RESERVED of the rest, each sender to a share of
    MAX_IKE_PROVEN_PER_SENDER; when theirs and the unknown ones' room is full, the sender with the
    most waiting loses its oldest.

    Requests are not read while answers wait (backpressure on a control process that sends faster
    than it reads); waiting events do not stop them.  Non-IKE events beyond MAX_QUEUED are dropped
    (the newest) and counted.  An IKE event over its sender's share (MAX_IKE_PER_SENDER) pushes out
    that sender's oldest, counted apart; one beyond MAX_IKE or MAX_IKE_BYTES pushes out the oldest
    IKE event of any sender, counted.  Answers are never dropped: the paused reader bounds them."""

    # non-IKE events waiting: each is ~100-200 bytes (~1.5 MiB at most); they come from installed
    # SAs and policies and from the fast path's rate limits, so reaching this means the control
    # process has stopped reading, not that a peer is busy
    MAX_QUEUED = 8192
    # IKE events waiting.  The C queue before this one holds 512 more (csrc/events.c, half of
    # TS_EVENT_CAP), the pipe's socket buffer a few more: ~1,000 datagrams is seconds of work for
    # a control process that answers an IKE_SA_INIT with a DH computation, longer than a peer waits
    # before it retransmits, so more would only be stale.
    MAX_IKE = 512
    # IKE events waiting per sender address (any port; an IPv6 one's prefix, dos.ipv6_source_prefix),
    # as many as the fast path's share before this queue (csrc/internal.h TS_IKE_PER_SOURCE, which
    # test_pipe_writer holds equal).  That share comes back as soon as the worker reads an event out
    # of C, so without this one a sender the control process is too slow for refilled it again and
    # again, and its datagrams pushed every other peer's (DPD, rekeys, IKE_AUTH) out of MAX_IKE; now
    # that takes 16 flooding senders or more.
    MAX_IKE_PER_SENDER = 32
    # Of MAX_IKE, the IKE events of established IKE SAs (DPD, rekeys, DELETEs, MOBIKE: an off-path
    # flood cannot name their SPIs) have a reserve the others cannot take, as in the fast path
    # (TS_IKE_RESERVED); they may use more of MAX_IKE while the others leave it free.  An
    # authenticated peer can make them, as many IKE SAs' as it opens (unique=no), from any address,
    # so each peer (the identity IKE_SPI_ADD named, all its IKE SAs) has a share (TS_IKE_PER_PEER),
    # and each sender address (an IPv6 one whole, not its prefix) one of twice that
    # (TS_IKE_KNOWN_PER_SOURCE): it takes 8 identities to
    # fill the reserve, and a peer spoofing another's address takes at most half of its share.
    # test_pipe_writer holds them equal to C's.
    MAX_IKE_RESERVED = 128
    MAX_IKE_PER_PEER = 16
    MAX_IKE_KNOWN_PER_SENDER = 32
    # Of the rest, the IKE events whose SPI of ours carries our tag for their sender (``proven``: an
    # IKE_AUTH, its fragments and EAP rounds, from where our IKE_SA_INIT answer went; tunsec/ike/
    # spi_tag.py) have a reserve of their own that a spoofed flood cannot take, and each sender
    # address a share four times an unknown sender's: road warriors behind one NAT send their
    # IKE_AUTHs in bursts.  They may use the unknown ones' room while it is free.  As in the fast
    # path (TS_IKE_PROVEN_*; test_pipe_writer holds them equal).
    MAX_IKE_PROVEN_RESERVED = 128
    MAX_IKE_PROVEN_PER_SENDER = 128
    # A tag proves only that its sender once got our answer at that address, and it may flood with
    # it: the tagged ones take at most MAX_IKE_PROVEN of the room they share with the unknown ones
    # (which keep the rest, and take back what the tagged ones hold beyond their reserve), an IPv6
    # sender's share is its prefix's, and the two queues leave in turn (C: TS_IKE_PROVEN_MAX).
    MAX_IKE_PROVEN = 256
    # The fast path passes up no IKE message longer than MAX_IKE_MESSAGE (csrc TS_IKE_MAX_MESSAGE),
    # so MAX_IKE of the longest, with their pipe header and endpoints, fit: the count is the bound
    # that holds (~4.9 MiB at most), this one only a backstop should longer events ever come.
    MAX_IKE_BYTES = MAX_IKE * (MAX_IKE_MESSAGE + 128)

    def __init__(self, chan: socket.socket, loop: asyncio.AbstractEventLoop,
                 pause_reading: Callable[[bool], None], ipv6_source_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> None:
        """ipv6_source_prefix: the prefix an unknown or tagged IPv6 sender's share counts under
        (dos.ipv6_source_prefix, the fast path's too)."""
        self.chan = chan
        self.loop = loop
        self.pause_reading = pause_reading
        self._source_mask = ipv6_prefix_mask(ipv6_source_prefix)
        self._batch_limit = batch.limit(chan)
        # answers and non-IKE events, in order; the flag: an answer (it holds the reader paused)
        self.queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._unknown = _IkeWaiting()   # by sender
        self._known = _IkeWaiting()     # of established IKE SAs, by peer and by sender
        self._proven = _IkeWaiting()    # with our tag for their sender, by sender
        self.ike = self._unknown.events
        self.ike_by_sender = self._unknown.by_key
        self.ike_known = self._known.events
        self.ike_proven = self._proven.events
        self.ike_bytes = 0   # of both
        self.answers_waiting = 0
        self.events_waiting = 0
        # since the worker started (DUMP's drops); the log line says what is new since its last
        self.dropped_events = 0
        self.dropped_ike = 0
        self.dropped_ike_source = 0
        self.dropped_ike_known = 0
        self.dropped_ike_known_share = 0
        self.dropped_ike_known_source = 0
        self.dropped_ike_proven = 0
        self.dropped_ike_proven_source = 0
        self._logged = (0, 0)
        # a flood can start and end backlogs at its own pace: their log lines are limited
        self._log_limit = LogLimiter(burst=2, period=10.0)
        self._writing = False
        # what hold() keeps: answers as bare bytes, anything else as send's arguments
        self._held: list[_Held] | None = None
        self._held_bytes = 0   # the bytes sent into _held since it was last passed on

    def drops(self) -> tuple[tuple[str, int], ...]:
        """The counters DUMP reports with the fast path's drops."""
        return (("pipe_event_full", self.dropped_events), ("pipe_ike_full", self.dropped_ike),
                ("pipe_ike_source_full", self.dropped_ike_source), ("pipe_ike_known_full", self.dropped_ike_known),
                ("pipe_ike_known_share", self.dropped_ike_known_share),
                ("pipe_ike_known_source", self.dropped_ike_known_source),
                ("pipe_ike_proven_full", self.dropped_ike_proven),
                ("pipe_ike_proven_source", self.dropped_ike_proven_source))

    def hold(self) -> list[_Held]:
        """Keep what is sent from now on, in order, until release() (PipeReader's batches).  The list
        it is kept in: the caller may append answers to it (bare bytes) in their place in the order."""
        self._held = []
        self._held_bytes = 0
        return self._held

    def release(self) -> None:
        """Send what was held, in order, in as few datagrams as fit (pipe.batch: the control process
        reads a batch with one receive, not one each).  While nothing waits in the queues, answers
        and events alike go together, as each would have gone at once; from the first batch the pipe
        has no room for, or when something waits already, each takes its own way (answers behind the
        queue, batched between two events; events to their queues and shares)."""
        held, self._held = self._held, None
        if held:
            self._pass_on(held)

    def _pass_on(self, held: list[_Held]) -> None:
        if not self.queue and not self.ike and not self.ike_known and not self.ike_proven:
            held = self._send_together(held)
        answers: list[bytes] = []
        for item in held:
            if type(item) is bytes:   # an answer
                answers.append(item)
                continue
            if answers:
                self._send_answers(answers)
                answers = []
            self.send(*item)
        if answers:
            self._send_answers(answers)

    def _pass_on_held(self, held: list[_Held]) -> None:
        """A batch's worth held: passed on now, still holding (review revpipe2 F1: a drain under a flood
        frees the C queue's slots as it reads, so what it held grew past every bound of this writer).
        The list is emptied in place: the pipe reader's turn appends its answers to this very list."""
        items = held[:]
        held.clear()
        self._held_bytes = 0
        self._held = None   # what does not go together takes its own way, not back into held
        try:
            self._pass_on(items)
        finally:
            self._held = held

    def holding(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` with what it sends held until it returns, then released (as a turn of PipeReader):
        the events of one drain of the fast path's queue (a burst's IKE_AUTHs) leave together."""
        def run() -> None:
            if self._held is not None:   # within a turn that holds already
                fn()
                return
            self.hold()
            try:
                fn()
            finally:
                self.release()
        return run

    def _send_together(self, held: list[_Held]) -> list[_Held]:
        """Send held items in batches while the pipe takes them; what is left from the first batch it
        has no room for (to go each its own way)."""
        datas = [item if isinstance(item, bytes) else item[0] for item in held]
        at = 0
        while at < len(datas):
            data, end = batch.pack(datas, at, self._batch_limit)
            try:
                self.chan.send(data)
            except BlockingIOError:
                return held[at:]
            except OSError as err:   # the control process is gone; the reader sees EOF and ends the worker
                log.debug("pipe: %s", err)
            at = end
        return []

    def _send_answers(self, answers: list[bytes]) -> None:
        at = 0
        while at < len(answers):
            data, at = batch.pack(answers, at, self._batch_limit)
            self._send_answer(data)

    def _send_answer(self, data: bytes) -> None:
        if self.queue:
            self._enqueue(data, True)
            return
        try:
            self.chan.send(data)
        except BlockingIOError:
            self._enqueue(data, True)
        except OSError as err:
            log.debug("pipe: %s", err)

    def send(self, data: bytes, is_event: bool = False, known: bool = False, peer: int = 0,
             proven: bool = False) -> None:
        """known: an IKE event of an established IKE SA (the fast path's finding, not the peer's claim),
        whose peer is the one IKE_SPI_ADD named for it (0: the SA is a peer of its own).  proven: one
        whose SPI of ours carries our tag for its sender (the fast path's finding too)."""
        if (held := self._held) is not None:
            held.append((data, is_event, known, peer, proven))
            self._held_bytes += len(data)
            if len(held) >= HELD_MAX or self._held_bytes >= self._batch_limit:
                self._pass_on_held(held)
            return
        # the header's type says IKE; the worker encodes every event itself, so it is not a claim
        if is_event and len(data) > 1 and data[1] == _IKE_TYPE:
            self._send_ike(data, known, peer, proven)
            return
        if self.queue:
            self._enqueue(data, not is_event)
            return
        try:
            self.chan.send(data)
        except BlockingIOError:
            self._enqueue(data, not is_event)
        except OSError as err:
            # the control process is gone; the reader sees EOF and ends the worker
            log.debug("pipe: %s", err)

    def _enqueue(self, data: bytes, is_answer: bool) -> None:
        if is_answer:
            self.answers_waiting += 1
            if self.answers_waiting == 1:
                self.pause_reading(True)
        elif self.events_waiting >= self.MAX_QUEUED:
            self.dropped_events += 1
            self._first_drop()
            return
        else:
            self.events_waiting += 1
        self.queue.append((data, is_answer))
        self._want_writable()

    def _send_ike(self, data: bytes, known: bool, peer: int, proven: bool) -> None:
        if not self.queue and not self.ike and not self.ike_known and not self.ike_proven:
            try:
                self.chan.send(data)
                return
            except BlockingIOError:
                pass
            except OSError as err:
                log.debug("pipe: %s", err)
                return
        if known:
            self._wait_known(data, peer)
        elif proven:
            self._wait_proven(data)
        else:
            self._wait_unknown(data)
        self._want_writable()

    def _wait_unknown(self, data: bytes) -> None:
        # the oldest goes: it is the likeliest to be answered too late (its peer has retransmitted,
        # or given up), and a flood that has ended leaves no stale backlog ahead of new datagrams.
        # Nothing before the control process decrypts tells a flood's datagram from a peer's
        # IKE_SA_INIT or IKE_AUTH, but a sender over its share pays with its own oldest, not
        # another peer's.
        unknown, sender = self._unknown, _source_key(ike_event_sender(data), self._source_mask)
        if sender is not None and unknown.share(sender) >= self.MAX_IKE_PER_SENDER:
            self.dropped_ike_source += 1
            self._drop(unknown.pop_keys_oldest(sender))
        room, shared = self._rooms()
        proven = self._proven
        while self._ike_full(data, len(unknown) >= room or len(unknown) + len(proven) >= shared):
            if len(unknown) < room and len(unknown) + len(proven) < shared \
                    and len(self._known) > self.MAX_IKE_RESERVED:
                # established SAs used the room the others left free: it goes back, the biggest peer's first
                self.dropped_ike_known += 1
                self._drop(self._known.pop_biggest())
            elif len(unknown) < room and len(proven) > self.MAX_IKE_PROVEN_RESERVED:
                # so did the tagged ones: theirs beyond their reserve goes back, the biggest sender's first
                self.dropped_ike_proven += 1
                self._drop(proven.pop_biggest())
            elif unknown:
                self.dropped_ike += 1
                self._drop(unknown.pop_oldest())
            else:   # the bytes bound with only established SAs' waiting (within their reserve)
                self.dropped_ike += 1
                self._first_drop()
                return
        unknown.append(_WaitingIke(data, sender))
        self.ike_bytes += len(data)

    def _wait_proven(self, data: bytes) -> None:
        # as the unknown ones, by sender; when their room and the unknown ones' is full, the sender
        # with the most waiting pays (a client behind a NAT that is not the one flooding keeps its own)
        proven, sender = self._proven, _source_key(ike_event_sender(data), self._source_mask)
        if sender is not None and proven.share(sender) >= self.MAX_IKE_PROVEN_PER_SENDER:
            self.dropped_ike_proven_source += 1
            self._drop(proven.pop_keys_oldest(sender))
        _, shared = self._rooms()
        while self._ike_full(data, len(self._unknown) + len(proven) >= shared or len(proven) >= self.MAX_IKE_PROVEN):
            if len(self._unknown) + len(proven) < shared and len(proven) < self.MAX_IKE_PROVEN \
                    and len(self._known) > self.MAX_IKE_RESERVED:
                self.dropped_ike_known += 1   # established SAs used the room the others left free
                self._drop(self._known.pop_biggest())
            elif proven:   # the unknown ones hold at most their room: these are over their reserve
                self.dropped_ike_proven += 1
                self._drop(proven.pop_biggest())
            else:   # the bytes bound, with none of these waiting
                self.dropped_ike_proven += 1
                self._first_drop()
                return
        proven.append(_WaitingIke(data, sender))
        self.ike_bytes += len(data)

    def _rooms(self) -> tuple[int, int]:
        """What the unknown IKE events may fill, and what they and the proven ones may together."""
        shared = self.MAX_IKE - self.MAX_IKE_RESERVED
        return shared - self.MAX_IKE_PROVEN_RESERVED, shared

    def _wait_known(self, data: bytes, peer: int) -> None:
        # keyed as the fast path keys its shares: the peer, or the SA's SPI when none was named; the
        # sender by its whole address (csrc/dp.c address_hash), an IPv6 one's too: each needs an
        # identity its peer's share bounds, and by /64 a LAN's road warriors shared one share, which
        # an insider with two identities filled from one address of it (review revfastfix F1)
        known, sender = self._known, ike_event_sender(data)
        # (every known event has a key: pop_biggest looks only at keys; b"" never comes from the worker)
        key = peer.to_bytes(8, "big") if peer else ike_event_own_spi(data) or b""
        if known.share(key) >= self.MAX_IKE_PER_PEER:
            self.dropped_ike_known_share += 1
            self._drop(known.pop_keys_oldest(key))
        elif sender is not None and known.senders_share(sender) >= self.MAX_IKE_KNOWN_PER_SENDER:
            # another peer may be spoofing this address with its own SPIs: the one with most pays
            self.dropped_ike_known_source += 1
            self._drop(known.pop_biggest(sender))
        # the others hold at most MAX_IKE - MAX_IKE_RESERVED: when all is full, these are over their
        # reserve, and the peer with the most waiting pays (the one that fills it, not its victims)
        while known and self._ike_full(data, False):
            self.dropped_ike_known += 1
            self._drop(known.pop_biggest())
        known.append(_WaitingIke(data, key, sender))
        self.ike_bytes += len(data)

    def _ike_full(self, data: bytes, over: bool) -> bool:
        return (over or len(self.ike) + len(self.ike_known) + len(self.ike_proven) >= self.MAX_IKE
                or self.ike_bytes + len(data) > self.MAX_IKE_BYTES)

    def _drop(self, old: _WaitingIke) -> None:
        """old is gone from its queue, its drop counted: the bytes back, and the first drop said."""
        self.ike_bytes -= len(old.data)
        self._first_drop()

    def _want_writable(self) -> None:
        if not self._writing:
            self.loop.add_writer(self.chan.fileno(), self._drain)
            self._writing = True

    def _drain(self) -> None:
        try:
            self._drain_queue()
            self._drain_ike()
        except BlockingIOError:
            return
        except OSError as err:
            log.error("pipe: %s", err)
            self._clear()
        self.loop.remove_writer(self.chan.fileno())
        self._writing = False
        self._log_drops()

    def _drain_queue(self) -> None:
        queue, send = self.queue, self.chan.send
        while queue:
            data, is_answer = queue[0]
            send(data)
            queue.popleft()
            if not is_answer:
                self.events_waiting -= 1
                continue
            self.answers_waiting -= 1
            if not self.answers_waiting:
                self.pause_reading(False)   # requests are read again while events still wait

    def _drain_ike(self) -> None:
        send = self._send_oldest
        while self._known:   # established IKE SAs' first
            send(self._known)
        # then the tagged and the unknown ones in turn: a tag may be a flooder's (one it earned), and
        # IKE_SA_INITs must not wait behind all of its junk
        proven, unknown = self._proven, self._unknown
        while proven or unknown:
            if proven:
                send(proven)
            if unknown:
                send(unknown)

    def _send_oldest(self, waiting: _IkeWaiting) -> None:
        data = waiting.events[0].data
        self.chan.send(data)
        waiting.pop_oldest()
        self.ike_bytes -= len(data)

    def _clear(self) -> None:
        self.queue.clear()
        self._unknown.clear()
        self._known.clear()
        self._proven.clear()
        self.ike_bytes = self.events_waiting = 0
        if self.answers_waiting:
            self.answers_waiting = 0
            self.pause_reading(False)

    def _first_drop(self) -> None:
        """The first drop of a backlog says so at once: under a flood the backlog may never end."""
        if self.dropped_events + self._ike_dropped() - sum(self._logged) == 1:
            self._warn("the control process does not keep up: dropping events (IKE ones first)")

    def _log_drops(self) -> None:
        """The backlog is gone: what it cost (status shows the totals: drops pipe_ike_full,
        pipe_ike_source_full, pipe_ike_known_full, pipe_ike_known_share, pipe_ike_known_source,
        pipe_ike_proven_full, pipe_ike_proven_source, pipe_event_full)."""
        events, ike = self.dropped_events - self._logged[0], self._ike_dropped() - self._logged[1]
        if events or ike:
            self._logged = (self.dropped_events, self._ike_dropped())
            self._warn(f"the control process caught up; {ike} IKE and {events} other events were dropped")

    def _ike_dropped(self) -> int:
        return (self.dropped_ike + self.dropped_ike_source + self.dropped_ike_known + self.dropped_ike_known_share
                + self.dropped_ike_known_source + self.dropped_ike_proven + self.dropped_ike_proven_source)

    def _warn(self, text: str) -> None:
        held = self._log_limit.admit()
        if held is not None:
            log.warning("%s%s", text, suffix(held))


class PipeReader:
    """Reads the control process's requests and hands each to ``handle``; the answers (and any event
    raised meanwhile) to the requests read in one turn, at most BATCH of them, leave together after
    the turn, in order, as few datagrams as fit (pipe.batch; a batch of requests is handled as its
    requests, in order).  The control process then reads them in one wake-up instead of being woken,
    and the worker preempted, once per answer: a set-up burst sends ~6 requests per client, most of
    them pipelined.  ``on_readable`` is what the loop calls (a bench wraps it to time the worker)."""

    BATCH = 64

    def __init__(self, chan: socket.socket, loop: asyncio.AbstractEventLoop,
                 handle: Callable[[bytes], list[bytes]], on_eof: Callable[[], None],
                 ipv6_source_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX) -> None:
        self.chan = chan
        self.loop = loop
        self.handle = handle
        self.on_eof = on_eof
        self.writer = PipeWriter(chan, loop, self.pause, ipv6_source_prefix)
        self.reading = False
        self.on_readable: Callable[[], None] = self.readable

    def start(self) -> None:
        self.pause(False)

    def pause(self, pause: bool) -> None:
        """Backpressure: no requests are read while answers wait in the writer."""
        if pause and self.reading:
            self.loop.remove_reader(self.chan.fileno())
        elif not pause and not self.reading:
            self.loop.add_reader(self.chan.fileno(), self.on_readable)
        self.reading = not pause

    def readable(self) -> None:
        writer = self.writer
        held = writer.hold()
        try:
            # BATCH requests (a batch is handled whole), then the loop's other callbacks; still
            # readable: called again
            read = 0
            while read < self.BATCH:
                try:
                    data = self.chan.recv(MAX_DATAGRAM)
                except BlockingIOError:
                    return
                except OSError as err:
                    log.error("pipe: %s", err)
                    data = b""
                if not data:
                    self.on_eof()
                    return
                # after any event handle raised (it went into held as it was sent)
                if data[1:2] == _BATCH:
                    read += self._handle_batch(data, held)
                else:
                    read += 1
                    held += self.handle(data)
                if not self.reading:
                    return
        finally:
            writer.release()

    def _handle_batch(self, data: bytes, held: list[_Held]) -> int:
        """A batch of requests (pipe.batch): each handled and answered as if it had come alone, in
        order; how many.  A batch whose framing is wrong (never from the control process's own
        WorkerClient) is logged; the requests up to the fault are handled, those after it cannot be
        told apart and are not (their requester's timeout ends them)."""
        messages, wrong = batch.split(data)
        handle = self.handle
        for msg in messages:
            held += handle(msg)
        if wrong is not None:
            log.warning("malformed pipe batch, the rest dropped: %s", wrong)
        return max(1, len(messages))
