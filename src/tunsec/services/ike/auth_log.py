"""The AUTHENTICATION_FAILED lines (docs/operations.md, "Logs"; contrib/fail2ban/).

A failed authentication is one line that names the peer's address first, then the reason quoted (it
may hold text the peer chose).  Failures of IKE SAs a peer opened are rate-limited (SourceLimiter):
what it held back is reported as one line per source it names (the five most frequent), in the form
of a failure's own line, so that a filter taking one peer per line (fail2ban's) sees every one of
them, however many decoys keep the rate above the limit:
``suppressed: AUTHENTICATION_FAILED from ADDR[PORT]: the peer failed authentication 8 more times (...)``;
and one line for the rest, which names no peer.  Such a line stands for N failures: fail2ban's
maxretry counts lines.

An IPv6 source is tallied under its prefix; its line names one address of it that failed (the first),
never the prefix: a filter bans that address, not a /64 that may be others' too (a hoster's
customers).  The prefix follows, after the match, for an operator who decides to block it.
"""

from __future__ import annotations

import logging
import time

from tunsec.ike.auth_ban import AuthBan
from tunsec.loglimit import Held, Source, SourceLimiter

log = logging.getLogger("tunsec.ike")

FAILED = "the peer failed authentication"
REFUSED = "the peer refused our authentication"
# neither says "the peer failed": the shipped fail2ban filter must not ban for them (review revban F1, F2)
BACKEND = "our back end gave no verdict on the peer's authentication"
DENIED = "the peer authenticated and was refused"
# the Access-Reject after an EAP-MSCHAPv2 Failure request that was logged and counted (FAILED) already
AGAIN = "the back end ended a conversation whose refusal was counted"


def failed(limiter: SourceLimiter, name: str, remote: tuple[str, int], by_peer: bool, reason: str,
           unproven: bool, ban: AuthBan | None = None, *, backend: bool = False, refused: bool = False,
           counted: bool = False, tag: str = "") -> None:
    """Log an AuthFailed of connection ``name`` with the peer at ``remote``; ``unproven``: of an
    IKE SA the peer opened and has not authenticated (anyone can cause it: rate-limited, and counted
    towards ``ban`` only if the peer failed our check of its credentials: not if it refused us, our
    back end gave no verdict (``backend``), it was refused after proving them (``refused``) or this
    refusal was counted already (``counted``): AuthFailed.counts, auth_ban.py).  ``tag``: after
    AUTHENTICATION_FAILED, for failures the shipped fail2ban filter must not take (worker_path.py)."""
    host, port = remote
    side = REFUSED if by_peer else BACKEND if backend else DENIED if refused else AGAIN if counted else FAILED
    if unproven and side is FAILED and ban is not None:
        ban.failed(host, time.monotonic())   # before the rate limit: every failure counts
    held = limiter.admit_from(host, port, side) if unproven else Held(0)
    if held is None:
        return
    report(held, tag)   # those held back came before this one
    # the address where nothing the peer chose can come before it (an operator's or fail2ban's
    # block); the reason may quote the peer's identity: repr'd, it cannot pass for tunsec's text
    log.error("%s: AUTHENTICATION_FAILED%s from %s[%d]: %s (%r)", name, tag, host, port, side, reason,
              extra={"remote": host, "remote_port": port})


def report(held: Held, tag: str = "") -> None:
    """What the limiter held back (a burst over, or the next line passing): a line each."""
    for text, fields in held_lines(held, tag):
        log.error("%s", text, extra=fields)


def held_lines(held: Held, tag: str = "") -> list[tuple[str, dict[str, object]]]:
    """The lines (text, JSON fields) that report ``held``: one per source named, one for the rest."""
    lines = [_source_line(s, tag) for s in held.top]
    if held.rest_lines:
        fields: dict[str, object] = {"suppressed": held.rest_lines, "suppressed_sources": held.rest_sources}
        if held.rest_unknown:
            fields["suppressed_sources_more"] = True
        lines.append((f"AUTHENTICATION_FAILED{tag}: {held.rest_lines} more like it suppressed from {held.others()}",
                      fields))
    return lines


def _source_line(s: Source, tag: str = "") -> tuple[str, dict[str, object]]:
    """One source's failures held back, as the documented filter reads a failure (the address
    before anything else, the count after the match); no text the peer chose."""
    n = f"{s.count} failure{'' if s.count == 1 else 's'}"
    of = f" from {s.prefix}, this address among them" if s.prefix else ""
    # "suppressed: " first: in JSON too a space comes before AUTHENTICATION_FAILED, as the filter wants
    text = (f"suppressed: AUTHENTICATION_FAILED{tag} from {s.address}[{s.port}]: {s.kind} {s.count} more "
            f"time{'' if s.count == 1 else 's'} (this line stands for {n}{of})")
    fields: dict[str, object] = {"remote": s.address, "remote_port": s.port, "suppressed": s.count}
    if s.prefix:
        fields["remote_prefix"] = s.prefix
    return text, fields
