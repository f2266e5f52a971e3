"""An unproven identity (eap-radius whose Access-Accept named no user): shown as its name, the
peer of its one IKE SA only. Leases, ``unique``, the selector claims and a DAE User-Name, each
where it compares identities; and radius { trust_eap_identity } in the config."""
from __future__ import annotations

import ipaddress

from tunsec.conf.config import parse_config
from tunsec.ike.identity import Identity
from tunsec.policy.claims import TsClaims
from tunsec.policy.pad import is_duplicate
from tunsec.policy.pools import AddressPools, PoolConfig
from tunsec.policy.selector import Ts
from tunsec.services.ike.radius_edge import _names

ALICE = Identity.of_user(b"alice")
LAN = (Ts.parse("10.1.0.0/16"),)


def test_an_unproven_identity_is_shown_as_its_name_and_equals_only_itself() -> None:
    one, two = ALICE.unproven(), ALICE.unproven()
    assert str(one) == str(two) == "alice" and one.named == ALICE
    assert one == one and one != two and one != ALICE and hash(one) != hash(ALICE)
    # a configured identity accepts it by name (remote.id); unique and INITIAL_CONTACT do not
    assert Identity.parse("alice").matches(one)
    assert not is_duplicate(one, "192.0.2.1", ALICE, "192.0.2.2")
    assert not is_duplicate(one, "192.0.2.1", two, "192.0.2.1")


def test_the_claims_take_two_unproven_sas_of_one_name_for_two_peers() -> None:
    claims = TsClaims()
    one, two = ALICE.unproven(), ALICE.unproven()
    claims.add(1, "rw", one, (Ts.parse("10.3.0.1"),), LAN)
    assert claims.overlaps(one, (Ts.parse("10.3.0.1"),), LAN) == []       # its own
    assert [c.handle for c, _ in claims.overlaps(two, (Ts.parse("10.3.0.1"),), LAN)] == [1]
    assert [c.handle for c, _ in claims.overlaps(ALICE, (Ts.parse("10.3.0.1"),), LAN)] == [1]


def pool() -> AddressPools:
    return AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.1-10.3.0.3")])


def addr(pools: AddressPools, peer: Identity) -> str:
    lease = pools.acquire(["v4"], peer, 4)
    assert lease is not None
    return str(lease.address)


def test_an_unproven_identity_shares_no_lease_another_ike_sa_holds() -> None:
    pools = pool()
    alice = addr(pools, ALICE)
    one = ALICE.unproven()
    mine = addr(pools, one)
    assert mine != alice                               # held by alice: one of its own
    assert addr(pools, ALICE) == alice                 # a proven alice's second IKE SA shares as ever
    assert addr(pools, one) == mine                    # (its own IKE SA asking again: the same)
    assert addr(pools, ALICE.unproven()) not in (alice, mine)


def test_a_returning_unproven_client_gets_its_address_back() -> None:
    pools = pool()
    one = ALICE.unproven()
    first = pools.acquire(["v4"], one, 4)
    assert first is not None
    pools.release(first, one)
    assert [(lease.identity, lease.online) for lease in pools.leases()] == [("alice", False)]
    two = ALICE.unproven()
    assert addr(pools, two) == str(first.address)
    assert addr(pools, ALICE) != str(first.address)     # held now: the proven name gets another
    assert addr(pools, ALICE.unproven()) != str(first.address)


def test_a_dae_user_name_names_unproven_sessions_by_their_name() -> None:
    assert _names(ALICE.unproven(), ["ALICE"]) and _names(ALICE.unproven(), ["alice"])
    assert not _names(ALICE.unproven(), ["mallory"])


def test_trust_eap_identity_is_read_from_the_radius_section() -> None:
    text = 'radius {\n  servers {\n    fr {\n      address = 10.0.0.5\n      secret = s\n    }\n  }\n%s}\n'
    assert parse_config(text % "", "t.conf").radius.trust_eap_identity is False  # type: ignore[union-attr]
    on = parse_config(text % "  trust_eap_identity = yes\n", "t.conf").radius
    assert on is not None and on.trust_eap_identity is True
    assert ipaddress.ip_address("10.0.0.5") == on.servers[0].address
