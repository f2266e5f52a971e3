"""Sequence number state of manually keyed SAs, persisted across restarts.

AES-GCM must never see the same (key, nonce) twice, and ESP's nonce is the
sequence number (RFC 4106 §3.1); RFC 4106 §8.1 forbids GCM with statically
configured keys because a restart would start the counter again under the
same key.  tunsec's manual tunnels therefore reserve sequence numbers in
blocks: the worker never sends (OUT) or accepts (IN) a number above the limit
in force, and a limit is in force only once it has been written, fsync'd and
renamed into place here.  After any restart an SA starts at the persisted
limit: OUT past every number it may have sent, IN with every number it may
have accepted counted as already seen.

One small JSON file per key, named by a fingerprint of the key material (an
HMAC under it, never the key itself), salt included.  The GCM nonce is salt ||
sequence number (the SPI is only in the AAD), so the state belongs to the key
alone: the same key under another SPI or tunnel, or a sending key now used to
receive, continues where it left off (and the config refuses one key in two SAs
at once).  Not a receiving key now used to send: its file says what this host
accepted, and the peer may have sent numbers under the key this host never saw
(while it was down, lost on the way, within the peer's reservation), which a
sender starting at that limit would use again (review revrestart F2): refused.  Files of older
versions were named by direction, SPI and key; a key without a file of its own
takes over the highest limit among those that are still there.  A missing
file is a new key only in a state directory initialised on purpose
(tunsec.statedir).  An unreadable file is never guessed around: the tunnel
refuses to start and the error says to generate new keys.  A persisted limit
never goes down, and a key whose limit passed 2^32 (ESN) is refused in an SA
without ESN: that SA would start below numbers the key already used.

The same file keeps what the key's hard lifetime needs across restarts: when
the SA was first installed under this key (wall time; ``life_time`` counts
from then, not from each start) and, once the worker removed it at a hard
limit, which limit and its value (``expired``), so a restart does not bring
back a key past its lifetime.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import math
import os
import re
import struct
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tunsec.dataplane.pipe import Direction
from tunsec.safefs import read_regular, write_atomic_at, write_fix

LABEL = b"tunsec manual key sequence state v2"
VERSION = 2
# files of version 1, one per (direction, SPI, key): read once to take over their limits
LEGACY_LABEL = b"tunsec manual SA sequence state v1"
LEGACY_VERSION = 1
LEGACY_NAME = re.compile(r"manual-(in|out)-([0-9a-f]{8})-([0-9a-f]{16})\.json")
# A block is about TARGET_INTERVAL seconds of the SA's recent packet rate:
# at 10 Gbit/s (~1M packets/s of 1400 bytes) about four fsyncs a second, and a
# refill that starts at half a block (~0.1 s ahead) does not make traffic wait.
# What a receiver restarted alone drops is about 1.5 blocks, ~0.4 s of traffic (after a refill
# delayed on a loaded machine, up to IN_RUNAHEAD times what came over the delay).  A sender's
# block costs only numbers skipped at a restart (2^16 of 2^32), so it starts
# large and absorbs a burst from idle while the first refill (an fsync, some
# ms) is under way.  A receiver's block is what it may drop when restarted
# alone (until the sender passes its old mark), so at low rates it is small; a
# burst from idle costs it two refills' round trips of drops (the first refill
# cannot know the rate; the second is sized by the sender's number past the
# limit) and a sender's jump one refill (it reserves past the first packet).
MIN_BLOCK_OUT = 1 << 16
MIN_BLOCK_IN = 16   # at ping rates a restarted receiver is deaf for at most ~16 packets
MAX_BLOCK = 1 << 24
TARGET_INTERVAL = 0.25
GROWTH_WHEN_SHORT = 16   # a refill that came too late: up to 16-fold (a receiver's: IN_RUNAHEAD; see extend)
RAMP_GROWTH = 4096       # at most, on one refill sized by the sender's number past the limit (see extend)
# A receiver's refill reserves at most IN_RUNAHEAD times the numbers that arrived since the last refill,
# whatever the clock says: on a loaded machine a refill handled late (the control process or the worker
# not scheduled) is followed by one a few ms later, and numbers that came over the delay then look like
# a rate tens of times the real one (pow2(rate x 0.25 s) of 65,536 and more at 5,000 packets/s, a
# restarted receiver deaf for tens of seconds).  Eight times what arrived still covers a ramp from idle
# (the next refill is asked for four round trips' worth of numbers before the limit) and lets a block
# grow 8-12 fold a refill: a slow start that outruns the refills (rate doubling every ms, modelled)
# loses as many packets as without the bound when a refill takes 5 ms or more, 220 against 82 at 2 ms
# (4 lost 346); the rate measured by the next, timely refill sizes the block from there.
IN_RUNAHEAD = 8
# What the worker's RESERVE_LOWs may make this process reserve, whatever they say (a worker taken over
# forges them, and a limit persisted is used up for good under that key): the limit moves at most
# SEQ_RATE_MAX numbers a second (4M packets/s, ~45 Gbit/s of 1400 bytes: ten times what one SA carries)
# beyond a burst of SEQ_BURST (a few of the largest blocks: a peer restarted jumps ahead by one of its
# blocks).  Past that, a refill still reserves one more number: the worker asks again with the next
# packet, and legitimate traffic is only slowed to that rate.
SEQ_RATE_MAX = 1 << 22
SEQ_BURST = 4 * MAX_BLOCK
SEQ_MAX_32 = (1 << 32) - 1
SEQ_MAX_64 = (1 << 64) - 1


class StateError(Exception):
    """The sequence state of an SA cannot be read or written; the text says what to do."""


def fingerprint(key: bytes) -> str:
    """Identifies the key material (salt included) without revealing anything about it."""
    return hmac.new(key, LABEL, hashlib.sha256).hexdigest()[:32]


def legacy_fingerprint(key: bytes, spi: int, direction: Direction) -> str:
    """How version 1 named (key, SPI, direction)."""
    return hmac.new(key, LEGACY_LABEL + struct.pack("!IB", spi, direction), hashlib.sha256).hexdigest()[:32]


def state_file(state_dir: Path, key: bytes) -> Path:
    return state_dir / f"manual-key-{fingerprint(key)[:16]}.json"


class OpenDir(Protocol):
    """A directory held open (statedir.StateDir): its path for messages, its descriptor for every access."""

    @property
    def path(self) -> Path: ...

    @property
    def fd(self) -> int: ...


def _pow2_at_least(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1.0))))


Parsed = tuple[int, int, "float | None", "Expired | None"]   # limit, block, first_use, expired


@dataclass(frozen=True)
class Expired:
    """The hard limit an SA reached under this key: ``reason`` as the worker's EXPIRE names it
    (bytes, packets, time, seq_overflow) and the configured ``limit`` then (0 for seq_overflow)."""

    reason: str
    limit: int


@dataclass
class SeqState:
    """The persisted reservation of one key (one file), used by one SA."""

    path: Path
    tunnel: str
    spi: int
    direction: Direction
    key_id: str
    seq_max: int
    limit: int = 0          # persisted: nothing above it was ever sent / accepted
    min_block: int = MIN_BLOCK_OUT
    block: int = MIN_BLOCK_OUT
    last_low: float | None = None   # monotonic time of the last RESERVE_LOW
    last_notify: int = 0
    first_use: float | None = None   # persisted: wall time of the first install under this key
    expired: Expired | None = None   # persisted: the hard limit the worker removed it at
    taken_over: list[str] = field(default_factory=list)   # version 1 files whose limits this took over
    # the reservation the last restart() persisted while no worker has been handed it (see taken()):
    # restart() gives it again rather than persist another block (review revlate7 F1)
    unused: tuple[int, int, int] | None = None
    allowance: float = SEQ_BURST         # how far extend may still move the limit (see SEQ_RATE_MAX)
    allowance_at: float | None = None    # monotonic time allowance was last topped up
    # the state directory's descriptor: every file is opened, written and renamed relative to it (as root
    # before the drop the service user may rename the directory and put a link to another in its place)
    dir_fd: int = field(default=-1, repr=False)

    @classmethod
    def open(cls, state_dir: OpenDir | Path, tunnel: str, spi: int, direction: Direction, key: bytes,
             esn: bool) -> SeqState:
        """The state for this key (used by this SA now) in state_dir (a StateDir: its descriptor is used,
        and must stay open while this is; a path is opened here, for tools and tests); a missing file,
        with no older file of the key either, means a key never used (limit 0)."""
        smallest = MIN_BLOCK_OUT if direction is Direction.OUT else MIN_BLOCK_IN
        path = state_dir if isinstance(state_dir, Path) else state_dir.path
        st = cls(state_file(path, key), tunnel, spi, direction, fingerprint(key),
                 SEQ_MAX_64 if esn else SEQ_MAX_32, min_block=smallest, block=smallest)
        if isinstance(state_dir, Path):
            st.dir_fd = _open_dir(st, path)
            weakref.finalize(st, os.close, st.dir_fd)
        else:
            st.dir_fd = state_dir.fd
        if not st._load():
            st._take_over_legacy(key)
        if st.limit > st.seq_max:
            raise st._past_seq_max()
        return st

    @property
    def what(self) -> str:
        return f"manual tunnel {self.tunnel}: {self.direction.name.lower()} SA {self.spi:08x}"

    def _load(self) -> bool:
        """Read this key's file; False if there is none."""
        try:
            raw = read_regular(self.path.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise self._unreadable(err.strerror or str(err), self.path) from err
        limit, block, first_use, expired = self._parse(raw, self.path, {"version": VERSION, "key_id": self.key_id})
        if self.direction is Direction.OUT and _last_direction(raw) != "out":
            raise self._received_under()
        self.limit, self.block = limit, min(max(block, self.min_block), MAX_BLOCK)
        self.first_use, self.expired = first_use, expired
        return True

    def _take_over_legacy(self, key: bytes) -> None:
        """The highest limit among the version 1 files of this key (any SPI, either direction) that are
        still there, the earliest first use and a hard limit reached: an upgrade does not restart the
        key at sequence number 1.  The new file is written at the first restart(), before use."""
        try:
            names = sorted(os.listdir(self.dir_fd))
        except OSError as err:
            raise self._unreadable(err.strerror or str(err), self.path.parent) from err
        for name in names:
            m = LEGACY_NAME.fullmatch(name)
            if m is None:
                continue
            path = self.path.parent / name
            direction = Direction.IN if m[1] == "in" else Direction.OUT
            spi = int(m[2], 16)
            key_id = legacy_fingerprint(key, spi, direction)
            if key_id[:16] != m[3]:
                continue   # another key's
            if self.direction is Direction.OUT and direction is Direction.IN:
                raise self._received_under()
            try:
                raw = read_regular(name, dir_fd=self.dir_fd)
            except OSError as err:
                raise self._unreadable(err.strerror or str(err), path) from err
            limit, block, first_use, expired = self._parse(raw, path, {
                "version": LEGACY_VERSION, "key_id": key_id, "spi": spi, "direction": m[1]})
            self.limit = max(self.limit, limit)
            self.block = min(max(self.block, block), MAX_BLOCK)
            if first_use is not None:
                self.first_use = first_use if self.first_use is None else min(self.first_use, first_use)
            self.expired = self.expired or expired
            self.taken_over.append(path.name)

    def _parse(self, raw: bytes, path: Path, expect: dict[str, object]) -> Parsed:
        """(limit, block, first_use, expired) of a state file whose fields match expect."""
        try:
            doc = json.loads(raw)
            ok = isinstance(doc, dict) and all(doc.get(k) == v for k, v in expect.items())
            limit, block = doc["limit"], doc["block"]
            first_use, expired = doc.get("first_use"), _expired(doc.get("expired"))
        except (ValueError, KeyError, TypeError, RecursionError):   # RecursionError: nested too deep for json
            ok = False
        if not ok or not _is_int(limit) or not _is_int(block) or not 0 <= limit <= SEQ_MAX_64 \
                or not (first_use is None or (isinstance(first_use, float | int) and math.isfinite(first_use))):
            raise self._unreadable("not a sequence state file of this key (corrupt or truncated)", path)
        return limit, block, None if first_use is None else float(first_use), expired

    def _unreadable(self, why: str, path: Path) -> StateError:
        return StateError(
            f"{self.what}: cannot read its sequence number state {path}: {why}. Without it the "
            "sequence numbers (AES-GCM nonces) already used under this key are unknown, and reusing "
            "the key could repeat them. Generate new keys for this tunnel on both peers (key_in, "
            "key_out), then start again; remove the file only once the old keys are gone")

    def _received_under(self) -> StateError:
        return StateError(
            f"{self.what}: this key was last used to receive (a key_in): its sequence number state "
            f"{self.path} says what this host accepted, not what the peer sent under it, so sending "
            "with it could repeat the peer's AES-GCM nonces. Generate a new key for this key_out "
            "(`openssl rand -hex 20`, 36 for aes256gcm16) on both peers")

    def _past_seq_max(self) -> StateError:
        # Without ESN the SA would start below numbers already used under this key (the same GCM
        # nonces again), or fail to install at all: the key is kept to ESN for good.
        return StateError(
            f"{self.what}: key used with ESN past 2^32: it cannot be used without ESN; generate new keys "
            f"for this tunnel on both peers (key_in, key_out), or set esn = yes again. Its sequence number "
            f"state {self.path} has reserved up to {self.limit}, past the last number without ESN "
            f"({self.seq_max})")

    def _store(self, limit: int, block: int) -> None:
        if limit < self.limit:
            # A lower limit on disk would let a later start reuse numbers (nonces) already reserved.
            raise StateError(f"{self.what}: refusing to lower its persisted sequence number limit in "
                             f"{self.path} from {self.limit} to {limit}")
        doc: dict[str, object] = {"version": VERSION, "tunnel": self.tunnel, "spi": self.spi,
                                  "direction": self.direction.name.lower(), "key_id": self.key_id, "limit": limit,
                                  "block": block, "first_use": self.first_use}
        if self.expired is not None:
            doc["expired"] = {"reason": self.expired.reason, "limit": self.expired.limit}
        try:
            write_atomic_at(self.dir_fd, self.path.name, json.dumps(doc, sort_keys=True).encode() + b"\n")
        except OSError as err:
            code = f" ({errno.errorcode.get(err.errno, err.errno)})" if err.errno else ""
            raise StateError(f"{self.what}: cannot write its sequence number state {self.path}: "
                             f"{err.strerror or err}{code}; {write_fix(err, self.path.parent)} (tunsec {{ state_dir }})"
                             ) from err
        self.limit, self.block = limit, block

    def _notify(self) -> int:
        return 0 if self.limit >= self.seq_max else max(self.limit - self.block // 2, 1)

    def restart(self, now: float | None = None, again: bool = False) -> tuple[int, int, int]:
        """(seq_start, seq_limit, seq_notify) for installing the SA at wall time ``now`` (default: now): start past
        the persisted limit and reserve one block beyond it, persisted before use (with the first
        use's time, if this is it).  ``again``: the last restart's reservation, unwritten, if no worker
        was handed it since (the caller calls taken() for every one that may have been) and the limit
        has not moved: nothing used a number of it, and it still starts past every number an earlier
        worker had (a left-out tunnel's retries, review revlate7 F1: a block persisted a second, the
        receiver deaf to the peer's numbers below it)."""
        if again and self.unused is not None and self.unused[1] == self.limit:
            return self.unused
        if self.first_use is None:
            self.first_use = time.time() if now is None else now
        start = self.limit
        # from the smallest block again (review revmanual F3): the saved one outside the refills' rate
        # allowance let a worker crashing on purpose burn up to MAX_BLOCK per restart; the rate the
        # next refills see grows it again
        self.block = self.min_block
        self._store(min(start + self.block, self.seq_max), self.block)
        self.last_low, self.last_notify = None, 0
        self.unused = (start, self.limit, self._notify())
        return self.unused

    def taken(self) -> None:
        """The last restart()'s reservation went to a worker, or may have (a request unanswered, a
        worker gone): never given again, as a worker may have sent or accepted numbers of it."""
        self.unused = None

    def mark_expired(self, expired: Expired) -> None:
        """The worker removed the SA at a hard limit: persisted, so no restart installs the key again
        while that limit stands (raises StateError)."""
        self.expired = expired
        self._store(self.limit, self.block)

    def extend(self, now: float, needed: int = 0) -> tuple[int, int]:
        """The SA reached its notify point (or, IN, saw an authenticated number
        `needed` past its limit): persist a further block; (limit, notify).  How far the limit
        moves is bounded whatever the worker says (SEQ_RATE_MAX, SEQ_BURST; an OUT SA can need no
        more than the next number), never below one number, so it never stalls an SA."""
        if self.direction is Direction.OUT:
            needed = min(needed, self.limit + 1)
        notify = self._notify()
        block = self.block
        if self.last_low is not None and notify > self.last_notify:
            rate = (notify - self.last_notify) / max(now - self.last_low, 1e-3)
            block = min(max(_pow2_at_least(rate * TARGET_INTERVAL), self.min_block), MAX_BLOCK)
        if needed > self.limit and self.last_low is not None and now - self.last_low < TARGET_INTERVAL:
            # The SA ran out within a refill period of the last refill: traffic went from idle to
            # bulk and reached each new limit within the refill's round trip.  How far the sender got
            # (the worker's first number past the limit) shows its rate; the notify points show
            # only the numbers the worker had.  Sized on that, the next reservation covers the
            # ramp, instead of growing over several refills that each drop a round trip's packets.
            # Capped (RAMP_GROWTH-fold) because a sender that restarted and jumped ahead at that
            # moment looks the same; a jump after a quiet spell is left to the branch below.
            seen = (needed - self.last_notify) / max(now - self.last_low, 1e-3)
            block = max(block, min(_pow2_at_least(seen * TARGET_INTERVAL), self.block * RAMP_GROWTH, MAX_BLOCK))
        if self.limit < needed <= self.limit + self.block:
            # The SA ran out: packets were dropped while this refill was on its
            # way, so the rate seen understates the demand (TCP backs off after
            # such drops, and a rate measured then keeps the block small: a
            # tunnel that goes from pings to a bulk transfer would crawl).  Grow
            # the block quickly instead; the next refill measures the rate
            # again.  A number a whole block or more past the limit is a sender
            # that jumped ahead (restarted), not a lack of numbers.
            block = max(block, min(self.block * GROWTH_WHEN_SHORT, MAX_BLOCK))
        if self.direction is Direction.IN:
            # what this refill was shown (the first number past the limit, or the notify point reached)
            arrived = max(needed, notify) - self.last_notify
            block = min(block, max(IN_RUNAHEAD * arrived, self.min_block))
        self.last_low, self.last_notify = now, notify
        wanted = min(max(self.limit, needed) + block, self.seq_max)
        before = self.limit
        self._store(self._allowed(now, wanted), block)
        self.allowance -= self.limit - before
        return self.limit, self._notify()

    def _allowed(self, now: float, wanted: int) -> int:
        """The limit extend may persist on its way to ``wanted``: within the allowance, topped up at
        SEQ_RATE_MAX a second up to SEQ_BURST, and at least one number more."""
        if self.allowance_at is not None:
            self.allowance = min(self.allowance + max(now - self.allowance_at, 0.0) * SEQ_RATE_MAX, SEQ_BURST)
        self.allowance_at = now
        return min(wanted, self.limit + max(int(self.allowance), 1))


def _open_dir(st: SeqState, path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise st._unreadable(err.strerror or str(err), path) from err


def _last_direction(raw: bytes) -> object:
    """The direction a (parsed, valid) version 2 file was last written for: "in" or "out"; a file
    without one is taken as "in" (the cautious reading: refused as a sending key)."""
    doc = json.loads(raw)
    return doc.get("direction", "in") if isinstance(doc, dict) else "in"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expired(doc: object) -> Expired | None:
    """A file's ``expired``; raises TypeError for anything but None or {reason: str, limit: int >= 0}."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str) or not _is_int(doc.get("limit")) \
            or doc["limit"] < 0:
        raise TypeError("expired")
    return Expired(doc["reason"], doc["limit"])
