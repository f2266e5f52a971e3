"""Acct-Terminate-Cause (RFC 2866 §5.10): what the Stop of an IKE SA's accounting session
(:mod:`tunsec.radius.accounting`) says ended it.

:func:`cause_of`: strongSwan sends User-Request unless an alert said otherwise: Session-Timeout
for ALERT_IKE_SA_EXPIRED, Lost-Service for ALERT_RETRANSMIT_SEND_TIMEOUT (a request, DPD's
included, unanswered after its retransmissions).
tunsec sends the same three, and tells apart what strongSwan calls User-Request too: Admin-Reset
(deleted here: terminate, a reload), NAS-Request (replaced by a new IKE SA of the client),
NAS-Reboot (shutdown), NAS-Error (accounting_close_on_timeout).
"""

from __future__ import annotations

from enum import IntEnum

from tunsec.ike.events import DownReason


class Cause(IntEnum):
    """Acct-Terminate-Cause (RFC 2866 §5.10), the ones an IKE SA's end maps to."""

    USER_REQUEST = 1  # the client deleted it (strongSwan's default)
    LOST_SERVICE = 3  # the client stopped answering (DPD, retransmissions)
    SESSION_TIMEOUT = 5  # its lifetime ran out
    ADMIN_RESET = 6  # deleted here (tunsec terminate, a reload)
    NAS_ERROR = 9  # no RADIUS server took its Start or Interim-Update (accounting_close_on_timeout)
    NAS_REQUEST = 10  # replaced (unique = replace, a duplicate)
    NAS_REBOOT = 11  # tunsec shuts down


_CAUSES = {
    DownReason.DELETED_BY_PEER: Cause.USER_REQUEST,
    DownReason.DELETED: Cause.ADMIN_RESET,
    DownReason.EXPIRED: Cause.SESSION_TIMEOUT,
    DownReason.PEER_UNREACHABLE: Cause.LOST_SERVICE,
    DownReason.DEAD_PEER: Cause.LOST_SERVICE,
    DownReason.UNANSWERED: Cause.LOST_SERVICE,
    DownReason.REPLACED: Cause.NAS_REQUEST,
    DownReason.DUPLICATE: Cause.NAS_REQUEST,
}


def cause_of(reason: DownReason, shutting_down: bool = False) -> Cause:
    """The Acct-Terminate-Cause of an IKE SA that went down for ``reason``."""
    if shutting_down and reason is DownReason.DELETED:
        return Cause.NAS_REBOOT
    return _CAUSES.get(reason, Cause.USER_REQUEST)   # strongSwan's default
