"""The peers whose IKE_SA_INIT request came without the non-ESP marker: its answer goes back so.

Where IKE may come marked or not -- port 4500 through the worker, a custom IKE port from a peer port
other than 500 -- an IKE_SA_INIT response goes back the way its request came (review revcsmall F1).
A strongSwan peer marks when neither port is 500 and its receiver takes IKE there only so: one
that starts from its port 4500 (a reauthentication keeps the old IKE SA's ports) marks, whatever
port a NAT shows us, and drops an unmarked answer as ESP; one with ``remote_port = 4500`` sends from
its port 500 unmarked (a NAT may show us another port) and takes only an unmarked answer there, then
floats to 4500.  No rule of the port or the message alone serves both.

Only IKE_SA_INIT responses go back unmarked, and only to the address and port an unmarked request
came from: anyone can send a datagram with a peer's address, and an unauthenticated header must not
make a marking peer's later messages unmarked (it drops them as ESP).  A marked datagram from the
same address and port forgets it.  Nothing is kept beyond what the same request on port 500 costs:
at most ``limit`` entries (the oldest goes first: a spoofer filling it costs a real peer one answer,
which it retransmits), each for the half-open timeout, as long as the half-open SA the request
made may be answered."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from tunsec.ike.constants import HeaderFlag, is_ike_sa_init

UnmarkedKey = tuple[int, str, int]   # our port, the peer's address, its port
UNMARKED_PEERS_MAX = 1024   # about the engine's half_open_limit (1000 by default)
DEFAULT_TTL = 30.0          # the default half_open_timeout (tunsec { half_open_timeout })


class UnmarkedPeers:
    """Who sent an IKE_SA_INIT request unmarked, until its half-open SA is over (``ttl``), by
    (our port, address, port), the ``limit`` most recent."""

    def __init__(self, ttl: float = DEFAULT_TTL, limit: int = UNMARKED_PEERS_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        # key -> when it is forgotten; in the order noted (so by deadline while ttl stays)
        self._until: collections.OrderedDict[UnmarkedKey, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def came(self, key: UnmarkedKey, data: bytes, unmarked: bool) -> None:
        """An IKE message from key: an unmarked IKE_SA_INIT request is noted, anything marked forgets
        the key; anything else unmarked (no IKE_SA_INIT request) changes nothing."""
        if not unmarked:
            if self._until:   # one dict look-up per marked message, none while nobody is noted
                self._until.pop(key, None)
        elif is_ike_sa_init(data, 0):
            self._note(key)

    def _note(self, key: UnmarkedKey) -> None:
        now = self.clock()
        until = self._until
        until[key] = now + self.ttl
        until.move_to_end(key)
        while until and (len(until) > self.limit or next(iter(until.values())) <= now):
            until.popitem(last=False)

    def answers_unmarked(self, key: UnmarkedKey, data: bytes) -> bool:
        """Whether ``data`` to key leaves without the marker: an IKE_SA_INIT response to a request
        that came unmarked from there, within its half-open time."""
        if not self._until or not is_ike_sa_init(data, HeaderFlag.RESPONSE):
            return False
        deadline = self._until.get(key)
        if deadline is None:
            return False
        if deadline <= self.clock():
            del self._until[key]
            return False
        return True
