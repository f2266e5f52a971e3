"""Review revrekey5 F3: the collision variant of review revrekey4 F3 that h/fixrekey5 fixed for the
peer's DELETE (Task.peer_withdrew), through our own DELETE instead.  Both sides rekey one Child SA; we
answer the peer's rekey (n1) while ours is out, then delete n1 ourselves (IkeSa.delete_child: its
install failed in the worker after the answer left, or the claims backstop).  informational.delete_ours
-> unrekey resets the old Child SA but does not tell our request that is out (no peer_withdrew), so
when its answer comes, ours -- the lowest nonce's -- is deleted as redundant to the n1 we deleted
ourselves, the peer (whose rekey won) deletes the old one, and the child is gone on both sides,
where ours, up at both, would carry it on.  unrekey also re-arms the old one's rekey timer while our
rekey of it is out (a second rekey of it is queued), which rearm_withdrawn does not do."""

from __future__ import annotations

from test_engine_more import A, B
from test_nonce_reflection import _next_nonce_is
from test_rekey_collision import CCSA, Reordering, _pair

from tunsec.ike.exchanges.create_child_sa import NONCE_LEN


def test_our_rekey_that_crossed_a_peer_rekey_we_then_deleted_carries_the_child_on() -> None:
    net, a, b = _pair(5)
    peer, ours = a.sas[0], b.sas[0]
    old = ours.children[0]
    net.take(A), net.take(B)
    _next_nonce_is(ours, bytes(NONCE_LEN))         # our Ni: the lowest nonce (ours is the redundant one)
    ours.rekey_child(old.unique_id)                # B's rekey ...
    peer.rekey_child(peer.children[0].unique_id)   # ... and A's, crossing it
    wire = Reordering(net)
    assert wire.deliver(A, CCSA, False)            # A's rekey reaches B: answered (n1), a collision noted
    n1 = next(c for c in ours.children if c.peer_rekey_of == old.unique_id)
    ours.delete_child(n1.unique_id)                # n1's install failed here after the answer left
    wire.run()
    assert ours.children and peer.children, "no Child SA left on either side"
    assert [c.spi_out for c in peer.children] == [c.spi_in for c in ours.children]
