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

from collections.abc import Callable

from test_engine_more import A, B
from test_rekey_collision import CCSA, Reordering, _pair

from tunsec.ike.events import ChildSaUp
from tunsec.ike.exchanges.create_child_sa import NONCE_LEN, CreateChildTask
from tunsec.ike.sa import IkeSa


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


def test_a_peer_echoing_our_nonces_does_not_get_two_child_sas_of_one_key() -> None:
    net, a, b = _pair(0)
    victim, attacker = b.sas[0], a.sas[0]
    ours = _recording(victim)
    net.take(B)
    victim.rekey_child(victim.children[0].unique_id)  # B (the victim) rekeys its Child SA
    pending = victim._pending
    assert pending is not None and isinstance(pending.task, CreateChildTask)
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
