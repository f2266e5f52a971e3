"""Review revrekey4 F2's rest: the peer's CREATE_CHILD_SAs refused for now while our request is out
(create_child_sa._for_now: a nonce of ours as its Ni, SHOWN_NONCES of its Child SAs answered already,
a repeated KEYMAT seed) were logged through a per-peer limiter but counted nowhere.  They are counted in
the endpoint's stats (EndpointStats.child_sas_refused_for_now, one of AUTHENTICATED_REFUSALS: `tunsec
status` ike_refused and the metric tunsec_ike_authenticated_refused_total; the service's side is
tests/test_ikeservice_peer_abuse.py).  Two engines on the fake clock."""

from __future__ import annotations

from test_engine_more import A, B
from test_nonce_reflection import _next_nonce_is, _victim_rekeying
from test_nonce_split import make_and_delete
from test_rekey_collision import CCSA, Reordering

from tunsec.ike.exchanges.create_child_sa import SHOWN_NONCES
from tunsec.ike.stats import AUTHENTICATED_REFUSALS

EXTRA = 3   # the peer's requests past the cap while our one request is out


def test_requests_past_the_cap_while_ours_is_out_are_counted() -> None:
    net, _, attacker, _ = _victim_rekeying()          # B's rekey is out and stays so
    stats = net.nodes[B].stats
    wire = Reordering(net)
    answered = [make_and_delete(net, wire, attacker) for _ in range(SHOWN_NONCES + EXTRA)]
    assert answered.count(False) == EXTRA             # the cap holds (h/fixrekey3) ...
    assert stats.child_sas_refused_for_now == EXTRA   # ... and each refusal is counted
    assert "child_sas_refused_for_now" in AUTHENTICATED_REFUSALS   # shown apart: a known peer's


def test_a_request_with_our_nonce_as_its_ni_is_counted() -> None:
    net, _, attacker, ours = _victim_rekeying()
    stats = net.nodes[B].stats
    wire = Reordering(net)
    _next_nonce_is(attacker, ours[-1])                # B's Ni, read from B's request
    attacker.initiate("web")
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False) and wire.deliver(B, CCSA, True)
    assert not [c for c in attacker.children if c.name == "web"]   # refused for now
    assert stats.child_sas_refused_for_now == 1
