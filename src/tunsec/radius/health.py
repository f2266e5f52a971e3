"""The health of a RADIUS server's port, as the requests sent to it found it, and the order new
requests try the servers in: one model for authentication (the EAP relay, ``auth_port``) and
accounting (``acct_port``); each :class:`~tunsec.radius.client.ServerLink` keeps its port's.

A port is ``up`` when its last request was answered (authentically), ``down`` when it was not
(or could not be sent), ``unknown`` before either. A port that went down is passed by for
DEAD_HOLD seconds: new requests (a new EAP conversation's first Access-Request, a new accounting
record) go to the next server at once, instead of each first waiting out a full retransmission
round there; the requests already sent to it keep their retransmissions, and an answer to one
of them brings it back (one that comes after its request was given up does not: it came too
late for what asked, see ServerHealth.answered). After DEAD_HOLD one new request tries it
again (it probes it) while the others still pass it by: an answer makes it a server like the
others, silence holds it for another DEAD_HOLD. With every server down a request still tries
them all, the passed-by ones last, rather than failing at once.

Which server a new request tries first is strongSwan's choice (libradius
``radius_config_t.get_preference``, ``eap_radius_create_client``): the highest score, where a
server scores its configured ``preference``, plus 0..100 for the share of its ``sockets`` free
(requests of this port under way, at most ``sockets`` counted, as strongSwan's sockets carry one
request each), plus 110 unless it is down. So a higher preference wins while its server answers,
and two of equal preference share the load: a request goes to the one with fewer requests under
way. Beyond ``sockets`` under way the score says no more (nothing free): tunsec's sockets carry
256 requests each (tunsec.radius.client), so of equal scores the one with the smaller share of
its identifiers (``sockets`` x 256) in use goes first, and the load stays shared at any load;
then the one written first (strongSwan tosses a coin): one at a time, the first-written server
of the highest preference takes them all, a primary and its backups as before ``preference``
existed. A server whose every identifier is in use (a request would wait there) goes after those
that have one free, whatever its score: the wait is for when none has.

tunsec differs from strongSwan in what follows the choice: a request that finds no answer goes on
to the next server by score (strongSwan has one server per request: the login fails, the record
is lost); a down server is passed by for DEAD_HOLD seconds, then probed by one request that
tries it first, as if it were up (strongSwan lets an unreachable server win every 8th/32nd/128th
request, a count, not a time); a request waits for an identifier of its server a bounded time,
in a bounded queue (strongSwan waits for a free socket without bound); and authentication
and accounting keep the health of their own port (a server may answer Access-Requests with its
accounting off: logins must not pass it by for that).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from fractions import Fraction
from typing import Any

from tunsec.loglimit import LogLimiter, suffix

from .settings import RadiusServer

log = logging.getLogger("tunsec.radius")

# seconds a port whose request went unanswered is passed by (see the module docstring); the
# default retransmission round (2 s, x1.4, 4 retransmissions) lasts about 18 s
DEAD_HOLD = 30.0


class ServerHealth:
    """One server port: its last answer, the requests in a row it left unanswered, whether new
    requests pass it by now and whether one is probing it. ``what``: the requests, for the log."""

    def __init__(self, label: str, endpoint: str, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label   # the server's name and address:port, in log lines
        self.endpoint = endpoint
        self.what = what
        self._clock = clock
        self.last_answer: float | None = None   # clock time of its last authentic answer
        self.unanswered = 0   # requests in a row it left unanswered (0 once one is answered)
        self.down_since: float | None = None   # when it last left one unanswered, while down
        self.probing = False   # a new request is trying it again after its DEAD_HOLD
        # a server that answers one request in two would go up and down once a round: bounded
        self._log = LogLimiter()

    @property
    def state(self) -> str:
        return "down" if self.unanswered else "up" if self.last_answer is not None else "unknown"

    def passed_by(self) -> bool:
        """Whether new requests go past it now: down, DEAD_HOLD not over yet."""
        return self.down_since is not None and self._clock() - self.down_since < DEAD_HOLD

    def answered(self) -> None:
        """An authentic answer to one of its requests still under way (to any of its retransmissions).
        Not one to a request already given up (ServerLink.received counts it ``late``): the server
        is alive, but it did not answer in the time a login (or a record) waits, and new requests
        sent to it again would each wait out a round there before the next server (what DEAD_HOLD
        spares them); the probe after DEAD_HOLD finds out whether it answers in time again."""
        if self.unanswered and (held := self._log.admit()) is not None:
            log.info("RADIUS server %s answers %s again%s", self.label, self.what, suffix(held))
        self.last_answer, self.unanswered, self.down_since = self._clock(), 0, None

    def missed(self) -> None:
        """A request that went unanswered after its retransmissions, or could not be sent."""
        if not self.unanswered and (held := self._log.admit()) is not None:
            log.warning("RADIUS server %s does not answer %s: new ones try the other servers first for %g s%s",
                        self.label, self.what, DEAD_HOLD, suffix(held))
        self.unanswered += 1
        self.down_since = self._clock()

    def status(self) -> dict[str, Any]:
        """For ``tunsec status`` (``radius.servers.NAME.auth``/``.acct``)."""
        ago = None if self.last_answer is None else round(self._clock() - self.last_answer, 1)
        return {"address": self.endpoint, "state": self.state, "unanswered_in_row": self.unanswered,
                "last_answer_seconds_ago": ago, "passed_by": self.passed_by()}


def score(server: RadiusServer, under_way: int, up: bool) -> int:
    """strongSwan's preference of a server for the next request (see the module docstring)."""
    free = max(0, server.sockets - under_way)
    return server.preference + free * 100 // server.sockets + (110 if up else 0)


def _rank(server: RadiusServer, under_way: int, up: bool, n: int) -> tuple[bool, int, Fraction, int]:
    """Sort key of a server in its group (see the module docstring): one with an identifier free
    first, then the highest score, the smallest share of its identifiers in use, the first written."""
    return (under_way >= server.capacity, -score(server, under_way, up), Fraction(under_way, server.capacity), n)


def in_order(servers: Sequence[RadiusServer], health: Callable[[RadiusServer], ServerHealth],
             load: Callable[[RadiusServer], int] = lambda _: 0) -> Generator[RadiusServer, None, None]:
    """The servers a new request tries, one after the other: those not passed by, by :func:`_rank`
    (highest :func:`score` first; ``load``: a server's requests under way), then the passed-by
    ones the same way. A down one whose DEAD_HOLD is over and that no other request is probing
    scores as if up: this request probes it (until it moves past it, or the generator is closed:
    close it, e.g. with ``contextlib.closing``, when done)."""
    first: list[tuple[tuple[bool, int, Fraction, int], RadiusServer, ServerHealth]] = []
    last: list[tuple[tuple[bool, int, Fraction, int], RadiusServer, ServerHealth]] = []
    probe: ServerHealth | None = None
    for n, server in enumerate(servers):
        h = health(server)
        if h.down_since is None:
            first.append((_rank(server, load(server), True, n), server, h))
        elif probe is None and not h.passed_by() and not h.probing:
            probe = h
            probe.probing = True
            first.append((_rank(server, load(server), True, n), server, h))
        else:
            last.append((_rank(server, load(server), False, n), server, h))
    try:
        for _, server, h in sorted(first, key=lambda e: e[0]) + sorted(last, key=lambda e: e[0]):
            try:
                yield server
            finally:
                if h is probe:   # tried (answered or not) or given up: another request may probe it
                    h.probing = False
                    probe = None
    finally:
        if probe is not None:   # the request ended before it got there
            probe.probing = False
