"""TsClaims.yielding (review revwiden F1): what a widening took back into our full tunnel gives way to
another IKE peer whose selectors meet our claim only there, not beyond it, and not to a manual tunnel a
reload adds (its claim would start no narrowing of ours: services/manual_claims.py held_by_ike)."""

from __future__ import annotations

from types import SimpleNamespace

from tunsec.ike.identity import Identity
from tunsec.policy.claims import Claim, Peer, TsClaims
from tunsec.policy.held import Held
from tunsec.policy.selector import Ts
from tunsec.services.manual_claims import ManualClaims

T = Ts.parse
LAN = (T("10.1.0.0/16"),)
FULL = Peer(Identity.parse("full.example"), "psk up")
SITE = Peer(Identity.parse("site.example"), "psk site")
TAKEN = Held.of((int(t.start), int(t.end), t) for t in (T("10.8.0.0/16"),))


def _claims() -> TsClaims:
    claims = TsClaims()
    claims.add(1, "up", FULL, (T("0.0.0.0/0"),), LAN, by_name=True)   # widened: 10.8.0.0/16 taken back

    def yields(claim: Claim) -> Held | None:
        return TAKEN if claim.handle == 1 else None
    claims.yielding(yields)
    return claims


def test_another_peer_within_what_was_taken_back_overlaps_nothing() -> None:
    claims = _claims()
    assert claims.overlaps(SITE, (T("10.8.0.0/16"),), LAN, by_name=True) == []
    assert claims.overlaps(SITE, (T("10.8.5.0/24[tcp/22]"),), LAN, by_name=True) == []


def test_beyond_what_was_taken_back_it_overlaps_as_before() -> None:
    claims = _claims()
    found = claims.overlaps(SITE, (T("10.8.0.0/15"),), LAN, by_name=True)
    assert [(c.handle, common) for c, common in found] == [(1, T("10.8.0.0/15"))]
    found = claims.overlaps(SITE, (T("10.9.0.0/16"),), LAN, by_name=True)
    assert [(c.handle, common) for c, common in found] == [(1, T("10.9.0.0/16"))]


def test_a_manual_tunnel_a_reload_adds_there_is_refused_still() -> None:
    claims = _claims()
    assert len(claims.overlaps(SITE, (T("10.8.1.0/24"),), LAN, yielded=False)) == 1
    tunnel = SimpleNamespace(name="legacy", file="tunsec.conf", line=9, remote_ts=(T("10.8.1.0/24"),), local_ts=LAN)
    (why,) = ManualClaims(claims).held_by_ike([tunnel])  # type: ignore[list-item]
    assert "manual tunnel legacy" in why and "full.example" in why


def test_a_rekey_of_the_yielding_claim_overlaps_nothing_where_it_yields() -> None:
    """Review revwiden2 F2: the site admitted into what was taken back; the full tunnel's peer rekeys the
    widened Child SA (or a worker restart does): what our own claim yields is no overlap for the rekey,
    beyond it another's claim is; a new proposal (no rekey) still leaves the site out."""
    claims = _claims()
    claims.add(2, "site", SITE, (T("10.8.0.0/24"),), LAN, by_name=True)
    assert claims.overlaps(FULL, (T("0.0.0.0/0"),), LAN, by_name=True, rekey=True) == []
    found = claims.overlaps(FULL, (T("0.0.0.0/0"),), LAN, by_name=True)
    assert [(c.handle, common) for c, common in found] == [(2, T("10.8.0.0/24"))]
    # another Child SA of the peer's (other selectors) does not rekey the yielding one: as before
    found = claims.overlaps(FULL, (T("10.8.0.0/24"),), LAN, by_name=True, rekey=True)
    assert [(c.handle, common) for c, common in found] == [(2, T("10.8.0.0/24"))]
    claims.add(3, "other", SITE, (T("10.9.0.0/24"),), LAN, by_name=True)   # never taken back
    found = claims.overlaps(FULL, (T("0.0.0.0/0"),), LAN, by_name=True, rekey=True)
    assert [(c.handle, common) for c, common in found] == [(3, T("10.9.0.0/24"))]
