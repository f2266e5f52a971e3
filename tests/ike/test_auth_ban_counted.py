"""Which failed authentications count towards a source's ban (review revban F1, F2): only the peer failing
our check of its credentials.  Neither our RADIUS back end giving no verdict (an outage; all identifiers
busy, which unauthenticated EAP conversations can fill) nor a peer refused AFTER proving its credentials
(``unique = keep``, no required group) may ban its address.

The service's dispatch (IkeService._on_event, case AuthFailed) is reproduced: the gateway's AuthFailed
events go to auth_log.failed with unproven = not sa.is_initiator (the SA is not up in these runs)."""

from __future__ import annotations

import logging

import pytest
from test_engine_eap_relay import A, B, FreeRadiusLikeBackend, client, gateway, relay, setup
from test_engine_more import NOW as NOW_MORE
from test_engine_more import C, _keep_gateway, cfg

from tunsec.ike.auth_ban import AuthBan, AuthBanSettings
from tunsec.ike.eap.relay import RelayOutcome, RelayReply
from tunsec.ike.endpoint import IkeEndpoint
from tunsec.ike.events import AuthFailed
from tunsec.loglimit import SourceLimiter
from tunsec.services.ike import auth_log

INIT = bytes(16) + bytes([33, 0x20, 34, 0x08]) + bytes(8)   # an IKE_SA_INIT request's header


def _dispatch(events: list, table: AuthBan) -> list[AuthFailed]:   # type: ignore[type-arg]
    """What IkeService does with the gateway's AuthFailed events; those there were."""
    limiter = SourceLimiter(flush_to=auth_log.report)
    seen = []
    for sa, ev in events:
        if isinstance(ev, AuthFailed):
            seen.append(ev)
            auth_log.failed(limiter, ev.name, sa.remote_addr, ev.by_peer, ev.reason, not sa.is_initiator, table,
                            backend=ev.backend, refused=ev.refused, counted=ev.counted)
    return seen


@pytest.mark.parametrize("reason", ["no answer from RADIUS server r1", "no RADIUS server configured",
                                    "RADIUS round failed (CancelledError)"])
def test_a_radius_outage_is_not_counted_as_the_clients_failed_authentication(
        reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """F1: with auth_failures = 1, one round of a RADIUS outage banned the client."""
    table = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0))
    net, _, b = setup(client(), gateway())
    events = relay(net, b, lambda ev: RelayReply(RelayOutcome.FAILED, reason=reason), until=20.0)
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        seen = _dispatch(events, table)
    assert [ev.backend for ev in seen] == [True]
    assert not table.refuses(INIT, A, net.now + 1.0), "A banned for our RADIUS server's silence"
    # nor does the line read as the peer's failure (the shipped fail2ban filter's "the peer failed")
    assert auth_log.BACKEND in caplog.text and auth_log.FAILED not in caplog.text


def test_an_access_reject_is_counted() -> None:
    """What must still ban: the RADIUS server rejecting the client's credentials."""
    table = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0))
    net, _, b = setup(client(), gateway())
    events = relay(net, b, lambda ev: RelayReply(RelayOutcome.REJECT, reason="RADIUS server r1 rejected it"),
                   until=20.0)
    assert [ev.counts for ev in _dispatch(events, table)] == [True]
    assert table.refuses(INIT, A, net.now + 1.0)


def test_a_peer_with_right_credentials_refused_as_a_duplicate_is_not_counted() -> None:
    """F2: unique = keep refuses a second IKE SA of an identity after its AUTH checked out."""
    table = AuthBan(AuthBanSettings(max=1, window=600.0, ban=600.0))
    net, _ = _keep_gateway()
    c = net.add(C, IkeEndpoint([cfg(True, initial_contact=False, local_addr=C)], wall_clock=lambda: NOW_MORE))
    c.initiate("conn", "net", net.now)
    start = len(net.events[B])
    net.run()
    assert [ev.refused for ev in _dispatch(net.events[B][start:], table)] == [True]
    assert not table.refuses(INIT, C, net.now + 1.0), "C banned though its PSK was right"


def test_a_refusal_in_an_access_challenge_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """FreeRADIUS's EAP-MSCHAPv2 verdict comes in an Access-Challenge (a Failure request), the Access-Reject
    after the client's acknowledgement: one failure towards the ban, one line the fail2ban filter reads
    (the Reject's line says its refusal was counted), with auth_failures = 2 not yet a ban."""
    table = AuthBan(AuthBanSettings(max=2, window=600.0, ban=600.0))
    net, _, b = setup(client(password=b"wrong-pw"), gateway())
    events = relay(net, b, FreeRadiusLikeBackend(), until=60.0)
    with caplog.at_level(logging.ERROR, logger="tunsec.ike"):
        seen = _dispatch(events, table)
    assert [(ev.counts, ev.counted) for ev in seen] == [(True, False), (False, True)]
    assert not table.refuses(INIT, A, net.now + 1.0), "one wrong password counted twice"
    assert caplog.text.count(auth_log.FAILED) == 1 and auth_log.AGAIN in caplog.text
