"""The health of a RADIUS server's port, as the requests sent to it found it, and the order new
requests try the servers in: one model for authentication (the EAP relay, ``auth_port``) and
accounting (``acct_port``); each :class:`~tunsec.radius.client.ServerLink` keeps its port's.

A port is ``up`` when its last request was answered (authentically), ``down`` when it was not
(or could not be sent), ``unknown`` before either. A port that went down is passed by for
DEAD_HOLD seconds: new requests (a new EAP conversation's first Access-Request, a new accounting
record) go to the next server at once, instead of each first waiting out a full retransmission
round there; the requests already sent to it keep their retransmissions, and an answer to one
of them brings it back. After DEAD_HOLD one new request tries it again (it probes it) while the
others still pass it by: an answer makes it a server like the others, silence holds it for
another DEAD_HOLD. With every server down a request still tries them all, the passed-by ones
last, rather than failing at once.

strongSwan (libradius ``radius_config_t.get_preference``, ``eap_radius_create_client``) keeps a
``reachable`` flag per server, the result of its last request, shared by authentication and
accounting. Each request (an EAP conversation, an accounting record) goes to the one server of
highest preference: configured ``preference`` + free sockets + 110 when reachable; an
unreachable one still gets every 8th/32nd/128th request (a count, not a time) and there is no
second server within one request: when the chosen one does not answer, the login fails (and
``eap_radius_handle_timeout`` deletes the IKE SA) or the record is lost. tunsec differs: the
servers are tried in the configured order (a primary and backups, no load sharing, no
``preference`` key) and a request that finds no answer goes on to the next one; a dead port is
probed after a time (DEAD_HOLD), by one request at a time; and authentication and accounting
keep the health of their own port (a server may answer Access-Requests with its accounting off:
logins must not pass it by for that).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
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
        """An authentic answer to one of its requests (any: a late retransmission's counts too)."""
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


def in_order(servers: Sequence[RadiusServer],
             health: Callable[[RadiusServer], ServerHealth]) -> Generator[RadiusServer, None, None]:
    """The servers a new request tries, one after the other: those not passed by in the configured
    order, then the passed-by ones. A down one whose DEAD_HOLD is over and that no other request
    is probing goes with the first: this request probes it (until it moves past it, or the
    generator is closed: close it, e.g. with ``contextlib.closing``, when done)."""
    first: list[tuple[RadiusServer, ServerHealth]] = []
    last: list[tuple[RadiusServer, ServerHealth]] = []
    probe: ServerHealth | None = None
    for server in servers:
        h = health(server)
        if h.down_since is None:
            first.append((server, h))
        elif probe is None and not h.passed_by() and not h.probing:
            probe = h
            probe.probing = True
            first.append((server, h))
        else:
            last.append((server, h))
    try:
        for server, h in first + last:
            try:
                yield server
            finally:
                if h is probe:   # tried (answered or not) or given up: another request may probe it
                    h.probing = False
                    probe = None
    finally:
        if probe is not None:   # the request ended before it got there
            probe.probing = False
