"""Review revrekey3 F1: the nonce-reflection refusal (h/fixrekey2, review revrekey F3) compares whole
nonces, but KEYMAT's seed is their concatenation.

Without PFS KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296 §2.17), and a peer's nonce may be 16 to 256 bytes
long while ours are NONCE_LEN (32).  While our CREATE_CHILD_SA (Ni = N) is out the peer asks for a Child
SA of its own with Ni = N | Z (Z: any bytes of its choice), reads our Nr = Y in our answer and answers
our request with Nr = Z | Y.  Neither nonce equals one of ours (create_child_sa.respond's ``seen``,
``_answered``'s ``_shown`` compare with ``==`` and ``in``), yet both Child SAs have the seed N | Z | Y:
one KEYMAT for two Child SAs, and both sides send under its keys from sequence number 1 (the same AES-GCM
key and nonce twice on the wire), exactly what the fix of F3 was to stop.

Now the seed itself is compared (ike/keymat_seeds.py): a Child SA whose Ni | Nr repeats one the IKE SA
keyed under its SK_d is refused in either role."""

from __future__ import annotations

import logging

import pytest
from test_engine_more import A, B
from test_nonce_reflection import _next_nonce_is, _recording, _victim_rekeying
from test_rekey_collision import CCSA, INFO, Reordering, _pair

from tunsec.ike.events import ChildSaUp
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN, SHOWN_NONCES
from tunsec.ike.keymat_seeds import RECENT
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network

# the peer's extra bytes: Ni = ours | SPLIT is 48 bytes, its Nr = SPLIT | our Nr 48 (both within 16..256)
SPLIT = bytes(range(16))


def test_a_peer_splitting_our_nonces_differently_does_not_get_two_child_sas_of_one_key() -> None:
    net, _, attacker, ours = _victim_rekeying()
    ni = ours[-1]
    assert len(ni) == NONCE_LEN
    wire = Reordering(net)                            # B's request waits, unanswered, in flight
    _next_nonce_is(attacker, ni + SPLIT)              # not B's Ni: B's Ni and then some
    attacker.initiate("net")                          # a Child SA of its own
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)              # B answers it with a fresh Nr ...
    nr = ours[-1]
    assert wire.deliver(B, CCSA, True)                # ... which the attacker reads
    _next_nonce_is(attacker, SPLIT + nr)              # not B's Nr either: some bytes and then B's Nr
    assert wire.deliver(B, CCSA, False)               # B's rekey request reaches A at last
    assert wire.deliver(A, CCSA, True)               # A answers it
    wire.run()
    ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    assert len(ups) == 2, ups                         # both Child SAs are up at B (on main)
    keys = [k.reveal() for up in ups for k in (up.key_in, up.key_out)]
    # counted, so that a failure prints no key: on main 2 of B's 4 keys are shared (its outbound key
    # of one Child SA is its inbound key of the other)
    shared = len(keys) - len(set(keys))
    assert shared == 0


def test_a_request_whose_ni_and_our_fresh_nr_make_a_seed_used_before_is_refused_for_now(
        caplog: pytest.LogCaptureFixture) -> None:
    """The general check in the other role: the peer's Ni and the Nr we draw for it form the seed of a Child
    SA already keyed under this SK_d (only by chance: our Nr is drawn then; forced here).  No Child SA comes
    up with those keys again: the request is refused for now (a peer asks again, with another Ni)."""
    net, a, b = _pair(0)
    victim, peer = b.sas[0], a.sas[0]
    theirs, ours = _recording(peer), _recording(victim)
    net.take(B)
    peer.initiate("web")                              # a Child SA keyed from Ni | Nr
    net.run()
    first = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    assert len(first) == 1 and len(theirs) == 1 and len(ours) == 1
    _next_nonce_is(peer, theirs[0])                   # the same Ni ...
    _next_nonce_is(victim, ours[0])                   # ... and, by the chance forced here, the same Nr
    caplog.set_level(logging.INFO, "tunsec.ike")
    peer.initiate("web")
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)
    assert wire.deliver(B, CCSA, True)
    assert not [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    assert any("peer refused Child SA web for now (TEMPORARY_FAILURE)" in r.getMessage() for r in caplog.records)
    wire.run()                                        # the peer asks again: fresh nonces, other keys
    ups = [*first, *(e for e in net.take(B) if isinstance(e, ChildSaUp))]
    assert len(ups) == 2, ups
    keys = [k.reveal() for up in ups for k in (up.key_in, up.key_out)]
    shared = len(keys) - len(set(keys))             # counted: a failure prints no key
    assert shared == 0


def test_a_peer_making_and_deleting_child_sas_meanwhile_does_not_push_the_split_seed_out() -> None:
    """The seeds kept are the last few (keymat_seeds.RECENT): a peer that split our nonces and then made
    and deleted more Child SAs than that while our request is still out would have pushed the seed out.
    While our request is out only SHOWN_NONCES of its requests are answered; the rest are refused for now,
    and the split is still refused when our request's answer comes."""
    net, _, attacker, ours = _victim_rekeying()
    ni = ours[-1]
    wire = Reordering(net)
    _next_nonce_is(attacker, ni + SPLIT)
    attacker.initiate("net")
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)
    nr = ours[-1]
    assert wire.deliver(B, CCSA, True)
    answered = 1
    for _ in range(RECENT):                           # made and deleted, one after another
        answered += make_and_delete(net, wire, attacker)
    assert answered == SHOWN_NONCES                   # the rest refused for now
    _next_nonce_is(attacker, SPLIT + nr)
    assert wire.deliver(B, CCSA, False)               # B's rekey request reaches A at last
    assert wire.deliver(A, CCSA, True)
    wire.run()
    ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    keys = [k.reveal() for up in ups for k in (up.key_in, up.key_out)]
    shared = len(keys) - len(set(keys))             # counted: a failure prints no key
    assert shared == 0


def make_and_delete(net: Network, wire: Reordering, attacker: IkeSa) -> bool:
    """The attacker asks for a "web" Child SA and, if it is answered, deletes it: whether it was answered."""
    attacker.initiate("web")
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False) and wire.deliver(B, CCSA, True)
    made = [c for c in attacker.children if c.name == "web"]
    if made:
        attacker.delete_child(made[0].unique_id)
        wire.flight += net.collect()
        assert wire.deliver(A, INFO, False) and wire.deliver(B, INFO, True)
    return bool(made)
