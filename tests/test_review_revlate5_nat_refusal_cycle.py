"""Review revlate5 (2026-12-05), F1 through the IKE service: what bounds one real address's full
IKE_SA_INITs when each of its half-open SAs ends at once.

h/fixcost holds a source that returned its COOKIE to block_threshold for the requests refused after
the proposal selection (cookie_demand.ProvenRefusals); the service's failed-authentication ban
(ike/auth_ban.py, ``auth_failures``) holds a source whose IKE_AUTHs fail our check.  A peer whose
first IKE_AUTH carries N(NO_NATS_ALLOWED) with addresses other than those the request came with is
answered UNEXPECTED_NAT_DETECTED and its half-open SA closed (RFC 4555 §3.9, exchanges/ike_auth.respond,
before any identity or AUTH is looked at): a NegotiationFailed, which counts neither as a failed
authentication nor, being no refusal of an IKE_SA_INIT, towards block_threshold or the COOKIE
thresholds; block_threshold counts the half-open SA only while it is open.  So one address has the
whole IKE_SA_INIT done (the proposal selection, a key pair, the shared secret, the keys) and its
IKE_AUTH decrypted as often as it cares to, one after the other.

A real IkeService over the in-process worker (test_ikeservice_auth_ban's Gateway6), IKE engines as
the peer, wired in memory.  No timing: the work is counted as the gateway's half-open SAs that
closed before authentication (each one an IKE_SA_INIT it took and keyed)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from test_ikeservice_auth_ban import GW6, WRONG, Gateway6
from test_ikeservice_peers import run

from tunsec.ike.auth_ban import AuthBanSettings
from tunsec.ike.constants import NotifyType
from tunsec.ike.events import AuthFailed, NegotiationFailed
from tunsec.ike.exchanges import mobike
from tunsec.ike.message import NotifyPayload

PEER = "2001:db8:66:100::1"
TRIES = 20
FAILURES = 10   # the default auth_failures (tunsec { auth_failures = 10 })


def _no_nats(src: tuple[str, int], dst: tuple[str, int]) -> NotifyPayload:
    data = (ipaddress.ip_address(src[0]).packed + ipaddress.ip_address(dst[0]).packed
            + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big"))
    return NotifyPayload(NotifyType.NO_NATS_ALLOWED, data)


@pytest.fixture
def claims_a_nat(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The peer's IKE_AUTH says it was sent from an address it was not sent from."""
    monkeypatch.setattr(mobike, "announce", lambda st: [_no_nats(("2001:db8:66:100::99", 500), (GW6, 500))])
    yield


async def _cycles(gw: Gateway6, psk: object = None) -> list[list[object]]:
    """TRIES IKE SAs from PEER, one after the other: each one's events at the peer."""
    out = []
    for _ in range(TRIES):
        out.append(await (gw.client(PEER, psk) if psk is not None else gw.client(PEER)))  # type: ignore[arg-type]
    return out


async def _gateway() -> Gateway6:
    gw = Gateway6(out_peer="2001:db8:77:100::1")
    await gw.start()
    gw.service.auth_ban.settings = AuthBanSettings()   # the defaults (Gateway6 bans at the first failure)
    assert gw.service.auth_ban.settings.max == FAILURES
    return gw


def test_half_open_sas_closed_by_unexpected_nat_detected_are_bounded_per_address(claims_a_nat: None) -> None:
    """20 IKE SAs from one address, each closed at its first IKE_AUTH by UNEXPECTED_NAT_DETECTED: the
    gateway should take no more of its IKE_SA_INITs than a source that fails authentication gets
    (auth_failures) or has refused after the selection (block_threshold); on main it takes and keys
    all 20, and would go on."""
    async def go() -> None:
        gw = await _gateway()
        tries = await _cycles(gw)
        refused = [e for events in tries for e in events
                   if isinstance(e, NegotiationFailed) and e.reason == "UNEXPECTED_NAT_DETECTED"]
        assert refused, "the peer's IKE_AUTH was not answered UNEXPECTED_NAT_DETECTED"
        stats = gw.service.endpoint.stats
        taken = stats.half_open_closed
        bound = max(FAILURES, gw.service.endpoint.limits.block_threshold)
        assert taken <= bound, (
            f"{taken} of {TRIES} IKE_SA_INITs from {PEER} taken and keyed, each closed at IKE_AUTH by "
            f"UNEXPECTED_NAT_DETECTED (auth_banned {stats.auth_banned}, block_threshold drops "
            f"{stats.block_threshold}): counted neither as a failed authentication nor towards block_threshold")
    run(go())


def test_half_open_sas_closed_by_a_wrong_psk_are_bounded_by_the_ban() -> None:
    """Guard (passes on main): the same cycle with a wrong PSK is banned at auth_failures, after which
    its IKE_SA_INITs are dropped before anything is kept."""
    async def go() -> None:
        gw = await _gateway()
        tries = await _cycles(gw, WRONG)
        failed = [e for events in tries for e in events if isinstance(e, AuthFailed)]
        assert len(failed) == FAILURES
        stats = gw.service.endpoint.stats
        assert stats.half_open_closed == FAILURES and stats.auth_banned >= TRIES - FAILURES
    run(go())
