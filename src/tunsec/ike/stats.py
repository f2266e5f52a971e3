"""The IKE engine's drop counters (``tunsec status``: ike_drops and ike_refused; metrics:
tunsec_ike_requests_dropped_total and tunsec_ike_authenticated_refused_total).

A module of its own because both the endpoint and its IKE SAs count into the one instance the
endpoint holds (sa.py cannot import endpoint.py, which imports it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EndpointStats:
    """Datagrams the endpoint dropped or answered without creating state, and those its IKE SAs
    dropped unanswered (one instance per endpoint, shared by its IKE SAs); the last few are
    authenticated peers' requests refused (AUTHENTICATED_REFUSALS), shown apart from the rest,
    which anyone can cause."""

    too_big: int = 0  # longer than MAX_IKE_MESSAGE (strongSwan's charon.max_packet): dropped unparsed
    malformed: int = 0  # undecodable (too many payloads too), or an IKE_SA_INIT request that is not well-formed
    unknown_spi: int = 0  # not an IKE_SA_INIT request, and no SA of ours has its SPI
    cookies_sent: int = 0  # stateless COOKIE responses
    cookie_refused: int = 0  # a COOKIE was needed and the one sent (if any) was not valid
    half_open_limit: int = 0  # requests dropped because half_open_limit SAs are half-open
    # requests dropped: their source address holds block_threshold half-open SAs (with the requests it had
    # refused after work while it brought COOKIEs, cookie_demand.ProvenRefusals)
    block_threshold: int = 0
    no_connection: int = 0  # no connection accepts IKE from the source address
    half_open_closed: int = 0  # half-open SAs that timed out or failed before authentication
    redirects_sent: int = 0  # stateless REDIRECT responses (RFC 5685)
    # IKE_SA_INIT requests answered with an error after work (no proposal, a bad KE), no state kept:
    # counted towards the COOKIE thresholds for a while (cookie_demand.py)
    init_refused: int = 0
    late_init_retransmits: int = 0  # an IKE_SA_INIT request again after its IKE SA was authenticated
    # a request with the message ID last answered that is no byte-identical copy of the request
    # answered (RFC 7296 §2.1), or a first fragment of it that fails verification: not answered
    retransmit_not_identical: int = 0
    retransmit_limit: int = 0  # a genuine retransmission past MAX_RESENDS of one response: not answered
    # before the peer is authenticated: a request from an IP other than the IKE_SA_INIT exchange's, or
    # a copy of one from elsewhere than where its answer went: not answered (sa_responder.foreign)
    preauth_elsewhere: int = 0
    # authenticated requests refused or cut short (sa_successor.MAX_UNDELETED, informational.py,
    # create_child_sa.py): AUTHENTICATED_REFUSALS
    ike_rekeys_refused: int = 0  # an IKE SA rekey while MAX_UNDELETED predecessors wait for their DELETE
    delete_spis_ignored: int = 0  # SPIs of a Delete payload past what the IKE SA could hold, not looked at
    # MOBIKE return routability checks (RFC 4555 §3.5) the new address never answered: the IKE SA went
    # back to the address the Child SAs stayed at instead of closing (exchanges/mobike.py)
    mobike_checks_failed: int = 0
    # an authenticated request from outside remote_addrs, or of the other address family with Child
    # SAs: answered, the IKE SA not moved there (sa_responder._acceptable)
    floats_refused: int = 0
    # an IKE_AUTH refused (AUTHENTICATION_FAILED) because the peer's identity held max_ike_sas IKE SAs
    # of the connection (ike_sa_cap.py)
    ike_sa_limit: int = 0
    # the peer's CREATE_CHILD_SAs answered TEMPORARY_FAILURE for now (create_child_sa._for_now): its Ni a
    # nonce of ours while our request is out, SHOWN_NONCES of its Child SAs answered meanwhile, or a
    # KEYMAT seed ([g^ir |] Ni | Nr) another Child SA of the IKE SA had
    child_sas_refused_for_now: int = 0
    # IKE_SA_INIT requests dropped because the endpoint held ikesa_limit IKE SAs (charon.ikesa_limit)
    ikesa_limit: int = 0
    # IKE_SA_INIT requests dropped unparsed: their source failed authentication auth_failures times
    # (ike/auth_ban.py), before the SPI pool or the engine keeps anything of them
    auth_banned: int = 0
    # IKE_SA_INIT requests from a link-local IPv6 source (fe80::/10): dropped, as the worker's port 4500
    # cannot name their link (ike/link_local.py)
    link_local: int = 0
    # IKE_SA_INIT requests dropped unanswered while tunsec stops (services/ike/stopping.py)
    stopping: int = 0


# The fields above that count what authenticated peers asked for and were refused: an operator
# reads them as a misbehaving (or misconfigured) known peer, the rest as strangers' noise.
AUTHENTICATED_REFUSALS = ("ike_rekeys_refused", "delete_spis_ignored", "mobike_checks_failed", "floats_refused",
                          "ike_sa_limit", "child_sas_refused_for_now")
