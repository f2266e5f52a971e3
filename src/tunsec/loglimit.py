"""Rate limits for log lines an unauthenticated peer can cause.

Anyone can send an IKE_SA_INIT with proposals we refuse, or an IKE_AUTH that
fails: each would write an error line, so a flood of them would flood the log
(and the disk behind it).  Lines of such a kind pass in bursts; the rest are
counted and the count is reported with the next line that passes (SourceLimiter:
with the addresses they came from, also once the burst is over; the lines that
report them are services/ike/auth_log.py's).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tunsec.ike.dos_source import DEFAULT_IPV6_SOURCE_PREFIX, source_key
from tunsec.safefs import write_fix


@dataclass
class LogLimiter:
    """At most ``burst`` lines every ``period`` seconds."""

    burst: int = 10
    period: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _window: float = field(default=-math.inf, init=False)
    _passed: int = field(default=0, init=False)
    _held: int = field(default=0, init=False)

    @property
    def holding(self) -> int:
        """Lines dropped since the last one that passed."""
        return self._held

    def forget_held(self) -> None:
        """The held count is reported elsewhere (PeerLogLimiter: an evicted peer's)."""
        self._held = 0

    def admit(self, carried: int = 0) -> int | None:
        """None: drop this line.  Else how many lines were dropped since the last one that passed.
        ``carried``: lines held before this one elsewhere, which it was to report (PeerLogLimiter's
        ceiling: the peer's); held with it, they are reported with the next line that passes."""
        now = self.clock()
        if now - self._window >= self.period:
            self._window, self._passed = now, 0
        if self._passed >= self.burst:
            self._held += 1 + carried
            return None
        self._passed += 1
        held, self._held = self._held + carried, 0
        return held


@dataclass
class _PeerEntry:
    limiter: LogLimiter
    count: int   # lines asked for (Space-Saving: at most this many; an evicted entry's count is carried)


@dataclass
class PeerLogLimiter:
    """A LogLimiter per peer, for lines an authenticated peer may cause as often as it likes (its
    Child SAs made and deleted, its IKE rekeys: review revpeerdos F3; its refused requests: R3): one
    peer's lines spend its own burst, never another peer's, and never flood the log (journald's rate
    limit would then drop every line, the others' authentication failures too).  At most ``cap``
    peers are held, by Space-Saving as SourceLimiter's tally: a new peer past the cap takes the
    smallest entry's place and count + 1, so a busy peer keeps its entry (and its limit) however
    many others come; what the evicted entry held is reported with the next line admitted.  The new
    peer also takes the evicted entry's limiter, its burst as far as spent (Space-Saving's
    overestimate applied to the limit: the newcomer may be the evicted peer back), so peers rotating
    past the cap share ``cap`` bursts instead of each eviction starting a full one (review revcfg F4).

    The smallest entry is found through a min-heap of (count, order, peer), one record per peer,
    updated lazily: counts only grow, so a record's count is at most its peer's, and a record found
    on top with an older count is pushed back with the current one until the top is current (each
    push back follows at least one line of that peer's: O(log cap) amortized per line, where a scan
    of the table cost O(cap) per eviction while peers rotate past the cap; review revcfg).

    ``ceiling`` (0: none) bounds the lines of all peers together per period, checked after the peer's
    own limit, so a peer's lines spend only its own burst and the ceiling's, never another peer's
    burst: the per-peer limits alone pass ``cap`` x ``burst`` lines a period (review revpool2's
    remark).  A line the ceiling holds, and what its peer had held before it, are reported with the
    next line the ceiling admits, whosever it is."""

    burst: int = 10
    period: float = 60.0
    cap: int = 1024
    clock: Callable[[], float] = time.monotonic
    ceiling: int = 0
    _all: LogLimiter | None = field(default=None, init=False)
    _peers: dict[object, _PeerEntry] = field(default_factory=dict, init=False)
    _heap: list[tuple[int, int, object]] = field(default_factory=list, init=False)   # (count, order, peer)
    _order: Iterator[int] = field(default_factory=itertools.count, init=False)   # ties: the oldest record first
    _lost: int = field(default=0, init=False)   # lines held for peers evicted since

    def admit(self, peer: object) -> int | None:
        """None: drop this line of ``peer``'s.  Else how many lines were dropped since its last
        one passed (with those of evicted peers)."""
        entry = self._peers.get(peer)
        if entry is None:
            entry = self._peers[peer] = self._evict() or _PeerEntry(LogLimiter(self.burst, self.period, self.clock), 0)
            heapq.heappush(self._heap, (entry.count + 1, next(self._order), peer))
        entry.count += 1
        held = entry.limiter.admit()
        if held is None:
            return None
        held, self._lost = held + self._lost, 0
        if self.ceiling:
            return self._ceiling().admit(held)
        return held

    def _ceiling(self) -> LogLimiter:
        if self._all is None:   # on this limiter's clock, whenever that is set (tests set it after construction)
            self._all = LogLimiter(self.ceiling, self.period, lambda: self.clock())
        return self._all

    def _evict(self) -> _PeerEntry | None:
        """Past the cap, the smallest entry, removed, for a new peer to go on from: its count and its
        limiter, whose held lines move to those reported with the next line admitted.  None below
        the cap: the new peer starts afresh."""
        if len(self._peers) < self.cap:
            return None
        heap = self._heap
        while True:
            count, _, peer = heap[0]
            if (now := self._peers[peer].count) == count:
                break
            heapq.heapreplace(heap, (now, next(self._order), peer))   # an older count: put back with its own
        heapq.heappop(heap)
        gone = self._peers.pop(peer)
        self._lost += gone.limiter.holding
        gone.limiter.forget_held()
        return gone

    def __len__(self) -> int:
        return len(self._peers)


def suffix(held: int) -> str:
    return f" ({held} more like it suppressed)" if held else ""


@dataclass(frozen=True)
class Source:
    """One source a SourceLimiter names: ``address`` (for an IPv6 prefix, its first address that
    failed), the port of that address's latest line, how many lines were held, ``kind`` (what they
    said: kinds are tallied apart), and ``prefix`` when other addresses of that prefix were held too
    (the count is then the prefix's)."""

    address: str
    port: int
    count: int
    kind: str = ""
    prefix: str | None = None


@dataclass(frozen=True)
class Held:
    """The lines a SourceLimiter held back: how many, and from where (the most frequent sources,
    the rest counted)."""

    count: int
    top: tuple[Source, ...] = ()
    rest_lines: int = 0
    rest_sources: int = 0
    rest_unknown: bool = False   # sources past the tally's cap: more than rest_sources

    def others(self) -> str:
        """``3 other addresses`` (``more than 3 ...`` past the cap): where ``rest_lines`` came from."""
        plural = "" if self.rest_sources == 1 and not self.rest_unknown else "es"
        return f"{'more than ' if self.rest_unknown else ''}{self.rest_sources} other address{plural}"


@dataclass
class _Tally:
    """One source of held lines: how many (Space-Saving: at most this many, see SourceLimiter), the
    address to name it by (the first seen), that address's latest port, and ``several``: other
    addresses of its prefix were held too."""

    count: int
    example: str
    port: int
    several: bool = False


@dataclass
class SourceLimiter(LogLimiter):
    """A LogLimiter that tallies the lines it holds by their source (a peer's address) and kind,
    so that what is reported of them names who was left out: an operator (or fail2ban) chasing a
    brute force needs the addresses, not only a count.  ``flush_to``, when set, gets what is still
    held one period after the first line held (else a burst that stops is never reported).

    An IPv6 source is tallied under its prefix (``ipv6_prefix``, the DoS limits' ipv6_source_prefix):
    a host has 2^64 addresses, and per address it could spread its failures so thin that none ranks.
    Each kind's tally is bounded (``cap`` sources) by Space-Saving (Metwally et al.): a new source past
    the cap takes the smallest entry's place and count + 1, so a source with more failures than the
    cap's share of them is always in it, however many decoys came first.  Kinds are tallied in
    sketches of their own: a carried count stays with lines of its kind (one shared sketch made an
    address's one wrong password read "failed authentication 40 more times" when it took the place of
    a back end's 39 timeouts; the callers' kinds are a few constants, so the bound is theirs x cap)."""

    top: int = 5
    cap: int = 256
    flush_to: Callable[[Held], None] | None = None
    # (delay, callback): the running loop's call_later unless a test's
    schedule: Callable[[float, Callable[[], None]], object] | None = None
    ipv6_prefix: int = DEFAULT_IPV6_SOURCE_PREFIX
    _sources: dict[str, dict[str, _Tally]] = field(default_factory=dict, init=False)   # kind -> source key
    _evicted: bool = field(default=False, init=False)
    _armed: bool = field(default=False, init=False)

    def admit_from(self, source: str, port: int = 0, kind: str = "") -> Held | None:
        """None: drop this line (tallied under source and kind).  Else what was held since the last
        one passed."""
        held = self.admit()
        if held is not None:
            return self._take(held)
        self._tally(source, port, kind)
        self._arm()
        return None

    def _tally(self, source: str, port: int, kind: str) -> None:
        key = source_key(source, self.ipv6_prefix)
        sources = self._sources.setdefault(kind, {})
        if (entry := sources.get(key)) is not None:
            entry.count += 1
            if source == entry.example:
                entry.port = port
            entry.several = entry.several or source != entry.example
        elif len(sources) < self.cap:
            sources[key] = _Tally(1, source, port)
        else:   # O(cap) per line past the cap: a line held costs its peer a whole IKE exchange anyway
            smallest = min(sources, key=lambda k: sources[k].count)
            carried = sources.pop(smallest).count
            sources[key] = _Tally(carried + 1, source, port)
            self._evicted = True

    def _arm(self) -> None:
        if self.flush_to is None or self._armed:
            return
        schedule = self.schedule
        if schedule is None:
            try:
                schedule = asyncio.get_running_loop().call_later
            except RuntimeError:   # no loop (a caller outside one): the next line that passes reports them
                return
        schedule(self.period, self._flushed)
        self._armed = True

    def _flushed(self) -> None:
        self._armed = False
        if self._held and self.flush_to is not None:
            held, self._held = self._held, 0
            self.flush_to(self._take(held))

    def _take(self, held: int) -> Held:
        ranked = sorted((Source(t.example, t.port, t.count, kind, key if t.several else None)
                         for kind, sources in self._sources.items() for key, t in sources.items()),
                        key=lambda s: (-s.count, s.address, s.kind))
        top = tuple(ranked[:self.top])
        # Space-Saving's counts add up to the lines tallied (an evicted count is carried): rest >= 0
        rest = held - sum(s.count for s in top)
        out = Held(held, top, rest, len(ranked) - len(top), self._evicted)
        self._sources, self._evicted = {}, False
        return out


def internal_error(err: BaseException, first: bool) -> str:
    """What a log line says of an internal error that a peer's input or timer ran into: the
    exception's type, and the first time where (the traceback's frames), never its text, which may
    quote the peer's data or a secret (a password character in a UnicodeEncodeError, say)."""
    where = "".join(traceback.format_tb(err.__traceback__)) if first else ""
    return type(err).__name__ + (f"\n{where}" if where else "")


def os_failure(what: str, err: OSError) -> str:
    """A line for an OSError the host caused (a full disk, a permission), not a bug: what failed, on
    which file, why and what to do; no traceback (nothing in it would help the operator)."""
    line = f"{what} failed:{f' {err.filename}:' if err.filename else ''} {err.strerror or type(err).__name__}"
    if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return line
    return f"{line}; {write_fix(err, os.path.dirname(err.filename) if err.filename else 'its directory')}"
