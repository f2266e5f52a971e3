"""Review revrekey F3: an authenticated peer makes us derive the same Child SA keys twice.

Without PFS (the default ESP proposals carry no key exchange) KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296
§2.17): the nonces alone tell two Child SAs' keys apart.  While our CREATE_CHILD_SA is out (a rekey
its timer started), the peer has read our Ni in it; it asks for a Child SA of its own with that very
Ni, reads our Nr in our answer, and then answers our request with that Nr.  Both exchanges carried
Ni | Nr = ours | ours: the two Child SAs have one KEYMAT, our outbound key of the one is our inbound
key of the other, and both sides send under that key from sequence number 1 (AES-GCM: the same key
and nonce twice).  Nothing checks that a peer's nonce is not one of ours (create_child_sa.respond,
CreateChildTask._answered), nor that two of an IKE SA's Child SAs have distinct keys."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from test_engine_more import A, B
from test_rekey_collision import CCSA, INFO, Reordering, _pair

from tunsec.ike.events import ChildSaUp, NegotiationFailed
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN, CreateChildTask
from tunsec.ike.sa import IkeSa
from tunsec.ike.testing import Network


def _next_nonce_is(sa: IkeSa, nonce: bytes) -> None:
    """The attacker's engine: its next nonce is ``nonce`` (its other random bytes as before)."""
    real = sa._st.rng
    used: list[bool] = []

    def rng(n: int) -> bytes:
        if n == NONCE_LEN and not used:
            used.append(True)
            return nonce
        return real(n)
    sa._st.rng = rng


def _recording(sa: IkeSa) -> list[bytes]:
    """The victim's nonces as it draws them (only looked at, not chosen)."""
    seen: list[bytes] = []
    real: Callable[[int], bytes] = sa._st.rng

    def rng(n: int) -> bytes:
        out = real(n)
        if n == NONCE_LEN:
            seen.append(out)
        return out
    sa._st.rng = rng
    return seen


def _victim_rekeying() -> tuple[Network, IkeSa, IkeSa, list[bytes]]:
    """B (the victim) rekeys its Child SA, its request not yet delivered: (the network, B's IKE SA, A's,
    B's nonces as drawn)."""
    net, a, b = _pair(0)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    net.take(B)
    victim.rekey_child(victim.children[0].unique_id)
    pending = victim._pending
    assert pending is not None and isinstance(pending.task, CreateChildTask)
    return net, victim, attacker, ours


def test_a_peer_echoing_our_nonces_does_not_get_two_child_sas_of_one_key() -> None:
    net, _, attacker, ours = _victim_rekeying()
    ni = ours[-1]                                     # the attacker decrypted it from B's request
    wire = Reordering(net)                            # B's request waits, unanswered, in flight
    _next_nonce_is(attacker, ni)
    attacker.initiate("net")                          # a Child SA of its own, Ni = B's Ni
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)               # B answers it with its own Nr ...
    nr = ours[-1]
    assert wire.deliver(B, CCSA, True)                # ... which the attacker reads
    _next_nonce_is(attacker, nr)
    assert wire.deliver(B, CCSA, False)               # B's rekey request reaches A at last
    assert wire.deliver(A, CCSA, True)                # A answers it with Nr = B's Nr
    wire.run()
    ups = [e for e in net.take(B) if isinstance(e, ChildSaUp)]
    assert len(ups) == 2, ups
    keys = [k.reveal() for up in ups for k in (up.key_in, up.key_out)]
    # no key of one of B's Child SAs is a key of another: each (key, sequence number) pair is used
    # by one sender only (counted, so that a failure prints no key)
    shared = len(keys) - len(set(keys))
    assert shared == 0


def test_an_answer_whose_nr_is_the_nr_of_our_answer_to_the_peer_installs_nothing() -> None:
    """The other half of F3: the peer asks for a Child SA of its own (a nonce of its own) while our
    rekey is out, and answers our rekey with the Nr we gave it.  No keys are shared (the Ni differ),
    but the two exchanges' nonces would tie a collision's comparison (RFC 7296 §2.8.1): our rekey
    installs nothing, and the peer is asked to delete its half; its own Child SA is up."""
    net, a, b = _pair(0)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    net.take(B)
    old = victim.children[0]
    victim.rekey_child(old.unique_id)
    wire = Reordering(net)
    attacker.initiate("net")                          # a Child SA of its own, a nonce of its own
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)               # B answers it with a fresh Nr ...
    nr = ours[-1]
    assert wire.deliver(B, CCSA, True)
    _next_nonce_is(attacker, nr)
    assert wire.deliver(B, CCSA, False)               # ... which A sends back in its answer to B's rekey
    assert wire.deliver(A, CCSA, True)
    events = net.take(B)
    ups = [e for e in events if isinstance(e, ChildSaUp)]
    assert [up.rekey_of for up in ups] == [None]      # A's Child SA only; B's rekey installed nothing
    refused = [e for e in events if isinstance(e, NegotiationFailed)]
    assert [e.reason for e in refused] == ["INVALID_SYNTAX"]
    assert old in victim.children                     # the old Child SA carries the traffic on
    assert wire.deliver(B, INFO, False)               # B asks A to delete its half of the refused rekey


def test_a_request_with_our_ni_while_our_request_is_out_is_refused_for_now(caplog: pytest.LogCaptureFixture) -> None:
    """What F3's attacker gets for its request with our Ni: TEMPORARY_FAILURE, and no Child SA (a peer
    that drew our nonce by chance asks again with another)."""
    net, a, b = _pair(0)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    net.take(A)
    victim.rekey_child(victim.children[0].unique_id)
    wire = Reordering(net)
    _next_nonce_is(attacker, ours[-1])
    attacker.initiate("net")
    wire.flight += net.collect()
    assert wire.deliver(A, CCSA, False)
    assert len(ours) == 1                             # B drew no Nr for it: it was refused first
    caplog.set_level(logging.INFO, "tunsec.ike")
    assert wire.deliver(B, CCSA, True)
    assert not [e for e in net.take(A) if isinstance(e, ChildSaUp)]
    assert any("peer refused Child SA net for now (TEMPORARY_FAILURE)" in r.getMessage() for r in caplog.records)
