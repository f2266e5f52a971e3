"""max_ike_sas (tunsec { max_ike_sas_per_identity }): IKE SAs one identity holds per connection.

One authenticated identity may not open IKE SAs without end (each holds up to max_child_sas
Child SAs: SPIs, SAs and policies in the worker, memory here): its IKE_AUTH beyond the limit is
refused with AUTHENTICATION_FAILED before anything is made for it, counted; a rekey replaces its
IKE SA and is neither refused nor counted twice; an unproven name (eap-radius, no User-Name in
the Accept) counts under its name, apart from the proven identity of that name.
"""
from __future__ import annotations

import dataclasses

from test_engine import A, B, initiator_cfg, only, psk_config, responder_cfg
from test_engine_eap_radius_identity import C, log_in, pool_gateway, road_warrior
from test_engine_eap_relay import MschapBackend, relay

from tunsec.ike.endpoint import DosLimits, IkeEndpoint
from tunsec.ike.events import AuthFailed, ChildSaUp, IkeSaLimit, IkeSaRekeyed, IkeSaUp
from tunsec.ike.identity import Identity
from tunsec.ike.ike_sa_cap import UNPROVEN_NAMES_PER_SOURCE, IkeSaCounts
from tunsec.ike.sa import State
from tunsec.ike.testing import Network

X, Y = "192.0.2.66", "192.0.2.77"   # two sources of unproven clients


def capped(limit: int) -> tuple[Network, IkeEndpoint, IkeEndpoint]:
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([responder_cfg(max_ike_sas=limit)]))
    return net, a, b


def connect(net: Network, a: IkeEndpoint) -> None:
    a.initiate("a-to-b", "net", net.now)
    net.run()


def established(ep: IkeEndpoint) -> int:
    return sum(sa.state is State.ESTABLISHED for sa in ep.sas)


def test_the_identitys_ike_auth_beyond_the_limit_is_refused_and_nothing_is_kept() -> None:
    net, a, b = capped(2)
    for _ in range(3):
        connect(net, a)
    gw = net.take(B)
    assert len(only(gw, IkeSaUp)) == 2 and len(only(gw, ChildSaUp)) == 2
    (limit,) = only(gw, IkeSaLimit)
    assert (limit.name, limit.peer, limit.remote_addr[0], limit.held, limit.limit) == \
        ("b-from-a", "moon.example", A, 2, 2)
    assert not only(gw, AuthFailed)   # counted and logged rate-limited by the service, not as a failed AUTH
    assert [e.by_peer for e in only(net.take(A), AuthFailed)] == [True]   # the client saw AUTHENTICATION_FAILED
    assert established(b) == 2 and b.sa_count == 2 and b.stats.ike_sa_limit == 1


def test_another_identity_is_not_held_back_and_a_freed_place_is_taken() -> None:
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    anyone = dataclasses.replace(responder_cfg(max_ike_sas=1).remote, id=Identity.any())
    b = net.add(B, IkeEndpoint([responder_cfg(max_ike_sas=1, remote=anyone)]))
    connect(net, a)
    connect(net, a)
    assert b.stats.ike_sa_limit == 1
    child = initiator_cfg().children
    luna = net.add("192.0.2.9", IkeEndpoint([psk_config("a-to-b", "luna.example", "sun.example", "192.0.2.9", B,
                                                        child)]))
    connect(net, luna)
    assert established(b) == 2 and b.stats.ike_sa_limit == 1
    (first,) = [sa for sa in a.sas if sa.state is State.ESTABLISHED]
    first.delete(net.now)
    net.run()
    connect(net, a)
    assert established(b) == 2 and b.stats.ike_sa_limit == 1


def test_an_ike_rekey_is_not_refused_and_its_lineage_counts_once() -> None:
    net, a, b = capped(2)
    connect(net, a)
    connect(net, a)
    net.take(B)
    for sa in [sa for sa in a.sas if sa.state is State.ESTABLISHED]:
        sa.rekey()
        net.run()
    assert len(only(net.take(B), IkeSaRekeyed)) == 2   # (the old IKE SAs are gone: only lineages hold places)
    assert established(b) == 2 and b.stats.ike_sa_limit == 0 and b.stats.ike_rekeys_refused == 0
    connect(net, a)            # the two lineages are still two: a third is refused
    assert b.stats.ike_sa_limit == 1 and established(b) == 2


def test_initial_contact_replaces_the_identitys_ike_sas_instead_of_being_refused() -> None:
    net, a, b = capped(1)
    connect(net, a)
    rebooted = net.add("192.0.2.9", IkeEndpoint([initiator_cfg(local_addr="192.0.2.9")]))
    connect(net, rebooted)     # a fresh initiator sends INITIAL_CONTACT
    assert b.stats.ike_sa_limit == 0 and established(b) == 1
    (sa,) = [sa for sa in b.sas if sa.state is State.ESTABLISHED]
    assert sa.remote_addr[0] == "192.0.2.9"


def test_unproven_names_count_under_the_name_and_source_apart_from_the_proven_identity() -> None:
    counts = IkeSaCounts()
    alice = Identity.of_user(b"alice")
    for spi in (b"1", b"2"):
        counts.add(spi, "rw", alice.unproven(), X)
    assert counts.held("rw", alice.unproven(), X) == 2 and counts.held("rw", alice) == 0
    assert counts.held("rw", alice.unproven(), Y) == 0
    counts.add(b"3", "rw", alice, X)
    counts.succeed(b"1", b"4")     # a rekey: the same lineage
    assert counts.held("rw", alice.unproven(), X) == 2 and counts.held("rw", alice) == 1
    counts.remove(b"4")
    counts.remove(b"4")
    assert counts.held("rw", alice.unproven(), X) == 1 and counts.held("other", alice) == 0


