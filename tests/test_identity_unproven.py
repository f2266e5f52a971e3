"""An unproven identity (eap-radius whose Access-Accept named no user): shown as its name, the
peer of its one IKE SA only. Leases, ``unique``, the selector claims and a DAE User-Name, each
where it compares identities; and radius { trust_eap_identity } in the config."""
from __future__ import annotations

import ipaddress
from typing import NoReturn

from tunsec.conf.config import parse_config
from tunsec.ike.identity import Identity
from tunsec.policy.claims import TsClaims
from tunsec.policy.pad import is_duplicate
from tunsec.policy.pools import UNPROVEN_PER_NAME, UNPROVEN_PER_SOURCE, AddressPools, PoolConfig
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


def test_an_unproven_peer_never_takes_the_address_a_proven_identity_of_its_name_holds_offline() -> None:
    """A PEAP client answering "alice" (nobody proves it) does not get Alice's usual address,
    nor rebind it: Alice, back, gets hers."""
    pools = pool()
    lease = pools.acquire(["v4"], ALICE, 4) or _no()
    first = str(lease.address)
    pools.release(lease, ALICE)
    assert [(lease.identity, lease.online) for lease in pools.leases()] == [("alice", False)]
    assert addr(pools, ALICE.unproven()) != first
    assert addr(pools, ALICE) == first


def test_an_address_unproven_alice_left_is_alices_once_she_proves_herself() -> None:
    pools = pool()
    one = ALICE.unproven()
    lease = pools.acquire(["v4"], one, 4) or _no()
    pools.release(lease, one)                          # bound to the name, by an unproven peer
    assert addr(pools, ALICE) == str(lease.address)    # proven alice finds it
    pools.release(lease, ALICE)
    assert addr(pools, ALICE.unproven()) != str(lease.address)   # hers now: not for an unproven "alice"


def _no() -> NoReturn:
    raise AssertionError("no lease")


def wide() -> AddressPools:
    return AddressPools([PoolConfig.parse_addrs("v4", "10.3.0.0/28"),   # 14 addresses
                         PoolConfig.parse_addrs("v6", "2001:db8:3::/112")])


def test_unproven_peers_of_one_name_cannot_take_the_pool() -> None:
    """One user whose tunnelled method names nobody opens IKE SAs: each is a peer of its own, but
    they hold at most UNPROVEN_PER_NAME leases of the name from one source; bob gets his address
    back, alice a new one, and an unproven client of that name elsewhere one of its own."""
    pools = wide()
    bob = Identity.of_user(b"bob")
    bobs = pools.acquire(["v4"], bob, 4) or _no()
    pools.release(bobs, bob)
    mallory = Identity.of_user(b"mallory")
    peers = [mallory.unproven() for _ in range(14)]
    held = [pools.acquire(["v4"], peer, 4, "192.0.2.9") for peer in peers]
    assert sum(lease is not None for lease in held) == UNPROVEN_PER_NAME == 2
    assert pools.acquire(["v4"], bob, 4) == bobs
    assert pools.acquire(["v4"], Identity.of_user(b"alice"), 4) is not None
    assert pools.acquire(["v6"], peers[5], 6, "192.0.2.9") is not None   # the other family counts apart
    assert pools.acquire(["v4"], mallory.unproven(), 4, "2001:db8:1:2::9") is not None   # another source
    pools.release(held[0] or _no(), peers[0])           # one goes: another IKE SA of the name gets one
    assert pools.acquire(["v4"], peers[13], 4, "192.0.2.9") is not None
    assert pools.acquire(["v4"], peers[12], 4, "192.0.2.9") is None


def test_unproven_peers_from_one_address_cannot_take_the_pool_under_many_names() -> None:
    """The name is the user's choice: per source address (an IPv6 one: its /64) at most
    UNPROVEN_PER_SOURCE leases; another address, or a proven user there, still gets one."""
    pools = wide()
    names = [Identity.of_user(b"m%d" % i).unproven() for i in range(10)]
    held = [pools.acquire(["v4"], peer, 4, "192.0.2.7") for peer in names]
    assert sum(lease is not None for lease in held) == UNPROVEN_PER_SOURCE == 4
    assert pools.acquire(["v4"], Identity.of_user(b"x").unproven(), 4, "192.0.2.8") is not None
    assert pools.acquire(["v4"], Identity.of_user(b"carol"), 4) is not None
    v6 = [pools.acquire(["v6"], peer, 6, f"2001:db8:1:2::{i + 1}") for i, peer in enumerate(names)]
    assert sum(lease is not None for lease in v6) == UNPROVEN_PER_SOURCE


def test_an_unproven_peer_asking_again_is_counted_once() -> None:
    pools = wide()
    one, two, three = ALICE.unproven(), ALICE.unproven(), ALICE.unproven()
    first = pools.acquire(["v4"], one, 4, "192.0.2.1")
    assert first is not None and pools.acquire(["v4"], one, 4, "192.0.2.1") == first
    assert pools.acquire(["v4"], two, 4, "192.0.2.1") is not None
    assert pools.acquire(["v4"], three, 4, "192.0.2.1") is None


def test_a_dae_user_name_names_unproven_sessions_by_their_name() -> None:
    assert _names(ALICE.unproven(), ["ALICE"]) and _names(ALICE.unproven(), ["alice"])
    assert not _names(ALICE.unproven(), ["mallory"])


def test_trust_eap_identity_is_read_from_the_radius_section() -> None:
    text = 'radius {\n  servers {\n    fr {\n      address = 10.0.0.5\n      secret = s\n    }\n  }\n%s}\n'
    assert parse_config(text % "", "t.conf").radius.trust_eap_identity is False  # type: ignore[union-attr]
    on = parse_config(text % "  trust_eap_identity = yes\n", "t.conf").radius
    assert on is not None and on.trust_eap_identity is True
    assert ipaddress.ip_address("10.0.0.5") == on.servers[0].address
