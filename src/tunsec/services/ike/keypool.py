"""Refilling the pool of ready key pairs (tunsec.ike.dh_pool) from the event loop.

At start the pool is filled to its targets before the IKE sockets are read (an idle
gateway's pool is full when a reconnect storm comes).  Afterwards it is refilled in
steps of a few key pairs, one step per loop turn, and only when calm: no key pair taken
for dh_pool.CALM, and no IKE SA being set up (``busy``: half-open SAs waiting for their
IKE_AUTH, Child SA installs and other worker requests in flight).  While a burst lasts
it has the CPU, and the key pairs it needs beyond the pool are generated on the spot, as
without a pool.  Key pairs reaching their maximum age are replaced the same way.  (A
flood of half-open SAs holds the refill off until they time out: the gateway then
generates key pairs as it would without a pool.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from tunsec.ike.config import IkeConfig
from tunsec.ike.dh_pool import STEP_COST, KeyPairPool, group_name, group_target

log = logging.getLogger("tunsec.ike")

CallLater = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


def pool_groups(configs: Iterable[IkeConfig]) -> list[int]:
    """The groups worth pooling, first seen first: of each connection the first key exchange group
    of its IKE proposals (what our initiator sends in IKE_SA_INIT, and what a peer configured alike
    sends first).  The other groups a proposal accepts are generated when a peer picks them (counted
    as unpooled); so are the children's PFS groups: only IKE_SA_INIT takes from the pool
    (dh.init_key_exchange)."""
    out: dict[int, None] = {}
    for cfg in configs:
        first = next((p.dh_groups[0] for p in cfg.proposals if p.dh_groups), None)
        if first is not None:
            out[first] = None
    return list(out)


class KeyPoolRefill:
    """Drives one KeyPairPool (dh.POOL in the daemon) from the loop; ``size`` key pairs per group
    (MODP fewer: dh_pool.group_target), 0: no pool (the pool is left alone)."""

    def __init__(self, pool: KeyPairPool, size: int, call_later: CallLater | None = None,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self.pool = pool
        self.size = size
        self._busy = busy   # IKE SAs are being set up: no refill (see the module docstring)
        self._call_later = call_later or (lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn))
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0   # when _handle fires
        self._running = False

    def start(self, configs: Iterable[IkeConfig]) -> None:
        """Fill the pool to its targets now (CPU spent before any IKE is answered) and keep it filled."""
        if not self.size:
            return
        self._running = True
        self.configure(configs)
        cpu = time.process_time()
        made = self.pool.refill(self.pool.now())
        if made:
            log.info("key exchange pool: %s key pairs ready (%.0f ms CPU)", ", ".join(
                f"{n} {group_name(g)}" for g, n in self.pool.sizes().items()), 1000 * (time.process_time() - cpu))
        self.pool.on_take = self._taken
        self._arm(self.pool.now())

    def reconfigure(self, configs: Iterable[IkeConfig]) -> None:
        """A reload: the groups of the new connections (others dropped now, new ones filled when calm)."""
        if self._running:
            self.configure(configs)
            self._arm(self.pool.now())

    def configure(self, configs: Iterable[IkeConfig]) -> None:
        self.pool.configure({g: group_target(g, self.size) for g in pool_groups(configs)})

    def stop(self) -> None:
        """Drop every pooled key pair (shutdown)."""
        if not self._running:
            return
        self._running = False
        self._cancel()
        self.pool.on_take = None
        self.pool.clear()

    def _taken(self) -> None:
        """A key pair was asked for: the next step waits for calm (re-armed once per burst, not per take)."""
        at = self.pool.calm_at()
        if self._handle is None or self._at > at:
            self._arm_at(at, self.pool.last_take)

    def _step(self) -> None:
        self._handle = None
        now = self.pool.now()
        if not self.pool.is_calm(now):
            self._arm_at(self.pool.calm_at(), now)
            return
        if self._busy():   # look again in a while (set-ups last a few round trips)
            self._arm_at(now + self.pool.calm, now)
            return
        self.pool.refill(now, STEP_COST)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """The next step: at once (the next loop turn) while key pairs are missing, else when the
        oldest expires; a take re-arms it for the calm after the take."""
        if self.pool.missing(now) > 0:
            self._arm_at(max(now, self.pool.calm_at()), now)
        elif (expiry := self.pool.next_expiry()) is not None:
            self._arm_at(expiry, now)
        else:
            self._cancel()

    def _arm_at(self, at: float, now: float) -> None:
        self._cancel()
        self._at = at
        try:
            self._handle = self._call_later(max(0.0, at - now), self._step)
        except RuntimeError:   # a key pair taken outside the service's loop (a tool, a test): no refill
            self._handle = None

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
