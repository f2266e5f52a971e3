"""Review revrekey3 F1: the nonce-reflection refusal (h/fixrekey2, review revrekey F3) compares whole
nonces, but KEYMAT's seed is their concatenation.

Without PFS KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296 §2.17), and a peer's nonce may be 16 to 256 bytes
long while ours are NONCE_LEN (32).  While our CREATE_CHILD_SA (Ni = N) is out the peer asks for a Child
SA of its own with Ni = N | Z (Z: any bytes of its choice), reads our Nr = Y in our answer and answers
our request with Nr = Z | Y.  Neither nonce equals one of ours (create_child_sa.respond's ``seen``,
``_answered``'s ``_shown`` compare with ``==`` and ``in``), yet both Child SAs have the seed N | Z | Y:
one KEYMAT for two Child SAs, and both sides send under its keys from sequence number 1 (the same AES-GCM
key and nonce twice on the wire), exactly what the fix of F3 was to stop."""

from __future__ import annotations

from test_engine_more import A, B
from test_nonce_reflection import _next_nonce_is, _recording
from test_rekey_collision import CCSA, Reordering, _pair

from tunsec.ike.events import ChildSaUp
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN, CreateChildTask

# the peer's extra bytes: Ni = ours | SPLIT is 48 bytes, its Nr = SPLIT | our Nr 48 (both within 16..256)
SPLIT = bytes(range(16))


def test_a_peer_splitting_our_nonces_differently_does_not_get_two_child_sas_of_one_key() -> None:
    net, a, b = _pair(0)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    net.take(B)
    victim.rekey_child(victim.children[0].unique_id)  # B (the victim) rekeys its Child SA
    pending = victim._pending
    assert pending is not None and isinstance(pending.task, CreateChildTask)
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
