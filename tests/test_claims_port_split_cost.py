"""Review revfull4 F3: TsClaims.containing (policy/claims.py) is still quadratic when many distinct peers'
claims hold the address asked: h/fixclaims3 made it "one pass over all claims per peer found"
(_peer_widened: a scan of every Child SA for the peer's own, and Held.of over every other claim,
sorted), so k peers whose claims hold one address cost k passes over all claims.

Peers that share an address are what the claims allow: two identities may split one subnet by ports
(What remains), or by protocol.  A hub whose spokes each hold 10.9.0.0/24 for their own port (a service
port per tenant) has k = all of them; every MOBIKE move or NAT float of an authenticated peer to an
address there (exchanges/mobike.py _unacceptable -> ike/address_role.py) and every virtual IP or
REDIRECT target asked about then reads all claims k times.  At 2,000 such spokes ~4 million entries per
question, in the single-threaded control process.

The proof counts the claim entries read (no timing, as tests/test_claims_containing_cost.py): those each
Held.of (the merge of the others' claims) is given while one address's role is asked.  The bound allows
three passes over all claims, as that test does."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from types import SimpleNamespace

import pytest

import tunsec.policy.claims as claims_module
from tunsec.ike.address_role import address_role
from tunsec.ike.identity import Identity
from tunsec.policy.claims import Peer, TsClaims
from tunsec.policy.held import Held
from tunsec.policy.selector import Ts

LAN = (Ts.parse("10.255.0.0/24"),)
SPOKES = 200


def _counting_held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Held.of as claims.py calls it, counting the claim entries each call reads (one pass over them)."""
    read = [0]

    def of(entries: Iterable[tuple[int, int, Ts]]) -> Held:
        listed = list(entries)
        read[0] += len(listed)
        return Held.of(listed)
    monkeypatch.setattr(claims_module, "Held", SimpleNamespace(of=of))
    return read


def test_the_role_of_an_address_many_peers_split_by_ports_reads_the_claims_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    claims = TsClaims()
    for i in range(SPOKES):   # each spoke its own tcp port of one subnet
        claims.add(100 + i, "spokes", Peer(Identity.parse(f"s{i}.example"), "psk spokes"),
                   (Ts.parse(f"10.9.0.0/24[tcp/{1000 + i}]"),), LAN)
    read = _counting_held(monkeypatch)
    role = address_role([], {}, None, ipaddress.ip_address("10.9.0.7"), claims)   # type: ignore[arg-type]
    assert role is not None and role.kind == "tunnel" and role.connection == "spokes"   # the premise
    assert read[0] <= 3 * SPOKES, (
        f"{read[0]} claim entries read for one address among {SPOKES} claims (Held.of): one pass over all "
        f"of them per peer whose claim holds it")
