"""EAP over RADIUS for the IKE service: one conversation per IKE SA (``auth = eap-radius``).

The engine asks with an ``EapRelayRequest`` (the client's EAP response); :meth:`RadiusRelay.round`
sends it in an Access-Request and turns the server's answer into the engine's ``RelayReply``.
Between rounds a conversation keeps what the server must see again: its State attribute
(echoed, RFC 2865 §5.24) and the server itself (the State means nothing to another one).
A new conversation tries the servers by preference and load (strongSwan's choice), the next
one only if one does not answer, and passes by a server that left a request unanswered in the last DEAD_HOLD
seconds (one conversation probes it after that: :mod:`tunsec.radius.health`), so that with a
dead primary every login does not first wait out a retransmission round there (while the
client's IKE_AUTH retransmissions pile up). A conversation ends with the server's final
answer, or when the engine reports the IKE SA gone (``EapRelayAbandoned`` -> :meth:`abandon`):
nothing stays behind. What an Access-Accept says of the session (Session-Timeout, Class,
Acct-Interim-Interval) goes to the engine in the reply (``RelayReply.accepted``): the IKE SA
carries it to its IkeSaUp, and nothing of it is kept here (review revradius F2: a table here,
shared by every login, could be made to forget one before its IKE SA was up).

Log lines say which user, which server and why; never the secret, the keys or EAP data.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import Any

from tunsec.ike.eap.identity import user_text
from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.events import Accepted, EapRelayRequest
from tunsec.loglimit import LogLimiter, suffix

from .accounting import Accounting
from .client import Busy, NoAnswer, RadiusClient, RadiusStats
from .dae import DaeServer
from .health import ServerHealth, in_order
from .messages import ACCESS_ACCEPT, ACCESS_CHALLENGE, Answer, Station, TooLarge, access_request, eap_room
from .proven import method_name, proven_user, request_method
from .settings import RadiusServer, RadiusSettings

log = logging.getLogger("tunsec.radius")


def _accepted(answer: Answer) -> Accepted | None:
    """What an Access-Accept says of the session, for its IKE SA to carry (None: none of it).  Its
    Class too when accounting is off now: a reload that turns it on echoes it (radius_edge._acct_open)."""
    if answer.session_timeout is None and not answer.classes and answer.interim_interval is None:
        return None
    return Accepted(answer.classes, answer.interim_interval, answer.session_timeout)


def _as(identity: bytes, proven: bytes | None, method: int | None) -> str:
    """Who the Accept made of the client, for the log line, where that is not the EAP identity it gave."""
    if proven is None:
        return f" ({method_name(method)} and no other User-Name in the Access-Accept: the EAP identity is unproven)"
    return f" as user {user_text(proven)}" if proven != identity else ""


@dataclass
class _Conversation:
    server: RadiusServer | None = None  # the one that answered first; the rest of it goes there
    state: bytes | None = None  # the State of its last Access-Challenge
    method: int | None = None  # the EAP method of its last request (what the server ran: proven.py)


class RadiusRelay:
    """The EAP conversations of the IKE SAs; ``clock``: the servers' health's (a test's fake one)."""

    def __init__(self, settings: RadiusSettings, stats: RadiusStats | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.client = RadiusClient(settings, stats, clock)
        self._conversations: dict[Hashable, _Conversation] = {}
        # anyone may start an EAP conversation: with every server dead, a line per client and
        # server would be a flood (the counters keep the numbers, the health says which server)
        self._failover_log = LogLimiter()

    @property
    def stats(self) -> RadiusStats:
        return self.client.stats

    @property
    def conversations(self) -> int:
        return len(self._conversations)

    def status(self, accounting: Accounting | None = None, dae: DaeServer | None = None) -> dict[str, Any]:
        """``radius`` in ``tunsec status``: the counters, what is open now, each server's health
        (``auth``, and ``acct`` with accounting), accounting's counters, Dynamic Authorization's."""
        self.client.count_drops()
        servers: dict[str, dict[str, Any]] = {name: {"auth": h} for name, h in self.client.health().items()}
        out: dict[str, Any] = {**self.stats.as_dict(), "conversations": self.conversations,
                               "outstanding": self.client.outstanding(), "waiting": self.client.waiting(),
                               "parked": self.client.parked(), "servers": servers}
        if accounting is not None:
            for name, h in accounting.health().items():
                servers.setdefault(name, {})["acct"] = h
            accounting.count_drops()
            out["accounting"] = {**accounting.stats.as_dict(), "sessions": accounting.sessions}
        if dae is not None:
            out["dae"] = dae.status()
        return out

    def abandon(self, key: Hashable) -> None:
        self._conversations.pop(key, None)

    def reconfigure(self, settings: RadiusSettings) -> None:
        """A reload: new conversations use the new servers and timers; a round under way, and the
        rest of a conversation under way, finish with the server (secret, address) they began with
        (its link stays open until they end: :mod:`tunsec.radius.links`), as its State means
        nothing to another one."""
        self.settings = settings
        self.client.reconfigure(settings)

    def close(self) -> None:
        self._conversations.clear()
        self.client.close()

    async def round(self, key: Hashable, ev: EapRelayRequest, station: Station) -> RelayReply:
        """One round trip for the IKE SA ``key``; the reply for ``IkeSa.relay_reply``."""
        conv = self._conversations.get(key)
        if ev.first or conv is None:
            conv = self._conversations[key] = _Conversation()
        user = user_text(ev.identity)
        why = "no RADIUS server configured"
        with contextlib.closing(self._servers(conv)) as servers:
            for server in servers:
                if key not in self._conversations:
                    break  # abandoned while we waited for the previous server
                def build(ident: int, server: RadiusServer = server, state: bytes | None = conv.state) -> Any:
                    return access_request(server.secret, ident, ev.identity, ev.eap, state, station)

                try:
                    answer = await self.client.exchange(server, build)
                except (NoAnswer, Busy, TooLarge) as exc:
                    # TooLarge: the engine refuses a client's EAP response this conversation's request
                    # cannot carry (messages.eap_room); one that still does not fit is of our making: ours
                    why = str(exc)
                except OSError as exc:   # no route to it, no address of its family...
                    why = f"cannot send to RADIUS server {server}: {exc.strerror or exc}"
                else:
                    return self._answered(key, conv, server, answer, ev.identity, station)
                if (held := self._failover_log.admit()) is not None:
                    log.warning("RADIUS: user %s from %s: %s%s", user, ev.peer[0], why, suffix(held))
        self._conversations.pop(key, None)
        return RelayReply(RelayOutcome.FAILED, reason=why)

    def _servers(self, conv: _Conversation) -> Generator[RadiusServer, None, None]:
        """A conversation under way stays with its server (its State means nothing to another one),
        whatever its health; a new one tries them all, the passed-by ones last."""
        if conv.server is not None:
            yield conv.server
        else:
            yield from in_order(self.settings.servers, self._health, lambda s: self.client.link(s).under_way)

    def _health(self, server: RadiusServer) -> ServerHealth:
        return self.client.link(server).health

    def _answered(self, key: Hashable, conv: _Conversation, server: RadiusServer, answer: Answer,
                  identity: bytes, station: Station) -> RelayReply:
        said = f": {answer.message!r}" if answer.message else ""
        user = user_text(identity)
        if answer.code == ACCESS_CHALLENGE:
            conv.server, conv.state = server, answer.state
            conv.method = request_method(answer.eap) or conv.method
            # the room of the next request: the engine refuses a longer response as the client's failure
            return RelayReply(RelayOutcome.CHALLENGE, answer.eap, reason=f"RADIUS server {server}",
                              room=eap_room(identity, answer.state, station))
        self._conversations.pop(key, None)
        if answer.code == ACCESS_ACCEPT:
            if answer.user_name_error:
                return RelayReply(RelayOutcome.FAILED, answer.eap, reason=f"RADIUS server {server} accepted it "
                                  f"with {answer.user_name_error}: no user to take the client for")
            groups = answer.groups(self.settings.class_group, self.settings.filter_id)
            member = f", member of {', '.join(repr(g) for g in groups)}" if groups else ""
            proven = proven_user(identity, answer.user_name, conv.method, self.settings.trust_eap_identity)
            log.info("RADIUS server %s accepted user %s%s%s%s", server, user, _as(identity, proven, conv.method),
                     member, said)
            return RelayReply(RelayOutcome.ACCEPT, answer.eap, answer.msk, reason=f"RADIUS server {server}",
                              groups=groups, user=proven, accepted=_accepted(answer))
        return RelayReply(RelayOutcome.REJECT, answer.eap,
                          reason=f"RADIUS server {server} rejected it ({answer.name}{said})")
