"""Ready ephemeral key pairs: generated while the gateway is calm, taken at IKE_SA_INIT.

A reconnect storm (after a restart or an outage) meets a gateway that was idle: if its
key pairs were generated beforehand, the burst pays only for the exchange.  This module
is the pool itself, plain data with an injected clock; :mod:`tunsec.ike.dh`'s
``init_key_exchange`` (IKE_SA_INIT only) takes from the process's pool (``dh.POOL``) and
generates a key pair only when the pool has none, and the IKE service
(services/ike/keypool.py) refills it from the event loop when no key pair has been taken
for a while.  Rekeys (CREATE_CHILD_SA with PFS, IKE rekeys) never take from it: an
authenticated peer decides how often it rekeys, and its rekeys would keep the pool empty
for the new clients it is there for (review revpeerdos R2).

Rules a security product needs:

- a pooled key pair is handed out once: popped from the pool, never copied, never put
  back, so no two SAs ever share an ephemeral key;
- a pooled key pair is at most ``max_age`` old when it is handed out (older ones are
  dropped unused): see MAX_AGE;
- only the configured groups are pooled (``configure``); a reload drops the others;
- the pool lives in the control process only: the worker and updown scripts are exec'd
  (no copy of its memory survives into them), and the service drops it at shutdown.
  A key pair dropped unused is freed by OpenSSL, which clears private keys on free.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import DhGroup

if TYPE_CHECKING:
    from .dh import KeyExchange

# A pooled private key is a liability only to an attacker who reads the control process's
# memory (a core dump, swap, a compromise) and records traffic: each key they find there
# opens the SA that would have used it.  Such an attacker finds the keys of every live SA
# in the same memory (IKE SAs live for hours), so a pooled key adds little while it is
# young; but nothing is gained by keeping one longer than the calm period it was made in.
# Five minutes: an idle gateway replaces its X25519 pool (256 keys, ~20 ms CPU) a dozen
# times an hour, and a key exposed by a memory snapshot is useless five minutes later.
MAX_AGE = 300.0
# Refill only once no key pair has been taken for this long: a burst of IKE_SA_INITs takes
# one every few milliseconds (at 100 clients far more often), so the refill never competes
# with it, and a short pause is enough for the gateway to get ahead again.
CALM = 0.05
# What one refill step may generate, in units of about one X25519 key generation (~70 us):
# a step is one loop turn, and IKE arriving meanwhile waits at most this long.
STEP_COST = 8
# MODP key generation is a modular exponentiation (1.3 ms for MODP 3072, 2.6 ms for 4096,
# 20-40 X25519s) and its objects are larger: its pool is capped at this many key pairs
# (~0.2 s CPU to fill for MODP 4096).
MODP_MAX = 64

# generation cost of a key pair in X25519 units (measured with cryptography 48 / OpenSSL 3)
_COST: dict[int, int] = {
    DhGroup.CURVE25519: 1, DhGroup.ECP_256: 1, DhGroup.CURVE448: 5, DhGroup.ECP_384: 5, DhGroup.ECP_521: 4,
    DhGroup.MODP_2048: 7, DhGroup.MODP_3072: 18, DhGroup.MODP_4096: 36,
}
_MODP = frozenset({DhGroup.MODP_2048, DhGroup.MODP_3072, DhGroup.MODP_4096})


def group_target(group: int, size: int) -> int:
    """How many key pairs of ``group`` a pool of ``size`` per group keeps (MODP: at most MODP_MAX)."""
    return min(size, MODP_MAX) if group in _MODP else size


def group_name(group: int) -> str:
    """CURVE25519, MODP_3072...: for status and the log."""
    try:
        return DhGroup(group).name
    except ValueError:
        return str(group)


@dataclass
class KePoolStats:
    """What ``tunsec status`` shows of the pool (ke_pool) and the metrics count."""

    hits: int = 0       # key pairs handed out ready
    misses: int = 0     # a pooled group was empty: the key pair was generated on the spot
    unpooled: int = 0   # a group the pool does not keep: generated on the spot
    expired: int = 0    # key pairs dropped unused at max_age


class KeyPairPool:
    """Ready key pairs by group; see the module docstring.  Empty and off until configured."""

    def __init__(self, generate: Callable[[int], KeyExchange], clock: Callable[[], float] = time.monotonic,
                 max_age: float = MAX_AGE, calm: float = CALM) -> None:
        self._generate = generate
        self._clock = clock
        self.max_age = max_age
        self.calm = calm
        self.targets: dict[int, int] = {}
        # per group, oldest first: (when generated, key pair)
        self._keys: dict[int, collections.deque[tuple[float, KeyExchange]]] = {}
        self.stats = KePoolStats()
        self.last_take = -math.inf   # when a key pair was last asked for (pooled group or not)
        self.on_take: Callable[[], None] | None = None   # the refill's alarm (services/ike/keypool.py)

    def configure(self, targets: Mapping[int, int]) -> None:
        """Keep ``targets[group]`` key pairs of each group; others are dropped at once (a reload)."""
        self.targets = {g: n for g, n in targets.items() if n > 0}
        for group in list(self._keys):
            keys = self._keys[group]
            want = self.targets.get(group, 0)
            while len(keys) > want:
                keys.pop()   # the youngest: the others are handed out first anyway
            if not want:
                del self._keys[group]
        for group in self.targets:
            self._keys.setdefault(group, collections.deque())

    def take(self, group: int) -> KeyExchange | None:
        """A ready key pair of ``group``, removed from the pool, or None (the caller generates one)."""
        keys = self._keys.get(group)
        if keys is None:
            if self.targets:
                self.stats.unpooled += 1
                self._taken()
            return None
        now = self._taken()
        while keys:
            born, ke = keys.popleft()   # the oldest first: fewer expire unused
            if now - born < self.max_age:
                self.stats.hits += 1
                return ke
            self.stats.expired += 1
        self.stats.misses += 1
        return None

    def _taken(self) -> float:
        self.last_take = now = self._clock()
        if self.on_take is not None:
            self.on_take()
        return now

    # --- refilling (the service's loop calls these) ----------------------------------------------
    def now(self) -> float:
        return self._clock()

    def is_calm(self, now: float) -> bool:
        return now >= self.calm_at()

    def calm_at(self) -> float:
        """When the pool will be calm if nothing is taken meanwhile."""
        return self.last_take + self.calm

    def missing(self, now: float) -> int:
        """Key pairs to generate to reach the targets, counting those too old as gone."""
        return sum(target - self._fresh(self._keys.get(g, ()), now) for g, target in self.targets.items())

    def _fresh(self, keys: Collection[tuple[float, KeyExchange]], now: float) -> int:
        """How many of ``keys`` (oldest first) are younger than max_age: all but the old ones in
        front (the refill asks after each step: a look at the front, not a walk through the pool)."""
        fresh = len(keys)
        for born, _ in keys:
            if now - born < self.max_age:
                break
            fresh -= 1
        return fresh

    def next_expiry(self) -> float | None:
        """When the oldest pooled key pair reaches max_age (None: the pool is empty)."""
        oldest = [keys[0][0] for keys in self._keys.values() if keys]
        return min(oldest) + self.max_age if oldest else None

    def refill(self, now: float, budget: float = math.inf) -> int:
        """Drop the key pairs past max_age and generate up to the targets, at most ``budget`` cost
        units (about one X25519 key generation each; at least one key pair per call); how many it made."""
        for keys in self._keys.values():
            while keys and now - keys[0][0] >= self.max_age:
                keys.popleft()
                self.stats.expired += 1
        made = 0
        spent = 0
        for group, target in self.targets.items():
            keys = self._keys[group]
            cost = _COST.get(group, 1)
            while len(keys) < target and (made == 0 or spent + cost <= budget):
                keys.append((now, self._generate(group)))
                made += 1
                spent += cost
        return made

    def clear(self) -> None:
        """Drop every key pair and stop pooling (the service is shutting down)."""
        self.configure({})

    def size(self, group: int) -> int:
        return len(self._keys.get(group, ()))

    def sizes(self) -> dict[int, int]:
        return {g: len(keys) for g, keys in self._keys.items()}
