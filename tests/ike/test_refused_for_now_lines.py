"""Review revrekey4 F2: the refusal h/fixrekey3 added for the peer's CREATE_CHILD_SAs beyond SHOWN_NONCES
while ours is out (create_child_sa.respond, ``answered_enough``) logs an INFO line per refused request,
with no limiter: an authenticated peer that leaves our request unanswered (it retransmits for minutes
before the IKE SA gives up) and sends CREATE_CHILD_SAs one after another gets one line per round trip.
The engine's other lines a peer can repeat go through the endpoint's per-peer limiters (ike/peer_logs.py
since h/fixloglim) or the service's per-peer refusal_log shares (h/fixlog)."""

from __future__ import annotations

import logging

import pytest
from test_nonce_reflection import _victim_rekeying
from test_nonce_split import make_and_delete
from test_rekey_collision import Reordering

from tunsec.ike.exchanges.create_child_sa import SHOWN_NONCES

# the peer's requests past the cap while our one request is out (well within one minute of the fake clock)
EXTRA = 40
# what a peer's limiter lets through in a burst (ike/peer_logs.py BURST: 5 a minute)
BURST = 5


def test_the_lines_of_a_peer_asking_past_the_cap_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    net, _, attacker, _ = _victim_rekeying()          # B's rekey is out and stays so
    wire = Reordering(net)
    caplog.set_level(logging.INFO, "tunsec.ike")
    answered = refused = 0
    for _ in range(SHOWN_NONCES + EXTRA):             # one after another, a round trip each
        if make_and_delete(net, wire, attacker):
            answered += 1
        else:
            refused += 1
    assert (answered, refused) == (SHOWN_NONCES, EXTRA)   # the cap holds (h/fixrekey3)
    lines = [r for r in caplog.records if r.name == "tunsec.ike.exchanges.create_child_sa"
             and "answered while our request is out" in r.getMessage()]
    assert len(lines) <= BURST, f"{len(lines)} lines for {EXTRA} refusals of one peer"