def test_unproven_ike_sas_of_one_source_under_many_names_are_bounded_together() -> None:
    """A spray of names from one source: at most UNPROVEN_NAMES_PER_SOURCE allowances together
    (an IPv6 source by its /64); a proven identity there, and another source, are not held back."""
    counts = IkeSaCounts()
    limit = 2
    for i in range(limit * UNPROVEN_NAMES_PER_SOURCE):
        name = Identity.of_user(b"m%d" % (i // limit)).unproven()
        assert counts.over("rw", name, f"2001:db8:1:2::{i + 1}", limit) is None
        counts.add(b"%d" % i, "rw", name, f"2001:db8:1:2::{i + 1}")
    fresh = Identity.of_user(b"fresh").unproven()
    assert counts.over("rw", fresh, "2001:db8:1:2::99", limit) == (8, 8)
    assert counts.over("rw", fresh, "2001:db8:1:3::1", limit) is None
    assert counts.over("rw", Identity.of_user(b"carol"), "2001:db8:1:2::99", limit) is None
    counts.remove(b"0")
    assert counts.over("rw", fresh, "2001:db8:1:2::99", limit) is None


def test_unproven_ike_sas_of_one_name_are_refused_beyond_the_limit_and_alice_still_gets_in() -> None:
    """Mallory answers PEAP with "alice" and the server names nobody: her IKE SAs count under
    "alice" unproven from her address; the real alice, proven, has her own allowance."""
    net = Network()
    gw, _ = pool_gateway(net)
    gw.set_configs([dataclasses.replace(next(iter(gw._configs.values())), max_ike_sas=2)])
    mallory = MschapBackend({b"alice": "Mallory-pw"}, users={b"alice": None})
    for _ in range(2):
        log_in(net, gw, C, road_warrior(b"Mallory-pw", C, initial_contact=False), mallory)
    node = net.nodes[C]
    node.initiate("rw", "net", net.now)
    relay(net, gw, mallory, until=net.now + 20.0)
    later = net.take(B)
    assert not only(later, IkeSaUp) and [e.peer for e in only(later, IkeSaLimit)] == ["alice"]
    alice = MschapBackend({b"alice": "Alice-pw-1"}, users={b"alice": b"alice"})
    up = log_in(net, gw, A, road_warrior(b"Alice-pw-1", A), alice)
    assert up.remote_id == Identity.of_user(b"alice") and gw.stats.ike_sa_limit == 1


def test_ikesa_limit_drops_new_ike_sa_init_requests_once_the_endpoint_holds_that_many() -> None:
    """strongSwan's charon.ikesa_limit: all IKE SAs, whoever's; a request over it gets no answer."""
    net = Network()
    a = net.add(A, IkeEndpoint([initiator_cfg()]))
    b = net.add(B, IkeEndpoint([responder_cfg()], limits=DosLimits(ikesa_limit=2)))
    for _ in range(3):
        a.initiate("a-to-b", "net", net.now)
        net.run(until=net.now + 1.0)
    assert b.sa_count == 2 and established(b) == 2 and b.stats.ikesa_limit == 1
    assert b.stats.ike_sa_limit == 0


def test_unproven_ike_sas_of_one_name_get_at_most_two_leases() -> None:
    """Under max_ike_sas, a third IKE SA of an unproven name comes up without a virtual IP
    (INTERNAL_ADDRESS_FAILURE, as strongSwan): the pool is not the name's to empty."""
    net = Network()
    gw, pools = pool_gateway(net)
    mallory = MschapBackend({b"alice": "Mallory-pw"}, users={b"alice": None})
    ups = [log_in(net, gw, X, road_warrior(b"Mallory-pw", X, initial_contact=False), mallory) for _ in range(3)]
    assert [len(up.peer_vips) for up in ups] == [1, 1, 0]
    assert sum(lease.online for lease in pools.leases()) == 2


def test_unproven_ike_sas_count_by_name_and_source_so_one_client_locks_no_name_out() -> None:
    """Mallory (her own RADIUS credentials, outer identity "alice", the server names nobody) holds
    all the IKE SAs "alice" may from her address X; an unproven "alice" from Y still comes up
    with a virtual IP; Mallory's next one from X is refused."""
    net = Network()
    gw, pools = pool_gateway(net)
    mallory = MschapBackend({b"alice": "Mallory-pw"}, users={b"alice": None})
    limit = next(iter(gw._configs.values())).max_ike_sas
    ups = [log_in(net, gw, X, road_warrior(b"Mallory-pw", X, initial_contact=False), mallory) for _ in range(limit)]
    assert limit == 8 and sum(bool(up.peer_vips) for up in ups) == 2
    alice = MschapBackend({b"alice": "Alice-pw-1"}, users={b"alice": None})   # the same server: unproven too
    up = log_in(net, gw, Y, road_warrior(b"Alice-pw-1", Y, initial_contact=False), alice)
    assert up.remote_id.tag and len(up.peer_vips) == 1 and gw.stats.ike_sa_limit == 0
    net.nodes[X].initiate("rw", "net", net.now)
    relay(net, gw, mallory, until=net.now + 20.0)
    later = net.take(B)
    assert not only(later, IkeSaUp) and [(e.held, e.limit) for e in only(later, IkeSaLimit)] == [(8, 8)]
    assert sum(lease.online for lease in pools.leases()) == 3
